// The training path of feature-map ("linear") attention, for every map (causal forms included):
//   - the double-precision definition's forward (attention_f64) is the method's independent
//     oracle (reference::attention, which sums a_ij pair by pair);
//   - its backward (attention_backward_f64) against central finite differences of attention_f64;
//   - the f32 backward against it. Rule: the float backward computes features, normalisers and
//     every sum over blocks in double, and its value products (the forward's kind) as float
//     chains of at most K = max(128, m, dv + 1) terms from operands rounded to float, three
//     in a row at most on any path to a gradient element; so, relative to the largest
//     gradient element of the tensor (the terms' scale), each element is within
//     3 (K + 2) 2^-24 max|ref|, doubled for the maps' Jacobians (one more product of a
//     rounded quantity), times the condition of the normalisers (1 for the positive maps; the
//     trigonometric favor and rfa can nearly cancel): kappa = the largest over queries of
//     sum_j |a_ij| / |sum_j a_ij| (non-causal: sum_r |phi_q,r| sum_j |phi_k,jr| / |den|, the
//     oracle's cond_abs and cond), i.e. tol = 6 (K + 2) 2^-24 kappa max|ref|;
//   - masked tokens get zero gradients; same bits at 1, 2 and 7 threads;
//   - gated RFA: the same checks, with the gates' gradient (finite differences in the gates,
//     positions over several checkpoint chunks), and errors naming the field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <random>
#include <tuple>
#include <string>
#include <vector>

#include "reference/reference.h"
#include "smyrf/registry.h"
#include "smyrf/smyrf.h"
#include "test_util.h"
#include "train_util.h"

namespace smyrf::test {
namespace {

struct LinearCase {
  std::string name;
  LinearConfig config;
};

std::vector<LinearCase> linear_cases() {
  return {
      {"elu", {.map = FeatureMap::elu}},
      {"favor_plus", {.map = FeatureMap::favor_plus, .n_features = 24}},
      {"favor_plus_iid", {.map = FeatureMap::favor_plus, .n_features = 12, .orthogonal = false}},
      {"favor", {.map = FeatureMap::favor, .n_features = 16}},
      {"rfa", {.map = FeatureMap::rfa, .n_features = 16, .rfa_sigma = 1.5f}},
      {"dpfp", {.map = FeatureMap::dpfp, .dpfp_nu = 2}},
      {"efficient", {.map = FeatureMap::efficient}},
      {"l2", {.map = FeatureMap::l2}},
      {"elu_small_chunks", {.map = FeatureMap::elu, .chunk = 5}},
  };
}

void PrintTo(const LinearCase& c, std::ostream* os) { *os << c.name; }

class LinearBackward : public ::testing::TestWithParam<LinearCase> {};

// The double definition's O equals the oracle's (pairwise sums) and lse is NaN / -inf alike.
TEST_P(LinearBackward, DoubleDefinitionIsTheOracle) {
  const LinearCase& lc = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !capabilities(lc.config).causal_backward) continue;
    for (float scale : {0.0f, -0.3f}) {
      // Nq, Nk over several blocks of 128 when the scale is negative.
      TrainCase c(2, 2, scale < 0 ? 300 : 36, scale < 0 ? 280 : 40, 8, 6, true, 51);
      c.pr.random_masks(52, 0.85, 0.9);
      c.pr.params.causal = causal;
      if (scale != 0.0f) c.pr.params.scale = scale;
      const Oracle f64(c, lc.config);
      const reference::Output ref = reference::attention(c.pr.params, lc.config);
      ASSERT_EQ(ref.o.size(), f64.o.size());
      const double omax = std::max(1.0, max_abs(ref.o));
      for (std::size_t x = 0; x < ref.o.size(); ++x)
        ASSERT_NEAR(f64.o[x], ref.o[x], 1e-12 * omax * (1 + ref.cond[x / 6])) << lc.name << " o " << x;
      for (std::size_t x = 0; x < ref.lse.size(); ++x) {
        if (std::isnan(ref.lse[x])) {
          ASSERT_TRUE(std::isnan(f64.lse[x])) << lc.name << " lse " << x;
        } else {
          ASSERT_EQ(f64.lse[x], ref.lse[x]) << lc.name << " lse " << x;
        }
      }
    }
  }
}

