// Feature-map ("linear") attention against its double-precision oracle
// (reference/reference.h), its limits (FAVOR+ -> softmax attention, RFA -> the Gaussian
// kernel attention, with many features) and its own invariants.
//
// TOLERANCE RULE (fast path vs oracle). The oracle computes the SAME features (same random
// directions: spec/draws.h) in double, so the difference is rounding only. The features,
// normalisers and (causal, gated) states of the fast path are double; O is rounded to float
// once. Per query, with a_ij the kernel values and c_i = sum_j |a_ij| / |sum_j a_ij| (the
// oracle's cond, 1 for nonnegative features; >= 1 for the trigonometric favor and rfa, and for
// gated rfa with the gated weights):
//   |O_i - O_ref_i| <= max|V| * (eps_f32 * c_i + 2^-30 * c_i * (1 + c_i) + F_i),
// F_i = (kLinearKeyTask + m + 8) * 2^-24 * ca_i for non-causal problems (0 when causal), ca_i =
// sum_r |phi_q,r| sum_j |phi_k,jr| / |sum_j a_ij| (the oracle's cond_abs; = 1 for nonnegative
// features: then the sum over r of the products is the normaliser itself).
// Why: |O_i| <= c_i max|V|, so the final rounding to float moves it by <= eps_f32/2 * c_i max|V|;
// numerator and denominator are sums of n ~ Nk + m double terms with relative feature errors of
// a few eps_f64 times the exponent's magnitude (<= ~1e3 here), so each is off by < 2^-30 * sum
// |terms| (eps_f64 * 1e3 * n ~ 1e-9 for n <= 1e4), which moves the ratio by at most 2^-30 c_i
// (1 + c_i) max|V|. The non-causal fast path computes each key block's features with the
// block's own stabiliser c_b and weights the block's sums by exp(c_b - c): one more rounding
// and one more exp (of an argument no larger than the features' own) per term, inside the same
// few-eps_f64-times-exponent relative error. Its value products are float (u = 2^-24): the key
// features rounded to float (u), each block's Phi_b^T V a float chain of <= kLinearKeyTask
// terms with exact float values (gamma_KT = KT u to first order, relative to the sum of
// |phi_k,jr| |v_j|), the combined S rounded to float (u), the query features rounded (u) and
// each numerator a float chain over the m features (gamma_m): the numerator is off by at most
// (KT + m + 3) u (1 + O(u)) sum_r |phi_q,r| sum_j |phi_k,jr| max|V|, and dividing by the
// double normaliser gives F_i (+5 u of slack for the second-order terms). A wrong mask, chunk
// boundary, key block, state or feature gives errors of order max|V|.
// Efficient attention: the oracle uses the definition's rho_q^T (rho_k^T V) without division,
// the fast path divides by the computed normaliser (1 up to ~1e-15): inside the same rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "methods/linear/linear.h"
#include "methods/linear/linear_internal.h"
#include "reference/reference.h"
#include "spec/draws.h"
#include "test_util.h"

namespace smyrf::test {
namespace {


LinearConfig lcfg(FeatureMap map, int n_features = 64, int chunk = 64, bool orthogonal = true) {
  LinearConfig c;
  c.map = map;
  c.n_features = n_features;
  c.chunk = chunk;
  c.orthogonal = orthogonal;
  c.dpfp_nu = 2;
  c.rfa_sigma = 1.5f;
  return c;
}

// Fast output and lse against the oracle, within the rule at the top.
void expect_matches_oracle(Problem& pr, const LinearConfig& config, const std::string& what,
                           int threads = 0) {
  const reference::Output ref = reference::attention(pr.params, config);
  std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), 7.0f);
  pr.params.lse = lse.data();
  const auto fast = pr.run(config, threads);
  pr.params.lse = nullptr;
  const double vmax = std::max(max_abs_v(pr), 1e-30);
  const double eps = std::numeric_limits<float>::epsilon();
  double worst = 0;
  for (std::size_t r = 0; r < ref.cond.size(); ++r) {
    const double c = std::max(ref.cond[r], 1.0);
    const double f = pr.params.causal ? 0.0
                                      : double(detail::kLinearKeyTask +
                                               detail::linear_feature_count(config, pr.d) + 8) *
                                            0x1.0p-24 * ref.cond_abs[r];
    const double tol = vmax * (eps * c + 0x1.0p-30 * c * (1 + c) + f);
    for (std::int64_t t = 0; t < pr.dv; ++t) {
      const std::size_t at = r * static_cast<std::size_t>(pr.dv) + static_cast<std::size_t>(t);
      const double err = std::abs(double(fast[at]) - ref.o[at]);
      worst = std::max(worst, err / tol);
      ASSERT_LE(err, tol) << what << " " << detail::feature_map_name(config.map) << " row " << r << " col " << t
                          << " fast " << fast[at] << " ref " << ref.o[at] << " cond " << c;
    }
    if (ref.saw[r]) {
      ASSERT_TRUE(std::isnan(lse[r])) << what << " lse " << r;
    } else {
      ASSERT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << what << " lse " << r << " = " << lse[r];
    }
  }
  (void)worst;
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks, causal;
  int chunk;
};

