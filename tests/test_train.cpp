// Training: the logsumexp output, dropout, and the backward pass of dense and SMYRF.
//
// Oracles: attention_f64 / attention_backward_f64 (double, plain loops over explicit key sets),
// themselves checked against central finite differences of the double forward.
//
// GRADIENT RULE (float kernels vs the double oracle on the same float inputs): for each of
// dQ, dK, dV,
//   max_abs_error <= 16 * eps_f32 * (1 + L + log2(n_keys + 1)) * max(|g_ref|_max, |dO|_max * max|V|)
// with L the logit bound of test_util.h. Why: every gradient term is a product of a softmax
// weight (relative error ~ eps (1 + L), as in the forward rule) with sums of d or dv float
// products and of up to n_keys terms (log2 n roundings with pairwise-like tile accumulation);
// dS = P (dP - D) subtracts two quantities of size |dO| |V|, so the error scale is set by
// those, or by the gradient itself when larger. A wrong mask, tile, cluster or dropout factor
// gives errors of the order of the gradient itself, orders above this bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <type_traits>
#include <variant>
#include <vector>

#include "reference/reference.h"
#include "smyrf/registry.h"
#include "smyrf/smyrf.h"
#include "test_util.h"
#include "train_util.h"

namespace smyrf::test {
namespace {

TEST(TrainOracle, DenseMatchesFiniteDifferences) {
  FdCase c(1, 2, 7, 9, 5, 4, 11);
  c.check(DenseConfig{}, "dense");
}

TEST(TrainOracle, MaskedDenseMatchesFiniteDifferences) {
  FdCase c(2, 1, 6, 8, 4, 3, 12);
  c.km = {1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0};  // batch 1 sees no key
  c.qm = {1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  c.params.with_masks(c.km.data(), c.qm.data());
  c.check(ReferenceConfig{}, "masked");
}

TEST(TrainOracle, SmyrfMatchesFiniteDifferences) {
  FdCase c(1, 2, 12, 12, 6, 5, 13);
  c.check(SmyrfConfig{.n_hashes = 3, .q_cluster_size = 4, .k_cluster_size = 4}, "smyrf");
}

TEST(TrainOracle, DropoutMatchesFiniteDifferences) {
  FdCase c(1, 1, 8, 10, 4, 4, 14);
  c.params.dropout = 0.3f;
  c.params.seed = 5;
  c.check(DenseConfig{}, "dense dropout");
  c.check(SmyrfConfig{.n_hashes = 2, .q_cluster_size = 4, .k_cluster_size = 5}, "smyrf dropout");
}

// The oracle entries of reference/reference.h compute what attention_f64 and
// attention_backward_f64 compute on the same values, bit for bit (SMYRF: from the oracle's own
// clusters, equal to the fast path's), except SMYRF's forward without dropout, which merges
// per-round softmaxes by logsumexp instead of one softmax over the multiset: equal to 1e-12.
TEST(TrainOracle, ReferenceEntriesEqualTheF64Entries) {
  struct Item {
    MethodConfig config;
    bool causal;
    float dropout;
  };
  const SmyrfConfig smyrf{.n_hashes = 3, .q_cluster_size = 16, .k_cluster_size = 16};
  const Item items[] = {{ReferenceConfig{}, false, 0.0f}, {ReferenceConfig{}, true, 0.2f},
                        {DenseConfig{}, false, 0.2f},     {DenseConfig{}, true, 0.0f},
                        {smyrf, false, 0.0f},             {smyrf, false, 0.25f}};
  for (const Item& it : items) {
    TrainCase c(2, 2, 50, 60, 16, 8, true, 21);
    c.pr.random_masks(4, 0.8, 0.9);
    c.pr.params.causal = it.causal;
    c.pr.params.dropout = it.dropout;
    c.pr.params.seed = 8;
    const Oracle f64(c, it.config);
    const std::vector<double> go = to_double(c.o_layout(c.go));
    std::visit(
        [&](const auto& config) {
          using T = std::decay_t<decltype(config)>;
          if constexpr (std::is_same_v<T, ReferenceConfig> || std::is_same_v<T, DenseConfig> ||
                        std::is_same_v<T, SmyrfConfig>) {
            const std::string what = std::string(method_name(it.config)) +
                                     (it.causal ? " causal" : "") + (it.dropout > 0 ? " dropout" : "");
            const reference::Output out = reference::attention(c.pr.params, config);
            if (std::is_same_v<T, SmyrfConfig> && it.dropout == 0.0f) {
              ASSERT_EQ(out.o.size(), f64.o.size());
              ASSERT_EQ(out.lse.size(), f64.lse.size());
              for (std::size_t x = 0; x < out.o.size(); ++x)
                ASSERT_NEAR(out.o[x], f64.o[x], 1e-12) << what << " " << x;
              for (std::size_t x = 0; x < out.lse.size(); ++x) {
                if (std::isinf(f64.lse[x])) {
                  ASSERT_EQ(out.lse[x], f64.lse[x]) << what << " " << x;
                } else {
                  ASSERT_NEAR(out.lse[x], f64.lse[x], 1e-12 * (1 + std::abs(f64.lse[x]))) << what << " " << x;
                }
              }
            } else {
              EXPECT_EQ(out.o, f64.o) << what;
              EXPECT_EQ(out.lse, f64.lse) << what;
            }
            const reference::Gradients g = reference::attention_backward(c.pr.params, go, config);
            EXPECT_EQ(g.q, f64.gq) << what;
            EXPECT_EQ(g.k, f64.gk) << what;
            EXPECT_EQ(g.v, f64.gv) << what;
          }
        },
        it.config);
  }
}

// ---------------------------------------------------------------------------------------
// Float kernels against the oracle.

TEST(TrainBackward, DenseMatchesOracle) {
  for (auto [Nq, Nk, d, dv] : {std::tuple{1, 1, 8, 8}, std::tuple{37, 53, 16, 24}, std::tuple{100, 300, 64, 64},
                               std::tuple{49, 260, 33, 17}}) {
    TrainCase c(2, 2, Nq, Nk, d, dv, true, static_cast<std::uint64_t>(Nq + Nk));
    expect_gradients_match(c, DenseConfig{}, Nk, "dense");
  }
  // One head: the key tiles are split into groups whose dQ partial sums are added at the end.
  TrainCase one(1, 1, 70, 900, 16, 16, true, 8);
  expect_gradients_match(one, DenseConfig{}, 900, "dense, grouped key tiles");
}

// Causal dense backward: tiles before the diagonal skipped, pairs past it zeroed; queries that
// see no key (Nq > Nk, left-padded keys) get zero gradients and never NaN.
TEST(TrainBackward, CausalDenseMatchesOracle) {
  for (auto [Nq, Nk, d, dv] : {std::tuple{1, 1, 8, 8}, std::tuple{37, 53, 16, 24}, std::tuple{300, 300, 32, 32},
                               std::tuple{260, 49, 33, 17}, std::tuple{70, 900, 16, 16}}) {
    TrainCase c(Nk == 900 ? 1 : 2, Nk == 900 ? 1 : 2, Nq, Nk, d, dv, true, static_cast<std::uint64_t>(Nq * 3 + Nk));
    c.pr.params.causal = true;
    expect_gradients_match(c, DenseConfig{}, Nk, "causal dense");
    expect_gradients_match(c, ReferenceConfig{}, Nk, "causal reference");
  }
  TrainCase padded(2, 1, 120, 120, 16, 16, false, 21);
  std::vector<std::uint8_t> keys(240, 1);
  for (int j = 0; j < 9; ++j) keys[static_cast<std::size_t>(j)] = keys[static_cast<std::size_t>(120 + j)] = 0;
  padded.pr.params.with_masks(keys.data(), nullptr);
  padded.pr.params.causal = true;
  expect_gradients_match(padded, DenseConfig{}, 120, "causal dense, left padding");
  for (float x : padded.q_layout(padded.gq)) EXPECT_FALSE(std::isnan(x));
}

TEST(TrainBackward, ReferenceMethodMatchesOracle) {
  TrainCase c(1, 2, 20, 30, 8, 8, true, 3);
  expect_gradients_match(c, ReferenceConfig{}, 30, "reference");
}

TEST(TrainBackward, SmyrfMatchesOracle) {
  struct Cfg {
    int Nq, Nk, hashes, qc, kc;
  };
  for (const Cfg& g : {Cfg{64, 64, 2, 16, 16}, Cfg{128, 96, 4, 32, 24}, Cfg{100, 100, 3, 60, 60},
                       Cfg{200, 3, 2, 8, 8} /* n_k < C: keys shared by clusters */}) {
    TrainCase c(2, 2, g.Nq, g.Nk, 16, 12, true, static_cast<std::uint64_t>(g.Nq * 7 + g.hashes));
    expect_gradients_match(c, SmyrfConfig{.n_hashes = g.hashes, .q_cluster_size = g.qc, .k_cluster_size = g.kc},
                           g.kc, "smyrf");
  }
}

TEST(TrainBackward, MasksGiveZeroGradients) {
  TrainCase c(3, 2, 40, 50, 16, 16, true, 7);
  c.pr.random_masks(8, 0.6, 0.7);
  std::fill(c.pr.key_mask.begin() + 2 * 50, c.pr.key_mask.end(), 0);  // batch 2: no visible key
  for (const MethodConfig& config :
       {MethodConfig{DenseConfig{}}, MethodConfig{SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8}}}) {
    expect_gradients_match(c, config, 50, method_name(config));
    for (std::int64_t b = 0; b < 3; ++b)
      for (std::int64_t h = 0; h < 2; ++h) {
        for (std::int64_t i = 0; i < 40; ++i)
          if (!c.pr.query_mask[static_cast<std::size_t>(b * 40 + i)] || b == 2) {
            const auto* g = c.gq.data() + (c.pr.q_at(b, h, i) - c.pr.q.data());
            for (int t = 0; t < 16; ++t) ASSERT_EQ(g[t], 0.0f);
            EXPECT_TRUE(std::isinf(c.lse[static_cast<std::size_t>((b * 2 + h) * 40 + i)]));
          }
        for (std::int64_t j = 0; j < 50; ++j)
          if (!c.pr.key_mask[static_cast<std::size_t>(b * 50 + j)]) {
            const auto* g = c.gk.data() + (c.pr.k_at(b, h, j) - c.pr.k.data());
            const auto* w = c.gv.data() + (c.pr.v_at(b, h, j) - c.pr.v.data());
            for (int t = 0; t < 16; ++t) ASSERT_EQ(g[t], 0.0f);
            for (int t = 0; t < 16; ++t) ASSERT_EQ(w[t], 0.0f);
          }
      }
  }
}

TEST(TrainBackward, SmyrfWithWholeClustersIsDense) {
  TrainCase a(2, 2, 70, 90, 32, 32, false, 21), b(2, 2, 70, 90, 32, 32, false, 21);
  a.forward(DenseConfig{});
  a.backward(DenseConfig{});
  const MethodConfig whole = SmyrfConfig{.n_hashes = 4, .q_cluster_size = 70, .k_cluster_size = 90};
  b.forward(whole);
  b.backward(whole);
  EXPECT_TRUE(bitwise_equal(a.gq, b.gq) && bitwise_equal(a.gk, b.gk) && bitwise_equal(a.gv, b.gv));
}

TEST(TrainBackward, SameBitsForEveryThreadCount) {
  // (2, 3, 150, 300): many heads, one dense task per head; (1, 1, 200, 1100): one head whose
  // dense key tiles are split into groups with partial dQ sums; (1, 2, 300, 200): one key tile
  // per head, its query tiles split into 4 with partial dK and dV sums.
  for (auto [B, H, Nq, Nk] : {std::tuple{2, 3, 150, 300}, std::tuple{1, 1, 200, 1100}, std::tuple{1, 2, 300, 200}})
  for (float dropout : {0.0f, 0.2f})
    for (const MethodConfig& config :
         {MethodConfig{DenseConfig{}}, MethodConfig{SmyrfConfig{.n_hashes = 3, .q_cluster_size = 16, .k_cluster_size = 16}}}) {
      std::vector<float> first[4];
      for (int threads : {1, 2, 3}) {
        TrainCase c(B, H, Nq, Nk, 32, 32, false, 5);
        c.pr.params.dropout = dropout;
        c.pr.params.seed = 77;
        c.forward(config, threads);
        c.backward(config, threads);
        const std::vector<float> got[4] = {c.pr.o, c.gq, c.gk, c.gv};
        for (int t = 0; t < 4; ++t) {
          if (threads == 1) first[t] = got[t];
          EXPECT_TRUE(bitwise_equal(first[t], got[t])) << method_name(config) << " tensor " << t << " threads " << threads;
        }
      }
    }
}

// ---------------------------------------------------------------------------------------
// Dropout.

TEST(TrainDropout, GradientsMatchOracle) {
  TrainCase c(2, 2, 60, 80, 16, 16, true, 31);
  c.pr.params.dropout = 0.25f;
  c.pr.params.seed = 9;
  expect_gradients_match(c, DenseConfig{}, 80, "dense dropout");
  expect_gradients_match(c, SmyrfConfig{.n_hashes = 2, .q_cluster_size = 16, .k_cluster_size = 16}, 16,
                         "smyrf dropout");
}

// With V = identity, O[i][j] is the (dropped) weight of key j: every entry is 0 or the
// undropped weight / (1 - p), zeros appear with frequency p, and a new seed draws a new mask.
TEST(TrainDropout, WeightsAreDroppedWithProbabilityPAndRescaled) {
  const std::int64_t B = 2, H = 4, N = 64;
  const float p = 0.25f;
  Problem pr(B, H, N, N, 16, N, false, 4);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t j = 0; j < N; ++j)
        for (std::int64_t c = 0; c < N; ++c) pr.v_at(b, h, j)[c] = j == c ? 1.0f : 0.0f;
  const std::vector<float> weights = pr.run(DenseConfig{});
  pr.params.dropout = p;
  pr.params.seed = 1;
  const std::vector<float> dropped = pr.run(DenseConfig{});
  std::size_t zeros = 0;
  for (std::size_t e = 0; e < weights.size(); ++e) {
    if (dropped[e] == 0.0f) {
      ++zeros;
    } else {
      ASSERT_NEAR(dropped[e], weights[e] / (1 - p), 1e-6 * (1 + weights[e])) << e;
    }
  }
  const double n = static_cast<double>(weights.size());
  const double sigma = std::sqrt(p * (1 - p) / n);
  EXPECT_NEAR(static_cast<double>(zeros) / n, p, 5 * sigma);
  pr.params.seed = 2;
  const std::vector<float> other = pr.run(DenseConfig{});
  std::size_t differ = 0;
  for (std::size_t e = 0; e < weights.size(); ++e) differ += (other[e] == 0.0f) != (dropped[e] == 0.0f);
  // Two independent masks disagree on 2 p (1 - p) of the entries.
  EXPECT_NEAR(static_cast<double>(differ) / n, 2 * p * (1 - p), 5 * std::sqrt(2 * p * (1 - p) / n));
  // Without dropout (p = 0) the output is the plain forward, bit for bit.
  pr.params.dropout = 0.0f;
  EXPECT_TRUE(bitwise_equal(pr.run(DenseConfig{}), weights));
}

TEST(TrainDropout, ExpectedOutputIsTheUndroppedOne) {
  // Averaged over many seeds, O with dropout tends to O without: inverted-dropout scaling.
  Problem pr(1, 1, 16, 32, 8, 8, false, 6);
  const std::vector<float> plain = pr.run(SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8});
  std::vector<double> mean(plain.size(), 0.0);
  const int seeds = 400;
  pr.params.dropout = 0.5f;
  for (int s = 0; s < seeds; ++s) {
    pr.params.seed = static_cast<std::uint64_t>(s);
    const std::vector<float> o = pr.run(SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8});
    for (std::size_t e = 0; e < o.size(); ++e) mean[e] += o[e] / seeds;
  }
  // Note the seed also moves SMYRF's hash directions; compare with the mean of the plain
  // outputs over the same seeds.
  std::vector<double> plain_mean(plain.size(), 0.0);
  pr.params.dropout = 0.0f;
  for (int s = 0; s < seeds; ++s) {
    pr.params.seed = static_cast<std::uint64_t>(s);
    const std::vector<float> o = pr.run(SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8});
    for (std::size_t e = 0; e < o.size(); ++e) plain_mean[e] += o[e] / seeds;
  }
  double err = 0, scale = 0;
  for (std::size_t e = 0; e < mean.size(); ++e) {
    err = std::max(err, std::abs(mean[e] - plain_mean[e]));
    scale = std::max(scale, std::abs(plain_mean[e]));
  }
  // The dropout noise of one entry has sd <= max|V| sqrt(p/(1-p)) <= ~4; averaged over 400
  // seeds: ~0.2 at most, typically far less.
  EXPECT_LT(err, 0.25) << "scale " << scale;
}

