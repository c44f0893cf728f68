// Reformer LSH attention against its double-precision oracle (src/reference/reference.h),
// dense attention in its one- and two-chunk limits, and its own invariants.
//
// Tolerances: outputs follow the suite's rule (test_util.h, Problem::tolerance(n)) with n the
// largest multiset of (round, key) any query attends to (from the oracle). With shared_qk the
// keys are the normalised queries, not the K tensor the rule reads, so those tests first write
// q_j / |q_j| into K (which shared_qk never reads) and the rule's logit bound L is that of the
// actual keys. The logsumexp is compared with tolerance(n) / max|V| = 16 eps (1 + L +
// log2(n + 1)): the same bound on the logit errors, without the factor max|V| that only the
// output's weighted sum of V carries. Integer results (buckets, sorted orders, chunk counts,
// scores computed) must be equal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "api/inspect.h"
#include "hwy/targets.h"
#include "methods/reformer/reformer.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

ReformerConfig cfg(int hashes, int buckets, int chunk, bool shared) {
  ReformerConfig c;
  c.n_hashes = hashes;
  c.n_buckets = buckets;
  c.chunk_size = chunk;
  c.shared_qk = shared;
  return c;
}

// K <- the normalised queries (rounded to float), so that tolerance() bounds the real logits.
void normalise_k(Problem& pr) {
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t j = 0; j < pr.Nk; ++j) {
        double n2 = 0;
        for (std::int64_t t = 0; t < pr.d; ++t) n2 += double(pr.q_at(b, h, j)[t]) * pr.q_at(b, h, j)[t];
        for (std::int64_t t = 0; t < pr.d; ++t)
          pr.k_at(b, h, j)[t] = n2 > 0 ? float(pr.q_at(b, h, j)[t] / std::sqrt(n2)) : 0.0f;
      }
}

std::vector<float> as_float(const std::vector<double>& x) { return {x.begin(), x.end()}; }

// Largest multiset over queries, and the scores the fast path computes (one round when C == 1).
struct SetStats {
  std::int64_t max_multiset = 1;
  std::size_t computed = 0;
};
SetStats set_stats(const reference::Output& ref, const reference::ReformerBuckets& bk) {
  SetStats s;
  for (std::int64_t b = 0; b < ref.B; ++b)
    for (std::int64_t h = 0; h < ref.H; ++h)
      for (std::int64_t i = 0; i < ref.Nq; ++i) {
        std::int64_t total = 0;
        for (int r = 0; r < ref.rounds; ++r) {
          const std::int64_t n = ref.set_size[static_cast<std::size_t>(((b * ref.H + h) * ref.rounds + r) * ref.Nq + i)];
          total += n;
          if (r == 0 || bk.n_chunks[static_cast<std::size_t>(b)] > 1) s.computed += static_cast<std::size_t>(n);
        }
        s.max_multiset = std::max(s.max_multiset, total);
      }
  return s;
}

void expect_same_buckets(const AttentionParams& params, const ReformerConfig& c,
                         const reference::ReformerBuckets& ref, const std::string& what) {
  const detail::ReformerBuckets fast = detail::reformer_buckets(params, c);
  EXPECT_EQ(fast.q_count, ref.q_count) << what;
  EXPECT_EQ(fast.k_count, ref.k_count) << what;
  EXPECT_EQ(fast.n_chunks, ref.n_chunks) << what;
  EXPECT_EQ(fast.q_bucket, ref.q_bucket) << what;
  EXPECT_EQ(fast.k_bucket, ref.k_bucket) << what;
  EXPECT_EQ(fast.q_sorted, ref.q_sorted) << what;
  EXPECT_EQ(fast.k_sorted, ref.k_sorted) << what;
}

