// Synthesizer attention against its double-precision oracle (reference/reference.h),
// against dense attention when the random logits are scale * Q K^T, and its own invariants.
//
// TOLERANCE RULE. The suite's rule (test_util.h) with the logit bound L replaced by a bound on
// every intermediate sum of the synthesised logits:
//   random: L = max |R_ij| (the logits are read, not computed);
//   dense:  L = max_ij |b2_j| + sum_u |w2_uj| (|b1_u| + sum_t |q_it w1_tu|),
// so |O - O_ref| <= 16 eps max|V| (1 + L + log2(Nk + 1)). Why: the fast path computes the hidden
// layer and the logits as float dot products whose rounding is ~eps times the sum of the
// magnitudes of their terms, which L bounds (the error of a hidden unit reaches the logit
// multiplied by |w2_uj|, hence the nesting); the softmax and P.V then behave as in dense
// attention. lse: |lse - lse_ref| <= tol / max|V| + 4 eps |lse_ref| (the logit part of the rule,
// plus the rounding of the final addition).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "methods/synthesizer/synthesizer.h"
#include "reference/reference.h"
#include "spec/draws.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

std::vector<float> gaussian(std::size_t n, std::uint64_t seed, float sigma) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = g(rng);
  return x;
}

// The logit bound L of the rule at the top.
double logit_bound(Problem& pr, const SynthesizerConfig& c) {
  const std::int64_t H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, hid = c.hidden;
  const std::uint64_t seed = pr.params.seed;
  double L = 0;
  if (c.kind == SynthesizerKind::random) {
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < Nq; ++i)
        for (std::int64_t j = 0; j < Nk; ++j)
          L = std::max(
              L, std::abs(double(c.logits ? c.logits[(h * Nq + i) * Nk + j]
                                          : spec::synthesizer_default_logit(seed, h, i, j, Nk))));
    return L;
  }
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < Nq; ++i) {
        std::vector<double> a(static_cast<std::size_t>(hid));
        for (std::int64_t u = 0; u < hid; ++u) {
          double s = c.b1 ? std::abs(c.b1[h * hid + u]) : 0.0;
          for (std::int64_t t = 0; t < d; ++t)
            s += std::abs(double(pr.q_at(b, h, i)[t]) *
                          (c.w1 ? c.w1[(h * d + t) * hid + u]
                                : spec::synthesizer_default_w1(seed, h, t, u, d, hid)));
          a[u] = s;
        }
        for (std::int64_t j = 0; j < Nk; ++j) {
          double s = c.b2 ? std::abs(c.b2[h * Nk + j]) : 0.0;
          for (std::int64_t u = 0; u < hid; ++u)
            s += a[u] * std::abs(c.w2 ? c.w2[(h * hid + u) * Nk + j]
                                      : spec::synthesizer_default_w2(seed, h, u, j, Nk, hid));
          L = std::max(L, s);
        }
      }
  return L;
}

double tolerance(Problem& pr, const SynthesizerConfig& c) {
  return 16.0 * std::numeric_limits<float>::epsilon() * max_abs_v(pr) *
         (1.0 + logit_bound(pr, c) + std::log2(double(pr.Nk) + 1.0));
}

void expect_matches_oracle(Problem& pr, const SynthesizerConfig& c, const std::string& what) {
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse_fast(BHN, 7.0f);
  const reference::Output oracle = reference::attention(pr.params, c);
  const auto ref = oracle.o_f32();
  const auto lse_ref = oracle.lse_f32();
  pr.params.lse = lse_fast.data();
  const auto fast = pr.run(c);
  pr.params.lse = nullptr;
  const double tol = tolerance(pr, c);
  EXPECT_LE(max_abs_diff(fast, ref), tol) << what;
  expect_lse_close(lse_fast, lse_ref, tol / std::max(max_abs_v(pr), 1e-30), what);
}

struct Weights {
  std::vector<float> w1, b1, w2, b2, logits;
};
Weights make_weights(std::int64_t H, std::int64_t Nq, std::int64_t Nk, std::int64_t d, int hidden,
                     std::uint64_t seed) {
  Weights w;
  w.w1 = gaussian(static_cast<std::size_t>(H * d * hidden), seed, 1.0f / std::sqrt(float(d)));
  w.b1 = gaussian(static_cast<std::size_t>(H * hidden), seed + 1, 0.5f);
  w.w2 = gaussian(static_cast<std::size_t>(H * hidden * Nk), seed + 2,
                  1.0f / std::sqrt(float(hidden)));
  w.b2 = gaussian(static_cast<std::size_t>(H * Nk), seed + 3, 0.5f);
  w.logits = gaussian(static_cast<std::size_t>(H * Nq * Nk), seed + 4, 2.0f);
  return w;
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks, causal;
  int hidden;
};

