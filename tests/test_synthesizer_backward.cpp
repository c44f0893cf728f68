// The training path of Synthesizer attention (both kinds; contract: smyrf/methods/synthesizer.h,
// "Backward"), each kind with its seeded defaults and with given learned parts:
//   - the double-precision definition's forward (attention_f64) is the independent oracle
//     reference::attention(params, SynthesizerConfig) to 1e-12 (masks, causal, awkward shapes);
//   - its backward (attention_backward_f64, with the learned parts' f64->grad_*) against central
//     finite differences of attention_f64 in Q, K, V and every learned part, with masks, two
//     batch elements (the learned parts' gradients sum over the batch), causal, and dropout
//     (its mask is a constant of the gradient);
//   - the f32 backward against it. Rule: the float path is the same computation with f32
//     roundings (the net's hidden layer, the softmax and P.V in the dense kernels' arithmetic,
//     dO.V^T on the tile kernel), so each element is within
//         2^-23 * 8 * (1 + log2(n + 1)) * max(max|ref|, max|dO| * max|V|, 1)
//     of the double definition, n the longest reduction: keys per query plus the hidden width
//     plus d (the net's two layers); 8 covers the two stages (net, softmax) with a few
//     roundings each relative to the largest value. The learned parts' gradients are sums over
//     the B Nq queries of such terms (in double), so their n adds B Nq and their scale is the
//     largest term: max|dO| max|V| times the largest factor (|q|, |a|, 1) they multiply (the
//     largest error measured, AVX3: 0.13 of this bound, db1 with hidden = 1 and dropout);
//   - masked tokens get zero gradients, dK = 0 (the keys are not read), dQ = 0 for the random
//     kind; the same bits at 1, 2 and 7 threads (learned parts' gradients too, dropout on);
//   - the errors name the field (grad_* of a default part or of the other kind, f64-> parts
//     without their float part, float gradients asked of the double path);
//   - every synthesizer form has a case here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "reference/reference.h"
#include "smyrf/registry.h"
#include "smyrf/smyrf.h"
#include "test_util.h"
#include "train_util.h"