// Runs the fast path (with lse) and the oracle on pr and compares everything.
void check_against_oracle(Problem& pr, const ReformerConfig& c, const std::string& what) {
  std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), 123.0f);
  pr.params.lse = lse.data();
  pr.params.num_threads = 2;
  const RunInfo info = attention(pr.params, c);
  pr.params.lse = nullptr;
  const auto out = pr.output();
  const reference::Output ref = reference::attention(pr.params, c);
  const reference::ReformerBuckets bk = reference::buckets(pr.params, c);
  expect_same_buckets(pr.params, c, bk, what);
  const SetStats st = set_stats(ref, bk);
  EXPECT_EQ(info.attention_scores, st.computed) << what;
  const double tol = pr.tolerance(st.max_multiset);
  EXPECT_LE(max_abs_diff(out, as_float(ref.o)), tol) << what;
  const double vmax = max_abs_v(pr);
  const double lse_tol = vmax > 0 ? tol / vmax : 1e-5;
  for (std::size_t r = 0; r < lse.size(); ++r) {
    if (std::isinf(ref.lse[r])) {
      EXPECT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << what << " row " << r << ": " << lse[r];
    } else {
      EXPECT_LE(std::abs(double(lse[r]) - ref.lse[r]), lse_tol) << what << " row " << r;
    }
  }
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks, causal;
  ReformerConfig config;
};

std::vector<Case> cases() {
  return {
      {"n1_shared", 1, 1, 1, 1, 8, 8, false, false, false, cfg(2, 4, 4, true)},
      {"n1_separate", 1, 1, 1, 1, 8, 8, false, false, false, cfg(2, 4, 4, false)},
      {"n7_shared", 2, 2, 7, 7, 16, 8, false, false, false, cfg(3, 4, 2, true)},
      {"n7_separate", 2, 2, 7, 7, 16, 8, true, false, false, cfg(3, 4, 2, false)},
      {"n100_separate_masks", 2, 3, 100, 100, 24, 16, true, true, false, cfg(2, 8, 16, false)},
      {"n100_shared_masks", 2, 3, 100, 100, 24, 16, true, true, false, cfg(2, 8, 16, true)},
      {"n257_shared_padded", 1, 2, 257, 257, 32, 40, true, false, false, cfg(4, 16, 32, true)},
      {"n257_separate", 1, 2, 257, 257, 32, 40, false, false, false, cfg(4, 16, 32, false)},
      {"cross_nq_gt_nk", 2, 1, 239, 61, 24, 40, false, false, false, cfg(2, 8, 16, false)},
      {"keys_fewer_than_chunks", 1, 1, 300, 5, 8, 8, false, false, false, cfg(2, 4, 16, false)},
      {"queries_fewer_than_chunks", 1, 1, 5, 300, 8, 8, false, false, false, cfg(2, 4, 16, false)},
      {"one_hash_shared", 1, 2, 128, 128, 16, 16, false, false, false, cfg(1, 8, 16, true)},
      {"one_hash_separate_masks", 2, 2, 128, 128, 16, 16, false, true, false, cfg(1, 8, 16, false)},
      {"many_hashes_two_buckets", 1, 1, 64, 64, 8, 8, false, false, false, cfg(9, 2, 8, true)},
      {"odd_half_buckets", 1, 2, 90, 90, 12, 12, false, false, false, cfg(2, 6, 8, true)},
      {"many_buckets", 1, 1, 200, 200, 64, 64, false, false, false, cfg(2, 64, 32, false)},
      {"d1", 1, 1, 97, 97, 1, 3, false, false, false, cfg(2, 4, 8, true)},
      {"causal_shared_masks", 2, 2, 120, 120, 16, 16, true, true, true, cfg(3, 8, 8, true)},
      {"causal_separate_masks", 2, 2, 120, 120, 16, 16, false, true, true, cfg(3, 8, 8, false)},
      {"causal_nq_lt_nk", 1, 2, 50, 130, 16, 16, false, false, true, cfg(2, 8, 8, false)},
      {"causal_nq_gt_nk", 1, 1, 130, 50, 16, 16, false, false, true, cfg(2, 8, 8, false)},
      {"c1_shared", 1, 2, 50, 50, 16, 16, false, false, false, cfg(3, 8, 64, true)},
      {"c1_separate_masks", 2, 1, 50, 50, 16, 16, false, true, false, cfg(3, 8, 64, false)},
      {"c1_causal_shared", 1, 1, 50, 50, 16, 16, false, false, true, cfg(3, 8, 50, true)},
      {"c2_shared", 1, 2, 100, 100, 16, 16, false, false, false, cfg(3, 8, 50, true)},
      {"c2_separate_uneven", 1, 2, 101, 101, 16, 16, false, false, false, cfg(3, 8, 60, false)},
      {"c2_causal_shared", 1, 1, 100, 100, 16, 16, false, false, true, cfg(2, 8, 50, true)},
      {"c3_masks_vary_per_batch", 3, 1, 30, 30, 8, 8, false, true, false, cfg(3, 4, 10, true)},
      {"big_chunks_tiles", 1, 1, 700, 700, 32, 32, false, false, false, cfg(2, 8, 300, true)},
  };
}