std::vector<Case> cases() {
  return {
      {"basic", 1, 2, 64, 64, 16, 16, false, false, false, 32},
      {"n1", 1, 1, 1, 1, 4, 3, false, false, false, 1},
      {"n7_padded", 2, 2, 7, 7, 5, 3, true, false, false, 5},
      {"cross_fewer_keys", 2, 2, 90, 41, 16, 12, true, true, false, 24},
      {"cross_more_keys", 1, 3, 33, 100, 8, 20, false, true, false, 16},
      {"masks", 3, 2, 70, 70, 16, 16, true, true, false, 40},
      {"causal", 2, 2, 80, 80, 16, 16, false, false, true, 32},
      {"causal_masks_padded", 2, 1, 75, 75, 12, 8, true, true, true, 20},
      {"causal_shorter_queries", 1, 2, 30, 90, 16, 16, false, true, true, 16},
      {"causal_longer_queries", 1, 2, 90, 30, 16, 16, false, false, true, 16},
      {"parallel", 2, 2, 300, 280, 32, 32, true, true, false, 64},
  };
}

class SynthesizerCases : public ::testing::TestWithParam<Case> {};

Problem make_problem(const Case& k) {
  Problem pr(k.B, k.H, k.Nq, k.Nk, k.d, k.dv, k.padded, 11);
  if (k.masks) pr.random_masks(5, 0.8, 0.85);
  pr.params.causal = k.causal;
  pr.params.seed = 3;
  return pr;
}

TEST_P(SynthesizerCases, DefaultsAndGivenMatchOracleWithinRule) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  const Weights w = make_weights(k.H, k.Nq, k.Nk, k.d, k.hidden, 21);
  SynthesizerConfig dense{.kind = SynthesizerKind::dense, .hidden = k.hidden};
  expect_matches_oracle(pr, dense, k.name + " dense default");
  SynthesizerConfig dense_given = dense;
  dense_given.w1 = w.w1.data();
  dense_given.b1 = w.b1.data();
  dense_given.w2 = w.w2.data();
  dense_given.b2 = w.b2.data();
  expect_matches_oracle(pr, dense_given, k.name + " dense given");
  SynthesizerConfig dense_partial = dense;  // each pointer independently
  dense_partial.b1 = w.b1.data();
  dense_partial.w2 = w.w2.data();
  expect_matches_oracle(pr, dense_partial, k.name + " dense partial");
  SynthesizerConfig random{.kind = SynthesizerKind::random};
  expect_matches_oracle(pr, random, k.name + " random default");
  random.logits = w.logits.data();
  expect_matches_oracle(pr, random, k.name + " random given");
}

TEST_P(SynthesizerCases, Bf16MatchesOracleOnTheRoundedValues) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  pr.use_bf16();  // the float buffers now hold the bf16-rounded values
  for (SynthesizerKind kind : {SynthesizerKind::dense, SynthesizerKind::random}) {
    SynthesizerConfig c{.kind = kind, .hidden = k.hidden};
    std::vector<float> lse_fast(static_cast<std::size_t>(k.B * k.H * k.Nq));
    pr.params.lse = lse_fast.data();
    const auto fast = pr.run(c);
    pr.use_f32();
    pr.params.lse = nullptr;
    const reference::Output oracle = reference::attention(pr.params, c);
    const auto ref = oracle.o_f32();
    const auto lse_ref = oracle.lse_f32();
    const double tol = tolerance(pr, c);
    EXPECT_LE(max_abs_diff(fast, ref), tol) << k.name;
    expect_lse_close(lse_fast, lse_ref, tol / std::max(max_abs_v(pr), 1e-30), k.name + " bf16");
    pr.use_bf16();
  }
}

TEST_P(SynthesizerCases, SameBitsAtOneTwoAndSevenThreads) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  for (SynthesizerKind kind : {SynthesizerKind::dense, SynthesizerKind::random}) {
    SynthesizerConfig c{.kind = kind, .hidden = k.hidden};
    const auto one = pr.run(c, 1);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 2))) << k.name;
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 7))) << k.name;
  }
}