namespace smyrf::test {
namespace {

struct Case {
  std::string name;
  SynthesizerConfig config;  // learned pointers are filled by Parts
  bool learned = false;      // gives the kind's learned parts
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  using K = SynthesizerKind;
  return {
      {"dense", {.kind = K::dense, .hidden = 6}},
      {"dense_learned", {.kind = K::dense, .hidden = 5}, true},
      {"dense_hidden1", {.kind = K::dense, .hidden = 1}, true},
      {"random", {.kind = K::random}},
      {"random_learned", {.kind = K::random}, true},
  };
}

// The kind's learned parts (when the case gives them): random floats, their double values, and
// the gradient outputs of both paths. config32 / config64: the configs of the f32 calls
// (grad_* set) and of the double calls (f64 set).
struct Parts {
  struct Part {
    std::string name;
    std::vector<float> f, g32;
    std::vector<double> x, g64;
  };
  std::vector<Part> parts;
  SynthesizerDoubleParts dbl;
  SynthesizerConfig config32, config64;
  Parts(const Case& c, std::int64_t H, std::int64_t Nq, std::int64_t Nk, std::int64_t d, std::uint64_t seed) {
    const std::int64_t hid = c.config.hidden;
    struct Shape {
      const char* name;
      std::int64_t size;
      float scale;
    };
    std::vector<Shape> shapes;
    if (c.learned) {
      if (c.config.kind == SynthesizerKind::dense)
        shapes = {{"w1", H * d * hid, 1.0f / std::sqrt(float(d))},
                  {"b1", H * hid, 0.5f},
                  {"w2", H * hid * Nk, 1.0f / std::sqrt(float(hid))},
                  {"b2", H * Nk, 0.5f}};
      else
        shapes = {{"logits", H * Nq * Nk, 1.0f}};
    }
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    parts.reserve(shapes.size());  // the configs point into the parts
    for (const Shape& s : shapes) {
      Part p{s.name, {}, {}, {}, {}};
      for (std::int64_t i = 0; i < s.size; ++i) p.f.push_back(s.scale * n(rng));
      p.x.assign(p.f.begin(), p.f.end());
      p.g32.assign(p.f.size(), std::nanf(""));
      p.g64.assign(p.f.size(), kInf);
      parts.push_back(std::move(p));
    }
    config32 = config64 = c.config;
    using C = SynthesizerConfig;
    using D = SynthesizerDoubleParts;
    auto bind = [&](Part& p, const float* C::*in, float* C::*g, const double* D::*x, double* D::*gx) {
      config32.*in = config64.*in = p.f.data();
      config32.*g = p.g32.data();
      dbl.*x = p.x.data();
      dbl.*gx = p.g64.data();
    };
    for (Part& p : parts) {
      if (p.name == "w1") bind(p, &C::w1, &C::grad_w1, &D::w1, &D::grad_w1);
      if (p.name == "b1") bind(p, &C::b1, &C::grad_b1, &D::b1, &D::grad_b1);
      if (p.name == "w2") bind(p, &C::w2, &C::grad_w2, &D::w2, &D::grad_w2);
      if (p.name == "b2") bind(p, &C::b2, &C::grad_b2, &D::b2, &D::grad_b2);
      if (p.name == "logits") bind(p, &C::logits, &C::grad_logits, &D::logits, &D::grad_logits);
    }
    config64.f64 = &dbl;
  }
  Parts(const Parts&) = delete;
  Parts& operator=(const Parts&) = delete;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

class SynthesizerBackward : public ::testing::TestWithParam<Case> {};

TEST_P(SynthesizerBackward, DoubleDefinitionIsTheOracle) {
  const Case& c = GetParam();
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
  };
  for (const Shape& s : {Shape{2, 2, 13, 17, 5, 3}, Shape{1, 3, 1, 7, 1, 2}, Shape{2, 1, 19, 11, 4, 4}}) {
    for (bool causal : {false, true}) {
      Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq * 7 + s.Nk));
      if (s.Nq > 1) pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.8, 0.85);
      pr.params.causal = causal;
      pr.params.seed = 5;
      Parts parts(c, s.H, s.Nq, s.Nk, s.d, 66);
      const auto gather = [&](const std::vector<float>& buf, std::int64_t n, std::int64_t w, std::int64_t bs,
                              std::int64_t hs, std::int64_t rs) {
        std::vector<double> out;
        for (std::int64_t b = 0; b < pr.B; ++b)
          for (std::int64_t h = 0; h < pr.H; ++h)
            for (std::int64_t i = 0; i < n; ++i)
              for (std::int64_t x = 0; x < w; ++x)
                out.push_back(buf[static_cast<std::size_t>(b * bs + h * hs + i * rs + x)]);
        return out;
      };
      const AttentionParams& p = pr.params;
      const auto q = gather(pr.q, pr.Nq, pr.d, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
      const auto k = gather(pr.k, pr.Nk, pr.d, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
      const auto v = gather(pr.v, pr.Nk, pr.dv, p.v_batch_stride, p.v_head_stride, p.v_row_stride);
      std::vector<double> o(static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.dv)),
          lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
      attention_f64(p, {q.data(), k.data(), v.data()}, parts.config64, o.data(), lse.data());
      const reference::Output ref = reference::attention(p, parts.config32);
      const std::string what = c.name + " " + std::to_string(s.Nq) + "x" + std::to_string(s.Nk) + (causal ? " causal" : "");
      ASSERT_EQ(ref.o.size(), o.size());
      for (std::size_t x = 0; x < o.size(); ++x) ASSERT_NEAR(o[x], ref.o[x], 1e-12 * (1 + std::abs(ref.o[x]))) << what;
      for (std::size_t x = 0; x < lse.size(); ++x) {
        if (std::isinf(ref.lse[x])) {
          ASSERT_EQ(lse[x], ref.lse[x]) << what << " lse " << x;
        } else {
          ASSERT_NEAR(lse[x], ref.lse[x], 1e-12 * (1 + std::abs(ref.lse[x]))) << what << " lse " << x;
        }
      }
    }
  }
}

