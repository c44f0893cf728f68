// The training path of compressed attention (every kind; contract:
// smyrf/methods/compressed.h, "Backward"), each kind with its default and, where it has them,
// its given learned parts:
//   - the double-precision definition's forward (attention_f64) is the independent oracle
//     reference::attention(params, CompressedConfig): to 1e-12 on inputs where the oracle's f32
//     roundings of means are exact (values on a 2^-6 grid, power-of-two segment, window and
//     query counts, masks included), and on Gaussian inputs of awkward shapes within the effect
//     of those roundings (1e-5; 1e-12 for the kinds without means: linformer, given memory,
//     given inducing points);
//   - its backward (attention_backward_f64, with the learned parts' f64->grad_*) against central
//     finite differences of attention_f64 in Q, K, V and every learned part, with masks and two
//     batch elements (the learned parts' gradients sum over the batch);
//   - the f32 backward against it. Rule: the float backward is the same computation with f32
//     roundings (synthesised rows, means, relay, inner and outer softmax in the dense kernels'
//     f32 arithmetic), so each element is within
//         2^-23 * 8 * (1 + log2(n + 1)) * max(max|ref|, max|dO| * max|V|, 1)
//     of the double definition, n the longest reduction (keys per query plus tokens per
//     synthesised row); 8 covers the chain of up to three softmax stages (star,
//     induced_points), each adding a few roundings relative to the largest value (the largest
//     error measured, AVX2: 0.09 of this bound, Linformer's sums over the keys);
//   - masked tokens get zero gradients; the same bits at 1, 2 and 7 threads (learned parts'
//     gradients too);
//   - the refusals and errors name the field (grad_* of a default part or another kind,
//     f64-> parts without their float part, float gradients asked of the double path);
//   - every compressed form with a backward has a case here.
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
  CompressedConfig config;  // learned pointers are filled by Parts
  bool learned = false;     // gives the kind's learned parts
  bool causal = false;      // also run causal (global_memory with given memory)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  using C = Compression;
  return {
      {"linformer", {.kind = C::linformer, .rank = 5}},
      {"linformer_learned", {.kind = C::linformer, .rank = 4}, true},
      {"memory_compressed", {.kind = C::memory_compressed, .stride = 3}},
      {"memory_compressed_stride1", {.kind = C::memory_compressed, .stride = 1}},
      {"global_memory", {.kind = C::global_memory, .rank = 4, .window = 2}},
      {"global_memory_learned", {.kind = C::global_memory, .rank = 3, .window = 1}, true, true},
      {"induced_points", {.kind = C::induced_points, .rank = 4}},
      {"induced_points_learned", {.kind = C::induced_points, .rank = 3}, true},
      {"star", {.kind = C::star, .window = 2}},
      {"star_window0", {.kind = C::star, .window = 0}},
      {"nystrom", {.kind = C::nystrom, .rank = 4}},
      {"nystrom_two_iterations", {.kind = C::nystrom, .rank = 3, .pinv_iterations = 2}},
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
  CompressedDoubleParts dbl;
  CompressedConfig config32, config64;
  Parts(const Case& c, std::int64_t H, std::int64_t Nk, std::int64_t d, std::int64_t dv, std::uint64_t seed) {
    const std::int64_t r = c.config.rank;
    std::vector<std::pair<const char*, std::int64_t>> shapes;
    if (c.learned) {
      if (c.config.kind == Compression::linformer) shapes = {{"projection_e", H * r * Nk}, {"projection_f", H * r * Nk}};
      if (c.config.kind == Compression::induced_points) shapes = {{"inducing", H * r * d}};
      if (c.config.kind == Compression::global_memory) shapes = {{"memory_k", H * r * d}, {"memory_v", H * r * dv}};
    }
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const float s = c.config.kind == Compression::linformer ? 1.0f / std::sqrt(float(r)) : 1.0f;
    parts.reserve(shapes.size());  // the configs point into the parts
    for (const auto& [name, size] : shapes) {
      Part p{name, {}, {}, {}, {}};
      for (std::int64_t i = 0; i < size; ++i) p.f.push_back(s * n(rng));
      p.x.assign(p.f.begin(), p.f.end());
      p.g32.assign(p.f.size(), std::nanf(""));
      p.g64.assign(p.f.size(), kInf);
      parts.push_back(std::move(p));
    }
    config32 = config64 = c.config;
    auto bind = [&](Part& p, const float* CompressedConfig::*in, float* CompressedConfig::*g,
                    const double* CompressedDoubleParts::*x, double* CompressedDoubleParts::*gx) {
      config32.*in = config64.*in = p.f.data();
      config32.*g = p.g32.data();
      dbl.*x = p.x.data();
      dbl.*gx = p.g64.data();
    };
    using C = CompressedConfig;
    using D = CompressedDoubleParts;
    for (Part& p : parts) {
      if (p.name == "projection_e") bind(p, &C::projection_e, &C::grad_projection_e, &D::projection_e, &D::grad_projection_e);
      if (p.name == "projection_f") bind(p, &C::projection_f, &C::grad_projection_f, &D::projection_f, &D::grad_projection_f);
      if (p.name == "inducing") bind(p, &C::inducing, &C::grad_inducing, &D::inducing, &D::grad_inducing);
      if (p.name == "memory_k") bind(p, &C::memory_k, &C::grad_memory_k, &D::memory_k, &D::grad_memory_k);
      if (p.name == "memory_v") bind(p, &C::memory_v, &C::grad_memory_v, &D::memory_v, &D::grad_memory_v);
    }
    config64.f64 = &dbl;
  }
  Parts(const Parts&) = delete;
  Parts& operator=(const Parts&) = delete;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

class CompressedBackward : public ::testing::TestWithParam<Case> {};

// Masks keeping exactly `keep` of n tokens per batch element.
std::vector<std::uint8_t> exact_mask(std::int64_t B, std::int64_t n, std::int64_t keep, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> m(static_cast<std::size_t>(B * n), 0);
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = i;
    std::shuffle(idx.begin(), idx.end(), rng);
    for (std::int64_t i = 0; i < keep; ++i) m[static_cast<std::size_t>(b * n + idx[static_cast<std::size_t>(i)])] = 1;
  }
  return m;
}

