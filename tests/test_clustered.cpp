// Clustered and improved clustered attention against the double-precision oracle, dense
// attention, and their own invariants.
//
// Tolerance: Problem::tolerance(Nk) (tests/test_util.h) for every float comparison with the
// oracle or dense. Why it applies: plain clustered is one softmax over the n_k visible keys per
// centroid, and the centroid is a mean of queries, so its logits are bounded by the same L as
// the queries' (sum_t |qbar_t k_t| <= max_i sum_t |q_it k_t|); the centroid itself is the
// same f32 value in the fast path and the oracle (both round the double mean once). Improved:
// O_i = m_c o_i + r_c adds the error of o_i (a softmax over |T_c| <= n_k keys, scaled by
// m_c <= 1), |o_i| times the error of m_c (a sum of n_k f32 weights in double) and that of r_c
// (the complement of the same softmax): each of the order of eps max|V| (L + log2 n_k), well
// inside the rule's factor 16. The lse is compared with the rule divided by max|V|, plus a few
// ulps of |lse|. Integer results (codes, clusters, T_c) must be equal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "api/inspect.h"
#include "hwy/targets.h"
#include "methods/clustered/clustered.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

ClusteredConfig cfg(int clusters, int topk = 0, int bits = 63, int iterations = 10) {
  ClusteredConfig c;
  c.n_clusters = clusters;
  c.hash_bits = bits;
  c.iterations = iterations;
  c.topk = topk;
  return c;
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks;
  ClusteredConfig config;
  float scale = 0.0f;        // 0 = default 1/sqrt(d)
  bool broadcast_kv = false;  // K and V head strides 0 (every head reads head 0)
};

std::vector<Case> cases() {
  return {
      {"plain_square", 1, 1, 100, 100, 32, 32, false, false, cfg(10)},
      {"improved_square", 1, 1, 100, 100, 32, 32, false, false, cfg(10, 16)},
      {"n1_plain", 1, 1, 1, 1, 8, 8, false, false, cfg(4)},
      {"n1_improved", 1, 1, 1, 1, 8, 8, false, false, cfg(4, 3)},
      {"n7_odd", 2, 2, 7, 7, 5, 3, true, false, cfg(3, 3)},
      {"n257_padded", 1, 2, 257, 257, 64, 48, true, false, cfg(20, 32)},
      {"n257_plain_padded", 2, 1, 257, 257, 24, 40, true, false, cfg(20)},
      {"cross_fewer_keys", 2, 1, 100, 37, 16, 24, false, false, cfg(9, 8)},
      {"cross_more_keys_plain", 1, 2, 31, 200, 16, 16, true, false, cfg(8)},
      {"masks_improved", 3, 2, 150, 140, 32, 32, true, true, cfg(12, 16)},
      {"masks_plain", 3, 2, 150, 140, 32, 32, true, true, cfg(12)},
      {"few_bits_many_ties", 1, 2, 120, 120, 16, 16, false, false, cfg(10, 10, 3)},
      {"one_bit", 1, 1, 60, 60, 8, 8, false, false, cfg(5, 4, 1)},
      {"bits64", 2, 1, 90, 90, 16, 16, false, false, cfg(7, 5, 64)},
      {"negative_scale", 1, 2, 90, 90, 16, 16, false, false, cfg(6, 12), -0.3f},
      {"clusters_exceed_queries", 1, 1, 50, 70, 8, 8, false, false, cfg(1000, 6)},
      {"iterations0", 2, 2, 80, 80, 16, 16, false, true, cfg(8, 8, 63, 0)},
      {"d1", 1, 1, 97, 97, 1, 1, false, false, cfg(5, 9)},
      {"long_keys_multi_pack", 1, 1, 64, 1500, 16, 16, false, false, cfg(4, 40)},
      {"many_live_tiles", 2, 2, 300, 120, 8, 8, false, false, cfg(300, 6)},
      {"topk_exceeds_keys", 2, 2, 40, 30, 16, 16, true, true, cfg(5, 1000)},
      {"broadcast_kv", 2, 3, 64, 64, 16, 16, true, false, cfg(6, 7), 0.0f, true},
  };
}