INSTANTIATE_TEST_SUITE_P(All, SynthesizerCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Random logits R = scale * Q K^T (given, one batch element) are exact softmax attention.
// Both sides are float computations, each within the rule of the exact result: 2 * rule.
TEST(Synthesizer, RandomWithScaledScoresIsDenseAttention) {
  for (bool causal : {false, true}) {
    Problem pr(1, 2, 70, 90, 16, 16, true, 4);
    pr.random_masks(9, 0.8, 0.9);
    pr.params.causal = causal;
    pr.params.scale = 0.3f;
    std::vector<float> R(static_cast<std::size_t>(2 * 70 * 90));
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < 70; ++i)
        for (std::int64_t j = 0; j < 90; ++j) {
          double s = 0;
          for (std::int64_t t = 0; t < 16; ++t)
            s += double(pr.q_at(0, h, i)[t]) * pr.k_at(0, h, j)[t];
          R[static_cast<std::size_t>((h * 70 + i) * 90 + j)] = static_cast<float>(0.3 * s);
        }
    std::vector<float> lse_d(140), lse_s(140);
    pr.params.lse = lse_d.data();
    const auto dense = pr.run(DenseConfig{});
    pr.params.lse = lse_s.data();
    SynthesizerConfig c{.kind = SynthesizerKind::random, .logits = R.data()};
    const auto synth = pr.run(c);
    const double tol = pr.tolerance();
    EXPECT_LE(max_abs_diff(synth, dense), 2 * tol);
    expect_lse_close(lse_s, lse_d, 2 * tol / max_abs_v(pr), "random = dense");
  }
}

// Passing the seeded defaults explicitly gives the same bits; the seed redraws only defaults.
TEST(Synthesizer, GivenDefaultsEqualDefaultsAndSeedRedrawsOnlyDefaults) {
  const std::int64_t B = 2, H = 2, Nq = 40, Nk = 50, d = 8, dv = 8;
  const int hid = 12;
  Problem pr(B, H, Nq, Nk, d, dv, false, 2);
  pr.params.seed = 77;
  std::vector<float> w1(H * d * hid), w2(H * hid * Nk),
      b(H * std::max<std::int64_t>(hid, Nk), 0.0f), R(H * Nq * Nk);
  for (std::int64_t h = 0; h < H; ++h) {
    for (std::int64_t t = 0; t < d; ++t)
      for (std::int64_t u = 0; u < hid; ++u)
        w1[(h * d + t) * hid + u] = spec::synthesizer_default_w1(77, h, t, u, d, hid);
    for (std::int64_t u = 0; u < hid; ++u)
      for (std::int64_t j = 0; j < Nk; ++j)
        w2[(h * hid + u) * Nk + j] = spec::synthesizer_default_w2(77, h, u, j, Nk, hid);
    for (std::int64_t i = 0; i < Nq; ++i)
      for (std::int64_t j = 0; j < Nk; ++j)
        R[(h * Nq + i) * Nk + j] = spec::synthesizer_default_logit(77, h, i, j, Nk);
  }
  SynthesizerConfig dense{.kind = SynthesizerKind::dense, .hidden = hid};
  SynthesizerConfig dense_given{.kind = SynthesizerKind::dense,
                                .hidden = hid,
                                .w1 = w1.data(),
                                .b1 = b.data(),
                                .w2 = w2.data(),
                                .b2 = b.data()};
  SynthesizerConfig random{.kind = SynthesizerKind::random};
  SynthesizerConfig random_given{.kind = SynthesizerKind::random, .logits = R.data()};
  const auto d_def = pr.run(dense), r_def = pr.run(random);
  EXPECT_TRUE(bitwise_equal(d_def, pr.run(dense_given)));
  EXPECT_TRUE(bitwise_equal(r_def, pr.run(random_given)));
  pr.params.seed = 78;
  EXPECT_GT(max_abs_diff(d_def, pr.run(dense)), 1e-3);
  EXPECT_GT(max_abs_diff(r_def, pr.run(random)), 1e-3);
  EXPECT_TRUE(bitwise_equal(d_def, pr.run(dense_given)));
  EXPECT_TRUE(bitwise_equal(r_def, pr.run(random_given)));
  // Same weights for every batch element: identical inputs in two batch elements give
  // identical outputs.
  Problem twin(2, 1, 20, 20, 8, 8, false, 3);
  for (std::int64_t i = 0; i < 20; ++i) {
    std::copy_n(twin.q_at(0, 0, i), 8, twin.q_at(1, 0, i));
    std::copy_n(twin.k_at(0, 0, i), 8, twin.k_at(1, 0, i));
    std::copy_n(twin.v_at(0, 0, i), 8, twin.v_at(1, 0, i));
  }
  for (const SynthesizerConfig& c : {SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 4},
                                     SynthesizerConfig{.kind = SynthesizerKind::random}}) {
    twin.run(c);
    for (std::int64_t i = 0; i < 20; ++i)
      for (std::int64_t x = 0; x < 8; ++x) ASSERT_EQ(twin.o_at(0, 0, i)[x], twin.o_at(1, 0, i)[x]);
  }
}