TEST_P(LinearBackward, DoubleDefinitionMatchesFiniteDifferences) {
  const LinearCase& lc = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !capabilities(lc.config).causal_backward) continue;
    FdCase c(1, 2, 30, 33, 5, 4, 31);
    c.params.causal = causal;
    c.check(lc.config, (lc.name + (causal ? " causal" : "")).c_str());
  }
}

// Several blocks of 128 keys and queries: the sums over blocks (and the key stabilisers
// combined across blocks) in the gradient too.
TEST_P(LinearBackward, DoubleDefinitionOverBlocksMatchesFiniteDifferences) {
  const LinearCase& lc = GetParam();
  FdCase c(1, 1, 200, 270, 3, 2, 35);
  c.check(lc.config, (lc.name + " blocks").c_str());
}

// Masks in the finite differences too (masked rows' gradients are 0, the others exact).
TEST_P(LinearBackward, DoubleDefinitionWithMasksMatchesFiniteDifferences) {
  const LinearCase& lc = GetParam();
  FdCase c(2, 1, 20, 20, 4, 3, 33);
  c.km = {1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1,
          0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1};
  c.qm = {1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1,
          1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1};
  c.params.with_masks(c.km.data(), c.qm.data());
  c.params.causal = capabilities(lc.config).causal_backward;
  c.check(lc.config, (lc.name + " masks").c_str());
}

// The rule of the file's header.
// oracle_config: the double path's config when it differs (gated RFA: its f64 parts).
void expect_float_matches(TrainCase& c, const LinearConfig& config, const std::string& what,
                          const LinearConfig* oracle_config = nullptr) {
  c.forward(config);
  c.backward(config);
  const Oracle ref(c, oracle_config != nullptr ? *oracle_config : config);
  const std::int64_t m = config.map == FeatureMap::favor_plus || config.map == FeatureMap::favor ||
                                 config.map == FeatureMap::rfa
                             ? config.n_features
                         : config.map == FeatureMap::dpfp ? 2 * c.pr.d * config.dpfp_nu
                                                          : c.pr.d + 1;
  const double K = static_cast<double>(std::max<std::int64_t>({128, m, c.pr.dv + 1}));
  const reference::Output exact = reference::attention(c.pr.params, config);
  double kappa = 1.0;
  for (std::size_t i = 0; i < exact.saw.size(); ++i)
    if (exact.saw[i]) kappa = std::max(kappa, c.pr.params.causal ? exact.cond[i] : exact.cond_abs[i]);
  struct Item {
    const char* name;
    std::vector<float> got;
    const std::vector<double>* ref;
  };
  const Item items[] = {{"dQ", c.q_layout(c.gq), &ref.gq}, {"dK", c.k_layout(c.gk), &ref.gk}, {"dV", c.v_layout(c.gv), &ref.gv}};
  for (const Item& it : items) {
    const double big = max_abs(*it.ref);
    EXPECT_GT(big, 0.0) << what << " " << it.name;
    const double tol = 6.0 * (K + 2.0) * kappa * std::ldexp(big, -24);
    const double err = max_abs_err(it.got, *it.ref);
    EXPECT_LE(err, tol) << what << " " << it.name << " max|ref| " << big;
    if (std::getenv("SMYRF_TEST_VERBOSE")) std::printf("%s %s err/tol %.3g\n", what.c_str(), it.name, err / tol);
  }
}

TEST_P(LinearBackward, FloatMatchesTheDoubleDefinition) {
  const LinearCase& lc = GetParam();
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
  };
  for (const Shape& s : {Shape{2, 2, 36, 36, 8, 6}, Shape{1, 3, 150, 150, 16, 16}, Shape{2, 1, 40, 30, 12, 9},
                         Shape{1, 2, 30, 45, 7, 17}}) {
    for (bool causal : {false, true}) {
      if (causal && !capabilities(lc.config).causal_backward) continue;
      TrainCase c(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq * 5 + s.H));
      c.pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.85, 0.9);
      c.pr.params.causal = causal;
      c.pr.params.seed = 12;
      expect_float_matches(c, lc.config,
                           lc.name + " " + std::to_string(s.Nq) + "x" + std::to_string(s.Nk) + (causal ? " causal" : ""));
    }
  }
}