Problem make_problem(const Case& c) {
  Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 31 + static_cast<std::uint64_t>(c.Nq));
  if (c.masks) pr.random_masks(7 + static_cast<std::uint64_t>(c.Nk), 0.7, 0.8);
  if (c.scale != 0.0f) pr.params.scale = c.scale;
  if (c.broadcast_kv) {
    pr.params.k_head_stride = 0;
    pr.params.v_head_stride = 0;
  }
  pr.params.seed = 1234;
  return pr;
}

// lse within the rule (divided by max|V|) plus a few ulps of the value; -inf exactly.
void expect_lse_near(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], want[i]) << i;
      continue;
    }
    EXPECT_NEAR(got[i], want[i], tol + 4e-7 * std::abs(want[i])) << i;
  }
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ClusteredCases : public ::testing::TestWithParam<Case> {};

TEST_P(ClusteredCases, CodesClustersAndKeySetsEqualOracleExactly) {
  Problem pr = make_problem(GetParam());
  const ClusteredConfig& config = GetParam().config;
  const auto fast = detail::clustered_inspect(pr.params, config);
  const auto ref = reference::clusters(pr.params, config);
  EXPECT_EQ(fast.max_clusters, ref.max_clusters);
  EXPECT_EQ(fast.n_clusters, ref.n_clusters);
  EXPECT_EQ(fast.codes, ref.codes);
  EXPECT_EQ(fast.cluster, ref.cluster);
  EXPECT_EQ(fast.top_keys, ref.top_keys);
  // Sanity of the layout: every active query has a cluster in [0, C), masked ones -1, and
  // T_c has min(topk, n_k) distinct visible keys for every cluster with members.
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      std::set<int> used;
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const int c = fast.cluster[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)];
        const bool active = pr.query_mask.empty() || pr.query_mask[static_cast<std::size_t>(b * pr.Nq + i)];
        if (!active) {
          EXPECT_EQ(c, -1);
          continue;
        }
        ASSERT_GE(c, 0);
        ASSERT_LT(c, fast.n_clusters[static_cast<std::size_t>(b)]);
        used.insert(c);
      }
      std::int64_t nk = 0;
      for (std::int64_t j = 0; j < pr.Nk; ++j) nk += pr.key_mask.empty() || pr.key_mask[static_cast<std::size_t>(b * pr.Nk + j)];
      for (int c = 0; c < fast.max_clusters; ++c) {
        const auto& top = fast.top_keys[static_cast<std::size_t>((b * pr.H + h) * fast.max_clusters + c)];
        const std::size_t want = (config.topk > 0 && used.count(c) && nk > 0)
                                     ? static_cast<std::size_t>(std::min<std::int64_t>(config.topk, nk))
                                     : 0;
        ASSERT_EQ(top.size(), want);
        for (std::size_t u = 0; u < top.size(); ++u) {
          if (u > 0) {
            ASSERT_LT(top[u - 1], top[u]);
          }
          if (!pr.key_mask.empty()) {
            ASSERT_TRUE(pr.key_mask[static_cast<std::size_t>(b * pr.Nk + top[u])]);
          }
        }
      }
    }
}

TEST_P(ClusteredCases, OutputAndLseMatchOracleWithinRule) {
  Problem pr = make_problem(GetParam());
  const ClusteredConfig& config = GetParam().config;
  const std::size_t n_lse = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse(n_lse);
  const reference::Output oracle = reference::attention(pr.params, config);
  const auto ref = oracle.o_f32();
  const auto lse_ref = oracle.lse_f32();
  pr.params.lse = lse.data();
  const auto fast = pr.run(config);
  const double tol = pr.tolerance(pr.Nk);
  EXPECT_LE(max_abs_diff(fast, ref), tol);
  expect_lse_near(lse, lse_ref, tol / std::max(max_abs_v(pr), 1e-30));
}

TEST_P(ClusteredCases, SameBitsAtOneTwoAndThreeThreads) {
  Problem pr = make_problem(GetParam());
  const std::size_t n_lse = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> l1(n_lse), l2(n_lse), l3(n_lse);
  pr.params.lse = l1.data();
  const auto one = pr.run(GetParam().config, 1);
  pr.params.lse = l2.data();
  const auto two = pr.run(GetParam().config, 2);
  pr.params.lse = l3.data();
  const auto three = pr.run(GetParam().config, 3);
  EXPECT_TRUE(bitwise_equal(one, two));
  EXPECT_TRUE(bitwise_equal(one, three));
  EXPECT_TRUE(bitwise_equal(l1, l2));
  EXPECT_TRUE(bitwise_equal(l1, l3));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ClusteredCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Clustered, MasksRespected) {
  for (const ClusteredConfig& config : {cfg(12), cfg(12, 16)}) {
    Problem pr(3, 2, 150, 140, 32, 32, true, 9);
    pr.random_masks(11, 0.6, 0.7);
    expect_masks_respected(pr, config);
  }
}

