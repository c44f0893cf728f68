// Informer ProbSparse attention against its double-precision oracle
// (reference/reference.h), dense attention when every query is exact, and its own
// invariants.
//
// TOLERANCE RULE. O: the suite's rule (test_util.h) with n_keys = Nk: an exact query is dense
// attention over the keys it sees; a lazy query's mean is accumulated in double and rounded
// once (error <= eps max|V|, far inside the rule). lse: the rule's logit part without max|V|,
//   |lse - lse_ref| <= tolerance(Nk) / max|V| + 4 eps |lse_ref|,
// (lazy queries: log(count) in double, rounded once). The selection is discrete, but the
// measurement M is defined bit-exactly (fma chains in double, informer.h) and the oracle
// computes the same bits, so fast and oracle select the same queries; a different selection
// would move a row by O(max|V|), far above the rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "methods/informer/informer.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {


void expect_matches_oracle(Problem& pr, const InformerConfig& c, const std::string& what) {
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse_fast(BHN, 7.0f);
  const bool bf16 = pr.params.dtype == DType::bf16;
  pr.params.lse = lse_fast.data();
  const auto fast = pr.run(c);
  if (bf16) pr.use_f32();  // the float buffers hold the same, bf16-rounded values
  pr.params.lse = nullptr;
  const reference::Output oracle = reference::attention(pr.params, c);
  const auto ref = oracle.o_f32();
  const auto lse_ref = oracle.lse_f32();
  if (bf16) pr.use_bf16();
  pr.params.lse = nullptr;
  const double tol = pr.tolerance();
  EXPECT_LE(max_abs_diff(fast, ref), tol) << what;
  expect_lse_close(lse_fast, lse_ref, tol / std::max(max_abs_v(pr), 1e-30), what);
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks, causal;
  float factor;
  int top, samples;
};

std::vector<Case> cases() {
  return {
      {"basic", 1, 2, 128, 128, 16, 16, false, false, false, 5.0f, 0, 0},
      {"n1", 1, 1, 1, 1, 4, 3, false, false, false, 5.0f, 0, 0},
      {"n1_top", 1, 1, 1, 1, 4, 3, false, false, false, 5.0f, 1, 0},
      {"n7_padded", 2, 2, 7, 7, 5, 3, true, false, false, 1.0f, 0, 0},
      {"cross_fewer_keys", 2, 2, 120, 41, 16, 12, true, true, false, 3.0f, 0, 0},
      {"cross_more_keys", 1, 3, 33, 150, 8, 20, false, true, false, 5.0f, 7, 3},
      {"masks", 3, 2, 150, 140, 16, 16, true, true, false, 2.0f, 0, 0},
      {"many_samples", 1, 2, 80, 60, 16, 16, false, true, false, 5.0f, 20, 200},
      {"causal", 2, 2, 120, 120, 16, 16, false, false, true, 5.0f, 0, 0},
      {"causal_masks_padded", 2, 1, 100, 100, 12, 8, true, true, true, 3.0f, 0, 5},
      {"causal_shorter_queries", 1, 2, 40, 120, 16, 16, false, true, true, 5.0f, 0, 0},
      {"causal_longer_queries", 1, 2, 120, 40, 16, 16, false, false, true, 5.0f, 30, 0},
      {"parallel", 2, 2, 600, 550, 32, 32, true, true, false, 5.0f, 100, 0},
      {"parallel_causal", 1, 3, 500, 500, 32, 16, false, true, true, 5.0f, 0, 0},
  };
}

class InformerCases : public ::testing::TestWithParam<Case> {};

Problem make_problem(const Case& k) {
  Problem pr(k.B, k.H, k.Nq, k.Nk, k.d, k.dv, k.padded, 17);
  if (k.masks) pr.random_masks(5, 0.8, 0.85);
  pr.params.causal = k.causal;
  pr.params.seed = 9;
  return pr;
}

InformerConfig cfg(const Case& k) {
  return InformerConfig{.factor = k.factor, .top_queries = k.top, .sample_keys = k.samples};
}

TEST_P(InformerCases, MatchesOracleWithinRule) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  expect_matches_oracle(pr, cfg(k), k.name);
}

TEST_P(InformerCases, Bf16MatchesOracleOnTheRoundedValues) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  pr.use_bf16();
  expect_matches_oracle(pr, cfg(k), k.name + " bf16");
}