std::vector<Case> cases() {
  return {
      {"basic", 1, 1, 64, 64, 16, 16, false, false, false, 64},
      {"n1", 1, 1, 1, 1, 4, 3, false, false, false, 64},
      {"cross_padded_masks", 2, 2, 37, 53, 8, 12, true, true, false, 64},
      {"masks", 2, 2, 70, 70, 16, 8, true, true, false, 16},
      {"d1", 1, 2, 30, 30, 1, 2, false, true, false, 64},
      {"causal", 1, 2, 70, 70, 16, 16, false, false, true, 16},
      {"causal_chunk1", 1, 1, 33, 33, 8, 8, true, true, true, 1},
      {"causal_chunk7_masks", 2, 2, 60, 60, 8, 8, true, true, true, 7},
      {"causal_shorter_queries", 1, 2, 20, 75, 8, 8, false, true, true, 16},
      {"causal_longer_queries", 1, 1, 75, 20, 8, 8, true, true, true, 5},
      {"causal_chunk_over_n", 1, 1, 50, 50, 8, 8, false, false, true, 1000},
      // Large enough for several query blocks and threads.
      {"parallel", 2, 3, 300, 280, 32, 32, false, true, false, 64},
      {"parallel_causal", 1, 4, 300, 300, 32, 16, true, true, true, 48},
  };
}

const FeatureMap kMaps[] = {FeatureMap::elu,      FeatureMap::favor_plus, FeatureMap::l2,
                            FeatureMap::dpfp,     FeatureMap::favor,      FeatureMap::rfa,
                            FeatureMap::efficient};

class LinearCases : public ::testing::TestWithParam<Case> {
 protected:
  Problem make() const {
    const Case& c = GetParam();
    Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 17 + c.Nq);
    if (c.masks) pr.random_masks(3 + c.Nk, 0.7, 0.8);
    pr.params.causal = c.causal;
    return pr;
  }
  bool skip(FeatureMap m) const { return GetParam().causal && m == FeatureMap::efficient; }
};

TEST_P(LinearCases, EveryMapMatchesOracle) {
  Problem pr = make();
  for (FeatureMap m : kMaps) {
    if (skip(m)) continue;
    expect_matches_oracle(pr, lcfg(m, 64, GetParam().chunk), "f32");
  }
  // FAVOR+ with i.i.d. features, a feature count that is not a multiple of d, negative scale.
  expect_matches_oracle(pr, lcfg(FeatureMap::favor_plus, 50, GetParam().chunk, false), "iid");
  pr.params.scale = -0.3f;
  expect_matches_oracle(pr, lcfg(FeatureMap::favor_plus, 40, GetParam().chunk), "negative scale");
  expect_matches_oracle(pr, lcfg(FeatureMap::favor, 40, GetParam().chunk), "negative scale");
}

TEST_P(LinearCases, Bf16MatchesOracleAndF32OfTheSameValues) {
  Problem pr = make();
  pr.use_bf16();
  for (FeatureMap m : kMaps) {
    if (skip(m)) continue;
    const LinearConfig c = lcfg(m, 32, GetParam().chunk);
    expect_matches_oracle(pr, c, "bf16");
    const auto bf = pr.run(c);
    pr.use_f32();
    EXPECT_TRUE(bitwise_equal(bf, pr.run(c))) << detail::feature_map_name(m);
    pr.use_bf16();
  }
}

