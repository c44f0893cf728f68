// The training path of Sinkhorn sorting attention (contract: smyrf/methods/sinkhorn.h,
// "Backward"), with the content sort and with a sort net:
//   - the double-precision definition's forward (attention_f64) is the independent oracle
//     reference::attention(params, SinkhornConfig) to 1e-12 (masks, short last blocks, Nq != Nk,
//     no iterations and many);
//   - its backward (attention_backward_f64, with f64->grad_sort_net) against central finite
//     differences of attention_f64 in Q, K, V and the sort net, with masks, two batch elements
//     (the sort net's gradient sums over the batch) and dropout (its mask is a constant);
//   - the f32 backward against it. Rule: the float path rounds the sorted rows to float, runs
//     the block's softmax and its backward in float (reductions over the block's 2 block_size
//     keys, d and dv) and keeps the rows' gradients in float (sums over the block's queries);
//     the Sinkhorn chain is in double but starts from products of those float gradients with
//     the keys, so it inherits their relative error. Each element is within
//         2^-23 * 8 * (1 + log2(n + 1)) * max(max|ref|, max|dO| max|V| * f)
//     of the double definition, n = 2 block_size + d + dv + Nq (the longest float reduction:
//     the keys, the dot products and the block's queries, bounded by all of them), 8 covering
//     the stages' few roundings each relative to the largest value; f = 1 for dV and O; for dQ
//     and dK, whose terms multiply that scale by a key or a query element (the softmax's dS
//     times k or q; the block logits' chain times a mean of them), f = max(max|K|, max|Q|, 1);
//     for the sort net, whose terms multiply the block logits' gradient by a block's key sum,
//     f = max(max|K|, max|Q|, 1) block_size max|K| (largest measured, AVX3: 0.015 of the
//     bound, O of a sort-net case);
//   - masked tokens get zero gradients; the same bits at 1, 2 and 7 threads (with dropout and
//     the sort net's gradient); the errors name the field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "reference/reference.h"
#include "smyrf/smyrf.h"
#include "test_util.h"
#include "train_util.h"

namespace smyrf::test {
namespace {

struct Case {
  std::string name;
  SinkhornConfig config;
  bool net = false;  // gives a sort net
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  return {
      {"content", {.block_size = 4, .iterations = 3}},
      {"content_no_iterations", {.block_size = 3, .iterations = 0}},
      {"content_one_block", {.block_size = 64, .iterations = 2}},
      {"sort_net", {.block_size = 4, .iterations = 3}, true},
      {"sort_net_many_iterations", {.block_size = 5, .iterations = 12, .temperature = 0.5f}, true},
  };
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

// The case's sort net (when it has one): random floats, their double values, and the gradient
// outputs of both paths; config32 / config64 are the configs of the f32 and double calls.
struct Net {
  std::vector<float> w, g32;
  std::vector<double> w64, g64;
  SinkhornDoubleParts dbl;
  SinkhornConfig config32, config64;
  Net(const Case& c, std::int64_t H, std::int64_t Nk, std::int64_t d, std::uint64_t seed)
      : config32(c.config), config64(c.config) {
    if (!c.net) return;
    const std::int64_t NB = (Nk + c.config.block_size - 1) / c.config.block_size;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f / std::sqrt(float(d)));
    for (std::int64_t i = 0; i < H * d * NB; ++i) w.push_back(n(rng));
    w64.assign(w.begin(), w.end());
    g32.assign(w.size(), std::nanf(""));
    g64.assign(w.size(), kInf);
    config32.sort_net = config64.sort_net = w.data();
    config32.grad_sort_net = g32.data();
    dbl = {w64.data(), g64.data()};
    config64.f64 = &dbl;
  }
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;
};

class SinkhornBackward : public ::testing::TestWithParam<Case> {};

TEST_P(SinkhornBackward, DoubleDefinitionIsTheOracle) {
  const Case& c = GetParam();
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
  };
  for (const Shape& s : {Shape{2, 2, 13, 17, 5, 3}, Shape{1, 3, 1, 7, 1, 2}, Shape{2, 1, 19, 11, 4, 4}}) {
    TrainCase tc(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq * 7 + s.Nk));
    if (s.Nq > 1) tc.pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.8, 0.85);
    const Net net(c, s.H, s.Nk, s.d, 66);
    const Oracle ref64(tc, net.config64);
    const reference::Output ref = reference::attention(tc.pr.params, net.config32);
    const std::string what = c.name + " " + std::to_string(s.Nq) + "x" + std::to_string(s.Nk);
    ASSERT_EQ(ref.o.size(), ref64.o.size());
    for (std::size_t x = 0; x < ref.o.size(); ++x)
      ASSERT_NEAR(ref64.o[x], ref.o[x], 1e-12 * (1 + std::abs(ref.o[x]))) << what;
    for (std::size_t x = 0; x < ref.lse.size(); ++x) {
      if (std::isinf(ref.lse[x])) {
        ASSERT_EQ(ref64.lse[x], ref.lse[x]) << what << " lse " << x;
      } else {
        ASSERT_NEAR(ref64.lse[x], ref.lse[x], 1e-12 * (1 + std::abs(ref.lse[x]))) << what << " lse " << x;
      }
    }
  }
}