// attention_f64 of a problem against reference::attention on the same float inputs.
void expect_oracle(Problem& pr, const CompressedConfig& c32, const CompressedConfig& c64, double tol,
                   const std::string& what) {
  const auto gather = [&](const std::vector<float>& buf, std::int64_t n, std::int64_t w, std::int64_t bs,
                          std::int64_t hs, std::int64_t rs) {
    std::vector<double> out;
    for (std::int64_t b = 0; b < pr.B; ++b)
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t x = 0; x < w; ++x) out.push_back(buf[static_cast<std::size_t>(b * bs + h * hs + i * rs + x)]);
    return out;
  };
  const AttentionParams& p = pr.params;
  const auto q = gather(pr.q, pr.Nq, pr.d, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
  const auto k = gather(pr.k, pr.Nk, pr.d, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
  const auto v = gather(pr.v, pr.Nk, pr.dv, p.v_batch_stride, p.v_head_stride, p.v_row_stride);
  std::vector<double> o(static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.dv)), lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  attention_f64(p, {q.data(), k.data(), v.data()}, c64, o.data(), lse.data());
  const reference::Output ref = reference::attention(p, c32);
  ASSERT_EQ(ref.o.size(), o.size());
  for (std::size_t x = 0; x < o.size(); ++x) ASSERT_NEAR(o[x], ref.o[x], tol * (1 + std::abs(ref.o[x]))) << what << " o " << x;
  for (std::size_t x = 0; x < lse.size(); ++x) {
    if (std::isnan(ref.lse[x])) {
      ASSERT_TRUE(std::isnan(lse[x])) << what << " lse " << x;  // nystrom: no softmax over keys
    } else if (std::isinf(ref.lse[x])) {
      ASSERT_EQ(lse[x], ref.lse[x]) << what << " lse " << x;
    } else {
      ASSERT_NEAR(lse[x], ref.lse[x], tol * (1 + std::abs(ref.lse[x]))) << what << " lse " << x;
    }
  }
}