TEST_P(LinearCases, SameBitsAtOneTwoAndSevenThreads) {
  Problem pr = make();
  for (FeatureMap m : kMaps) {
    if (skip(m)) continue;
    const LinearConfig c = lcfg(m, 32, GetParam().chunk);
    const auto one = pr.run(c, 1);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 2))) << detail::feature_map_name(m);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 7))) << detail::feature_map_name(m);
  }
}

TEST_P(LinearCases, AttentionScoresCountFeatureEntries) {
  Problem pr = make();
  for (FeatureMap m : kMaps) {
    if (skip(m)) continue;
    const LinearConfig c = lcfg(m, 32, GetParam().chunk);
    std::size_t expect = 0;
    for (std::int64_t b = 0; b < pr.B; ++b) {
      std::int64_t n = 0;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        n += pr.query_mask.empty() || pr.query_mask[b * pr.Nq + i];
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        n += pr.key_mask.empty() || pr.key_mask[b * pr.Nk + j];
      expect += static_cast<std::size_t>(pr.H * n * detail::linear_feature_count(c, pr.d));
    }
    pr.params.num_threads = 2;
    const RunInfo info = attention(pr.params, c);
    EXPECT_EQ(info.attention_scores, expect) << detail::feature_map_name(m);
    EXPECT_GT(info.workspace_bytes, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

std::vector<float> random_gates(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> g(static_cast<std::size_t>(n));
  for (float& x : g) x = u(rng);
  // Both ends of the range.
  if (n > 3) {
    g[1] = 0.0f;
    g[2] = 1.0f;
  }
  return g;
}

TEST(Linear, GatedRfaMatchesOracle) {
  struct G {
    int B, H, Nq, Nk;
    bool padded, masks;
  };
  for (const G& s : {G{1, 1, 40, 40, false, false}, G{2, 2, 50, 50, true, true},
                     G{1, 2, 20, 60, false, true}, G{2, 1, 60, 25, true, true}}) {
    Problem pr(s.B, s.H, s.Nq, s.Nk, 8, 6, s.padded, 5 + s.Nq);
    if (s.masks) pr.random_masks(9 + s.Nk, 0.7, 0.8);
    pr.params.causal = true;
    const auto gates = random_gates(s.B * s.H * s.Nk, 3 + s.Nk);
    LinearConfig c = lcfg(FeatureMap::rfa, 64);
    c.gates = gates.data();
    expect_matches_oracle(pr, c, "gated");
    const auto one = pr.run(c, 1);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 2)));
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 7)));
    pr.use_bf16();
    expect_matches_oracle(pr, c, "gated bf16");
  }
}

TEST(Linear, GatesOfZeroKeepOnlyTheLastKey) {
  // g = 0 everywhere: S_t = phi(k_t) v_t^T and z_t = phi(k_t), so a query reads exactly the
  // value of the last visible key at or before its position (its normaliser is nonzero here).
  Problem pr(1, 1, 30, 30, 8, 4, false, 3);
  pr.params.causal = true;
  std::vector<float> gates(30, 0.0f);
  LinearConfig c = lcfg(FeatureMap::rfa, 64);
  c.gates = gates.data();
  const auto out = pr.run(c);
  for (std::int64_t i = 0; i < 30; ++i)
    for (std::int64_t t = 0; t < 4; ++t)
      EXPECT_NEAR(out[static_cast<std::size_t>(i * 4 + t)], pr.v_at(0, 0, i)[t], 1e-5) << i;
}