// Central finite differences of attention_f64 against attention_backward_f64.
TEST_P(SinkhornBackward, DoubleDefinitionMatchesFiniteDifferences) {
  const Case& c = GetParam();
  for (float dropout : {0.0f, 0.3f}) {
    const std::int64_t B = 2, H = 2, Nq = 11, Nk = 14, d = 5, dv = 4;
    FdCase f(B, H, Nq, Nk, d, dv, 71);
    // One masked key and one masked query per batch element (different positions).
    std::vector<std::uint8_t> km(static_cast<std::size_t>(B * Nk), 1), qm(static_cast<std::size_t>(B * Nq), 1);
    km[3] = km[Nk + 8] = 0;
    qm[5] = qm[Nq + 0] = 0;
    f.params.with_masks(km.data(), qm.data());
    f.params.dropout = dropout;
    f.params.seed = 3;
    Net net(c, H, Nk, d, 72);
    const std::string what = c.name + (dropout > 0 ? " dropout" : "");
    std::vector<double> o(f.go.size()), lse(static_cast<std::size_t>(B * H * Nq));
    attention_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, net.config64, o.data(), lse.data());
    std::vector<double> gq(f.q.size()), gk(f.k.size()), gv(f.v.size());
    attention_backward_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, net.config64, o.data(), lse.data(),
                           f.go.data(), gq.data(), gk.data(), gv.data());
    std::vector<std::tuple<std::vector<double>*, const std::vector<double>*, std::string>> items = {
        {&f.q, &gq, "dQ"}, {&f.k, &gk, "dK"}, {&f.v, &gv, "dV"}};
    if (c.net) items.emplace_back(&net.w64, &net.g64, "dW");
    const double h = 1e-6;
    for (auto& [x, g, name] : items) {
      const double gmax = max_abs(*g);
      EXPECT_GT(gmax, 1e-3) << what << " " << name;
      expect_matches_central_differences(*x, *g, [&] { return f.loss(net.config64); }, h, 1e-6 * (1 + gmax),
                                         what + " " + name);
    }
  }
}

// The f32 backward (and forward) against the double definition on the same float inputs.
void expect_float_matches(const Case& c, std::int64_t B, std::int64_t H, std::int64_t Nq, std::int64_t Nk,
                          std::int64_t d, std::int64_t dv, float dropout, bool masks, std::uint64_t seed) {
  TrainCase tc(B, H, Nq, Nk, d, dv, true, seed);
  if (masks) tc.pr.random_masks(seed + 1, 0.8, 0.85);
  tc.pr.params.dropout = dropout;
  tc.pr.params.seed = 11;
  Net net(c, H, Nk, d, seed + 2);
  tc.forward(net.config32);
  tc.backward(net.config32);
  const Oracle ref(tc, net.config64);
  const std::string what = c.name + " " + std::to_string(Nq) + "x" + std::to_string(Nk) + (dropout > 0 ? " dropout" : "");
  double go_max = 0, v_max = 0, q_max = 0, k_max = 0;
  for (float x : tc.o_layout(tc.go)) go_max = std::max(go_max, double(std::abs(x)));
  for (float x : tc.v_layout(tc.pr.v)) v_max = std::max(v_max, double(std::abs(x)));
  for (float x : tc.q_layout(tc.pr.q)) q_max = std::max(q_max, double(std::abs(x)));
  for (float x : tc.k_layout(tc.pr.k)) k_max = std::max(k_max, double(std::abs(x)));
  const double scale = go_max * v_max / (1.0 - dropout);
  const double chain = std::max({k_max, q_max, 1.0});
  const double n = static_cast<double>(2 * std::min<std::int64_t>(c.config.block_size, Nk) + d + dv + Nq);
  const double rule = std::ldexp(1.0, -23) * 8.0 * (1.0 + std::log2(n + 1.0));
  auto check = [&](const std::string& name, const std::vector<float>& got, const std::vector<double>& want,
                   double term) {
    const double tol = rule * std::max({max_abs(want), term, 1.0});
    const double err = max_abs_err(got, want);
    EXPECT_LE(err, tol) << what << " " << name << " max|ref| " << max_abs(want);
    if (std::getenv("SMYRF_TEST_VERBOSE")) std::printf("%s %s err/tol %.3g\n", what.c_str(), name.c_str(), err / tol);
  };
  check("O", tc.o_layout(tc.pr.o), ref.o, scale);
  check("dQ", tc.q_layout(tc.gq), ref.gq, scale * chain);
  check("dK", tc.k_layout(tc.gk), ref.gk, scale * chain);
  check("dV", tc.v_layout(tc.gv), ref.gv, scale);
  EXPECT_GT(max_abs(ref.gv), 0.0) << what;
  if (c.net) {
    check("dW", net.g32, net.g64, scale * chain * double(c.config.block_size) * k_max);
    EXPECT_GT(max_abs(net.g64), 0.0) << what;
  }
  expect_lse_matches(tc.lse, ref.lse, what);
}