// Central finite differences of attention_f64 against attention_backward_f64.
TEST_P(SynthesizerBackward, DoubleDefinitionMatchesFiniteDifferences) {
  const Case& c = GetParam();
  for (const auto& [causal, dropout] : {std::pair{false, 0.0f}, std::pair{true, 0.0f}, std::pair{false, 0.3f}}) {
    const std::int64_t B = 2, H = 2, Nq = 11, Nk = 13, d = 5, dv = 4;
    FdCase f(B, H, Nq, Nk, d, dv, 71);
    // One masked key and one masked query per batch element (different positions).
    std::vector<std::uint8_t> km(static_cast<std::size_t>(B * Nk), 1), qm(static_cast<std::size_t>(B * Nq), 1);
    km[3] = km[Nk + 8] = 0;
    qm[5] = qm[Nq + 0] = 0;
    f.params.with_masks(km.data(), qm.data());
    f.params.causal = causal;
    f.params.dropout = dropout;
    f.params.seed = 3;
    Parts parts(c, H, Nq, Nk, d, 72);
    const std::string what = c.name + (causal ? " causal" : "") + (dropout > 0 ? " dropout" : "");
    auto loss = [&] { return f.loss(parts.config64); };
    std::vector<double> o(f.go.size()), lse(static_cast<std::size_t>(B * H * Nq));
    attention_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, parts.config64, o.data(), lse.data());
    std::vector<double> gq(f.q.size()), gk(f.k.size()), gv(f.v.size());
    attention_backward_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, parts.config64, o.data(), lse.data(),
                           f.go.data(), gq.data(), gk.data(), gv.data());
    std::vector<std::tuple<std::vector<double>*, const std::vector<double>*, std::string>> items = {
        {&f.q, &gq, "dQ"}, {&f.k, &gk, "dK"}, {&f.v, &gv, "dV"}};
    for (Parts::Part& p : parts.parts) items.emplace_back(&p.x, &p.g64, std::string("d") + p.name);
    const double h = 1e-6;
    for (auto& [x, g, name] : items) {
      const double gmax = max_abs(*g);
      const bool read = name != "dK" && !(name == "dQ" && c.config.kind == SynthesizerKind::random);
      if (read) {
        EXPECT_GT(gmax, 1e-3) << what << " " << name;
      } else {
        EXPECT_EQ(gmax, 0.0) << what << " " << name;
      }
      expect_matches_central_differences(*x, *g, loss, h, 1e-6 * (1 + gmax), what + " " + name);
    }
  }
}