// Non-causal keys are processed in blocks of detail::kLinearKeyTask positions, each with its
// own stabiliser, combined with weights exp(c_b - c). Blocks whose stabilisers differ a lot
// (keys of one block scaled up), a block whose keys are all masked, a trailing partial block and
// a batch element with one visible key in the last block: against the oracle, and the same bits
// at 1, 2 and 7 threads.
TEST(Linear, KeyBlocksWithDistantStabilisersMatchOracle) {
  const std::int64_t KT = detail::kLinearKeyTask, Nk = 2 * KT + 45;
  Problem pr(2, 2, 70, Nk, 8, 6, true, 41);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t j = 2 * KT; j < Nk; ++j)
        for (std::int64_t t = 0; t < pr.d; ++t) pr.k_at(b, h, j)[t] *= 3.0f;
  pr.random_masks(5, 0.9, 0.9);
  for (std::int64_t j = 0; j < Nk; ++j) {
    pr.key_mask[static_cast<std::size_t>(j)] = (j >= KT && j < 2 * KT) ? 0 : 1;
    pr.key_mask[static_cast<std::size_t>(Nk + j)] = j == Nk - 3 ? 1 : 0;
  }
  for (FeatureMap m : kMaps) {
    const LinearConfig c = lcfg(m, 24);
    expect_matches_oracle(pr, c, "key blocks");
    const auto one = pr.run(c, 1);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 2))) << detail::feature_map_name(m);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 7))) << detail::feature_map_name(m);
  }
}

// The product tiles (4 rows x up to 4 vectors, then 1 row; columns in 4, 2, 1 vectors) with
// many features and wide values: m and dv that leave every kind of remainder.
TEST(Linear, WideFeaturesAndValuesMatchOracle) {
  Problem pr(1, 2, 67, 150, 12, 43, true, 43);
  for (int m : {72, 130}) {
    expect_matches_oracle(pr, lcfg(FeatureMap::favor_plus, m), "wide");
    expect_matches_oracle(pr, lcfg(FeatureMap::rfa, m), "wide");
  }
  expect_matches_oracle(pr, lcfg(FeatureMap::dpfp), "wide");
  expect_matches_oracle(pr, lcfg(FeatureMap::efficient), "wide");
}

TEST(Linear, MasksRespected) {
  for (bool causal : {false, true})
    for (FeatureMap m : kMaps) {
      if (causal && m == FeatureMap::efficient) continue;
      Problem pr(2, 2, 90, 80, 16, 12, true, 10);
      pr.random_masks(12, 0.6, 0.7);
      pr.params.causal = causal;
      expect_masks_respected(pr, lcfg(m, 32, 16));
    }
}

TEST(Linear, FullyMaskedBatchElementGivesZeros) {
  for (FeatureMap m : kMaps) {
    Problem pr(2, 2, 40, 40, 8, 8, true, 4);
    pr.random_masks(5, 0.8, 0.9);
    for (std::int64_t j = 0; j < pr.Nk; ++j) pr.key_mask[static_cast<std::size_t>(pr.Nk + j)] = 0;
    expect_matches_oracle(pr, lcfg(m, 32), "fully masked");
    const auto out = pr.run(lcfg(m, 32));
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        for (std::int64_t t = 0; t < pr.dv; ++t) ASSERT_EQ(pr.o_at(1, h, i)[t], 0.0f);
  }
}

TEST(Linear, ZeroNormaliserGivesZeroOutput) {
  // l2 with one key opposite to the query: a = 1 + q^.k^ = 0 exactly.
  Problem pr(1, 1, 1, 1, 4, 2);
  std::fill_n(pr.q_at(0, 0, 0), 4, 0.0f);
  std::fill_n(pr.k_at(0, 0, 0), 4, 0.0f);
  pr.q_at(0, 0, 0)[0] = 2.0f;
  pr.k_at(0, 0, 0)[0] = -3.0f;
  const auto out = pr.run(lcfg(FeatureMap::l2));
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
}

TEST(Linear, SeedRedrawsRandomFeatures) {
  for (FeatureMap m : {FeatureMap::favor_plus, FeatureMap::favor, FeatureMap::rfa}) {
    Problem pr(1, 2, 50, 50, 16, 8, false, 8);
    pr.params.seed = 1;
    const auto a = pr.run(lcfg(m, 32));
    EXPECT_TRUE(bitwise_equal(a, pr.run(lcfg(m, 32))));
    pr.params.seed = 2;
    EXPECT_GT(max_abs_diff(a, pr.run(lcfg(m, 32))), 1e-4) << detail::feature_map_name(m);
  }
  // Deterministic maps do not depend on the seed.
  Problem pr(1, 1, 20, 20, 8, 8);
  const auto a = pr.run(lcfg(FeatureMap::elu));
  pr.params.seed = 99;
  EXPECT_TRUE(bitwise_equal(a, pr.run(lcfg(FeatureMap::elu))));
}