TEST_P(SinkhornBackward, FloatMatchesTheDoubleDefinition) {
  const Case& c = GetParam();
  expect_float_matches(c, 2, 2, 36, 36, 8, 6, 0.0f, true, 81);
  expect_float_matches(c, 1, 3, 150, 150, 16, 16, 0.0f, false, 82);
  expect_float_matches(c, 2, 1, 40, 29, 12, 9, 0.0f, true, 83);
  expect_float_matches(c, 1, 2, 1, 7, 1, 3, 0.0f, false, 84);
  expect_float_matches(c, 2, 1, 70, 130, 8, 20, 0.0f, true, 85);
  expect_float_matches(c, 2, 2, 36, 36, 8, 6, 0.25f, true, 86);
  expect_float_matches(c, 1, 2, 100, 77, 16, 16, 0.1f, false, 87);
}

TEST_P(SinkhornBackward, MaskedTokensGetZeroGradients) {
  const Case& c = GetParam();
  TrainCase tc(2, 2, 36, 36, 8, 8, true, 41);
  tc.pr.random_masks(42, 0.6, 0.7);
  Net net(c, 2, 36, 8, 43);
  tc.forward(net.config32);
  tc.backward(net.config32);
  expect_masked_tokens_have_zero_gradients(tc, c.name);
  for (float x : net.g32) ASSERT_TRUE(std::isfinite(x)) << c.name << " dW";
}

TEST_P(SinkhornBackward, SameBitsForEveryThreadCount) {
  const Case& c = GetParam();
  for (float dropout : {0.0f, 0.2f}) {
    std::vector<std::vector<float>> first;
    for (int threads : {1, 2, 7}) {
      TrainCase tc(2, 3, 150, 130, 16, 16, false, 5);
      tc.pr.random_masks(6, 0.9, 0.9);
      tc.pr.params.dropout = dropout;
      Net net(c, 3, 130, 16, 7);
      tc.forward(net.config32, threads);
      tc.backward(net.config32, threads);
      const std::vector<std::vector<float>> got = {tc.pr.o, tc.gq, tc.gk, tc.gv, net.g32};
      if (threads == 1) first = got;
      for (std::size_t t = 0; t < got.size(); ++t)
        EXPECT_TRUE(bitwise_equal(first[t], got[t])) << c.name << " tensor " << t << " threads " << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Forms, SinkhornBackward, ::testing::ValuesIn(cases()), case_name);

// Dropout changes the output (the mask is drawn) and is a function of the seed; lse is unchanged.
TEST(SinkhornDropout, DrawsAMaskFromTheSeed) {
  const SinkhornConfig c{.block_size = 4};
  auto run = [&](float p, std::uint64_t seed) {
    TrainCase tc(1, 2, 20, 24, 8, 8, false, 9);
    tc.pr.params.dropout = p;
    tc.pr.params.seed = seed;
    tc.forward(c);
    return std::pair{tc.pr.o, tc.lse};
  };
  const auto plain = run(0.0f, 1), a = run(0.5f, 1), b = run(0.5f, 1), other = run(0.5f, 2);
  EXPECT_TRUE(bitwise_equal(a.first, b.first));
  EXPECT_FALSE(bitwise_equal(a.first, plain.first));
  EXPECT_FALSE(bitwise_equal(a.first, other.first));
  EXPECT_TRUE(bitwise_equal(a.second, plain.second));
}

// The errors of the sort net's gradient name the field.
TEST(SinkhornBackwardErrors, NameTheField) {
  TrainCase tc(1, 2, 9, 9, 4, 4, false, 3);
  std::vector<float> w(2 * 4 * 3, 0.1f), g(w.size());
  std::vector<double> w64(w.size()), g64(w.size());
  auto expect_error = [&](const SinkhornConfig& c, const std::string& field, bool f64_call) {
    const MethodConfig forward = SinkhornConfig{.block_size = c.block_size, .sort_net = c.sort_net};
    expect_training_error(tc, forward, c, field, f64_call);
  };
  // A gradient of the content sort (no parameter).
  expect_error({.block_size = 3, .grad_sort_net = g.data()}, "SinkhornConfig.grad_sort_net", false);
  // Double values without the float part.
  SinkhornDoubleParts dbl{.sort_net = w64.data()};
  expect_error({.block_size = 3, .f64 = &dbl}, "SinkhornConfig.f64->sort_net", true);
  SinkhornDoubleParts dgrad{.grad_sort_net = g64.data()};
  expect_error({.block_size = 3, .f64 = &dgrad}, "SinkhornConfig.f64->grad_sort_net", true);
  // A float gradient asked of the double path.
  expect_error({.block_size = 3, .sort_net = w.data(), .grad_sort_net = g.data()}, "SinkhornConfig.grad_sort_net",
               true);
}

}  // namespace
}  // namespace smyrf::test