class ReformerCases : public ::testing::TestWithParam<Case> {
 protected:
  Problem make() const {
    const Case& c = GetParam();
    Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 11 + c.Nq + c.Nk);
    if (c.masks) pr.random_masks(5 + c.Nk, 0.7, 0.8);
    if (c.config.shared_qk) normalise_k(pr);
    pr.params.causal = c.causal;
    pr.params.seed = 1234;
    return pr;
  }
};

TEST_P(ReformerCases, MatchesOracle) {
  Problem pr = make();
  check_against_oracle(pr, GetParam().config, GetParam().name);
}

TEST_P(ReformerCases, Bf16MatchesOracleAndF32OnRoundedValues) {
  Problem pr = make();
  pr.use_bf16();
  if (GetParam().config.shared_qk) normalise_k(pr);  // of the rounded queries
  check_against_oracle(pr, GetParam().config, GetParam().name + " bf16");
  const auto bf16 = pr.run(GetParam().config, 2);
  pr.use_f32();
  // The kernels convert bf16 to f32 exactly where they pack: the same bits as f32 inputs.
  EXPECT_TRUE(bitwise_equal(bf16, pr.run(GetParam().config, 2))) << GetParam().name;
}

TEST_P(ReformerCases, BitIdenticalAcrossThreadCounts) {
  Problem pr = make();
  std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  pr.params.lse = lse.data();
  const auto o1 = pr.run(GetParam().config, 1);
  const auto l1 = lse;
  for (int threads : {2, 3}) {
    EXPECT_TRUE(bitwise_equal(o1, pr.run(GetParam().config, threads))) << threads;
    EXPECT_TRUE(bitwise_equal(l1, lse)) << threads;
  }
}

INSTANTIATE_TEST_SUITE_P(All, ReformerCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Reformer, MasksRespected) {
  for (const bool shared : {false, true})
    for (const bool causal : {false, true}) {
      const auto make = [&] {
        Problem pr(2, 2, 90, 90, 16, 12, true, 3);
        pr.random_masks(9, 0.6, 0.7);
        pr.params.causal = causal;
        if (shared) normalise_k(pr);
        return pr;
      };
      Problem pr = make();
      expect_masks_respected(pr, cfg(3, 8, 8, shared));
      // On a fresh copy: expect_masks_respected planted huge masked rows, which would inflate
      // the tolerance.
      Problem fresh = make();
      check_against_oracle(fresh, cfg(3, 8, 8, shared),
                           std::string(shared ? "masks shared" : "masks separate") + (causal ? " causal" : ""));
    }
}