TEST(Synthesizer, ScaleIsNotUsed) {
  Problem pr(1, 2, 30, 30, 8, 8, false, 6);
  for (SynthesizerKind kind : {SynthesizerKind::dense, SynthesizerKind::random}) {
    SynthesizerConfig c{.kind = kind, .hidden = 8};
    pr.params.scale.reset();
    const auto a = pr.run(c);
    pr.params.scale = 5.0f;
    EXPECT_TRUE(bitwise_equal(a, pr.run(c)));
  }
}

TEST(Synthesizer, MasksRespectedAndFullyMaskedBatchElement) {
  for (SynthesizerKind kind : {SynthesizerKind::dense, SynthesizerKind::random}) {
    SynthesizerConfig c{.kind = kind, .hidden = 16};
    Problem pr(3, 2, 50, 60, 8, 8, true, 8);
    pr.random_masks(3, 0.7, 0.8);
    expect_masks_respected(pr, c);
    for (std::int64_t j = 0; j < 60; ++j) pr.key_mask[static_cast<std::size_t>(60 + j)] = 0;
    std::vector<float> lse(3 * 2 * 50, 1.0f);
    pr.params.lse = lse.data();
    pr.run(c);
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < 50; ++i) {
        for (std::int64_t x = 0; x < 8; ++x) ASSERT_EQ(pr.o_at(1, h, i)[x], 0.0f);
        const float l = lse[static_cast<std::size_t>((1 * 2 + h) * 50 + i)];
        ASSERT_TRUE(std::isinf(l) && l < 0);
      }
    for (std::int64_t i = 0; i < 50; ++i)
      if (pr.query_mask[static_cast<std::size_t>(i)]) {
        ASSERT_FALSE(std::isinf(lse[static_cast<std::size_t>(i)]));
      }
  }
}

TEST(Synthesizer, RandomCountsTheVisiblePairs) {
  Problem pr(2, 2, 20, 30, 8, 8, false, 1);
  pr.random_masks(2, 0.7, 0.8);
  pr.params.causal = true;
  std::size_t expected = 0;
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t i = 0; i < 20; ++i)
      for (std::int64_t j = 0; j < 30; ++j)
        if (pr.query_mask[b * 20 + i] && pr.key_mask[b * 30 + j] && j <= i + 10) expected += 2;
  const RunInfo info = attention(pr.params, SynthesizerConfig{.kind = SynthesizerKind::random});
  EXPECT_EQ(info.attention_scores, expected);
}

// A reused Workspace (grown by a larger call in between) gives the same bits.
TEST(Synthesizer, WorkspaceReuseGivesSameBits) {
  Problem small(2, 2, 60, 50, 8, 8, true, 12), big(1, 3, 200, 210, 16, 16, false, 13);
  small.random_masks(1, 0.8, 0.9);
  SynthesizerConfig c{.kind = SynthesizerKind::random};
  expect_workspace_reuse_same_bits(small, big, c);
}

TEST(Synthesizer, BadConfigsThrowNamingTheField) {
  Problem pr(1, 2, 10, 12, 4, 4);
  std::vector<float> w(2 * 12 * 10 * 4, 0.5f);
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 0},
               "SynthesizerConfig.hidden = 0");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 65537},
               "SynthesizerConfig.hidden = 65537");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 4, .logits = w.data()},
               "SynthesizerConfig.logits");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::random, .w1 = w.data()},
               "SynthesizerConfig.w1");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::random, .b1 = w.data()},
               "SynthesizerConfig.b1");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::random, .w2 = w.data()},
               "SynthesizerConfig.w2");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::random, .b2 = w.data()},
               "SynthesizerConfig.b2");
  expect_config_error(pr, SynthesizerConfig{.kind = static_cast<SynthesizerKind>(9)}, "SynthesizerConfig.kind = 9");
  std::vector<float> bad = w;
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 4, .w1 = bad.data()},
               "SynthesizerConfig.w1[5] = nan");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 4, .b1 = bad.data()},
               "SynthesizerConfig.b1[5]");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 4, .w2 = bad.data()},
               "SynthesizerConfig.w2[5]");
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 4, .b2 = bad.data()},
               "SynthesizerConfig.b2[5]");
  bad[5] = 1.0f;
  bad[239] = std::numeric_limits<float>::infinity();  // the last element of R [2, 10, 12]
  expect_config_error(pr, SynthesizerConfig{.kind = SynthesizerKind::random, .logits = bad.data()},
               "SynthesizerConfig.logits[239] = inf");
  // hidden is not read by the random kind.
  EXPECT_NO_THROW(
      attention(pr.params, SynthesizerConfig{.kind = SynthesizerKind::random, .hidden = 0}));
}

}  // namespace
}  // namespace smyrf::test
