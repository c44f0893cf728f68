// SMYRF against its scalar oracle, dense attention, and its own invariants.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>

#include "api/inspect.h"
#include "kernels/radix_sort.h"
#include "methods/smyrf/clustering.h"
#include "methods/smyrf/forward.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks;
  SmyrfConfig config;
  float scale = 0.0f;  // 0 = default 1/sqrt(d)
};

SmyrfConfig cfg(int hashes, int qc, int kc, Transform t = Transform::xbox_plus, float r = 0.0f) {
  SmyrfConfig c;
  c.n_hashes = hashes;
  c.q_cluster_size = qc;
  c.k_cluster_size = kc;
  c.transform = t;
  c.r = r;
  return c;
}

std::vector<Case> cases() {
  return {
      {"square_divisible", 1, 1, 128, 128, 64, 64, false, false, cfg(4, 32, 32)},
      {"prime_lengths", 2, 3, 113, 113, 16, 16, true, false, cfg(3, 16, 16)},
      {"not_divisible", 1, 2, 100, 100, 33, 17, false, false, cfg(2, 32, 32)},
      {"pooled_keys_biggan", 1, 2, 256, 64, 32, 32, true, false, cfg(4, 32, 8)},
      {"cross_unmatched", 2, 1, 239, 61, 24, 40, false, false, cfg(2, 16, 16)},
      {"d1", 1, 1, 97, 97, 1, 1, false, false, cfg(2, 8, 8)},
      {"masks", 3, 2, 150, 140, 32, 32, true, true, cfg(3, 16, 16)},
      {"xbox", 1, 2, 120, 120, 16, 16, false, false, cfg(2, 16, 16, Transform::xbox)},
      {"h2_alsh", 1, 2, 120, 120, 16, 16, false, true, cfg(2, 16, 16, Transform::h2_alsh)},
      {"l2_alsh", 1, 2, 120, 120, 16, 16, false, false, cfg(2, 16, 16, Transform::l2_alsh)},
      {"e2lsh_r", 2, 1, 200, 200, 16, 16, false, true, cfg(3, 16, 16, Transform::xbox_plus, 0.5f)},
      {"negative_scale", 1, 1, 90, 90, 16, 16, false, false, cfg(2, 16, 16), -0.25f},
      {"many_hashes", 1, 1, 64, 64, 8, 8, false, false, cfg(11, 8, 8)},
      {"big_clusters_tiles", 1, 1, 400, 400, 64, 64, false, false, cfg(2, 200, 200)},
      {"single_key", 1, 1, 50, 1, 8, 8, false, false, cfg(2, 8, 8)},
  };
}

class SmyrfCases : public ::testing::TestWithParam<Case> {
 protected:
  Problem make() const {
    const Case& c = GetParam();
    Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 17 + c.Nq);
    if (c.masks) pr.random_masks(3 + c.Nk, 0.7, 0.8);
    if (c.scale != 0.0f) pr.params.scale = c.scale;
    pr.params.seed = 42;
    return pr;
  }
};

TEST_P(SmyrfCases, ClustersEqualScalarReferenceExactly) {
  Problem pr = make();
  const auto fast = detail::compute_clusters(pr.params, GetParam().config);
  const auto ref = reference::clusters(pr.params, GetParam().config);
  EXPECT_EQ(fast.q_count, ref.q_count);
  EXPECT_EQ(fast.k_count, ref.k_count);
  EXPECT_EQ(fast.n_clusters, ref.n_clusters);
  EXPECT_EQ(fast.q_sorted, ref.q_sorted);
  EXPECT_EQ(fast.k_sorted, ref.k_sorted);
}

TEST_P(SmyrfCases, OutputMatchesScalarReferenceWithinRule) {
  Problem pr = make();
  const SmyrfConfig& config = GetParam().config;
  const auto ref = reference::attention(pr.params, config).o_f32();
  const auto fast = pr.run(config);
  EXPECT_LE(max_abs_diff(fast, ref), pr.tolerance(config.k_cluster_size));
}