TEST_P(InformerCases, SameBitsAtOneTwoAndSevenThreads) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  const auto one = pr.run(cfg(k), 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(cfg(k), 2))) << k.name;
  EXPECT_TRUE(bitwise_equal(one, pr.run(cfg(k), 7))) << k.name;
}

// attention_scores: n_q' U per (b, h) (n_q' the active queries that see a key) plus the
// (exact query, key) pairs attended, from the oracle's selection.
TEST_P(InformerCases, AttentionScoresCountSamplesAndExactPairs) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  const auto sel = reference::exact_queries(pr.params, cfg(k));
  std::size_t expected = 0, bh = 0;
  for (std::int64_t b = 0; b < pr.B; ++b) {
    std::int64_t nk = 0;
    for (std::int64_t j = 0; j < pr.Nk; ++j)
      nk += pr.key_mask.empty() || pr.key_mask[b * pr.Nk + j];
    const std::int64_t U = detail::informer_samples(cfg(k), nk);
    for (std::int64_t h = 0; h < pr.H; ++h, ++bh) {
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        if (!pr.query_mask.empty() && !pr.query_mask[b * pr.Nq + i]) continue;
        std::int64_t seen = 0;
        for (std::int64_t j = 0; j < pr.Nk; ++j)
          seen += (pr.key_mask.empty() || pr.key_mask[b * pr.Nk + j]) &&
                  (!k.causal || j <= i + pr.Nk - pr.Nq);
        if (seen > 0) expected += static_cast<std::size_t>(U);
        if (std::find(sel[bh].begin(), sel[bh].end(), i) != sel[bh].end())
          expected += static_cast<std::size_t>(seen);
      }
    }
  }
  pr.params.num_threads = 2;
  EXPECT_EQ(attention(pr.params, cfg(k)).attention_scores, expected);
}

INSTANTIATE_TEST_SUITE_P(All, InformerCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Every query exact (top_queries >= n_q): dense attention.
// Both sides are float computations, each within the rule of the exact result: 2 * rule.
TEST(Informer, AllQueriesExactIsDenseAttention) {
  for (bool causal : {false, true}) {
    Problem pr(2, 2, 150, 130, 16, 16, true, 4);
    pr.random_masks(9, 0.8, 0.9);
    pr.params.causal = causal;
    std::vector<float> lse_d(2 * 2 * 150), lse_i(lse_d.size());
    pr.params.lse = lse_d.data();
    const auto dense = pr.run(DenseConfig{});
    pr.params.lse = lse_i.data();
    const auto informer = pr.run(InformerConfig{.top_queries = 1 << 30});
    const double tol = pr.tolerance();
    EXPECT_LE(max_abs_diff(informer, dense), 2 * tol) << causal;
    expect_lse_close(lse_i, lse_d, 2 * tol / max_abs_v(pr), "all exact");
  }
}

// No exact query: every row is the mean of V over the keys it sees and lse = log(count).
TEST(Informer, LazyQueriesGetTheMeanAndLogCount) {
  Problem pr(1, 1, 1, 9, 4, 2, false, 2);  // n_q = 1: u = ceil(5 ln 1) = 0
  std::vector<float> lse(1);
  pr.params.lse = lse.data();
  pr.run(InformerConfig{});
  for (std::int64_t x = 0; x < 2; ++x) {
    double m = 0;
    for (std::int64_t j = 0; j < 9; ++j) m += pr.v_at(0, 0, j)[x];
    EXPECT_NEAR(pr.o_at(0, 0, 0)[x], m / 9, 1e-6);
  }
  EXPECT_NEAR(lse[0], std::log(9.0), 1e-6);
  // Causal: query i's mean runs over the prefix j <= i.
  Problem c(1, 1, 6, 6, 4, 1, false, 3);
  c.params.causal = true;
  InformerConfig one{.top_queries = 1, .sample_keys = 2};
  const auto sel = reference::exact_queries(c.params, one);
  c.run(one);
  for (std::int64_t i = 0; i < 6; ++i) {
    if (i == sel[0][0]) continue;
    double m = 0;
    for (std::int64_t j = 0; j <= i; ++j) m += c.v_at(0, 0, j)[0];
    EXPECT_NEAR(c.o_at(0, 0, i)[0], m / double(i + 1), 1e-6) << i;
  }
}

TEST(Informer, SeedRedrawsTheSamples) {
  Problem pr(1, 2, 200, 200, 16, 16, false, 5);
  const InformerConfig c{.top_queries = 20, .sample_keys = 2};
  pr.params.seed = 1;
  const auto a = reference::exact_queries(pr.params, c);
  const auto oa = pr.run(c);
  pr.params.seed = 2;
  const auto b = reference::exact_queries(pr.params, c);
  EXPECT_NE(a, b);
  EXPECT_GT(max_abs_diff(oa, pr.run(c)), 1e-3);
}

TEST(Informer, MasksRespectedAndFullyMaskedBatchElement) {
  Problem pr(3, 2, 90, 80, 8, 8, true, 8);
  pr.random_masks(3, 0.7, 0.8);
  const InformerConfig c{.top_queries = 10};
  expect_masks_respected(pr, c);
  pr.params.causal = true;
  expect_masks_respected(pr, c);
  for (std::int64_t j = 0; j < 80; ++j) pr.key_mask[static_cast<std::size_t>(80 + j)] = 0;
  std::vector<float> lse(3 * 2 * 90, 1.0f);
  pr.params.lse = lse.data();
  pr.run(c);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 90; ++i) {
      for (std::int64_t x = 0; x < 8; ++x) ASSERT_EQ(pr.o_at(1, h, i)[x], 0.0f);
      const float l = lse[static_cast<std::size_t>((1 * 2 + h) * 90 + i)];
      ASSERT_TRUE(std::isinf(l) && l < 0);
    }
}

