// Causal attention (params.causal) in the reference, dense and SMYRF methods.
//
// Oracles: the reference method (double accumulation, plain loops over the keys each query
// sees) and attention_f64 (double, explicit key sets: for SMYRF its clusters restricted to
// earlier positions, with the documented fallback window). Float results are compared under
// the suite's tolerance rule (test_util.h) with n_keys = Nk.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "smyrf/smyrf.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

SmyrfConfig smyrf_cfg(int hashes, int cluster) {
  SmyrfConfig c;
  c.n_hashes = hashes;
  c.q_cluster_size = c.k_cluster_size = cluster;
  return c;
}

// The double oracle's output (and lse) on the problem's float inputs, gathered [B, H, Nq, dv].
struct F64 {
  std::vector<double> o, lse;
  F64(Problem& pr, const MethodConfig& config) {
    std::vector<double> q, k, v;
    for (std::int64_t b = 0; b < pr.B; ++b)
      for (std::int64_t h = 0; h < pr.H; ++h) {
        for (std::int64_t i = 0; i < pr.Nq; ++i) q.insert(q.end(), pr.q_at(b, h, i), pr.q_at(b, h, i) + pr.d);
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          k.insert(k.end(), pr.k_at(b, h, j), pr.k_at(b, h, j) + pr.d);
          v.insert(v.end(), pr.v_at(b, h, j), pr.v_at(b, h, j) + pr.dv);
        }
      }
    o.resize(static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.dv));
    lse.resize(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
    attention_f64(pr.params, {q.data(), k.data(), v.data()}, config, o.data(), lse.data());
  }
};

double max_err(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(double(a[i]) - b[i]);
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    m = std::max(m, e);
  }
  return m;
}

struct Shape {
  std::int64_t B, H, Nq, Nk, d, dv;
  bool padded, masks;
};

class CausalShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(CausalShapes, DenseMatchesReference) {
  const Shape s = GetParam();
  Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, s.padded, 5);
  if (s.masks) pr.random_masks(8, 0.8, 0.9);
  pr.params.causal = true;
  const auto ref = pr.run(ReferenceConfig{});
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(dense, ref), pr.tolerance());
}

TEST_P(CausalShapes, DenseMatchesReferenceInBf16) {
  const Shape s = GetParam();
  Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, s.padded, 6);
  if (s.masks) pr.random_masks(9, 0.8, 0.9);
  pr.use_bf16();
  pr.params.causal = true;
  const auto ref = pr.run(ReferenceConfig{});
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(dense, ref), pr.tolerance());
}

