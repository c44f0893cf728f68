// The additive per-key bias (params.key_bias; contract: smyrf/smyrf.h) and ALiBi in its causal
// form:
//   - the reference method with a bias equals the reference method without one on inputs that
//     carry the bias as one more dimension (q' = [q, 1], k' = [k, bias / scale]: the same
//     scores), an independent check of the definition;
//   - dense attention against the reference method under the library's rule, with the logit
//     range L widened by max|bias| (masks, causal, Nq != Nk, bias strides 0 broadcasting over
//     the batch or the heads, bf16 inputs);
//   - ALiBi: causal attention with key_bias[h][j] = slope_h * j equals attention with the
//     explicit bias -slope_h * (i' - j) (i' the query's key position), written out here in
//     double; lse differs by slope_h * i';
//   - the backward with a bias: the f32 gradients against the double definition under the
//     gradient rule (dropout too), and the double definition against finite differences (the
//     bias a constant);
//   - every key-set form with the capability (SMYRF's LSH clusters, Reformer, routing, every
//     sparse pattern), forward and backward against its double definition, causal and dropout;
//   - the same bits at 1, 2 and 7 threads; the errors name the element, the stride, or the
//     method that has no key bias (every form whose capabilities say so refuses it).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "method_cases.h"
#include "smyrf/registry.h"
#include "smyrf/smyrf.h"
#include "test_util.h"
#include "train_util.h"

namespace smyrf::test {
namespace {

// A bias [B, H, Nk] (contiguous, or broadcast over the batch / the heads), N(0, sigma^2).
struct Bias {
  std::vector<float> x;
  std::int64_t bs = 0, hs = 0;
  Bias(std::int64_t B, std::int64_t H, std::int64_t Nk, bool per_batch, bool per_head, float sigma,
       std::uint64_t seed) {
    const std::int64_t nb = per_batch ? B : 1, nh = per_head ? H : 1;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, sigma);
    x.resize(static_cast<std::size_t>(nb * nh * Nk));
    for (float& v : x) v = n(rng);
    hs = per_head ? Nk : 0;
    bs = per_batch ? nh * Nk : 0;
  }
  void set(AttentionParams& p) const {
    p.key_bias = x.data();
    p.key_bias_batch_stride = bs;
    p.key_bias_head_stride = hs;
  }
  float at(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return x[static_cast<std::size_t>(b * bs + h * hs + j)];
  }
  double max_abs() const {
    double m = 0;
    for (float v : x) m = std::max(m, double(std::abs(v)));
    return m;
  }
};

TEST(KeyBias, ReferenceEqualsTheBiasAsOneMoreDimension) {
  for (bool causal : {false, true}) {
    Problem pr(2, 3, 13, 17, 5, 4, true, 7);
    pr.random_masks(8, 0.8, 0.9);
    pr.params.causal = causal;
    const Bias bias(2, 3, 17, true, true, 1.5f, 9);
    bias.set(pr.params);
    const auto with_bias = pr.run(ReferenceConfig{});
    // q' = [q, 1], k' = [k, bias / scale], scale fixed to the original's.
    Problem aug(2, 3, 13, 17, 6, 4, false, 7);
    aug.params.with_masks(pr.key_mask.data(), pr.query_mask.data());
    aug.params.causal = causal;
    const float scale = 1.0f / std::sqrt(5.0f);
    aug.params.scale = scale;
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t h = 0; h < 3; ++h) {
        for (std::int64_t i = 0; i < 13; ++i) {
          for (int t = 0; t < 5; ++t) aug.q_at(b, h, i)[t] = pr.q_at(b, h, i)[t];
          aug.q_at(b, h, i)[5] = 1.0f;
        }
        for (std::int64_t j = 0; j < 17; ++j) {
          for (int t = 0; t < 5; ++t) aug.k_at(b, h, j)[t] = pr.k_at(b, h, j)[t];
          aug.k_at(b, h, j)[5] = bias.at(b, h, j) / scale;
          for (int t = 0; t < 4; ++t) aug.v_at(b, h, j)[t] = pr.v_at(b, h, j)[t];
        }
      }
    const auto augmented = aug.run(ReferenceConfig{});
    // The only difference: bias / scale rounded to float (relative 2^-24 of a logit <= |bias|).
    const double tol = 4.0 * std::ldexp(1.0, -24) * (1.0 + bias.max_abs()) * 4.0;
    ASSERT_EQ(with_bias.size(), augmented.size());
    for (std::size_t x = 0; x < with_bias.size(); ++x)
      ASSERT_NEAR(with_bias[x], augmented[x], tol * (1.0 + std::abs(augmented[x]))) << (causal ? "causal " : "") << x;
  }
}