TEST(Clustered, FullyMaskedBatchElements) {
  // Batch 1: no visible key (O = 0, lse = -inf); batch 2: no active query; batch 0 normal.
  for (const ClusteredConfig& config : {cfg(6), cfg(6, 9)}) {
    Problem pr(3, 2, 40, 50, 16, 16, true, 21);
    pr.random_masks(5, 0.8, 0.9);
    std::fill_n(pr.key_mask.begin() + 50, 50, 0);
    std::fill_n(pr.query_mask.begin() + 80, 40, 0);
    const std::size_t n_lse = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
    std::vector<float> lse(n_lse);
    const auto ref = reference::attention(pr.params, config).o_f32();
    pr.params.lse = lse.data();
    const auto fast = pr.run(config);
    EXPECT_LE(max_abs_diff(fast, ref), pr.tolerance(pr.Nk));
    for (std::int64_t b = 1; b < 3; ++b)
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int64_t i = 0; i < pr.Nq; ++i) {
          for (std::int64_t c = 0; c < pr.dv; ++c) ASSERT_EQ(pr.o_at(b, h, i)[c], 0.0f);
          ASSERT_EQ(lse[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)],
                    -std::numeric_limits<float>::infinity());
        }
    const auto fast_cl = detail::clustered_inspect(pr.params, config);
    const auto ref_cl = reference::clusters(pr.params, config);
    EXPECT_EQ(fast_cl.cluster, ref_cl.cluster);
    EXPECT_EQ(fast_cl.top_keys, ref_cl.top_keys);
    EXPECT_EQ(fast_cl.n_clusters[2], 0);
  }
}

TEST(Clustered, Bf16InputsEqualF32OnTheRoundedValuesAndTheOracle) {
  for (const ClusteredConfig& config : {cfg(8), cfg(8, 12)}) {
    Problem pr(2, 2, 101, 77, 24, 20, true, 13);
    pr.random_masks(3, 0.8, 0.9);
    pr.use_bf16();
    const auto fast_cl = detail::clustered_inspect(pr.params, config);
    const auto ref_cl = reference::clusters(pr.params, config);
    EXPECT_EQ(fast_cl.codes, ref_cl.codes);
    EXPECT_EQ(fast_cl.cluster, ref_cl.cluster);
    EXPECT_EQ(fast_cl.top_keys, ref_cl.top_keys);
    const auto bf16 = pr.run(config);
    const auto ref = reference::attention(pr.params, config).o_f32();
    EXPECT_LE(max_abs_diff(bf16, ref), pr.tolerance(pr.Nk));
    // The same values as f32: bf16 -> f32 is exact wherever the kernels read, so same bits.
    pr.use_f32();
    EXPECT_TRUE(bitwise_equal(bf16, pr.run(config)));
  }
}

TEST(Clustered, EveryQueryItsOwnClusterEqualsDense) {
  // 64-bit codes of random queries are distinct; with n_clusters >= n_q every query is its
  // own cluster and its own centroid: plain clustered attention is exact attention.
  Problem pr(2, 2, 120, 90, 32, 24, true, 41);
  const ClusteredConfig config = cfg(500, 0, 64, 3);
  const auto cl = detail::clustered_inspect(pr.params, config);
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    std::set<std::uint64_t> codes(cl.codes.begin() + bh * pr.Nq, cl.codes.begin() + (bh + 1) * pr.Nq);
    ASSERT_EQ(codes.size(), static_cast<std::size_t>(pr.Nq)) << "codes not distinct";
    std::set<int> ids(cl.cluster.begin() + bh * pr.Nq, cl.cluster.begin() + (bh + 1) * pr.Nq);
    ASSERT_EQ(ids.size(), static_cast<std::size_t>(pr.Nq));
  }
  const std::size_t n_lse = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse(n_lse), lse_dense(n_lse);
  pr.params.lse = lse_dense.data();
  const auto dense = pr.run(DenseConfig{});
  pr.params.lse = lse.data();
  const auto fast = pr.run(config);
  const double tol = pr.tolerance(pr.Nk);
  EXPECT_LE(max_abs_diff(fast, dense), tol);
  expect_lse_near(lse, lse_dense, tol / max_abs_v(pr));
}