TEST(Linear, OrthogonalDrawHasOrthogonalBlocksAndChiNorms) {
  const std::int64_t d = 8, rows = 20;  // 3 blocks, the last one truncated to 4 rows
  const auto w = spec::linear_random_features(5, 3, rows, d, true);
  auto dot = [&](std::int64_t a, std::int64_t b) {
    double s = 0;
    for (std::int64_t t = 0; t < d; ++t) s += w[a * d + t] * w[b * d + t];
    return s;
  };
  double norms = 0;
  for (std::int64_t a = 0; a < rows; ++a) {
    norms += std::sqrt(dot(a, a));
    for (std::int64_t b = a + 1; b < rows && b / d == a / d; ++b)
      EXPECT_LT(std::abs(dot(a, b)), 1e-12 * std::sqrt(dot(a, a) * dot(b, b))) << a << " " << b;
  }
  EXPECT_NE(dot(0, 0), dot(1, 1));                 // norms are drawn, not 1
  EXPECT_NEAR(norms / rows, std::sqrt(8.0), 1.0);  // E chi(8) ~ 2.74
  // Another head or seed: other directions; i.i.d. draw differs from the orthogonal one.
  EXPECT_NE(w, spec::linear_random_features(5, 4, rows, d, true));
  EXPECT_NE(w, spec::linear_random_features(6, 3, rows, d, true));
  EXPECT_NE(w, spec::linear_random_features(5, 3, rows, d, false));
}

// Many random features: FAVOR+ approaches softmax attention (Choromanski et al. 2021). With
// inputs N(0, 0.5^2), d = 16 and the default scale, |x|^2 ~ 1, so each kernel estimate has
// relative standard deviation ~ sqrt((e^{|x+y|^2} - 1) / m) <~ 0.1 at m = 4096 for the largest
// norms (less with orthogonal features; the positive features' estimate is log-normal, heavy-
// tailed for large |x + y|, which is why the inputs are kept small), averaged over 48 keys in O.
// Bound (loose, ~3x the observed error): 0.06 max|V|; m = 4096 is closer than m = 16; and the
// estimate must be closer to softmax than the plain mean of V (half its distance: with such
// small logits the attention is mild, and the estimate must still resolve it).
TEST(Linear, FavorPlusConvergesToSoftmax) {
  Problem pr(1, 2, 48, 48, 16, 8, false, 21);
  pr.fill_gaussian(21, 0.5f);
  const auto exact = pr.run(DenseConfig{});
  const double vmax = max_abs_v(pr);
  std::vector<float> mean;
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 48; ++i)
      for (std::int64_t t = 0; t < 8; ++t) {
        double s = 0;
        for (std::int64_t j = 0; j < 48; ++j) s += pr.v_at(0, h, j)[t];
        mean.push_back(float(s / 48));
      }
  const double err_mean = max_abs_diff(mean, exact);
  const double err_many = max_abs_diff(pr.run(lcfg(FeatureMap::favor_plus, 4096)), exact);
  const double err_few = max_abs_diff(pr.run(lcfg(FeatureMap::favor_plus, 16)), exact);
  EXPECT_LT(err_many, 0.06 * vmax);
  EXPECT_LT(err_many, err_few);
  EXPECT_LT(err_many, 0.5 * err_mean);
  // The trigonometric FAVOR estimates the same kernel.
  const double err_trig = max_abs_diff(pr.run(lcfg(FeatureMap::favor, 8192)), exact);
  EXPECT_LT(err_trig, 0.06 * vmax);
}