// The measurement is bit-exact on every SIMD target (scalar std::fma chains), so every target
// selects the oracle's queries.
TEST(Informer, EverySimdTargetSelectsAsTheOracle) {
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().DeInit();
    Problem pr(2, 2, 130, 120, 20, 12, true, 31);
    pr.random_masks(2, 0.8, 0.9);
    expect_matches_oracle(pr, InformerConfig{.factor = 3.0f}, hwy::TargetName(target));
    pr.params.causal = true;
    expect_matches_oracle(pr, InformerConfig{.factor = 3.0f}, hwy::TargetName(target));
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().DeInit();
}

// Equal measurements (identical query rows) go to the lower position.
TEST(Informer, TiesGoToTheLowerPosition) {
  Problem pr(1, 1, 12, 12, 4, 4, false, 3);
  for (std::int64_t i = 1; i < 12; ++i) std::copy_n(pr.q_at(0, 0, 0), 4, pr.q_at(0, 0, i));
  // One sample key shared by every query: every M = 0, all tied.
  const InformerConfig c{.top_queries = 3, .sample_keys = 1};
  pr.key_mask.assign(12, 0);
  pr.key_mask[5] = 1;
  pr.query_mask.assign(12, 1);
  pr.params.with_masks(pr.key_mask.data(), pr.query_mask.data());
  const auto sel = reference::exact_queries(pr.params, c);
  EXPECT_EQ(sel[0], (std::vector<std::int32_t>{0, 1, 2}));
  expect_matches_oracle(pr, c, "ties");
}

// A reused Workspace (grown by a larger call in between) gives the same bits.
TEST(Informer, WorkspaceReuseGivesSameBits) {
  Problem small(2, 2, 60, 50, 8, 8, true, 12), big(1, 3, 200, 210, 16, 16, false, 13);
  small.random_masks(1, 0.8, 0.9);
  InformerConfig c{.top_queries = 7};
  expect_workspace_reuse_same_bits(small, big, c);
}

TEST(Informer, BadConfigsThrowNamingTheField) {
  Problem pr(1, 1, 10, 10, 4, 4);
  expect_config_error(pr, InformerConfig{.factor = 0.0f}, "InformerConfig.factor = 0");
  expect_config_error(pr, InformerConfig{.factor = -1.0f}, "InformerConfig.factor = -1");
  expect_config_error(pr, InformerConfig{.factor = std::numeric_limits<float>::quiet_NaN()},
               "InformerConfig.factor = nan");
  expect_config_error(pr, InformerConfig{.factor = std::numeric_limits<float>::infinity()},
               "InformerConfig.factor = inf");
  expect_config_error(pr, InformerConfig{.top_queries = -1}, "InformerConfig.top_queries = -1");
  expect_config_error(pr, InformerConfig{.sample_keys = -2}, "InformerConfig.sample_keys = -2");
}

}  // namespace
}  // namespace smyrf::test