TEST_P(SmyrfCases, EveryActiveTokenInExactlyOneClusterPerRound) {
  Problem pr = make();
  const auto cl = detail::compute_clusters(pr.params, GetParam().config);
  for (std::int64_t b = 0; b < cl.B; ++b)
    for (std::int64_t h = 0; h < cl.H; ++h)
      for (int r = 0; r < cl.rounds; ++r) {
        const std::size_t base = static_cast<std::size_t>((b * cl.H + h) * cl.rounds + r);
        std::vector<std::int32_t> q(cl.q_sorted.begin() + base * cl.Nq,
                                    cl.q_sorted.begin() + base * cl.Nq + cl.q_count[b]);
        std::vector<std::int32_t> k(cl.k_sorted.begin() + base * cl.Nk,
                                    cl.k_sorted.begin() + base * cl.Nk + cl.k_count[b]);
        std::sort(q.begin(), q.end());
        std::sort(k.begin(), k.end());
        std::vector<std::int32_t> q_active, k_active;
        for (std::int64_t i = 0; i < cl.Nq; ++i)
          if (pr.query_mask.empty() || pr.query_mask[b * cl.Nq + i]) {
            q_active.push_back(i);
          }
        for (std::int64_t j = 0; j < cl.Nk; ++j)
          if (pr.key_mask.empty() || pr.key_mask[b * cl.Nk + j]) {
            k_active.push_back(j);
          }
        ASSERT_EQ(q, q_active);
        ASSERT_EQ(k, k_active);
      }
}

TEST_P(SmyrfCases, SameBitsAtOneTwoAndThreeThreads) {
  Problem pr = make();
  const auto one = pr.run(GetParam().config, 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(GetParam().config, 2)));
  EXPECT_TRUE(bitwise_equal(one, pr.run(GetParam().config, 3)));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SmyrfCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(SmyrfClusters, BalancedRuleForAllSmallSizes) {
  // Exhaustive over small sizes: partitions cover everything once, sizes within the caps and
  // within one of each other, and every key cluster is non-empty.
  for (int qc = 1; qc <= 5; ++qc)
    for (int kc = 1; kc <= 5; ++kc)
      for (std::int64_t nq = 1; nq <= 23; ++nq)
        for (std::int64_t nk = 1; nk <= 23; ++nk) {
          const std::int64_t C = detail::cluster_count(nq, nk, cfg(1, qc, kc));
          std::int64_t q_next = 0, k_next = 0, q_min = nq, q_max = 0, k_min = nk, k_max = 0;
          for (std::int64_t i = 0; i < C; ++i) {
            const auto qr = detail::query_cluster(i, nq, C);
            const auto kr = detail::key_cluster(i, nk, C);
            ASSERT_EQ(qr.begin, q_next);
            q_next = qr.end;
            ASSERT_GE(kr.begin, k_next - 1);  // keys may repeat only when nk < C
            ASSERT_LT(kr.begin, kr.end);
            ASSERT_LE(kr.end, nk);
            if (nk >= C) {
              ASSERT_EQ(kr.begin, k_next);
            }
            k_next = kr.end;
            q_min = std::min(q_min, qr.end - qr.begin);
            q_max = std::max(q_max, qr.end - qr.begin);
            k_min = std::min(k_min, kr.end - kr.begin);
            k_max = std::max(k_max, kr.end - kr.begin);
          }
          ASSERT_EQ(q_next, nq);
          ASSERT_EQ(k_next, nk);
          ASSERT_LE(q_max, qc);
          ASSERT_LE(k_max, kc);
          ASSERT_LE(q_max - q_min, 1);
          if (nk >= C) {
            ASSERT_LE(k_max - k_min, 1);
          }
          ASSERT_EQ(C, std::max((nq + qc - 1) / qc, (nk + kc - 1) / kc));
        }
}