TEST(Clustered, ImprovedWithTopkCoveringAllKeysEqualsDense) {
  // T_c = every visible key: m_c = 1 and r_c = 0 exactly, each query attends to all its keys.
  for (bool masks : {false, true}) {
    Problem pr(2, 3, 130, 110, 32, 16, true, 43);
    if (masks) pr.random_masks(17, 0.7, 0.8);
    const std::size_t n_lse = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
    std::vector<float> lse(n_lse), lse_dense(n_lse);
    pr.params.lse = lse_dense.data();
    const auto dense = pr.run(DenseConfig{});
    for (int topk : {110, 111, 5000}) {
      pr.params.lse = lse.data();
      const auto fast = pr.run(cfg(7, topk));
      const double tol = pr.tolerance(pr.Nk);
      EXPECT_LE(max_abs_diff(fast, dense), tol) << topk;
      expect_lse_near(lse, lse_dense, tol / max_abs_v(pr));
    }
  }
}

TEST(Clustered, ImprovedDiffersFromPlainAndIsCloserToDense) {
  // On peaked data the exact top-k part must move the output towards dense attention.
  Problem pr(1, 2, 256, 256, 32, 32, false, 3);
  pr.fill_clustered(8, 6, 8.0f, 0.5f);
  const auto dense = pr.run(DenseConfig{});
  const auto plain = pr.run(cfg(8));
  const auto improved = pr.run(cfg(8, 32));
  EXPECT_GT(max_abs_diff(plain, improved), 1e-3);
  double e_plain = 0, e_improved = 0;
  for (std::size_t i = 0; i < dense.size(); ++i) {
    e_plain += (plain[i] - dense[i]) * (plain[i] - dense[i]);
    e_improved += (improved[i] - dense[i]) * (improved[i] - dense[i]);
  }
  EXPECT_LT(e_improved, e_plain);
}

TEST(Clustered, IterationCountChangesAssignments) {
  Problem pr(1, 2, 300, 100, 32, 16, false, 77);
  const auto zero = detail::clustered_inspect(pr.params, cfg(10, 0, 63, 0));
  const auto ten = detail::clustered_inspect(pr.params, cfg(10, 0, 63, 10));
  EXPECT_EQ(zero.codes, ten.codes);
  EXPECT_NE(zero.cluster, ten.cluster);
  EXPECT_EQ(ten.cluster, reference::clusters(pr.params, cfg(10, 0, 63, 10)).cluster);
  EXPECT_EQ(zero.cluster, reference::clusters(pr.params, cfg(10, 0, 63, 0)).cluster);
}

TEST(Clustered, BothKMeansSchedulesEqualOracle) {
  // k-means per (b, h) in one task, or step by step over chunks of queries (what one long head
  // gets): the same clusters as the oracle, and the same output bits at 1, 2 and 3 threads.
  for (const ClusteredConfig& config : {cfg(8, 5, 63, 6), cfg(40, 0, 20, 10)}) {
    Problem pr(2, 1, 1500, 24, 8, 8, false, 12);
    pr.random_masks(4, 0.9, 0.9);
    const auto ref = reference::clusters(pr.params, config);
    std::vector<float> first;
    for (auto schedule : {detail::KMeansSchedule::per_head, detail::KMeansSchedule::chunked})
      for (int threads : {1, 2, 3}) {
        pr.params.num_threads = threads;
        const auto fast = detail::clustered_inspect(pr.params, config, schedule);
        EXPECT_EQ(fast.codes, ref.codes);
        EXPECT_EQ(fast.cluster, ref.cluster);
        EXPECT_EQ(fast.top_keys, ref.top_keys);
        if (first.empty()) first = pr.output();
        EXPECT_TRUE(bitwise_equal(first, pr.output()));
      }
  }
}