bool has_means(const Case& c) {
  return c.config.kind == Compression::memory_compressed || c.config.kind == Compression::star ||
         c.config.kind == Compression::nystrom ||
         ((c.config.kind == Compression::global_memory || c.config.kind == Compression::induced_points) && !c.learned);
}

TEST_P(CompressedBackward, DoubleDefinitionIsTheOracleWhereMeansAreExact) {
  const Case& cs = GetParam();
  // 32 keys (16 visible), 16 queries (8 active): segments of 16 / rank (rank 4: 4), windows of
  // stride 1 (stride 3 is replaced by 4: exact windows), the relay's mean over 8 queries.
  Case c = cs;
  if (c.config.kind == Compression::memory_compressed && c.config.stride != 1) c.config.stride = 4;
  if (c.config.kind != Compression::linformer) c.config.rank = 4;
  for (bool causal : {false, true}) {
    if (causal && !c.causal) continue;
    Problem pr(2, 2, 16, 32, 8, 6, true, 61);
    std::mt19937_64 rng(62);
    std::uniform_int_distribution<int> grid(-128, 128);
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t h = 0; h < 2; ++h) {
        for (std::int64_t i = 0; i < 16; ++i)
          for (int x = 0; x < 8; ++x) pr.q_at(b, h, i)[x] = grid(rng) / 64.0f;
        for (std::int64_t j = 0; j < 32; ++j) {
          for (int x = 0; x < 8; ++x) pr.k_at(b, h, j)[x] = grid(rng) / 64.0f;
          for (int x = 0; x < 6; ++x) pr.v_at(b, h, j)[x] = grid(rng) / 64.0f;
        }
      }
    pr.key_mask = exact_mask(2, 32, 16, 63);
    pr.query_mask = exact_mask(2, 16, 8, 64);
    pr.params.with_masks(pr.key_mask.data(), pr.query_mask.data());
    pr.params.causal = causal;
    Parts parts(c, 2, 32, 8, 6, 65);
    expect_oracle(pr, parts.config32, parts.config64, 1e-12, c.name + (causal ? " causal" : ""));
  }
}

TEST_P(CompressedBackward, DoubleDefinitionIsTheOracleOnAwkwardShapes) {
  const Case& c = GetParam();
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
  };
  for (const Shape& s : {Shape{2, 2, 13, 17, 5, 3}, Shape{1, 3, 1, 7, 1, 2}, Shape{2, 1, 19, 11, 4, 4}}) {
    for (bool causal : {false, true}) {
      if (causal && !c.causal) continue;
      Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq * 7 + s.Nk));
      if (s.Nq > 1) pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.8, 0.85);
      pr.params.causal = causal;
      pr.params.seed = 5;
      Parts parts(c, s.H, s.Nk, s.d, s.dv, 66);
      expect_oracle(pr, parts.config32, parts.config64, has_means(c) ? 1e-5 : 1e-12,
                    c.name + " " + std::to_string(s.Nq) + "x" + std::to_string(s.Nk) + (causal ? " causal" : ""));
    }
  }
}

// Central finite differences of attention_f64 against attention_backward_f64.
TEST_P(CompressedBackward, DoubleDefinitionMatchesFiniteDifferences) {
  const Case& c = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !c.causal) continue;
    const std::int64_t B = 2, H = 2, Nq = 11, Nk = 13, d = 5, dv = 4;
    FdCase f(B, H, Nq, Nk, d, dv, 71);
    // One masked key and one masked query per batch element (different positions).
    std::vector<std::uint8_t> km(static_cast<std::size_t>(B * Nk), 1), qm(static_cast<std::size_t>(B * Nq), 1);
    km[3] = km[Nk + 8] = 0;
    qm[5] = qm[Nq + 0] = 0;
    f.params.with_masks(km.data(), qm.data());
    f.params.causal = causal;
    f.params.seed = 3;
    Parts parts(c, H, Nk, d, dv, 72);
    const std::string what = c.name + (causal ? " causal" : "");
    auto loss = [&] {
      std::vector<double> o(f.go.size());
      attention_f64(f.params, {f.q.data(), f.k.data(), f.v.data()}, parts.config64, o.data(), nullptr);
      double l = 0;
      for (std::size_t i = 0; i < o.size(); ++i) l += o[i] * f.go[i];
      return l;
    };
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
      EXPECT_GT(gmax, 1e-3) << what << " " << name;
      expect_matches_central_differences(*x, *g, loss, h, 1e-6 * (1 + gmax), what + " " + name);
    }
  }
}