// Many random features: RFA approaches attention with the Gaussian kernel of the unit vectors,
// O_i = sum_j k(q_i, k_j) v_j / sum_j k(q_i, k_j), k = exp(-|q^ - k^|^2 / (2 sigma^2)),
// computed here. Each estimate is a mean of m/2 cosines (variance <= 1/2 each): absolute error
// ~ 0.016 at m = 4096 against kernel values >= e^{-2/sigma^2} = 0.41 (sigma = 1.5). Bound
// (loose): 0.05 max|V|.
TEST(Linear, RfaConvergesToGaussianKernelAttention) {
  Problem pr(1, 2, 40, 40, 16, 8, false, 23);
  pr.random_masks(4, 0.8, 1.0);
  pr.params.causal = true;
  const double sigma = 1.5;
  const auto approx = pr.run(lcfg(FeatureMap::rfa, 4096));
  std::vector<float> exact;
  auto unit = [&](const float* x) {
    std::vector<double> u(16);
    double n = 0;
    for (int t = 0; t < 16; ++t) n += double(x[t]) * x[t];
    for (int t = 0; t < 16; ++t) u[t] = x[t] / std::sqrt(n);
    return u;
  };
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 40; ++i) {
      const auto q = unit(pr.q_at(0, h, i));
      std::vector<double> num(8, 0.0);
      double den = 0;
      for (std::int64_t j = 0; j <= i; ++j) {
        if (!pr.key_mask[static_cast<std::size_t>(j)]) continue;
        const auto k = unit(pr.k_at(0, h, j));
        double d2 = 0;
        for (int t = 0; t < 16; ++t) d2 += (q[t] - k[t]) * (q[t] - k[t]);
        const double a = std::exp(-d2 / (2 * sigma * sigma));
        den += a;
        for (int t = 0; t < 8; ++t) num[t] += a * pr.v_at(0, h, j)[t];
      }
      for (int t = 0; t < 8; ++t) exact.push_back(den > 0 ? float(num[t] / den) : 0.0f);
    }
  EXPECT_LT(max_abs_diff(approx, exact), 0.05 * max_abs_v(pr));
}

// The elu map by hand on one query and two keys.
TEST(Linear, EluByHand) {
  Problem pr(1, 1, 1, 2, 2, 1);
  const float q[2] = {0.5f, -1.0f}, k0[2] = {-2.0f, 1.0f}, k1[2] = {0.0f, 3.0f};
  std::copy_n(q, 2, pr.q_at(0, 0, 0));
  std::copy_n(k0, 2, pr.k_at(0, 0, 0));
  std::copy_n(k1, 2, pr.k_at(0, 0, 1));
  pr.v_at(0, 0, 0)[0] = 1.0f;
  pr.v_at(0, 0, 1)[0] = -2.0f;
  const double a0 = 1.5 * std::exp(-2.0) + std::exp(-1.0) * 2.0;
  const double a1 = 1.5 * 1.0 + std::exp(-1.0) * 4.0;
  const auto out = pr.run(lcfg(FeatureMap::elu));
  EXPECT_NEAR(out[0], (a0 - 2 * a1) / (a0 + a1), 1e-6);
}