TEST(KeyBias, DenseMatchesTheReferenceWithinTheRule) {
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
    bool per_batch, per_head, causal, bf16;
  };
  for (const Shape& s : {Shape{2, 2, 70, 130, 16, 8, true, true, false, false},
                         Shape{2, 3, 64, 64, 32, 32, false, true, true, false},
                         Shape{3, 2, 33, 200, 8, 16, true, false, false, false},
                         Shape{1, 2, 150, 150, 64, 64, true, true, true, true},
                         Shape{2, 1, 1, 9, 4, 4, true, true, false, false}}) {
    Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq + s.Nk));
    if (s.Nq > 1) pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.85, 0.9);
    pr.params.causal = s.causal;
    if (s.bf16) pr.use_bf16();
    const Bias bias(s.B, s.H, s.Nk, s.per_batch, s.per_head, 2.0f, 3);
    const auto plain = pr.run(DenseConfig{});
    bias.set(pr.params);
    const auto want = pr.run(ReferenceConfig{});
    const auto got = pr.run(DenseConfig{});
    double vmax = 0;
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t h = 0; h < s.H; ++h)
        for (std::int64_t j = 0; j < s.Nk; ++j)
          for (std::int64_t t = 0; t < s.dv; ++t) vmax = std::max(vmax, double(std::abs(pr.v_at(b, h, j)[t])));
    // The rule's 16 eps max|V| (1 + L + log2(n + 1)) with L widened by the bias's range.
    const double tol = pr.tolerance() + 16.0 * std::numeric_limits<float>::epsilon() * vmax * 2.0 * bias.max_abs();
    EXPECT_LE(max_abs_err(got, to_double(want)), tol) << s.Nq << "x" << s.Nk;
    EXPECT_FALSE(bitwise_equal(got, plain)) << "the bias changes the output";
  }
}

TEST(KeyBias, AlibiInItsCausalFormIsAPerKeyBias) {
  const std::int64_t B = 1, H = 4, Nq = 20, Nk = 29, d = 8, dv = 6;
  Problem pr(B, H, Nq, Nk, d, dv, false, 21);
  pr.params.causal = true;
  std::vector<float> slopes(H), bias(static_cast<std::size_t>(H * Nk)), lse(static_cast<std::size_t>(H * Nq));
  for (std::int64_t h = 0; h < H; ++h) {
    slopes[static_cast<std::size_t>(h)] = std::exp2(-8.0f * float(h + 1) / float(H));  // ALiBi's geometric slopes
    for (std::int64_t j = 0; j < Nk; ++j) bias[static_cast<std::size_t>(h * Nk + j)] = slopes[static_cast<std::size_t>(h)] * float(j);
  }
  pr.params.key_bias = bias.data();
  pr.params.key_bias_head_stride = Nk;
  pr.params.lse = lse.data();
  const auto got = pr.run(DenseConfig{});
  const double scale = 1.0 / std::sqrt(double(d));
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t i = 0; i < Nq; ++i) {
      const std::int64_t pos = i + Nk - Nq;
      std::vector<double> s;
      double mx = -INFINITY;
      for (std::int64_t j = 0; j <= pos; ++j) {
        double dot = 0;
        for (std::int64_t t = 0; t < d; ++t) dot += double(pr.q_at(0, h, i)[t]) * pr.k_at(0, h, j)[t];
        s.push_back(scale * dot - double(slopes[static_cast<std::size_t>(h)]) * double(pos - j));
        mx = std::max(mx, s.back());
      }
      double z = 0;
      for (double x : s) z += std::exp(x - mx);
      for (std::int64_t t = 0; t < dv; ++t) {
        double o = 0;
        for (std::int64_t j = 0; j <= pos; ++j) o += std::exp(s[static_cast<std::size_t>(j)] - mx) / z * pr.v_at(0, h, j)[t];
        EXPECT_NEAR(got[static_cast<std::size_t>((h * Nq + i) * dv + t)], o, 1e-5) << h << " " << i;
      }
      // lse includes the bias as given: the explicit form's plus slope * i'.
      EXPECT_NEAR(lse[static_cast<std::size_t>(h * Nq + i)], mx + std::log(z) + slopes[static_cast<std::size_t>(h)] * double(pos),
                  1e-4 * (1.0 + slopes[static_cast<std::size_t>(h)] * double(pos)));
    }
}