// The f32 backward (and forward) against the double definition on the same float inputs.
void expect_float_matches(const Case& c, std::int64_t B, std::int64_t H, std::int64_t Nq, std::int64_t Nk,
                          std::int64_t d, std::int64_t dv, bool causal, float dropout, bool masks, std::uint64_t seed) {
  TrainCase tc(B, H, Nq, Nk, d, dv, true, seed);
  if (masks) tc.pr.random_masks(seed + 1, 0.8, 0.85);
  tc.pr.params.causal = causal;
  tc.pr.params.dropout = dropout;
  tc.pr.params.seed = 11;
  Parts parts(c, H, Nq, Nk, d, seed + 2);
  tc.forward(parts.config32);
  tc.backward(parts.config32);
  const Oracle ref(tc, parts.config64);
  const std::string what = c.name + " " + std::to_string(Nq) + "x" + std::to_string(Nk) + (causal ? " causal" : "") +
                           (dropout > 0 ? " dropout" : "");
  double go_max = 0, v_max = 0, q_max = 0;
  for (float x : tc.o_layout(tc.go)) go_max = std::max(go_max, double(std::abs(x)));
  for (float x : tc.v_layout(tc.pr.v)) v_max = std::max(v_max, double(std::abs(x)));
  for (float x : tc.q_layout(tc.pr.q)) q_max = std::max(q_max, double(std::abs(x)));
  const double scale = go_max * v_max / (1.0 - dropout);
  const double n = static_cast<double>(Nk + c.config.hidden + d);
  auto rule = [](double len) { return std::ldexp(1.0, -23) * 8.0 * (1.0 + std::log2(len + 1.0)); };
  auto check = [&](const std::string& name, const std::vector<float>& got, const std::vector<double>& want, double len,
                   double term) {
    const double tol = rule(len) * std::max({max_abs(want), term, 1.0});
    const double err = max_abs_err(got, want);
    EXPECT_LE(err, tol) << what << " " << name << " max|ref| " << max_abs(want);
    if (std::getenv("SMYRF_TEST_VERBOSE")) std::printf("%s %s err/tol %.3g\n", what.c_str(), name.c_str(), err / tol);
  };
  check("O", tc.o_layout(tc.pr.o), ref.o, n, scale);
  check("dQ", tc.q_layout(tc.gq), ref.gq, n, scale);
  check("dK", tc.k_layout(tc.gk), ref.gk, n, scale);
  check("dV", tc.v_layout(tc.gv), ref.gv, n, scale);
  EXPECT_EQ(max_abs(ref.gk), 0.0) << what;
  EXPECT_GT(max_abs(ref.gv), 0.0) << what;
  // The learned parts: sums over the B Nq queries; the largest factor of a term: |q| (w1), the
  // hidden activations (w2; bounded by the query's net, at most |b1| + d |q| |w1|), or 1.
  for (const Parts::Part& p : parts.parts) {
    double factor = 1.0;
    if (p.name == "w1") factor = q_max;
    if (p.name == "w2") {
      double w1_max = 0, b1_max = 0;
      for (const Parts::Part& x : parts.parts) {
        if (x.name == "w1") w1_max = max_abs(x.x);
        if (x.name == "b1") b1_max = max_abs(x.x);
      }
      factor = b1_max + static_cast<double>(d) * q_max * w1_max;
    }
    check("d" + p.name, p.g32, p.g64, n + static_cast<double>(B * Nq), scale * factor);
    EXPECT_GT(max_abs(p.g64), 0.0) << what << " " << p.name;
  }
  expect_lse_matches(tc.lse, ref.lse, what);
}

TEST_P(SynthesizerBackward, FloatMatchesTheDoubleDefinition) {
  const Case& c = GetParam();
  for (bool causal : {false, true}) {
    expect_float_matches(c, 2, 2, 36, 36, 8, 6, causal, 0.0f, true, 81);
    expect_float_matches(c, 1, 3, 150, 150, 16, 16, causal, 0.0f, false, 82);
    expect_float_matches(c, 2, 1, 40, 29, 12, 9, causal, 0.0f, true, 83);
    expect_float_matches(c, 1, 2, 1, 7, 1, 3, causal, 0.0f, false, 84);
    expect_float_matches(c, 2, 1, 70, 130, 8, 20, causal, 0.0f, true, 85);
  }
  expect_float_matches(c, 2, 2, 36, 36, 8, 6, false, 0.25f, true, 86);
  expect_float_matches(c, 1, 2, 100, 77, 16, 16, false, 0.1f, false, 87);
}

TEST_P(SynthesizerBackward, MaskedTokensGetZeroGradients) {
  const Case& c = GetParam();
  TrainCase tc(2, 2, 36, 36, 8, 8, true, 41);
  tc.pr.random_masks(42, 0.6, 0.7);
  Parts parts(c, 2, 36, 36, 8, 43);
  tc.forward(parts.config32);
  tc.backward(parts.config32);
  expect_masked_tokens_have_zero_gradients(tc, c.name);
  for (float x : tc.k_layout(tc.gk)) ASSERT_EQ(x, 0.0f) << c.name;
  for (const Parts::Part& p : parts.parts)
    for (float x : p.g32) ASSERT_TRUE(std::isfinite(x)) << c.name << " " << p.name;
}