TEST(Reformer, FullyMaskedBatchElements) {
  for (const bool shared : {false, true}) {
    Problem pr(3, 2, 40, 40, 8, 8, false, 4);
    pr.random_masks(2, 0.8, 0.8);
    for (std::int64_t j = 0; j < 40; ++j) pr.key_mask[static_cast<std::size_t>(40 + j)] = 0;    // b = 1: no keys
    for (std::int64_t i = 0; i < 40; ++i) pr.query_mask[static_cast<std::size_t>(80 + i)] = 0;  // b = 2: no queries
    if (shared) normalise_k(pr);
    std::vector<float> lse(static_cast<std::size_t>(3 * 2 * 40));
    pr.params.lse = lse.data();
    const auto out = pr.run(cfg(2, 4, 8, shared));
    for (std::int64_t b = 1; b < 3; ++b)
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t i = 0; i < 40; ++i) {
          for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(b, h, i)[c], 0.0f);
          const float l = lse[static_cast<std::size_t>((b * 2 + h) * 40 + i)];
          ASSERT_TRUE(std::isinf(l) && l < 0);
        }
    pr.params.lse = nullptr;
    check_against_oracle(pr, cfg(2, 4, 8, shared), "fully masked");
  }
}

// shared_qk: a token masked as a query but visible as a key keeps its key (from its q row).
TEST(Reformer, SharedQkQueryMaskedTokenIsStillAKey) {
  Problem pr(1, 1, 60, 60, 8, 8, false, 21);
  pr.key_mask.assign(60, 1);
  pr.query_mask.assign(60, 1);
  for (int i = 0; i < 60; i += 3) pr.query_mask[static_cast<std::size_t>(i)] = 0;
  pr.params.with_masks(pr.key_mask.data(), pr.query_mask.data());
  normalise_k(pr);
  const ReformerConfig c = cfg(2, 4, 8, true);
  const auto ref = reference::buckets(pr.params, c);
  EXPECT_EQ(ref.k_count[0], 60);
  EXPECT_EQ(ref.q_count[0], 40);
  check_against_oracle(pr, c, "query-masked keys");
  // Changing the q row of a query-masked token changes other queries' outputs.
  const auto before = pr.run(c);
  for (std::int64_t t = 0; t < 8; ++t) pr.q_at(0, 0, 0)[t] = float(2 * t - 7);  // a new direction
  EXPECT_FALSE(bitwise_equal(before, pr.run(c)));
}

// With shared_qk the K tensor is not read.
TEST(Reformer, SharedQkIgnoresK) {
  Problem pr(2, 2, 80, 80, 16, 16, true, 6);
  pr.random_masks(1, 0.8, 0.8);
  const ReformerConfig c = cfg(3, 8, 16, true);
  const auto before = pr.run(c);
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t j = 0; j < 80; ++j) std::fill_n(pr.k_at(b, h, j), 16, 1e4f * float(j % 7 - 3));
  EXPECT_TRUE(bitwise_equal(before, pr.run(c)));
  // Nor scanned for non-finite values; the q rows it reads as keys are, with their own name.
  pr.k_at(1, 1, 5)[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(bitwise_equal(before, pr.run(c)));
  Problem one(1, 1, 10, 10, 4, 4, false, 7);
  std::vector<std::uint8_t> queries(10, 1), keys(10, 1);
  queries[4] = 0;  // token 4: not a query, still a key built from its q row
  one.params.with_masks(keys.data(), queries.data());
  one.q_at(0, 0, 4)[2] = std::numeric_limits<float>::infinity();
  try {
    one.run(c);
    ADD_FAILURE() << "no error for a non-finite q row read as a key";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("params.q[0, 0, 4, 2]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shared_qk"), std::string::npos) << e.what();
  }
}