TEST(KeyBias, DenseBackwardMatchesTheDoubleDefinition) {
  for (float dropout : {0.0f, 0.2f})
    for (bool causal : {false, true}) {
      if (dropout > 0.0f && causal) continue;  // dense has no causal dropout
      TrainCase tc(2, 2, 70, 90, 16, 12, true, 31);
      tc.pr.random_masks(32, 0.85, 0.9);
      tc.pr.params.causal = causal;
      tc.pr.params.dropout = dropout;
      const Bias bias(2, 2, 90, true, true, 2.0f, 33);
      bias.set(tc.pr.params);
      const std::string what = std::string("dense bias") + (causal ? " causal" : "") + (dropout > 0 ? " dropout" : "");
      // The rule's logit range L grows by the bias's range.
      expect_gradients_match(tc, DenseConfig{}, 90, what.c_str(), true, 2.0 * bias.max_abs());
      const Oracle biased(tc, DenseConfig{});
      tc.pr.params.key_bias = nullptr;
      const Oracle plain(tc, DenseConfig{});
      EXPECT_GT(max_abs_err(std::vector<float>(biased.gq.begin(), biased.gq.end()), plain.gq), 1e-3) << what;
    }
}

// Every key-set form with the capability (SMYRF's clusters, Reformer's chunks, routing, the
// sparse patterns: the shared group engines add the bias of each key of a group): forward and
// backward against its double definition (attention over the same key sets, the bias added to
// each score), causal where the form has it, dropout, and the bias changes the gradients.
std::vector<Case> keyset_cases() {
  using P = SparsePattern;
  std::vector<Case> c;
  for (const Case& x : cases())
    if (capabilities(x.config).key_bias && x.name != "reference" && x.name.rfind("dense", 0) != 0) c.push_back(x);
  c.push_back({"reformer_shared_qk", ReformerConfig{.n_hashes = 2, .n_buckets = 8, .chunk_size = 8}, true, true});
  c.push_back({"local", SparseConfig{.pattern = P::local, .window = 4}, true});
  c.push_back({"dilated", SparseConfig{.pattern = P::dilated, .window = 3, .dilation = 2}});
  c.push_back({"strided", SparseConfig{.pattern = P::strided, .stride = 5}, true});
  c.push_back({"fixed", SparseConfig{.pattern = P::fixed, .stride = 5, .summary = 1}});
  c.push_back({"longformer", SparseConfig{.pattern = P::longformer, .window = 3, .global_tokens = 2}});
  c.push_back({"axial_rows", SparseConfig{.pattern = P::axial_rows, .width = 6}});
  c.push_back({"axial_columns", SparseConfig{.pattern = P::axial_columns, .width = 6}, true});
  c.push_back({"criss_cross", SparseConfig{.pattern = P::criss_cross, .width = 6}});
  return c;
}

class KeyBiasKeySets : public ::testing::TestWithParam<Case> {};