TEST(SmyrfClusters, RadixSortIsAStableSortByKey) {
  // Keys with many ties (few distinct values) and with distinct high digits only, around the
  // small-input cut-over.
  std::mt19937_64 rng(3);
  for (std::size_t n : {0, 1, 2, 255, 256, 257, 1000, 5000}) {
    for (std::uint32_t mask : {0x7u, 0xFFFFFFFFu, 0xFFE00000u}) {
      std::vector<detail::KeyIndex> a(n), tmp(n);
      for (std::size_t i = 0; i < n; ++i) a[i] = {static_cast<std::uint32_t>(rng()) & mask, static_cast<std::int32_t>(i)};
      auto b = a;
      std::stable_sort(b.begin(), b.end(), [](const auto& x, const auto& y) { return x.key < y.key; });
      detail::radix_sort(a.data(), tmp.data(), n);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(a[i].key, b[i].key) << n;
        ASSERT_EQ(a[i].index, b[i].index) << n;
      }
    }
  }
}

TEST(SmyrfClusters, DivisibleCaseIsTheOriginalChunking) {
  // N divisible by the cluster size: cluster i is sorted positions [i*c, (i+1)*c).
  for (std::int64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(detail::query_cluster(i, 256, 8).begin, i * 32);
    EXPECT_EQ(detail::key_cluster(i, 64, 8).begin, i * 8);
    EXPECT_EQ(detail::key_cluster(i, 64, 8).end, i * 8 + 8);
  }
}

TEST(Smyrf, ClustersAtLeastSequenceEqualDenseBitwise) {
  Problem pr(2, 2, 77, 91, 24, 24, true, 5);
  EXPECT_TRUE(bitwise_equal(pr.run(cfg(4, 77, 91)), pr.run(DenseConfig{})));
  EXPECT_TRUE(bitwise_equal(pr.run(cfg(4, 1000, 1000)), pr.run(DenseConfig{})));
}

TEST(Smyrf, OneClusterThroughMasksEqualsDenseWithinRule) {
  // Clusters smaller than N, but masks leave fewer tokens than a cluster: the clustered path
  // must then give dense attention.
  Problem pr(2, 2, 100, 100, 16, 16, false, 6);
  pr.random_masks(8, 0.2, 0.2);
  for (std::int64_t b = 0; b < 2; ++b) {
    std::fill(pr.key_mask.begin() + b * 100 + 30, pr.key_mask.begin() + b * 100 + 100, 0);
    std::fill(pr.query_mask.begin() + b * 100 + 30, pr.query_mask.begin() + b * 100 + 100, 0);
  }
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(pr.run(cfg(3, 32, 32)), dense), pr.tolerance());
}

TEST(Smyrf, SameSequenceInAnyBatchSlotGetsSameBits) {
  Problem pr(3, 2, 90, 90, 16, 16, false, 9);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 90; ++i) {
      std::copy_n(pr.q_at(0, h, i), 16, pr.q_at(2, h, i));
      std::copy_n(pr.k_at(0, h, i), 16, pr.k_at(2, h, i));
      std::copy_n(pr.v_at(0, h, i), 16, pr.v_at(2, h, i));
    }
  pr.run(cfg(3, 16, 16));
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 90; ++i)
      for (std::int64_t c = 0; c < 16; ++c) ASSERT_EQ(pr.o_at(0, h, i)[c], pr.o_at(2, h, i)[c]);
}

TEST(Smyrf, MaskedKeysNeverAttendedAndMaskedQueriesZero) {
  Problem pr(2, 2, 120, 120, 16, 16, true, 10);
  pr.random_masks(12, 0.6, 0.7);
  expect_masks_respected(pr, cfg(3, 16, 16));
}

TEST(Smyrf, NoVisibleKeyGivesZeros) {
  Problem pr(2, 1, 64, 64, 8, 8);
  pr.random_masks(1, 1.0, 1.0);
  std::fill(pr.key_mask.begin() + 64, pr.key_mask.end(), 0);  // batch 1 sees nothing
  pr.run(cfg(2, 8, 8));
  for (std::int64_t i = 0; i < 64; ++i)
    for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(1, 0, i)[c], 0.0f);
}