TEST_P(LinearBackward, MaskedTokensGetZeroGradients) {
  const LinearCase& lc = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !capabilities(lc.config).causal_backward) continue;
    TrainCase c(2, 2, 36, 36, 8, 8, true, 41);
    c.pr.random_masks(42, 0.6, 0.7);
    c.pr.params.causal = causal;
    c.forward(lc.config);
    c.backward(lc.config);
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t h = 0; h < 2; ++h) {
        for (std::int64_t i = 0; i < 36; ++i)
          if (!c.pr.query_mask[static_cast<std::size_t>(b * 36 + i)]) {
            const float* g = c.gq.data() + (c.pr.q_at(b, h, i) - c.pr.q.data());
            for (int t = 0; t < 8; ++t) ASSERT_EQ(g[t], 0.0f) << lc.name;
          }
        for (std::int64_t j = 0; j < 36; ++j)
          if (!c.pr.key_mask[static_cast<std::size_t>(b * 36 + j)]) {
            const float* g = c.gk.data() + (c.pr.k_at(b, h, j) - c.pr.k.data());
            const float* w = c.gv.data() + (c.pr.v_at(b, h, j) - c.pr.v.data());
            for (int t = 0; t < 8; ++t) ASSERT_EQ(g[t], 0.0f) << lc.name;
            for (int t = 0; t < 8; ++t) ASSERT_EQ(w[t], 0.0f) << lc.name;
          }
      }
    for (const auto* g : {&c.gq, &c.gk, &c.gv})
      for (float x : (g == &c.gq ? c.q_layout(*g) : g == &c.gk ? c.k_layout(*g) : c.v_layout(*g)))
        ASSERT_TRUE(std::isfinite(x)) << lc.name;
  }
}

// A batch element whose keys are all masked: its queries see nothing, every gradient is 0.
TEST_P(LinearBackward, NoVisibleKeyGivesZeroGradients) {
  const LinearCase& lc = GetParam();
  TrainCase c(2, 1, 12, 12, 4, 4, false, 43);
  c.pr.random_masks(44, 1.0, 1.0);
  for (int j = 0; j < 12; ++j) c.pr.key_mask[static_cast<std::size_t>(12 + j)] = 0;
  c.forward(lc.config);
  c.backward(lc.config);
  for (std::int64_t i = 0; i < 12; ++i)
    for (int t = 0; t < 4; ++t) {
      ASSERT_EQ(c.gq[static_cast<std::size_t>(c.pr.q_at(1, 0, i) - c.pr.q.data() + t)], 0.0f) << lc.name;
      ASSERT_EQ(c.gk[static_cast<std::size_t>(c.pr.k_at(1, 0, i) - c.pr.k.data() + t)], 0.0f) << lc.name;
      ASSERT_EQ(c.gv[static_cast<std::size_t>(c.pr.v_at(1, 0, i) - c.pr.v.data() + t)], 0.0f) << lc.name;
    }
}

TEST_P(LinearBackward, SameBitsForEveryThreadCount) {
  const LinearCase& lc = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !capabilities(lc.config).causal_backward) continue;
    std::vector<float> first[3];
    for (int threads : {1, 2, 7}) {
      TrainCase c(2, 3, 150, 150, 16, 16, false, 5);
      c.pr.params.causal = causal;
      c.pr.params.seed = 77;
      c.forward(lc.config, threads);
      c.backward(lc.config, threads);
      const std::vector<float> got[3] = {c.gq, c.gk, c.gv};
      for (int t = 0; t < 3; ++t) {
        if (threads == 1) first[t] = got[t];
        EXPECT_TRUE(bitwise_equal(first[t], got[t])) << lc.name << " tensor " << t << " threads " << threads;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Maps, LinearBackward, ::testing::ValuesIn(linear_cases()),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return info.param.name; });