TEST_P(SynthesizerBackward, SameBitsForEveryThreadCount) {
  const Case& c = GetParam();
  for (float dropout : {0.0f, 0.2f}) {
    std::vector<std::vector<float>> first;
    for (int threads : {1, 2, 7}) {
      TrainCase tc(2, 3, 150, 130, 16, 16, false, 5);
      tc.pr.random_masks(6, 0.9, 0.9);
      tc.pr.params.dropout = dropout;
      Parts parts(c, 3, 150, 130, 16, 7);
      tc.forward(parts.config32, threads);
      tc.backward(parts.config32, threads);
      std::vector<std::vector<float>> got = {tc.pr.o, tc.gq, tc.gk, tc.gv};
      for (const Parts::Part& p : parts.parts) got.push_back(p.g32);
      if (threads == 1) first = got;
      for (std::size_t t = 0; t < got.size(); ++t)
        EXPECT_TRUE(bitwise_equal(first[t], got[t])) << c.name << " tensor " << t << " threads " << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, SynthesizerBackward, ::testing::ValuesIn(cases()), case_name);

// Dropout changes the output (the mask is drawn) and is a function of the seed.
TEST(SynthesizerDropout, DrawsAMaskFromTheSeed) {
  for (SynthesizerKind kind : {SynthesizerKind::dense, SynthesizerKind::random}) {
    const SynthesizerConfig c{.kind = kind, .hidden = 8};
    auto run = [&](float p, std::uint64_t seed) {
      TrainCase tc(1, 2, 20, 24, 8, 8, false, 9);
      tc.pr.params.dropout = p;
      tc.pr.params.seed = seed;
      tc.forward(c);
      return tc.pr.o;
    };
    const auto plain = run(0.0f, 1), a = run(0.5f, 1), b = run(0.5f, 1), other = run(0.5f, 2);
    EXPECT_TRUE(bitwise_equal(a, b));
    EXPECT_FALSE(bitwise_equal(a, plain));
    EXPECT_FALSE(bitwise_equal(a, other));
  }
}

// The errors of the learned parts' gradients name the field.
TEST(SynthesizerBackwardErrors, NameTheField) {
  TrainCase tc(1, 2, 9, 9, 4, 4, false, 3);
  std::vector<float> r(2 * 9 * 9, 0.1f), g(r.size());
  std::vector<double> r64(r.size()), g64(r.size());
  auto expect_error = [&](const SynthesizerConfig& c, const std::string& field, bool f64_call) {
    const MethodConfig forward = SynthesizerConfig{.kind = c.kind, .hidden = c.hidden, .logits = c.logits};
    expect_training_error(tc, forward, c, field, f64_call);
  };
  using K = SynthesizerKind;
  // A gradient of a seeded default.
  expect_error({.kind = K::random, .grad_logits = g.data()}, "SynthesizerConfig.grad_logits", false);
  expect_error({.kind = K::dense, .hidden = 4, .grad_w2 = g.data()}, "SynthesizerConfig.grad_w2", false);
  // A gradient of the other kind's part.
  expect_error({.kind = K::random, .logits = r.data(), .grad_w1 = g.data()}, "SynthesizerConfig.grad_w1", false);
  // Double values without the float part.
  SynthesizerDoubleParts dbl{.logits = r64.data()};
  expect_error({.kind = K::random, .f64 = &dbl}, "SynthesizerConfig.f64->logits", true);
  // A double gradient of a default part.
  SynthesizerDoubleParts dgrad{.grad_b2 = g64.data()};
  expect_error({.kind = K::dense, .hidden = 4, .f64 = &dgrad}, "SynthesizerConfig.f64->grad_b2", true);
  // A float gradient asked of the double path.
  expect_error({.kind = K::random, .logits = r.data(), .grad_logits = g.data()}, "SynthesizerConfig.grad_logits",
               true);
}

TEST(SynthesizerBackwardCases, CoverEveryForm) {
  std::set<SynthesizerKind> covered;
  for (const Case& c : cases()) {
    EXPECT_TRUE(capabilities(c.config).backward) << c.name;
    EXPECT_TRUE(capabilities(c.config).f64) << c.name;
    covered.insert(c.config.kind);
  }
  for (const MethodInfo& m : methods()) {
    if (m.name == "synthesizer") {
      EXPECT_TRUE(covered.count(std::get<SynthesizerConfig>(m.example).kind) != 0) << m.form << " has no case here";
    }
  }
}

}  // namespace
}  // namespace smyrf::test