// The f32 backward (and forward) against the double definition on the same float inputs.
void expect_float_matches(const Case& c, std::int64_t B, std::int64_t H, std::int64_t Nq, std::int64_t Nk,
                          std::int64_t d, std::int64_t dv, bool causal, bool masks, std::uint64_t seed) {
  TrainCase tc(B, H, Nq, Nk, d, dv, true, seed);
  if (masks) tc.pr.random_masks(seed + 1, 0.8, 0.85);
  tc.pr.params.causal = causal;
  tc.pr.params.seed = 11;
  Parts parts(c, H, Nk, d, dv, seed + 2);
  tc.forward(parts.config32);
  tc.backward(parts.config32);
  const Oracle ref(tc, parts.config64);
  const std::string what = c.name + " " + std::to_string(Nq) + "x" + std::to_string(Nk) + (causal ? " causal" : "");
  double go_max = 0, v_max = 0;
  for (float x : tc.o_layout(tc.go)) go_max = std::max(go_max, double(std::abs(x)));
  for (float x : tc.v_layout(tc.pr.v)) v_max = std::max(v_max, double(std::abs(x)));
  const double n = static_cast<double>(std::max(Nq, Nk) + c.config.rank + 2 * c.config.window + 1);
  const double rule = std::ldexp(1.0, -23) * 8.0 * (1.0 + std::log2(n + 1.0));
  auto check = [&](const char* name, const std::vector<float>& got, const std::vector<double>& want) {
    const double tol = rule * std::max({max_abs(want), go_max * v_max, 1.0});
    const double err = max_abs_err(got, want);
    EXPECT_LE(err, tol) << what << " " << name << " max|ref| " << max_abs(want);
    if (std::getenv("SMYRF_TEST_VERBOSE")) std::printf("%s %s err/tol %.3g\n", what.c_str(), name, err / tol);
  };
  check("O", tc.o_layout(tc.pr.o), ref.o);
  check("dQ", tc.q_layout(tc.gq), ref.gq);
  check("dK", tc.k_layout(tc.gk), ref.gk);
  check("dV", tc.v_layout(tc.gv), ref.gv);
  EXPECT_GT(max_abs(ref.gk), 0.0) << what;
  for (const Parts::Part& p : parts.parts) {
    check((std::string("d") + p.name).c_str(), p.g32, p.g64);
    EXPECT_GT(max_abs(p.g64), 0.0) << what << " " << p.name;
  }
  for (std::size_t i = 0; i < tc.lse.size(); ++i) {
    if (std::isnan(ref.lse[i])) {
      EXPECT_TRUE(std::isnan(tc.lse[i])) << what << " lse " << i;
    } else if (std::isinf(ref.lse[i])) {
      EXPECT_TRUE(std::isinf(tc.lse[i]) && tc.lse[i] < 0) << what << " lse " << i;
    } else {
      EXPECT_NEAR(tc.lse[i], ref.lse[i], 1e-4 * (1 + std::abs(ref.lse[i]))) << what << " lse " << i;
    }
  }
}

TEST_P(CompressedBackward, FloatMatchesTheDoubleDefinition) {
  const Case& c = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !c.causal) continue;
    expect_float_matches(c, 2, 2, 36, 36, 8, 6, causal, true, 81);
    expect_float_matches(c, 1, 3, 150, 150, 16, 16, causal, false, 82);
    expect_float_matches(c, 2, 1, 40, 29, 12, 9, causal, true, 83);
    expect_float_matches(c, 1, 2, 1, 7, 1, 3, causal, false, 84);
  }
}