// shared_qk against separate K = the normalised queries: the same buckets for the keys but
// the self rule (and the query-only hash) differ, so each is checked against the oracle and the
// difference is exactly on the pairs (i, i).
TEST(Reformer, SharedQkVersusSeparateK) {
  Problem pr(1, 2, 120, 120, 16, 16, false, 8);
  normalise_k(pr);
  const ReformerConfig shared = cfg(2, 8, 16, true), separate = cfg(2, 8, 16, false);
  check_against_oracle(pr, shared, "shared");
  check_against_oracle(pr, separate, "separate with K = normalised Q");
  const auto rs = reference::buckets(pr.params, shared);
  const auto rp = reference::buckets(pr.params, separate);
  EXPECT_EQ(rs.q_bucket, rp.q_bucket);
  EXPECT_EQ(rs.q_sorted, rp.q_sorted);
  // Keys hashed from float(q/|q|) (separate) or from q (shared): argmax is scale invariant, so
  // the buckets agree except where rounding of the normalisation flips a near tie.
  std::size_t same = 0;
  for (std::size_t t = 0; t < rs.k_bucket.size(); ++t) same += rs.k_bucket[t] == rp.k_bucket[t];
  EXPECT_GE(same, rs.k_bucket.size() * 99 / 100);
  // With C == 1 the sets are all keys: separate attends to n keys, shared to n - 1 (no self).
  const ReformerConfig shared1 = cfg(2, 8, 500, true), separate1 = cfg(2, 8, 500, false);
  const auto s1 = reference::attention(pr.params, shared1);
  const auto p1 = reference::attention(pr.params, separate1);
  for (std::size_t t = 0; t < s1.set_size.size(); ++t) {
    EXPECT_EQ(s1.set_size[t], 119);
    EXPECT_EQ(p1.set_size[t], 120);
  }
}

// The same sequence in two batch slots gets the same buckets and output: rotations depend on
// (seed, head, round) only. Different heads use different rotations.
TEST(Reformer, RotationsDependOnHeadAndRoundOnly) {
  Problem pr(2, 2, 64, 64, 16, 16, false, 12);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 64; ++i) {
      std::copy_n(pr.q_at(0, 0, i), 16, pr.q_at(1, h, i));
      std::copy_n(pr.q_at(0, 0, i), 16, pr.q_at(0, h, i));
      std::copy_n(pr.k_at(0, 0, i), 16, pr.k_at(1, h, i));
      std::copy_n(pr.k_at(0, 0, i), 16, pr.k_at(0, h, i));
      std::copy_n(pr.v_at(0, 0, i), 16, pr.v_at(1, h, i));
      std::copy_n(pr.v_at(0, 0, i), 16, pr.v_at(0, h, i));
    }
  const ReformerConfig c = cfg(2, 8, 8, false);
  const auto buckets = detail::reformer_buckets(pr.params, c);
  const std::size_t per_head = static_cast<std::size_t>(2 * 64);  // rounds * Nq
  const auto slice = [&](std::int64_t b, std::int64_t h) {
    const auto begin = buckets.q_bucket.begin() + static_cast<std::ptrdiff_t>((b * 2 + h) * per_head);
    return std::vector<std::int32_t>(begin, begin + static_cast<std::ptrdiff_t>(per_head));
  };
  EXPECT_EQ(slice(0, 0), slice(1, 0));
  EXPECT_EQ(slice(0, 1), slice(1, 1));
  EXPECT_NE(slice(0, 0), slice(0, 1));
  pr.run(c);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 64; ++i)
      for (std::int64_t t = 0; t < 16; ++t) ASSERT_EQ(pr.o_at(0, h, i)[t], pr.o_at(1, h, i)[t]);
}

TEST(Reformer, SeedChangesBucketsAndOutput) {
  Problem pr(1, 2, 128, 128, 16, 16, false, 13);
  const ReformerConfig c = cfg(2, 8, 16, true);
  pr.params.seed = 1;
  const auto b1 = detail::reformer_buckets(pr.params, c);
  const auto o1 = pr.run(c);
  pr.params.seed = 2;
  const auto b2 = detail::reformer_buckets(pr.params, c);
  EXPECT_NE(b1.q_bucket, b2.q_bucket);
  EXPECT_GT(max_abs_diff(o1, pr.run(c)), 1e-3);
  pr.params.seed = 1;
  EXPECT_TRUE(bitwise_equal(o1, pr.run(c)));
}