// ---------------------------------------------------------------------------------------
// Errors at the edge.

TEST(TrainErrors, BadInputsThrowNamingTheParameter) {
  TrainCase c(1, 1, 8, 8, 4, 4, false, 1);
  c.forward(DenseConfig{});
  auto expect_error = [&](GradientParams g, const MethodConfig& config, const char* needle) {
    try {
      attention_backward(c.pr.params, g, config);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const GradientParams good{c.pr.o.data(), c.lse.data(), c.go.data(), c.gq.data(), c.gk.data(), c.gv.data()};
  GradientParams g = good;
  g.grad_q = nullptr;
  expect_error(g, DenseConfig{}, "grads.grad_q");
  g = good;
  g.lse = nullptr;
  expect_error(g, DenseConfig{}, "grads.lse");
  g = good;
  g.grad_k = c.gq.data();
  expect_error(g, DenseConfig{}, "overlaps");
  g = good;
  g.grad_v = const_cast<float*>(static_cast<const float*>(c.pr.params.v));
  expect_error(g, DenseConfig{}, "overlaps");
  // A form without a backward (the first the registry lists, if any) is refused, naming itself.
  for (const MethodInfo& m : methods())
    if (!m.caps.backward) {
      expect_error(good, m.example, (m.name + " attention has no backward").c_str());
      break;
    }
  c.pr.params.k_head_stride = 0;
  c.pr.params.heads = 1;
  c.pr.params.k_row_stride = 0;
  expect_error(good, DenseConfig{}, "params.k_row_stride");
  c.pr.params.k_row_stride = 4;
  c.pr.params.dropout = 1.0f;
  expect_error(good, DenseConfig{}, "params.dropout");
  c.pr.params.dropout = std::nanf("");
  EXPECT_THROW(attention(c.pr.params, DenseConfig{}), Error);
  c.pr.params.dropout = 0.1f;
  for (const MethodInfo& m : methods())
    if (!m.caps.dropout) {
      EXPECT_THROW(attention(c.pr.params, m.example), Error) << m.name << "/" << m.form;
      break;
    }
  c.pr.params.dropout = 0.0f;
  c.pr.use_bf16();
  expect_error(good, DenseConfig{}, "f32");
}

}  // namespace
}  // namespace smyrf::test