TEST_P(CompressedBackward, MaskedTokensGetZeroGradients) {
  const Case& c = GetParam();
  TrainCase tc(2, 2, 36, 36, 8, 8, true, 41);
  tc.pr.random_masks(42, 0.6, 0.7);
  Parts parts(c, 2, 36, 8, 8, 43);
  tc.forward(parts.config32);
  tc.backward(parts.config32);
  expect_masked_tokens_have_zero_gradients(tc, c.name);
  // A masked key's projection column has no gradient where it is masked in every batch element.
  for (const Parts::Part& p : parts.parts)
    for (float x : p.g32) ASSERT_TRUE(std::isfinite(x)) << c.name << " " << p.name;
}

TEST_P(CompressedBackward, SameBitsForEveryThreadCount) {
  const Case& c = GetParam();
  std::vector<std::vector<float>> first;
  for (int threads : {1, 2, 7}) {
    TrainCase tc(2, 3, 150, 130, 16, 16, false, 5);
    tc.pr.random_masks(6, 0.9, 0.9);
    Parts parts(c, 3, 130, 16, 16, 7);
    tc.forward(parts.config32, threads);
    tc.backward(parts.config32, threads);
    std::vector<std::vector<float>> got = {tc.pr.o, tc.gq, tc.gk, tc.gv};
    for (const Parts::Part& p : parts.parts) got.push_back(p.g32);
    if (threads == 1) first = got;
    for (std::size_t t = 0; t < got.size(); ++t)
      EXPECT_TRUE(bitwise_equal(first[t], got[t])) << c.name << " tensor " << t << " threads " << threads;
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, CompressedBackward, ::testing::ValuesIn(cases()), case_name);

// The errors of the learned parts' gradients name the field.
TEST(CompressedBackwardErrors, NameTheField) {
  TrainCase tc(1, 2, 9, 9, 4, 4, false, 3);
  std::vector<float> e(2 * 4 * 9, 0.1f), g(e.size());
  std::vector<double> e64(e.size()), g64(e.size());
  auto expect_error = [&](const CompressedConfig& c, const std::string& field, bool f64_call) {
    const MethodConfig forward = CompressedConfig{.kind = c.kind, .rank = c.rank};
    expect_training_error(tc, forward, c, field, f64_call);
  };
  // A gradient of a seeded default.
  expect_error({.kind = Compression::linformer, .rank = 4, .grad_projection_e = g.data()},
               "CompressedConfig.grad_projection_e", false);
  // A gradient of another kind's part.
  expect_error({.kind = Compression::star, .rank = 4, .grad_inducing = g.data()}, "CompressedConfig.grad_inducing",
               false);
  // Double values without the float part.
  CompressedDoubleParts dbl{.projection_e = e64.data()};
  expect_error({.kind = Compression::linformer, .rank = 4, .f64 = &dbl}, "CompressedConfig.f64->projection_e", true);
  // A double gradient of a default part.
  CompressedDoubleParts dgrad{.grad_memory_k = g64.data()};
  expect_error({.kind = Compression::global_memory, .rank = 4, .f64 = &dgrad}, "CompressedConfig.f64->grad_memory_k",
               true);
  // A float gradient asked of the double path.
  expect_error({.kind = Compression::linformer, .rank = 4, .projection_e = e.data(), .grad_projection_e = g.data()},
               "CompressedConfig.grad_projection_e", true);
}

TEST(CompressedBackwardCases, CoverEveryFormWithABackward) {
  std::set<Compression> covered;
  for (const Case& c : cases()) {
    EXPECT_TRUE(capabilities(c.config).backward) << c.name;
    EXPECT_TRUE(capabilities(c.config).f64) << c.name;
    covered.insert(c.config.kind);
  }
  for (const MethodInfo& m : methods()) {
    if (m.name == "compressed" && m.caps.backward) {
      EXPECT_TRUE(covered.count(std::get<CompressedConfig>(m.example).kind) != 0)
          << m.form << " has a backward but no case here";
    }
  }
}

}  // namespace
}  // namespace smyrf::test