// chunk_size >= N (C == 1) and C == 2 without shared_qk: every query attends to every visible
// key once per round, so O is dense attention and lse = dense lse + log(n_hashes).
TEST(Reformer, OneAndTwoChunksEqualDense) {
  for (const bool causal : {false, true})
    for (const int chunk : {1000, 64, 50}) {  // C = 1, 2, 2 at n = 100 (the last: masks -> C = 1 or 2)
      Problem pr(2, 2, 100, 100, 24, 16, true, 14);
      if (chunk == 50) pr.random_masks(3, 0.9, 0.9);
      pr.params.causal = causal;
      std::vector<float> lse_d(static_cast<std::size_t>(2 * 2 * 100)), lse_r(lse_d.size());
      pr.params.lse = lse_d.data();
      const auto dense = pr.run(DenseConfig{});
      const ReformerConfig c = cfg(3, 8, chunk, false);
      pr.params.lse = lse_r.data();
      const auto ref = reference::buckets(pr.params, c);
      for (std::int64_t C : ref.n_chunks) EXPECT_LE(C, 2);
      const auto out = pr.run(c);
      pr.params.lse = nullptr;
      const std::string what = "chunk " + std::to_string(chunk) + (causal ? " causal" : "");
      EXPECT_LE(max_abs_diff(out, dense), pr.tolerance(3 * 100)) << what;
      const double lse_tol = pr.tolerance(3 * 100) / max_abs_v(pr);
      for (std::size_t r = 0; r < lse_d.size(); ++r) {
        if (std::isinf(lse_d[r])) {
          EXPECT_EQ(lse_d[r], lse_r[r]) << what;
        } else {
          EXPECT_NEAR(lse_r[r], lse_d[r] + std::log(3.0), lse_tol) << what << " row " << r;
        }
      }
    }
}

// C == 1 and C == 2 with shared_qk: each query attends to every other visible key (causal: every
// earlier one), itself only when nothing else is left.
TEST(Reformer, OneAndTwoChunksSharedQkSets) {
  for (const bool causal : {false, true})
    for (const int chunk : {100, 50}) {
      Problem pr(1, 1, 100, 100, 16, 16, false, 15);
      normalise_k(pr);
      pr.params.causal = causal;
      const ReformerConfig c = cfg(2, 8, chunk, true);
      const auto ref = reference::attention(pr.params, c);
      for (int r = 0; r < 2; ++r)
        for (std::int64_t i = 0; i < 100; ++i) {
          const std::int64_t expect = causal ? std::max<std::int64_t>(i, 1) : 99;
          EXPECT_EQ(ref.set_size[static_cast<std::size_t>(r * 100 + i)], expect) << chunk << " " << i;
        }
      const RunInfo info = attention(pr.params, c);
      const std::size_t per_round = causal ? 1 + 99 * 100 / 2 : 100 * 99;
      EXPECT_EQ(info.attention_scores, chunk == 100 ? per_round : 2 * per_round);
      check_against_oracle(pr, c, "shared chunk " + std::to_string(chunk));
    }
}

// The hash is an exact definition: every SIMD target this CPU supports (the ones without a
// fused multiply-add take the std::fma path) gives the oracle's buckets and sorted orders.
TEST(Reformer, BucketsExactOnEveryTarget) {
  Problem pr(2, 2, 150, 150, 40, 40, true, 16);
  pr.random_masks(4, 0.9, 0.9);
  const ReformerConfig c = cfg(3, 22, 16, false);
  const auto ref = reference::buckets(pr.params, c);
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().DeInit();
    expect_same_buckets(pr.params, c, ref, hwy::TargetName(target));
    const ReformerConfig cs = cfg(2, 8, 16, true);
    expect_same_buckets(pr.params, cs, reference::buckets(pr.params, cs), hwy::TargetName(target));
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().DeInit();
}