TEST(Linear, EverySimdTargetMatchesOracle) {
  // Forced in turn: every target this CPU supports (vector exp, sin and cos of each target).
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().DeInit();
    Problem pr(2, 2, 45, 50, 12, 10, true, 31);
    pr.random_masks(2, 0.8, 0.9);
    for (bool causal : {false, true}) {
      pr.params.causal = causal;
      for (FeatureMap m : kMaps) {
        if (causal && m == FeatureMap::efficient) continue;
        expect_matches_oracle(pr, lcfg(m, 36, 8), hwy::TargetName(target));
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().DeInit();
}

TEST(Linear, BroadcastKeysAndValuesAcrossHeads) {
  // One K/V head shared by every query head (head stride 0), as with multi-query attention.
  Problem pr(2, 3, 40, 35, 8, 8, true, 13);
  pr.params.k_head_stride = 0;
  pr.params.v_head_stride = 0;
  for (FeatureMap m : kMaps) expect_matches_oracle(pr, lcfg(m, 32), "broadcast");
  pr.params.causal = true;
  expect_matches_oracle(pr, lcfg(FeatureMap::favor_plus, 32, 5), "broadcast causal");
}

TEST(Linear, TrigBeyondVectorRangeAndUncheckedNonFiniteInputs) {
  // rfa with a tiny sigma: |w.x| beyond the vector sin / cos range (the scalar fallback).
  Problem pr(1, 2, 30, 30, 8, 4, false, 6);
  LinearConfig c = lcfg(FeatureMap::rfa, 16);
  c.rfa_sigma = 2e-5f;
  expect_matches_oracle(pr, c, "large arguments");
  // Non-finite inputs without the scan: any values, no crash, every map.
  pr.q_at(0, 1, 3)[2] = std::numeric_limits<float>::quiet_NaN();
  pr.k_at(0, 0, 5)[1] = std::numeric_limits<float>::infinity();
  pr.k_at(0, 1, 7)[0] = -std::numeric_limits<float>::infinity();
  pr.params.check_finite = false;
  for (bool causal : {false, true})
    for (FeatureMap m : kMaps) {
      if (causal && m == FeatureMap::efficient) continue;
      pr.params.causal = causal;
      pr.run(lcfg(m, 16, 4));
    }
}

// A reused workspace gives the same bits as a fresh one.
TEST(Linear, WorkspaceReuse) {
  Problem pr(1, 2, 70, 70, 16, 16, false, 3);
  pr.params.causal = true;
  Workspace ws;
  for (FeatureMap m : {FeatureMap::favor_plus, FeatureMap::dpfp}) {
    const auto fresh = pr.run(lcfg(m, 48, 9));
    attention(pr.params, lcfg(m, 48, 9), &ws);
    attention(pr.params, lcfg(m, 48, 9), &ws);
    EXPECT_TRUE(bitwise_equal(fresh, pr.output()));
  }
}

TEST(Linear, BadConfigsThrowNamingTheParameter) {
  Problem pr(1, 2, 40, 40, 8, 8);
  auto expect_error = [&](const LinearConfig& c, const std::string& name) {
    expect_config_error(pr, c, name);
  };
  LinearConfig c;
  c.n_features = 0;
  expect_error(c, "LinearConfig.n_features");
  c.n_features = (1 << 16) + 1;
  expect_error(c, "LinearConfig.n_features");
  c = lcfg(FeatureMap::favor, 33);
  expect_error(c, "LinearConfig.n_features");
  c = lcfg(FeatureMap::rfa, 33);
  expect_error(c, "LinearConfig.n_features");
  c = lcfg(FeatureMap::rfa);
  c.rfa_sigma = 0.0f;
  expect_error(c, "LinearConfig.rfa_sigma");
  c.rfa_sigma = std::numeric_limits<float>::quiet_NaN();
  expect_error(c, "LinearConfig.rfa_sigma");
  c.rfa_sigma = std::numeric_limits<float>::infinity();
  expect_error(c, "LinearConfig.rfa_sigma");
  c = lcfg(FeatureMap::dpfp);
  c.dpfp_nu = 0;
  expect_error(c, "LinearConfig.dpfp_nu");
  c.dpfp_nu = 17;  // > 2 d
  expect_error(c, "LinearConfig.dpfp_nu");
  c = lcfg(FeatureMap::elu);
  c.chunk = 0;
  expect_error(c, "LinearConfig.chunk");
  // Gates: rfa only, causal only, finite values in [0, 1] for visible keys.
  std::vector<float> gates(2 * 40, 0.5f);
  c = lcfg(FeatureMap::elu);
  c.gates = gates.data();
  pr.params.causal = true;
  expect_error(c, "LinearConfig.gates");
  c.map = FeatureMap::rfa;
  pr.params.causal = false;
  expect_error(c, "LinearConfig.gates");
  pr.params.causal = true;
  gates[45] = std::numeric_limits<float>::quiet_NaN();
  expect_error(c, "LinearConfig.gates[0, 1, 5]");
  gates[45] = 1.5f;
  expect_error(c, "LinearConfig.gates[0, 1, 5]");
  gates[45] = -0.1f;
  expect_error(c, "LinearConfig.gates");
  // A masked key's gate is not read.
  std::vector<std::uint8_t> km(40, 1), qm(40, 1);
  km[5] = 0;
  pr.params.with_masks(km.data(), qm.data());
  EXPECT_NO_THROW(attention(pr.params, c));
  pr.params.with_masks(nullptr, nullptr);
  // Efficient attention has no causal form.
  expect_error(lcfg(FeatureMap::efficient), "params.causal");
  pr.params.causal = false;
  pr.params.dropout = 0.1f;
  expect_error(lcfg(FeatureMap::elu), "params.dropout");
}

}  // namespace
}  // namespace smyrf::test