TEST(Smyrf, SingleKeyIsEveryQuerysOutput) {
  // Every one of the 9 clusters gets the one key; each round's output is that key's value and
  // the round merge only reweights equal rows (exact up to the rule's rounding).
  Problem pr(1, 1, 33, 1, 8, 5);
  const auto out = pr.run(cfg(3, 4, 4));
  for (std::int64_t i = 0; i < 33; ++i)
    for (std::int64_t c = 0; c < 5; ++c)
      ASSERT_NEAR(out[static_cast<std::size_t>(i * 5 + c)], pr.v_at(0, 0, 0)[c], pr.tolerance(1));
}

TEST(Smyrf, SeedDecidesClusters) {
  Problem pr(1, 1, 256, 256, 16, 16);
  pr.params.seed = 1;
  const auto a = detail::compute_clusters(pr.params, cfg(2, 16, 16));
  const auto a2 = detail::compute_clusters(pr.params, cfg(2, 16, 16));
  pr.params.seed = 2;
  const auto b = detail::compute_clusters(pr.params, cfg(2, 16, 16));
  EXPECT_EQ(a.q_sorted, a2.q_sorted);
  EXPECT_NE(a.q_sorted, b.q_sorted);
}

TEST(Smyrf, BucketWidthRIsHonoured) {
  Problem pr(1, 1, 256, 256, 16, 16);
  const auto fine = detail::compute_clusters(pr.params, cfg(1, 16, 16));
  const auto mid = detail::compute_clusters(pr.params, cfg(1, 16, 16, Transform::xbox_plus, 4.0f));
  EXPECT_NE(fine.q_sorted, mid.q_sorted);
  // A bucket wider than every projection: one bucket, so tokens stay in position order
  // (with offsets in [0, r), all projections fall in bucket 0 or -1... so check monotone runs).
  const auto wide = detail::compute_clusters(pr.params, cfg(1, 16, 16, Transform::xbox_plus, 1e9f));
  std::vector<std::int32_t> iota(256);
  std::iota(iota.begin(), iota.end(), 0);
  const bool ordered = std::vector<std::int32_t>(wide.q_sorted.begin(), wide.q_sorted.begin() + 256) == iota;
  // Either all in one bucket (ordered), or split in two runs at the bucket boundary.
  std::int64_t descents = 0;
  for (int t = 1; t < 256; ++t) descents += wide.q_sorted[t] < wide.q_sorted[t - 1];
  EXPECT_TRUE(ordered || descents <= 1);
}

TEST(Smyrf, XboxPlusTransformPreservesInnerProducts) {
  // q' = [q, 0, e_q], k' = [k, e_k, 0]: q'.k' = q.k and |q'| = |k'| = sqrt(MQ^2 + MK^2).
  const SmyrfConfig c = cfg(1, 4, 4);
  const detail::NormStats st{9.0, 16.0};  // MQ = 3, MK = 4
  const double qn2 = 4.0, kn2 = 7.0;
  const auto q = detail::transform_token(c, true, qn2, st);
  const auto k = detail::transform_token(c, false, kn2, st);
  ASSERT_EQ(q.extra, 2);
  EXPECT_EQ(q.alpha, 1.0);
  EXPECT_EQ(q.ext[0] * k.ext[0] + q.ext[1] * k.ext[1], 0.0);  // appended parts orthogonal
  EXPECT_NEAR(qn2 + q.ext[0] * q.ext[0] + q.ext[1] * q.ext[1], 25.0, 1e-12);
  EXPECT_NEAR(kn2 + k.ext[0] * k.ext[0] + k.ext[1] * k.ext[1], 25.0, 1e-12);
  // A norm above the max (not possible for real data) is clamped, never NaN.
  EXPECT_EQ(detail::transform_token(c, false, 26.0, st).ext[0], 0.0);
}