TEST_P(CausalShapes, SmyrfMatchesDoubleOracle) {
  const Shape s = GetParam();
  Problem pr(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, s.padded, 7);
  if (s.masks) pr.random_masks(10, 0.8, 0.9);
  pr.params.causal = true;
  std::vector<float> lse(static_cast<std::size_t>(s.B * s.H * s.Nq));
  pr.params.lse = lse.data();
  for (const SmyrfConfig& c : {smyrf_cfg(3, 8), smyrf_cfg(2, 32)}) {
    const auto out = pr.run(c);
    const F64 oracle(pr, c);
    EXPECT_LE(max_err(out, oracle.o), pr.tolerance()) << c.n_hashes << "x" << c.q_cluster_size;
    for (std::size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(oracle.lse[i])) {
        EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << i;
      } else {
        EXPECT_NEAR(lse[i], oracle.lse[i], 1e-4 * (1.0 + std::abs(oracle.lse[i]))) << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Causal, CausalShapes,
    ::testing::Values(Shape{1, 1, 1, 1, 8, 8, false, false}, Shape{1, 1, 7, 7, 5, 3, true, false},
                      Shape{2, 3, 100, 100, 16, 24, false, true},
                      Shape{1, 2, 257, 257, 64, 64, true, true},
                      Shape{2, 1, 50, 130, 32, 32, false, true},   // Nq < Nk: the last 50 positions
                      Shape{1, 2, 130, 50, 32, 16, true, false},   // Nq > Nk: early queries see nothing
                      Shape{1, 1, 600, 600, 64, 64, false, false}));  // several key tiles

// Row i of causal attention is row i of unmasked attention with the keys after i masked.
TEST(Causal, RowEqualsAttentionWithLaterKeysMasked) {
  Problem pr(1, 2, 40, 40, 16, 8, false, 3);
  pr.params.causal = true;
  const auto causal = pr.run(ReferenceConfig{});
  for (std::int64_t i : {0, 1, 17, 39}) {
    Problem row(1, 2, 40, 40, 16, 8, false, 3);
    std::vector<std::uint8_t> keys(40, 0);
    for (std::int64_t j = 0; j <= i; ++j) keys[static_cast<std::size_t>(j)] = 1;
    row.params.with_masks(keys.data(), nullptr);
    const auto masked = row.run(ReferenceConfig{});
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t c = 0; c < 8; ++c) {
        const std::size_t at = static_cast<std::size_t>((h * 40 + i) * 8 + c);
        EXPECT_EQ(causal[at], masked[at]) << "row " << i;
      }
  }
}

// Left padding: the first keys masked, so the first queries see nothing — O = 0, lse = -inf,
// never NaN, in every causal method.
TEST(Causal, QueriesThatSeeNothingGetZeros) {
  Problem pr(1, 1, 64, 64, 16, 16, false, 4);
  std::vector<std::uint8_t> keys(64, 1);
  for (int j = 0; j < 10; ++j) keys[static_cast<std::size_t>(j)] = 0;
  pr.params.with_masks(keys.data(), nullptr);
  pr.params.causal = true;
  std::vector<float> lse(64);
  pr.params.lse = lse.data();
  for (const MethodConfig& c : {MethodConfig{DenseConfig{}}, MethodConfig{ReferenceConfig{}},
                                MethodConfig{smyrf_cfg(2, 8)}}) {
    const auto out = pr.run(c);
    for (std::int64_t i = 0; i < 64; ++i)
      for (std::int64_t t = 0; t < 16; ++t) {
        const float x = out[static_cast<std::size_t>(i * 16 + t)];
        ASSERT_FALSE(std::isnan(x)) << method_name(c) << " row " << i;
        if (i < 10) {
          ASSERT_EQ(x, 0.0f) << method_name(c) << " row " << i;
        }
      }
    for (std::int64_t i = 0; i < 10; ++i)
      EXPECT_TRUE(std::isinf(lse[static_cast<std::size_t>(i)]) && lse[static_cast<std::size_t>(i)] < 0)
          << method_name(c) << " row " << i;
    EXPECT_TRUE(std::isfinite(lse[10])) << method_name(c);
  }
}

// SMYRF's fallback: the first query of a causal sequence can only see key 0; a query whose
// clusters hold only later keys attends to its nearest earlier keys. With clusters of 1 every
// query's single key is usually a later one, so most rows take the fallback; the oracle
// implements the documented window independently.
TEST(Causal, SmyrfFallbackWindowMatchesOracle) {
  Problem pr(1, 1, 64, 64, 8, 8, false, 12);
  pr.params.causal = true;
  const SmyrfConfig c = smyrf_cfg(1, 1);
  const auto out = pr.run(c);
  const F64 oracle(pr, c);
  EXPECT_LE(max_err(out, oracle.o), pr.tolerance());
  // Row 0 sees only key 0: O = V[0].
  for (std::int64_t t = 0; t < 8; ++t) EXPECT_FLOAT_EQ(out[static_cast<std::size_t>(t)], pr.v_at(0, 0, 0)[t]);
}

TEST(Causal, SameBitsForEveryThreadCount) {
  Problem pr(2, 2, 300, 300, 32, 32, true, 13);
  pr.random_masks(14, 0.9, 0.9);
  pr.params.causal = true;
  for (const MethodConfig& c : {MethodConfig{DenseConfig{}}, MethodConfig{smyrf_cfg(4, 16)}}) {
    const auto one = pr.run(c, 1);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 2))) << method_name(c);
    EXPECT_TRUE(bitwise_equal(one, pr.run(c, 3))) << method_name(c);
  }
}

TEST(Causal, MasksRespected) {
  Problem pr(2, 2, 90, 90, 16, 16, false, 15);
  pr.random_masks(16, 0.7, 0.8);
  pr.params.causal = true;
  expect_masks_respected(pr, DenseConfig{});
  expect_masks_respected(pr, smyrf_cfg(3, 16));
}

// Causal changes the result (a test that would pass with the flag ignored fails here).
TEST(Causal, DiffersFromNonCausal) {
  Problem pr(1, 1, 64, 64, 16, 16, false, 17);
  const auto full = pr.run(DenseConfig{});
  pr.params.causal = true;
  EXPECT_GT(max_abs_diff(full, pr.run(DenseConfig{})), 0.01);
  // The scores a causal call attends to: query i sees i + 1 keys.
  EXPECT_EQ(attention(pr.params, DenseConfig{}).attention_scores, 64u * 65u / 2u);
  EXPECT_EQ(attention(pr.params, ReferenceConfig{}).attention_scores, 64u * 65u / 2u);
}

void expect_error(const std::function<void()>& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one naming " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Causal, UnsupportedCombinationsThrowNamingTheParameter) {
  Problem pr(1, 1, 32, 32, 8, 8, false, 18);
  pr.params.causal = true;
  SmyrfConfig centroid;
  centroid.keys = KeySelection::centroid;
  centroid.n_hashes = 1;
  expect_error([&] { attention(pr.params, centroid); }, "params.causal");
  expect_error([&] { attention(pr.params, ClusteredConfig{}); }, "params.causal");
  pr.params.dropout = 0.1f;
  expect_error([&] { attention(pr.params, DenseConfig{}); }, "params.dropout");
  pr.params.dropout = 0.0f;
  std::vector<float> lse(32), g(pr.o.size()), gq(pr.q.size()), gk(pr.k.size()), gv(pr.v.size());
  pr.params.lse = lse.data();
  const SmyrfConfig smyrf = smyrf_cfg(2, 8);
  attention(pr.params, smyrf);
  // Causal SMYRF has a backward (test_backward.cpp checks it).
  EXPECT_NO_THROW(attention_backward(
      pr.params, {pr.o.data(), lse.data(), g.data(), gq.data(), gk.data(), gv.data()}, smyrf));
}

}  // namespace
}  // namespace smyrf::test