TEST(Clustered, EqualCentroidLogitsGoToTheLowerPosition) {
  // Keys in identical pairs (2j, 2j + 1): every logit is tied with its twin, in f32 and in
  // double, so T_c must take the lower position of a pair first (oracle: the same rule).
  Problem pr(1, 2, 64, 80, 16, 16, true, 19);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t j = 1; j < 80; j += 2) std::copy_n(pr.k_at(0, h, j - 1), 16, pr.k_at(0, h, j));
  for (int topk : {1, 7, 8, 33}) {
    const auto fast = detail::clustered_inspect(pr.params, cfg(6, topk));
    EXPECT_EQ(fast.top_keys, reference::clusters(pr.params, cfg(6, topk)).top_keys);
    for (const auto& top : fast.top_keys) {
      if (top.empty()) continue;
      // An odd count takes exactly one lone even position; each odd key comes with its twin.
      int lone = 0;
      for (std::int32_t j : top)
        if (j % 2 == 1) {
          EXPECT_TRUE(std::binary_search(top.begin(), top.end(), j - 1)) << j;
        } else {
          lone += std::binary_search(top.begin(), top.end(), j + 1) ? 0 : 1;
        }
      EXPECT_EQ(lone, topk % 2);
    }
  }
  // Scale 0: every logit is 0, T_c = the first topk visible keys.
  pr.params.scale = 0.0f;
  pr.random_masks(2, 0.7, 1.0);
  const auto zero = detail::clustered_inspect(pr.params, cfg(3, 5));
  std::vector<std::int32_t> first;
  for (std::int32_t j = 0; j < 80 && first.size() < 5; ++j)
    if (pr.key_mask[static_cast<std::size_t>(j)]) first.push_back(j);
  for (const auto& top : zero.top_keys) {
    if (!top.empty()) {
      EXPECT_EQ(top, first);
    }
  }
}

TEST(Clustered, SeedDecidesHyperplanes) {
  Problem pr(1, 2, 120, 120, 16, 16, false, 5);
  pr.params.seed = 1;
  const auto a = detail::clustered_inspect(pr.params, cfg(8, 8));
  const auto out_a = pr.output();
  pr.params.seed = 2;
  const auto b = detail::clustered_inspect(pr.params, cfg(8, 8));
  const auto out_b = pr.output();
  EXPECT_NE(a.codes, b.codes);
  EXPECT_NE(a.cluster, b.cluster);
  EXPECT_GT(max_abs_diff(out_a, out_b), 1e-4);
  // Same seed: same bits.
  pr.params.seed = 1;
  EXPECT_EQ(detail::clustered_inspect(pr.params, cfg(8, 8)).codes, a.codes);
  EXPECT_TRUE(bitwise_equal(pr.output(), out_a));
}

TEST(Clustered, HeadsUseTheirOwnHyperplanesAndBatchSlotsDoNot) {
  // Same data in both heads and both batch slots: heads get different codes (different
  // hyperplanes), batch slots the same ones.
  Problem pr(2, 2, 50, 50, 8, 8, false, 6);
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < 50; ++i) {
        std::copy_n(pr.q_at(0, 0, i), 8, pr.q_at(b, h, i));
        std::copy_n(pr.k_at(0, 0, i), 8, pr.k_at(b, h, i));
        std::copy_n(pr.v_at(0, 0, i), 8, pr.v_at(b, h, i));
      }
  const auto cl = detail::clustered_inspect(pr.params, cfg(5, 4));
  auto codes = [&](std::int64_t b, std::int64_t h) {
    return std::vector<std::uint64_t>(cl.codes.begin() + (b * 2 + h) * 50, cl.codes.begin() + (b * 2 + h + 1) * 50);
  };
  EXPECT_NE(codes(0, 0), codes(0, 1));
  EXPECT_EQ(codes(0, 0), codes(1, 0));
  EXPECT_EQ(codes(0, 1), codes(1, 1));
}

TEST(Clustered, RunInfoCountsScores) {
  Problem pr(2, 2, 200, 150, 16, 16, false, 8);
  for (int topk : {0, 20}) {
    const ClusteredConfig config = cfg(12, topk);
    const auto cl = detail::clustered_inspect(pr.params, config);
    std::size_t expected = 0;
    for (std::int64_t bh = 0; bh < 4; ++bh) {
      const std::set<int> live(cl.cluster.begin() + bh * 200, cl.cluster.begin() + (bh + 1) * 200);
      expected += live.size() * 150 + (topk > 0 ? 200u * static_cast<std::size_t>(topk) : 0u);
    }
    const RunInfo info = attention(pr.params, config);
    EXPECT_EQ(info.attention_scores, expected);
    EXPECT_GT(info.workspace_bytes, 0u);
    EXPECT_GT(info.seconds_total, 0.0);
    EXPECT_GT(info.attention.seconds, 0.0);
    // A reused workspace gives the same bits.
    Workspace ws;
    const auto first = pr.output();
    attention(pr.params, config, &ws);
    attention(pr.params, config, &ws);
    EXPECT_TRUE(bitwise_equal(first, pr.output()));
  }
}