TEST(Smyrf, L2AlshAndH2AlshTransforms) {
  const detail::NormStats st{9.0, 16.0};
  // L2-ALSH key of norm 2 scaled by U/MK: appended |k'|^2, |k'|^4, |k'|^8.
  const auto l2k = detail::transform_token(cfg(1, 4, 4, Transform::l2_alsh), false, 4.0, st);
  const double u = static_cast<double>(0.83f);
  ASSERT_EQ(l2k.extra, 3);
  EXPECT_DOUBLE_EQ(l2k.alpha, u / 4.0);
  const double kk = (u / 4.0) * (u / 4.0) * 4.0;
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(l2k.ext[i], std::pow(kk, 1 << i), 1e-15);
  // L2-ALSH query: unit norm, appended 1/2s.
  const auto l2q = detail::transform_token(cfg(1, 4, 4, Transform::l2_alsh), true, 4.0, st);
  EXPECT_DOUBLE_EQ(l2q.alpha, 0.5);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(l2q.ext[i], 0.5);
  // H2-ALSH (QNF): the query scaled to the largest key norm, 4 / |q| = 2.
  const auto h2q = detail::transform_token(cfg(1, 4, 4, Transform::h2_alsh), true, 4.0, st);
  EXPECT_DOUBLE_EQ(h2q.alpha, 2.0);
  const auto h2k = detail::transform_token(cfg(1, 4, 4, Transform::h2_alsh), false, 7.0, st);
  EXPECT_DOUBLE_EQ(h2k.ext[0], 3.0);  // sqrt(16 - 7)
  // Zero-norm queries are scaled by 0, not NaN.
  EXPECT_EQ(detail::transform_token(cfg(1, 4, 4, Transform::h2_alsh), true, 0.0, st).alpha, 0.0);
}

TEST(Smyrf, HashRoundsOnceToFloatAndQuantisesWithR) {
  const detail::NormStats st{9.0, 16.0};
  SmyrfConfig c = cfg(1, 4, 4);
  const auto t = detail::transform_token(c, false, 7.0, st);
  const double a_ext[2] = {0.5, -1.0};
  const double p = std::fma(t.ext[1], -1.0, std::fma(t.ext[0], 0.5, 1.0 / 3.0));
  EXPECT_EQ(detail::hash_from(c, t, 1.0 / 3.0, a_ext, 1, 0.0), static_cast<float>(p));
  c.r = 0.25f;
  EXPECT_EQ(detail::hash_from(c, t, 1.0 / 3.0, a_ext, 1, 0.1), static_cast<float>(std::floor((p + 0.1) / 0.25)));
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(SmyrfQuality, LshClustersBeatContentBlindClustersAndImproveWithHashes) {
  // Clustered inputs (peaked attention, as in trained models): 256 centres, 4 keys each.
  // SMYRF's LSH clusters must approximate dense attention better than content-blind clusters
  // of the same size (r huge = one bucket = blocks of consecutive positions, and positions
  // are unrelated to content here), and more hashes / bigger clusters must help.
  Problem pr(1, 1, 1024, 1024, 32, 32, false, 21);
  pr.fill_clustered(22, 256, 12.0f, 0.3f);
  const auto exact = pr.run(DenseConfig{});
  const double e1 = rel_error(pr.run(cfg(1, 32, 32)), exact);
  const double e8 = rel_error(pr.run(cfg(8, 32, 32)), exact);
  const double e8_big = rel_error(pr.run(cfg(8, 128, 128)), exact);
  const double blind = rel_error(pr.run(cfg(8, 32, 32, Transform::xbox_plus, 1e9f)), exact);
  RecordProperty("rel_err_1hash", std::to_string(e1));
  RecordProperty("rel_err_8hash", std::to_string(e8));
  RecordProperty("rel_err_8hash_cluster128", std::to_string(e8_big));
  RecordProperty("rel_err_content_blind", std::to_string(blind));
  EXPECT_LT(e8, 0.75 * e1);
  EXPECT_LT(e8_big, 0.75 * e8);
  EXPECT_LT(e8, 0.6 * blind);
}

// ---- KeySelection::centroid ----

SmyrfConfig centroid_cfg(int qc, int kc) {
  SmyrfConfig c = cfg(1, qc, kc);
  c.keys = KeySelection::centroid;
  return c;
}

struct CentroidCase {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks;
  int qc, kc;
  float scale = 0.0f;
};

class SmyrfCentroid : public ::testing::TestWithParam<CentroidCase> {
 protected:
  Problem make() const {
    const CentroidCase& c = GetParam();
    Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 31 + c.Nq);
    if (c.masks) pr.random_masks(5 + c.Nk, 0.7, 0.8);
    if (c.scale != 0.0f) pr.params.scale = c.scale;
    return pr;
  }
  SmyrfConfig config() const { return centroid_cfg(GetParam().qc, GetParam().kc); }
};