// Every linear form of the registry has a backward, a causal backward where it is causal, and a
// double definition; each has a case above.
TEST(LinearBackwardCases, CoverEveryLinearForm) {
  for (const MethodInfo& m : methods()) {
    if (m.name != "linear") continue;
    EXPECT_TRUE(m.caps.backward && m.caps.f64) << m.form;
    EXPECT_EQ(m.caps.causal_backward, m.caps.causal) << m.form;
    bool covered = false;
    for (const LinearCase& c : linear_cases()) covered |= m.form == c.name;
    EXPECT_TRUE(covered) << "linear/" << m.form << " has no case in test_linear_backward.cpp";
  }
}

// ---- Gated RFA (contract: linear.h, "Gated RFA's gradient") ----

// Gates in [0.05, 0.95], with some exactly 0 and 1 (a key that resets the state, one that is
// ignored), as floats, their doubles and both gradients.
struct Gates {
  std::vector<float> f, g32;
  std::vector<double> x, g64;
  LinearDoubleParts dbl;
  LinearConfig config32, config64;
  Gates(std::int64_t B, std::int64_t H, std::int64_t Nk, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(0.05f, 0.95f);
    for (std::int64_t i = 0; i < B * H * Nk; ++i) f.push_back(i % 23 == 7 ? 0.0f : i % 29 == 11 ? 1.0f : u(rng));
    x.assign(f.begin(), f.end());
    g32.assign(f.size(), std::nanf(""));
    g64.assign(f.size(), kInf);
    config32 = {.map = FeatureMap::rfa, .n_features = 16, .rfa_sigma = 1.5f, .gates = f.data(), .grad_gates = g32.data()};
    dbl = {x.data(), g64.data()};
    config64 = {.map = FeatureMap::rfa, .n_features = 16, .rfa_sigma = 1.5f, .gates = f.data(), .f64 = &dbl};
  }
  Gates(const Gates&) = delete;
  Gates& operator=(const Gates&) = delete;
};

// The double definition's O equals the oracle's (the recurrence unrolled pair by pair), over
// several checkpoint chunks.
TEST(GatedRfa, DoubleDefinitionIsTheOracle) {
  TrainCase c(2, 2, 100, 150, 8, 6, true, 51);
  c.pr.random_masks(52, 0.85, 0.9);
  c.pr.params.causal = true;
  const Gates g(2, 2, 150, 53);
  const Oracle f64(c, g.config64);
  const reference::Output ref = reference::attention(c.pr.params, g.config32);
  ASSERT_EQ(ref.o.size(), f64.o.size());
  const double omax = std::max(1.0, max_abs(ref.o));
  for (std::size_t x = 0; x < ref.o.size(); ++x)
    ASSERT_NEAR(f64.o[x], ref.o[x], 1e-12 * omax * (1 + ref.cond[x / 6])) << "o " << x;
}

// Central finite differences of attention_f64 in Q, K, V and the gates (masks, positions over
// three checkpoint chunks, Nq < Nk).
TEST(GatedRfa, DoubleDefinitionMatchesFiniteDifferences) {
  FdCase f(2, 1, 120, 140, 3, 2, 61);
  f.km.assign(2 * 140, 1);
  f.qm.assign(2 * 120, 1);
  f.km[3] = f.km[70] = f.km[140 + 64] = f.km[140 + 139] = 0;
  f.qm[5] = f.qm[120 + 90] = 0;
  f.params.with_masks(f.km.data(), f.qm.data());
  f.params.causal = true;
  Gates g(2, 1, 140, 62);
  std::vector<double> o(f.go.size()), lse(static_cast<std::size_t>(2 * 120));
  attention_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, g.config64, o.data(), lse.data());
  std::vector<double> gq(f.q.size()), gk(f.k.size()), gv(f.v.size());
  attention_backward_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, g.config64, o.data(), lse.data(),
                         f.go.data(), gq.data(), gk.data(), gv.data());
  const double h = 1e-6;
  for (auto [x, grad, name] : {std::tuple{&f.q, &gq, "dQ"}, std::tuple{&f.k, &gk, "dK"}, std::tuple{&f.v, &gv, "dV"},
                               std::tuple{&g.x, &g.g64, "dgates"}}) {
    const double gmax = max_abs(*grad);
    EXPECT_GT(gmax, 1e-3) << name;
    for (std::size_t i = 0; i < x->size(); ++i) {
      const double keep = (*x)[i];
      (*x)[i] = keep + h;
      const double up = f.loss(g.config64);
      (*x)[i] = keep - h;
      const double down = f.loss(g.config64);
      (*x)[i] = keep;
      ASSERT_NEAR((*grad)[i], (up - down) / (2 * h), 1e-6 * (1 + gmax)) << name << "[" << i << "]";
    }
  }
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t j = 0; j < 140; ++j)
      if (!f.km[static_cast<std::size_t>(b * 140 + j)]) {
        EXPECT_EQ(g.g64[static_cast<std::size_t>(b * 140 + j)], 0.0);
      }
}