TEST(Clustered, NonFiniteInputsWithoutCheckDoNotCrash) {
  // check_finite = false: unspecified values, but no crash (NaN logits rank last in T_c).
  Problem pr(1, 2, 70, 90, 16, 16, false, 23);
  pr.q_at(0, 0, 3)[2] = std::numeric_limits<float>::quiet_NaN();
  pr.k_at(0, 1, 5)[0] = std::numeric_limits<float>::infinity();
  pr.k_at(0, 0, 7)[1] = std::numeric_limits<float>::quiet_NaN();
  pr.v_at(0, 0, 9)[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(pr.run(cfg(6, 10)), Error);
  pr.params.check_finite = false;
  for (const ClusteredConfig& config : {cfg(6), cfg(6, 10), cfg(6, 89)}) {
    const auto cl = detail::clustered_inspect(pr.params, config);
    for (const auto& top : cl.top_keys) EXPECT_TRUE(top.empty() || top.size() == static_cast<std::size_t>(config.topk));
  }
}

TEST(Clustered, EverySimdTargetMatchesOracle) {
  // Each target this CPU supports, forced in turn. The hash is bit-exact on all of them (a
  // vector fma where the target has one, else the correctly rounded scalar fma).
  Problem pr(2, 2, 90, 70, 24, 16, true, 29);
  pr.random_masks(8, 0.8, 0.9);
  const auto ref_plain = reference::clusters(pr.params, cfg(7));
  const auto ref_improved = reference::clusters(pr.params, cfg(7, 9));
  const auto ref = reference::attention(pr.params, cfg(7, 9)).o_f32();
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().DeInit();
    const auto plain = detail::clustered_inspect(pr.params, cfg(7));
    const auto improved = detail::clustered_inspect(pr.params, cfg(7, 9));
    EXPECT_EQ(plain.codes, ref_plain.codes) << hwy::TargetName(target);
    EXPECT_EQ(plain.cluster, ref_plain.cluster) << hwy::TargetName(target);
    EXPECT_EQ(improved.top_keys, ref_improved.top_keys) << hwy::TargetName(target);
    EXPECT_LE(max_abs_diff(pr.output(), ref), pr.tolerance(pr.Nk)) << hwy::TargetName(target);
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().DeInit();
}

void expect_error_naming(const AttentionParams& params, const ClusteredConfig& config,
                         const std::string& name) {
  try {
    attention(params, config);
    ADD_FAILURE() << "no error for " << name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(Clustered, RejectsCausalDropoutAndBadConfigs) {
  Problem pr(1, 1, 16, 16, 8, 8);
  pr.params.causal = true;
  expect_error_naming(pr.params, cfg(4), "params.causal");
  expect_error_naming(pr.params, cfg(4, 3), "params.causal");
  EXPECT_THROW(detail::clustered_inspect(pr.params, cfg(4)), Error);
  // Dropout is supported, causal dropout is not.
  pr.params.dropout = 0.1f;
  expect_error_naming(pr.params, cfg(4, 3), "params.causal");
  pr.params.causal = false;
  pr.params.dropout = 0.0f;
  expect_error_naming(pr.params, cfg(0), "ClusteredConfig.n_clusters");
  expect_error_naming(pr.params, cfg(4, 0, 0), "ClusteredConfig.hash_bits");
  expect_error_naming(pr.params, cfg(4, 0, 65), "ClusteredConfig.hash_bits");
  expect_error_naming(pr.params, cfg(4, 0, 63, -1), "ClusteredConfig.iterations");
  expect_error_naming(pr.params, cfg(4, -1), "ClusteredConfig.topk");
  // The failed calls left O untouched (NaN-filled by the fixture).
  EXPECT_TRUE(std::isnan(pr.o_at(0, 0, 0)[0]));
}

}  // namespace
}  // namespace smyrf::test