// Ties: a zero query has every projection 0 and gets bucket 0; a query and its negation land in
// buckets b and b +- n_buckets/2.
TEST(Reformer, BucketTiesAndSymmetry) {
  Problem pr(1, 1, 20, 20, 8, 8, false, 17);
  std::fill_n(pr.q_at(0, 0, 3), 8, 0.0f);
  for (std::int64_t t = 0; t < 8; ++t) pr.q_at(0, 0, 5)[t] = -pr.q_at(0, 0, 4)[t];
  const ReformerConfig c = cfg(3, 10, 4, true);
  const auto fast = detail::reformer_buckets(pr.params, c);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(fast.q_bucket[static_cast<std::size_t>(r * 20 + 3)], 0);
    const std::int32_t b4 = fast.q_bucket[static_cast<std::size_t>(r * 20 + 4)];
    const std::int32_t b5 = fast.q_bucket[static_cast<std::size_t>(r * 20 + 5)];
    EXPECT_EQ((b4 + 5) % 10, b5);
  }
  normalise_k(pr);
  check_against_oracle(pr, c, "zero query");  // its key is 0: score 0 with every query
}

TEST(Reformer, RunInfoAndWorkspaceReuse) {
  Problem pr(1, 2, 300, 300, 32, 32, false, 18);
  const ReformerConfig c = cfg(3, 8, 32, true);
  Workspace ws;
  pr.params.num_threads = 2;
  const RunInfo a = attention(pr.params, c, &ws);
  const auto first = pr.output();
  const RunInfo b = attention(pr.params, c, &ws);
  EXPECT_TRUE(bitwise_equal(first, pr.output()));
  EXPECT_EQ(a.attention_scores, b.attention_scores);
  EXPECT_GT(a.workspace_bytes, 0u);
  EXPECT_GE(ws.capacity_bytes(), a.workspace_bytes);
  EXPECT_GT(a.seconds_total, 0.0);
  EXPECT_GT(a.attention.seconds, 0.0);
  // Each round at most 2 * chunk keys per query.
  EXPECT_LE(a.attention_scores, std::size_t{3 * 2 * 300 * 64});
  EXPECT_GT(a.attention_scores, std::size_t{3 * 2 * 300 * 32});
}

TEST(Reformer, BadConfigsThrowNamingTheParameter) {
  Problem pr(1, 1, 16, 16, 8, 8);
  const auto expect_error = [&](const ReformerConfig& c, const std::string& name) {
    try {
      attention(pr.params, c);
      ADD_FAILURE() << "no error for " << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
    EXPECT_THROW(detail::reformer_buckets(pr.params, c), Error);
  };
  expect_error(cfg(0, 8, 4, true), "ReformerConfig.n_hashes");
  expect_error(cfg(1025, 8, 4, true), "ReformerConfig.n_hashes");
  expect_error(cfg(2, 0, 4, true), "ReformerConfig.n_buckets");
  expect_error(cfg(2, 7, 4, true), "ReformerConfig.n_buckets");
  expect_error(cfg(2, -2, 4, true), "ReformerConfig.n_buckets");
  expect_error(cfg(2, 8, 0, true), "ReformerConfig.chunk_size");
  expect_error(cfg(2, 8, -3, false), "ReformerConfig.chunk_size");
  Problem cross(1, 1, 16, 20, 8, 8);
  try {
    attention(cross.params, cfg(2, 8, 4, true));
    ADD_FAILURE() << "no error for shared_qk with nq != nk";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ReformerConfig.shared_qk"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(attention(cross.params, cfg(2, 8, 4, false)));
}

}  // namespace
}  // namespace smyrf::test