// The f32 backward against the double definition: the rule of the file's header (the causal
// sweeps run in double on the float inputs widened, so the gates' gradient too).
TEST(GatedRfa, FloatMatchesTheDoubleDefinition) {
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
  };
  for (const Shape& s : {Shape{2, 2, 36, 36, 8, 6}, Shape{1, 3, 150, 150, 16, 16}, Shape{2, 1, 40, 130, 12, 9}}) {
    TrainCase c(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq * 5 + s.H));
    c.pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.85, 0.9);
    c.pr.params.causal = true;
    Gates g(s.B, s.H, s.Nk, 71);
    const std::string what = "gated " + std::to_string(s.Nq) + "x" + std::to_string(s.Nk);
    expect_float_matches(c, g.config32, what, &g.config64);
    const reference::Output exact = reference::attention(c.pr.params, g.config32);
    double kappa = 1.0;
    for (std::size_t i = 0; i < exact.saw.size(); ++i)
      if (exact.saw[i]) kappa = std::max(kappa, exact.cond[i]);
    const double big = max_abs(g.g64);
    EXPECT_GT(big, 0.0) << what;
    const double tol = 6.0 * (std::max<double>(128, s.dv + 1) + 2.0) * kappa * std::ldexp(big, -24);
    EXPECT_LE(max_abs_err(g.g32, g.g64), tol) << what << " dgates";
  }
}

TEST(GatedRfa, SameBitsForEveryThreadCount) {
  std::vector<std::vector<float>> first;
  for (int threads : {1, 2, 7}) {
    TrainCase c(2, 3, 150, 130, 16, 16, false, 5);
    c.pr.random_masks(6, 0.9, 0.9);
    c.pr.params.causal = true;
    Gates g(2, 3, 130, 7);
    c.forward(g.config32, threads);
    c.backward(g.config32, threads);
    const std::vector<std::vector<float>> got = {c.pr.o, c.gq, c.gk, c.gv, g.g32};
    if (threads == 1) first = got;
    for (std::size_t t = 0; t < got.size(); ++t)
      EXPECT_TRUE(bitwise_equal(first[t], got[t])) << "tensor " << t << " threads " << threads;
  }
}

TEST(GatedRfa, ErrorsNameTheField) {
  TrainCase c(1, 1, 8, 8, 4, 4, false, 3);
  c.pr.params.causal = true;
  std::vector<float> gates(8, 0.5f), grad(8);
  std::vector<double> g64(8);
  auto expect_error = [&](const LinearConfig& config, const std::string& field, bool f64_call) {
    try {
      if (f64_call) {
        const Oracle ref(c, config);
      } else {
        c.forward(LinearConfig{.map = FeatureMap::rfa, .n_features = 8, .gates = config.gates});
        c.backward(config);
      }
      ADD_FAILURE() << "no error for " << field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  expect_error({.map = FeatureMap::rfa, .n_features = 8, .grad_gates = grad.data()}, "LinearConfig.grad_gates", false);
  LinearDoubleParts values{.gates = g64.data()};
  expect_error({.map = FeatureMap::rfa, .n_features = 8, .f64 = &values}, "LinearConfig.f64->gates", true);
  expect_error({.map = FeatureMap::rfa, .n_features = 8, .gates = gates.data(), .grad_gates = grad.data()},
               "LinearConfig.grad_gates", true);
}

}  // namespace
}  // namespace smyrf::test