TEST_P(SmyrfCentroid, SelectedKeysEqualScalarReferenceExactly) {
  Problem pr = make();
  EXPECT_EQ(detail::centroid_keys(pr.params, config()), reference::selections(pr.params, config()));
}

TEST_P(SmyrfCentroid, OutputMatchesScalarReferenceWithinRule) {
  Problem pr = make();
  const auto ref = reference::attention(pr.params, config()).o_f32();
  const auto fast = pr.run(config());
  EXPECT_LE(max_abs_diff(fast, ref), pr.tolerance(GetParam().kc));
}

TEST_P(SmyrfCentroid, SameBitsAtOneTwoAndThreeThreads) {
  Problem pr = make();
  const auto one = pr.run(config(), 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(config(), 2)));
  EXPECT_TRUE(bitwise_equal(one, pr.run(config(), 3)));
}

TEST_P(SmyrfCentroid, MasksRespected) {
  Problem pr = make();
  if (pr.key_mask.empty()) pr.random_masks(9, 0.7, 0.8);
  expect_masks_respected(pr, config());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SmyrfCentroid,
    ::testing::Values(CentroidCase{"text_like", 1, 4, 128, 128, 64, 64, false, false, 16, 56},
                      CentroidCase{"ragged_padded", 2, 3, 113, 97, 24, 40, true, false, 16, 20},
                      CentroidCase{"masks", 3, 2, 150, 140, 32, 32, true, true, 16, 24},
                      CentroidCase{"big_groups_tiles", 1, 1, 300, 600, 32, 32, false, false, 100, 300},
                      CentroidCase{"negative_scale", 1, 1, 90, 90, 16, 16, false, false, 8, 12, -0.25f},
                      CentroidCase{"more_keys_than_visible", 1, 2, 40, 10, 8, 8, false, true, 16, 32}),
    [](const auto& info) { return info.param.name; });

TEST(SmyrfCentroid, AllKeysIsDense) {
  // Choosing every visible key is exact attention, whatever the query clusters.
  Problem pr(2, 2, 77, 65, 16, 16, true, 3);
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(pr.run(centroid_cfg(8, 65)), dense), pr.tolerance());
}

TEST(SmyrfCentroid, PicksTheKeysOfTheClusterMeanQuery) {
  // Two query clusters pointing at e0 and e1; keys 0..3 along e0 with growing norm, 4..7
  // along e1. With 2 keys per cluster, cluster 0 takes keys 2, 3 and cluster 1 keys 6, 7.
  Problem pr(1, 1, 4, 8, 2, 1, false, 1);
  for (int i = 0; i < 4; ++i) {
    pr.q_at(0, 0, i)[0] = i < 2 ? 1.0f : 0.0f;
    pr.q_at(0, 0, i)[1] = i < 2 ? 0.0f : 1.0f;
  }
  for (int j = 0; j < 8; ++j) {
    pr.k_at(0, 0, j)[0] = j < 4 ? 1.0f + j : 0.0f;
    pr.k_at(0, 0, j)[1] = j < 4 ? 0.0f : 1.0f + (j - 4);
    pr.v_at(0, 0, j)[0] = static_cast<float>(j);
  }
  const std::vector<std::vector<std::int32_t>> expected{{2, 3}, {6, 7}};
  EXPECT_EQ(detail::centroid_keys(pr.params, centroid_cfg(2, 2)), expected);
}

TEST(SmyrfCentroid, RejectsSeveralRounds) {
  Problem pr(1, 1, 8, 8, 4, 4);
  SmyrfConfig c = centroid_cfg(4, 4);
  c.n_hashes = 2;
  try {
    pr.run(c);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SmyrfConfig.n_hashes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace smyrf::test