TEST_P(KeyBiasKeySets, MatchesTheDoubleDefinition) {
  const Case& c = GetParam();
  ASSERT_TRUE(capabilities(c.config).key_bias) << c.name;
  for (float dropout : {0.0f, 0.15f}) {
    if (dropout > 0.0f && c.causal && !capabilities(c.config).causal_dropout) continue;
    TrainCase tc(2, 2, 40, 40, 8, 8, true, 51);
    tc.pr.random_masks(52, 0.85, 0.9);
    tc.pr.params.causal = c.causal;
    tc.pr.params.dropout = dropout;
    tc.pr.params.seed = 9;
    const Bias bias(2, 2, 40, true, true, 2.0f, 53);
    bias.set(tc.pr.params);
    const bool k_read = c.name != "reformer_shared_qk";
    const std::string what = c.name + (dropout > 0 ? " dropout" : "");
    expect_gradients_match(tc, c.config, 40 * 4, what.c_str(), k_read, 2.0 * bias.max_abs());
    const Oracle biased(tc, c.config);
    tc.pr.params.key_bias = nullptr;
    const Oracle plain(tc, c.config);
    EXPECT_GT(max_abs_err(std::vector<float>(biased.gv.begin(), biased.gv.end()), plain.gv), 1e-3) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Forms, KeyBiasKeySets, ::testing::ValuesIn(keyset_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(KeyBias, DoubleDefinitionMatchesFiniteDifferences) {
  FdCase f(2, 2, 7, 9, 4, 3, 41);
  const Bias bias(2, 2, 9, true, true, 1.0f, 42);
  bias.set(f.params);
  f.check(DenseConfig{}, "dense bias");
  f.params.causal = true;
  f.check(ReferenceConfig{}, "reference bias causal");
}

TEST(KeyBias, SameBitsForEveryThreadCount) {
  std::vector<std::vector<float>> first;
  for (int threads : {1, 2, 7}) {
    TrainCase tc(2, 3, 150, 130, 16, 16, false, 5);
    tc.pr.random_masks(6, 0.9, 0.9);
    tc.pr.params.dropout = 0.1f;
    const Bias bias(2, 3, 130, true, true, 1.0f, 7);
    bias.set(tc.pr.params);
    tc.forward(DenseConfig{}, threads);
    tc.backward(DenseConfig{}, threads);
    const std::vector<std::vector<float>> got = {tc.pr.o, tc.lse, tc.gq, tc.gk, tc.gv};
    if (threads == 1) first = got;
    for (std::size_t t = 0; t < got.size(); ++t)
      EXPECT_TRUE(bitwise_equal(first[t], got[t])) << "tensor " << t << " threads " << threads;
  }
}

TEST(KeyBias, ErrorsNameTheElementTheStrideOrTheMethod) {
  Problem pr(2, 2, 24, 24, 8, 8, false, 3);
  std::vector<float> bias(2 * 2 * 24, 0.5f);
  pr.params.key_bias = bias.data();
  pr.params.key_bias_batch_stride = 48;
  pr.params.key_bias_head_stride = 24;
  auto expect_error = [&](const MethodConfig& c, const std::string& text) {
    try {
      attention(pr.params, c);
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  bias[1 * 48 + 1 * 24 + 3] = std::numeric_limits<float>::quiet_NaN();
  expect_error(DenseConfig{}, "params.key_bias[1, 1, 3] = nan");
  bias[1 * 48 + 1 * 24 + 3] = 0x1p33f;
  expect_error(DenseConfig{}, "params.key_bias[1, 1, 3]");
  bias[1 * 48 + 1 * 24 + 3] = 0.5f;
  pr.params.key_bias_head_stride = -1;
  expect_error(DenseConfig{}, "params.key_bias_head_stride = -1");
  pr.params.key_bias_head_stride = 24;
  EXPECT_NO_THROW(attention(pr.params, DenseConfig{}));
  // Every form without a key bias refuses it by name; those with one run.
  for (const Case& c : cases()) {
    pr.params.causal = c.causal;
    if (capabilities(c.config).key_bias) {
      EXPECT_NO_THROW(attention(pr.params, c.config)) << c.name;
    } else {
      expect_error(c.config, "params.key_bias: ");
      expect_error(c.config, "has no additive key bias");
    }
  }
  pr.params.causal = false;
  // The forms with the capability: the reference, dense, and the key-set forms on the shared
  // group engines (SMYRF's LSH clusters, Reformer, routing, every sparse pattern).
  std::set<std::string> with, want = {"reference/reference", "dense/dense", "smyrf/lsh", "reformer/reformer",
                                      "routing/routing"};
  for (const MethodInfo& m : methods()) {
    if (m.caps.key_bias) with.insert(m.name + "/" + m.form);
    if (m.name == "sparse") want.insert(m.name + "/" + m.form);
  }
  EXPECT_EQ(with, want);
  // Every sparse pattern has a case above.
  std::set<std::string> patterns;
  for (const Case& c : keyset_cases())
    if (const auto* sp = std::get_if<SparseConfig>(&c.config)) patterns.insert(std::to_string(int(sp->pattern)));
  EXPECT_EQ(patterns.size(), 9u);
}

}  // namespace
}  // namespace smyrf::test
