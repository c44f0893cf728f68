// Compressed attention (linformer, memory_compressed, nystrom, global_memory, star,
// induced_points) against its double-precision oracle (reference/reference.h), the
// exact attention each kind reduces to where its definition allows, and its own invariants.
//
// TOLERANCE (fast f32 vs the oracle's double of the SAME approximation, so a rounding bound):
// with rule(vmax, L, n) = 16 eps_f32 vmax (1 + L + log2(n + 1)) the suite's rule (test_util.h),
// per (b, h):
//   final attention: rule(max|V_f|, L_f, n_f) over the keys the queries attend to: the
//     synthetic rows (oracle's values) and, for star / global_memory, the real visible keys;
//     L_f the largest |scale| sum_t |q_t k_t| over active queries and those keys; n_f the
//     synthetic rows plus the window 2 window + 1. The synthetic rows are rounded to f32 once
//     from double sums (relative error eps / 2: within the rule's logit and value terms).
//   first stage (rows computed by attention of synthetic queries to the real keys: nystrom's
//     A3 V, star's relay, induced points' A K and A V): each element is off by at most
//     r1k = rule(max|K|, L1, n_k) (keys) or r1v = rule(max|V|, L1, n_k) (values), L1 over
//     (stage query, visible key) pairs. A value row error passes through the final softmax
//     (a convex combination) unchanged: + r1v. A key row error moves a logit by at most
//     |scale| |q|_1 r1k, the output by twice that times max|V_f|: + 2 max|V_f| |scale|
//     max|q|_1 r1k. Nystrom: W = Z (A3 V) amplifies A3 V's error by max_i sum_j |Z_ij|:
//     + amplify * r1v (Z and A2 are computed in double from the same f32 landmarks in both).
//   lse: the O bound divided by max|V_f| (the logit part), plus 4 eps |lse|.
// A wrong row, mask, window or merge gives errors of the order of max|V|, far above these.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "methods/compressed/compressed.h"
#include "reference/reference.h"
#include "spec/draws.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();


CompressedConfig ccfg(Compression kind, int rank = 8, int window = 3, int stride = 4,
                      int iterations = 6) {
  CompressedConfig c;
  c.kind = kind;
  c.rank = rank;
  c.window = window;
  c.stride = stride;
  c.pinv_iterations = iterations;
  return c;
}

std::vector<float> gaussian(std::size_t n, std::uint64_t seed, float sigma = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = g(rng);
  return x;
}

double rule(double vmax, double L, double n) {
  return 16.0 * kEps * vmax * (1.0 + L + std::log2(n + 1.0));
}

struct Bounds {
  double o = 0, lse = 0;
};

// The bounds of the rule at the top for problem pr and the oracle's rows.
Bounds bounds(Problem& pr, const CompressedConfig& c, const reference::Output& ref) {
  const double scale = pr.params.scale ? std::abs(*pr.params.scale) : 1.0 / std::sqrt(double(pr.d));
  const bool window = c.kind == Compression::star || c.kind == Compression::global_memory;
  auto kvis = [&](std::int64_t b, std::int64_t j) {
    return pr.key_mask.empty() || pr.key_mask[static_cast<std::size_t>(b * pr.Nk + j)] != 0;
  };
  auto qact = [&](std::int64_t b, std::int64_t i) {
    return pr.query_mask.empty() || pr.query_mask[static_cast<std::size_t>(b * pr.Nq + i)] != 0;
  };
  auto l1dot = [](const float* a, const double* b, std::int64_t d) {
    double s = 0;
    for (std::int64_t t = 0; t < d; ++t) s += std::abs(double(a[t]) * b[t]);
    return s;
  };
  Bounds out;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::size_t bh = static_cast<std::size_t>(b * pr.H + h);
      const auto& Ks = ref.keys[bh];
      const auto& Vs = ref.values[bh];
      const auto& S = ref.stage_queries[bh];
      const std::int64_t ms = static_cast<std::int64_t>(Ks.size()) / pr.d;
      double vf = 0, vmax = 0, kmax = 0, Lf = 0, L1 = 0, q1 = 0;
      std::int64_t nk = 0;
      for (double x : Vs) vf = std::max(vf, std::abs(x));
      for (std::int64_t j = 0; j < pr.Nk; ++j) {
        if (!kvis(b, j)) continue;
        ++nk;
        for (std::int64_t t = 0; t < pr.dv; ++t)
          vmax = std::max(vmax, double(std::abs(pr.v_at(b, h, j)[t])));
        for (std::int64_t t = 0; t < pr.d; ++t)
          kmax = std::max(kmax, double(std::abs(pr.k_at(b, h, j)[t])));
        for (std::size_t s = 0; s + static_cast<std::size_t>(pr.d) <= S.size();
             s += static_cast<std::size_t>(pr.d)) {
          double l = 0;
          for (std::int64_t t = 0; t < pr.d; ++t)
            l += std::abs(S[s + static_cast<std::size_t>(t)] * pr.k_at(b, h, j)[t]);
          L1 = std::max(L1, scale * l);
        }
      }
      if (window) vf = std::max(vf, vmax);
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        if (!qact(b, i)) continue;
        const float* q = pr.q_at(b, h, i);
        double n1 = 0;
        for (std::int64_t t = 0; t < pr.d; ++t) n1 += std::abs(double(q[t]));
        q1 = std::max(q1, n1);
        for (std::int64_t r = 0; r < ms; ++r)
          Lf = std::max(Lf, scale * l1dot(q, Ks.data() + r * pr.d, pr.d));
        if (window)
          for (std::int64_t j = 0; j < pr.Nk; ++j) {
            if (!kvis(b, j)) continue;
            double l = 0;
            for (std::int64_t t = 0; t < pr.d; ++t)
              l += std::abs(double(q[t]) * pr.k_at(b, h, j)[t]);
            Lf = std::max(Lf, scale * l);
          }
      }
      const double nf = double(ms) + (window ? 2.0 * c.window + 1.0 : 0.0);
      double tol = rule(vf, Lf, nf);
      if (!S.empty()) {
        const double r1v = rule(vmax, L1, double(nk)), r1k = rule(kmax, L1, double(nk));
        if (c.kind == Compression::nystrom)
          tol += ref.amplify[bh] * r1v;
        else
          tol += r1v + 2.0 * vf * scale * q1 * r1k;
      }
      out.o = std::max(out.o, tol);
      out.lse = std::max(out.lse, tol / std::max(vf, 1e-30));
    }
  return out;
}

// Fast output and lse against the oracle, within the rule at the top.
void expect_matches_oracle(Problem& pr, const CompressedConfig& config,
                           const std::string& what = "") {
  const auto ref = reference::attention(pr.params, config);
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse(BHN, 7.0f);
  pr.params.lse = lse.data();
  const auto fast = pr.run(config);
  pr.params.lse = nullptr;
  const Bounds tol = bounds(pr, config, ref);
  double err = 0;
  for (std::size_t x = 0; x < fast.size(); ++x) err = std::max(err, std::abs(fast[x] - ref.o[x]));
  EXPECT_LE(err, tol.o) << what << " " << detail::compression_name(config.kind);
  for (std::size_t i = 0; i < BHN; ++i) {
    const double l = ref.lse[i];
    if (std::isnan(l)) {
      ASSERT_TRUE(std::isnan(lse[i])) << what << " lse " << i;
    } else if (std::isinf(l)) {
      ASSERT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << what << " lse " << i << " = " << lse[i];
    } else {
      ASSERT_NEAR(lse[i], l, tol.lse + 4 * kEps * std::abs(l)) << what << " lse " << i;
    }
  }
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks;
  Compression kind;
  int rank = 8, window = 3, stride = 4, iterations = 6;
};

std::vector<Case> cases() {
  const Compression kinds[] = {Compression::linformer, Compression::memory_compressed,
                               Compression::nystrom,   Compression::global_memory,
                               Compression::star,      Compression::induced_points};
  std::vector<Case> out;
  for (Compression k : kinds) {
    const std::string n = detail::compression_name(k);
    out.push_back({n + "_basic", 1, 1, 64, 64, 16, 16, false, false, k});
    out.push_back({n + "_n1", 1, 1, 1, 1, 8, 8, false, false, k});
    out.push_back({n + "_n7", 2, 2, 7, 7, 5, 3, true, false, k, 3, 1, 2, 4});
    out.push_back({n + "_masks", 3, 2, 100, 90, 16, 12, true, true, k});
    out.push_back({n + "_fewer_keys", 1, 2, 120, 41, 16, 16, false, false, k, 6, 5, 3});
    out.push_back({n + "_more_keys", 2, 1, 30, 130, 12, 20, true, true, k, 10, 2, 7});
    out.push_back({n + "_rank_exceeds_tokens", 1, 1, 9, 6, 8, 8, false, false, k, 12, 2, 10});
    out.push_back({n + "_parallel", 2, 2, 300, 280, 32, 24, true, true, k, 16, 8, 5});
    // Many synthetic rows (several key tiles of the kernel) and a wide window.
    out.push_back({n + "_big_rank", 1, 2, 200, 300, 24, 16, false, true, k, 100, 40, 2, 8});
  }
  return out;
}

class CompressedCases : public ::testing::TestWithParam<Case> {
 protected:
  Problem make() const {
    const Case& c = GetParam();
    Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 17 + c.Nq);
    if (c.masks) pr.random_masks(3 + c.Nk, 0.7, 0.8);
    return pr;
  }
  CompressedConfig config() const {
    const Case& c = GetParam();
    return ccfg(c.kind, c.rank, c.window, c.stride, c.iterations);
  }
};

TEST_P(CompressedCases, OutputAndLseMatchOracleWithinRule) {
  Problem pr = make();
  expect_matches_oracle(pr, config());
}

TEST_P(CompressedCases, Bf16MatchesOracleAndF32Bits) {
  Problem pr = make();
  pr.use_bf16();
  expect_matches_oracle(pr, config(), "bf16");
  const auto bf = pr.run(config());
  pr.use_f32();  // the same (bf16-rounded) values: the conversion is exact, so the same bits
  EXPECT_TRUE(bitwise_equal(bf, pr.run(config())));
}

TEST_P(CompressedCases, SameBitsAtOneTwoAndSevenThreads) {
  Problem pr = make();
  const auto one = pr.run(config(), 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(config(), 2)));
  EXPECT_TRUE(bitwise_equal(one, pr.run(config(), 7)));
}

TEST_P(CompressedCases, RunInfoCounts) {
  Problem pr = make();
  pr.params.num_threads = 2;
  const RunInfo info = attention(pr.params, config());
  EXPECT_GT(info.workspace_bytes, 0u);
  EXPECT_GT(info.seconds_total, 0.0);
  // The documented count (compressed.h), from the masks.
  const CompressedConfig c = config();
  std::size_t expected = 0;
  for (std::int64_t b = 0; b < pr.B; ++b) {
    std::int64_t nq = 0, nk = 0, window_pairs = 0;
    std::vector<std::int64_t> keys;
    for (std::int64_t j = 0; j < pr.Nk; ++j)
      if (pr.key_mask.empty() || pr.key_mask[static_cast<std::size_t>(b * pr.Nk + j)])
        keys.push_back(j);
    nk = static_cast<std::int64_t>(keys.size());
    for (std::int64_t i = 0; i < pr.Nq; ++i) {
      if (!(pr.query_mask.empty() || pr.query_mask[static_cast<std::size_t>(b * pr.Nq + i)]))
        continue;
      ++nq;
      const std::int64_t p = i + pr.Nk - pr.Nq;
      for (std::int64_t j : keys) window_pairs += std::abs(p - j) <= c.window ? 1 : 0;
    }
    const std::int64_t mk = std::min<std::int64_t>(c.rank, nk),
                       mq = std::min<std::int64_t>(c.rank, nq);
    std::int64_t per_head = 0;
    switch (c.kind) {
      case Compression::linformer:
        per_head = nk > 0 ? nq * c.rank : 0;
        break;
      case Compression::memory_compressed:
        per_head = nq * ((nk + c.stride - 1) / c.stride);
        break;
      case Compression::nystrom:
        per_head = nk > 0 && nq > 0 ? mq * nk + mq * mk + nq * mk : 0;
        break;
      case Compression::global_memory:
        per_head = nq * mk + window_pairs;
        break;
      case Compression::star:
        per_head = nk > 0 && nq > 0 ? 2 * nk + nq + window_pairs : 0;
        break;
      case Compression::induced_points:
        per_head = nk > 0 ? 2 * mk * nk + nq * mk : 0;
        break;
    }
    expected += static_cast<std::size_t>(per_head * pr.H);
  }
  EXPECT_EQ(info.attention_scores, expected);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CompressedCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

const Compression kAllKinds[] = {Compression::linformer, Compression::memory_compressed,
                                 Compression::nystrom,   Compression::global_memory,
                                 Compression::star,      Compression::induced_points};

TEST(Compressed, MasksRespected) {
  for (Compression k : kAllKinds) {
    Problem pr(2, 2, 80, 70, 16, 12, true, 10);
    pr.random_masks(12, 0.6, 0.7);
    expect_masks_respected(pr, ccfg(k));
  }
}

TEST(Compressed, BroadcastStridesMatchOracle) {
  // One K/V head shared by every query head, one Q shared by the batch (stride 0).
  for (Compression k : kAllKinds) {
    Problem pr(2, 3, 50, 40, 16, 8, false, 31);
    pr.random_masks(4, 0.8, 0.9);
    pr.params.k_head_stride = 0;
    pr.params.v_head_stride = 0;
    pr.params.q_batch_stride = 0;
    expect_matches_oracle(pr, ccfg(k), "broadcast");
    pr.use_bf16();
    expect_matches_oracle(pr, ccfg(k), "broadcast bf16");
  }
}

TEST(Compressed, FullyMaskedBatchElementsGetZeros) {
  for (Compression k : kAllKinds) {
    Problem pr(3, 2, 40, 40, 8, 8, true, 3);
    pr.random_masks(1, 0.8, 0.8);
    std::fill(pr.key_mask.begin() + 40, pr.key_mask.begin() + 80, 0);  // b = 1: no key
    std::fill(pr.query_mask.begin() + 80, pr.query_mask.end(), 0);     // b = 2: no query
    std::vector<float> lse(3 * 2 * 40, 1.0f);
    pr.params.lse = lse.data();
    pr.run(ccfg(k));
    for (std::int64_t b = 1; b < 3; ++b)
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t i = 0; i < 40; ++i) {
          for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(b, h, i)[c], 0.0f) << detail::compression_name(k);
          const float l = lse[static_cast<std::size_t>((b * 2 + h) * 40 + i)];
          ASSERT_TRUE(std::isinf(l) && l < 0) << detail::compression_name(k);
        }
    pr.params.lse = nullptr;
    expect_matches_oracle(pr, ccfg(k), "fully masked");
  }
}

// Dense attention over a key set [extra rows; K] (the extra rows the same for every batch
// element of a head when per_batch is false): the exact attention some kinds reduce to.
std::vector<float> dense_with_rows(Problem& pr, const std::vector<double>& krows,
                                   const std::vector<double>& vrows, std::int64_t m,
                                   bool per_batch) {
  Problem big(pr.B, pr.H, pr.Nq, m + pr.Nk, pr.d, pr.dv);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::size_t base = static_cast<std::size_t>(per_batch ? (b * pr.H + h) * m : h * m);
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        std::copy_n(pr.q_at(b, h, i), pr.d, big.q_at(b, h, i));
      for (std::int64_t r = 0; r < m; ++r) {
        for (std::int64_t t = 0; t < pr.d; ++t)
          big.k_at(b, h, r)[t] =
              static_cast<float>(krows[(base + static_cast<std::size_t>(r)) * pr.d + t]);
        for (std::int64_t t = 0; t < pr.dv; ++t)
          big.v_at(b, h, r)[t] =
              static_cast<float>(vrows[(base + static_cast<std::size_t>(r)) * pr.dv + t]);
      }
      for (std::int64_t j = 0; j < pr.Nk; ++j) {
        std::copy_n(pr.k_at(b, h, j), pr.d, big.k_at(b, h, m + j));
        std::copy_n(pr.v_at(b, h, j), pr.dv, big.v_at(b, h, m + j));
      }
    }
  big.params.scale = pr.params.scale;
  return big.run(DenseConfig{});
}

TEST(Compressed, LinformerSelectionProjectionsAreDenseOnTheSelectedKeys) {
  // E = F = a selection of keys (E[r, s_r] = 1): K' = K[s], V' = V[s], so the output is exact
  // attention to the selected keys (dense with a key mask keeping them).
  Problem pr(2, 2, 50, 60, 16, 12, true, 4);
  const std::vector<int> sel = {3, 7, 8, 20, 33, 41, 59};
  const int R = static_cast<int>(sel.size());
  std::vector<float> e(static_cast<std::size_t>(2 * R * 60), 0.0f);
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < R; ++r)
      e[static_cast<std::size_t>((h * R + r) * 60 + sel[static_cast<std::size_t>(r)])] = 1.0f;
  CompressedConfig c = ccfg(Compression::linformer, R);
  c.projection_e = e.data();
  c.projection_f = e.data();
  const auto lin = pr.run(c);
  std::vector<std::uint8_t> km(2 * 60, 0), qm(2 * 50, 1);
  for (int b = 0; b < 2; ++b)
    for (int j : sel) km[static_cast<std::size_t>(b * 60 + j)] = 1;
  pr.params.with_masks(km.data(), nullptr);
  const auto dense = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(lin, dense), pr.tolerance(R));
  pr.params.with_masks(nullptr, nullptr);
  expect_matches_oracle(pr, c, "selection");
}

TEST(Compressed, WideRowsAndOddRanksMatchOracle) {
  // The register tiles of the projection (4 rows x 4 vectors of columns, then 1 row and 1
  // vector, then scalar columns) and of Nystrom's double products: widths and ranks that
  // leave remainders at every level, given and default projections, masks.
  Problem pr(2, 2, 90, 150, 72, 44, true, 41);
  pr.random_masks(42, 0.85, 0.9);
  const int R = 37;
  const std::vector<float> e = gaussian(static_cast<std::size_t>(2 * R * 150), 43, 0.2f);
  const std::vector<float> f = gaussian(static_cast<std::size_t>(2 * R * 150), 44, 0.2f);
  CompressedConfig c = ccfg(Compression::linformer, R);
  expect_matches_oracle(pr, c, "default projections");
  c.projection_e = e.data();
  c.projection_f = f.data();
  expect_matches_oracle(pr, c, "given projections");
  for (int rank : {37, 45, 70})
    expect_matches_oracle(pr, ccfg(Compression::nystrom, rank, 3, 4, 6),
                          "nystrom rank " + std::to_string(rank));
}

TEST(Compressed, LinformerDefaultProjectionsAreTheSeededDraws) {
  Problem pr(2, 2, 40, 30, 8, 8, false, 5);
  const int R = 5;
  // The defaults are linformer_projection(seed, ...): given as arrays, the same bits.
  std::vector<float> e(2 * R * 30), f(2 * R * 30);
  pr.params.seed = 99;
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 30; ++j) {
        const std::size_t at = static_cast<std::size_t>((h * R + r) * 30 + j);
        spec::linformer_projection(99, h, r, j, R, &e[at], &f[at]);
        // Rademacher signs: bits 2 (j mod 32) and 2 (j mod 32) + 1 of the row's word for the
        // keys' block of 32, scaled by float(1 / sqrt(R)).
        const std::uint64_t word = detail::random_bits(99, spec::kLinformerStream + h,
                                                       (std::uint64_t(r) << 32) + j / 32);
        const float s = static_cast<float>(1.0 / std::sqrt(double(R)));
        EXPECT_EQ(e[at], (word >> (2 * (j % 32))) & 1 ? s : -s);
        EXPECT_EQ(f[at], (word >> (2 * (j % 32) + 1)) & 1 ? s : -s);
      }
  const auto def = pr.run(ccfg(Compression::linformer, R));
  CompressedConfig c = ccfg(Compression::linformer, R);
  c.projection_e = e.data();
  c.projection_f = f.data();
  EXPECT_TRUE(bitwise_equal(def, pr.run(c)));
  // E and F are independent signs: they agree on about half the entries, and each has about
  // as many + as - entries.
  std::size_t agree = 0, plus_e = 0, plus_f = 0;
  for (std::size_t x = 0; x < e.size(); ++x) {
    agree += e[x] == f[x];
    plus_e += e[x] > 0;
    plus_f += f[x] > 0;
  }
  const double n = static_cast<double>(e.size());  // 300: 4 sigma = 0.115 n
  EXPECT_NEAR(agree / n, 0.5, 0.12);
  EXPECT_NEAR(plus_e / n, 0.5, 0.12);
  EXPECT_NEAR(plus_f / n, 0.5, 0.12);
  // A new seed redraws them; the same seed gives the same bits.
  pr.params.seed = 100;
  const auto other = pr.run(ccfg(Compression::linformer, R));
  EXPECT_FALSE(bitwise_equal(def, other));
  pr.params.seed = 99;
  EXPECT_TRUE(bitwise_equal(def, pr.run(ccfg(Compression::linformer, R))));
  // Given only one of them: the other is the default draw.
  CompressedConfig only_e = ccfg(Compression::linformer, R);
  only_e.projection_e = e.data();
  EXPECT_TRUE(bitwise_equal(def, pr.run(only_e)));
  expect_matches_oracle(pr, only_e, "only E");
}

TEST(Compressed, MemoryCompressedStrideOneIsDense) {
  Problem pr(2, 2, 60, 70, 16, 16, true, 6);
  pr.random_masks(5, 0.8, 0.9);
  EXPECT_LE(
      max_abs_diff(pr.run(ccfg(Compression::memory_compressed, 8, 3, 1)), pr.run(DenseConfig{})),
      pr.tolerance());
  // A stride covering every key: one row, the mean of K and V (every query gets mean V).
  Problem one(1, 1, 10, 12, 4, 3);
  const auto out = one.run(ccfg(Compression::memory_compressed, 8, 3, 12));
  for (std::int64_t c = 0; c < 3; ++c) {
    double m = 0;
    for (std::int64_t j = 0; j < 12; ++j) m += one.v_at(0, 0, j)[c];
    for (std::int64_t i = 0; i < 10; ++i)
      EXPECT_NEAR(out[static_cast<std::size_t>(i * 3 + c)], m / 12, 1e-6);
  }
}

TEST(Compressed, NystromWithOneTokenPerLandmarkConvergesToDense) {
  // rank = n: the landmarks are the tokens, A1 = A3 = A2 = softmax(Q K^T) and Z -> A2^-1, so
  // O -> A2 A2^-1 A2 V = exact attention. Loose bound: the iteration's residual after 30 steps.
  Problem pr(1, 2, 24, 24, 16, 16, false, 7);
  pr.fill_gaussian(7, 0.5f);
  const auto exact = pr.run(DenseConfig{});
  const auto ny = pr.run(ccfg(Compression::nystrom, 24, 3, 4, 30));
  EXPECT_LE(max_abs_diff(ny, exact), 1e-3);
  // Few iterations are a worse approximation (the iteration is what converges).
  const auto rough = pr.run(ccfg(Compression::nystrom, 24, 3, 4, 1));
  EXPECT_GT(max_abs_diff(rough, exact), max_abs_diff(ny, exact));
  expect_matches_oracle(pr, ccfg(Compression::nystrom, 24, 3, 4, 30), "converged");
}

TEST(Compressed, GlobalMemoryIsDenseOverMemoryAndWindow) {
  // window >= N: every visible key plus the memory rows: exact attention over [memory; K].
  Problem pr(2, 2, 40, 50, 16, 8, true, 8);
  const auto mk = gaussian(2 * 4 * 16, 1), mv = gaussian(2 * 4 * 8, 2);
  CompressedConfig c = ccfg(Compression::global_memory, 4, 60);
  c.memory_k = mk.data();
  c.memory_v = mv.data();
  const std::vector<double> dk(mk.begin(), mk.end()), dvv(mv.begin(), mv.end());
  EXPECT_LE(max_abs_diff(pr.run(c), dense_with_rows(pr, dk, dvv, 4, false)), pr.tolerance(54));
  // Default memory: the segment means (the oracle's rows), per batch element.
  const CompressedConfig def = ccfg(Compression::global_memory, 5, 60);
  const auto ref = reference::attention(pr.params, def);
  std::vector<double> rk, rv;
  for (const auto& x : ref.keys) rk.insert(rk.end(), x.begin(), x.end());
  for (const auto& x : ref.values) rv.insert(rv.end(), x.begin(), x.end());
  EXPECT_LE(max_abs_diff(pr.run(def), dense_with_rows(pr, rk, rv, 5, true)), pr.tolerance(55));
}

TEST(Compressed, StarIsDenseOverRelayAndWindow) {
  Problem pr(2, 2, 40, 50, 16, 8, true, 9);
  const CompressedConfig c = ccfg(Compression::star, 1, 60);
  const auto ref = reference::attention(pr.params, c);
  std::vector<double> rk, rv;
  for (const auto& x : ref.keys) rk.insert(rk.end(), x.begin(), x.end());
  for (const auto& x : ref.values) rv.insert(rv.end(), x.begin(), x.end());
  EXPECT_LE(max_abs_diff(pr.run(c), dense_with_rows(pr, rk, rv, 1, true)), 1e-5);
  // The relay row is the softmax mean of K under the mean query: with a zero mean query, the
  // plain mean of the keys.
  Problem z(1, 1, 2, 6, 4, 4);
  for (std::int64_t t = 0; t < 4; ++t) z.q_at(0, 0, 1)[t] = -z.q_at(0, 0, 0)[t];
  const auto zr = reference::attention(z.params, ccfg(Compression::star, 1, 0));
  for (std::int64_t t = 0; t < 4; ++t) {
    double m = 0;
    for (std::int64_t j = 0; j < 6; ++j) m += z.k_at(0, 0, j)[t];
    EXPECT_NEAR(zr.keys[0][static_cast<std::size_t>(t)], m / 6, 1e-12);
  }
  expect_matches_oracle(z, ccfg(Compression::star, 1, 0), "zero mean query");
}

TEST(Compressed, InducedPointsGivenAndDefault) {
  Problem pr(2, 2, 50, 40, 16, 16, true, 11);
  pr.random_masks(3, 0.8, 0.9);
  const auto ind = gaussian(2 * 6 * 16, 5);
  CompressedConfig c = ccfg(Compression::induced_points, 6);
  c.inducing = ind.data();
  const auto given = pr.run(c);
  const auto def = pr.run(ccfg(Compression::induced_points, 6));
  EXPECT_GT(max_abs_diff(given, def), 1e-3);
  expect_matches_oracle(pr, c, "given");
  // The inducing rows are shared by the batch: the same sequence in both slots, the same rows.
  Problem twin(2, 1, 20, 20, 8, 8);
  for (std::int64_t i = 0; i < 20; ++i) {
    std::copy_n(twin.q_at(0, 0, i), 8, twin.q_at(1, 0, i));
    std::copy_n(twin.k_at(0, 0, i), 8, twin.k_at(1, 0, i));
    std::copy_n(twin.v_at(0, 0, i), 8, twin.v_at(1, 0, i));
  }
  CompressedConfig c1 = ccfg(Compression::induced_points, 3);
  c1.inducing = ind.data();
  const auto out = twin.run(c1);
  for (std::size_t x = 0; x < 20 * 8; ++x) ASSERT_EQ(out[x], out[20 * 8 + x]);
}

TEST(Compressed, GlobalMemoryCausalWithGivenMemory) {
  const auto mk = gaussian(2 * 3 * 16, 3), mv = gaussian(2 * 3 * 12, 4);
  CompressedConfig c = ccfg(Compression::global_memory, 3, 4);
  c.memory_k = mk.data();
  c.memory_v = mv.data();
  for (const auto& [nq, nk] : std::vector<std::pair<int, int>>{{60, 60}, {30, 70}, {70, 30}}) {
    Problem pr(2, 2, nq, nk, 16, 12, true, 13 + nq);
    pr.random_masks(2, 0.7, 0.9);
    pr.params.causal = true;
    expect_matches_oracle(pr, c, "causal " + std::to_string(nq) + "x" + std::to_string(nk));
    expect_masks_respected(pr, c);
    // Causal: a later key never changes an earlier query (here: the last key's contents).
    const auto before = pr.run(c);
    for (std::int64_t h = 0; h < 2; ++h) std::fill_n(pr.k_at(0, h, nk - 1), 16, 3.0f);
    const auto after = pr.run(c);
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < nq - 1; ++i)
        for (std::int64_t x = 0; x < 12; ++x) {
          const std::size_t at = static_cast<std::size_t>(((0 * 2 + h) * nq + i) * 12 + x);
          ASSERT_EQ(before[at], after[at]);
        }
  }
  // Window 0, no visible key: the memory alone (always visible).
  Problem pr(1, 2, 10, 10, 16, 12);
  std::vector<std::uint8_t> none(10, 0);
  pr.params.with_masks(none.data(), nullptr);
  expect_matches_oracle(pr, c, "memory only");
  EXPECT_NE(pr.run(c)[0], 0.0f);
}

TEST(Compressed, CausalErrorsNameParamsCausal) {
  Problem pr(1, 1, 20, 20, 8, 8);
  pr.params.causal = true;
  for (Compression k : kAllKinds) {
    try {
      attention(pr.params, ccfg(k));
      ADD_FAILURE() << "no causal error for " << detail::compression_name(k);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("params.causal"), std::string::npos) << e.what();
    }
  }
}

TEST(Compressed, BadConfigsThrowNamingTheField) {
  Problem pr(1, 2, 20, 20, 8, 8);
  auto expect_error = [&](const CompressedConfig& c, const std::string& name) {
    expect_config_error(pr, c, name);
  };
  CompressedConfig c = ccfg(Compression::linformer);
  c.kind = static_cast<Compression>(17);
  expect_error(c, "CompressedConfig.kind");
  expect_error(ccfg(Compression::linformer, 0), "CompressedConfig.rank");
  expect_error(ccfg(Compression::linformer, 65537), "CompressedConfig.rank");
  expect_error(ccfg(Compression::nystrom, 4, 3, 4, -1), "CompressedConfig.pinv_iterations");
  expect_error(ccfg(Compression::nystrom, 4, 3, 4, 101), "CompressedConfig.pinv_iterations");
  expect_error(ccfg(Compression::memory_compressed, 4, 3, 0), "CompressedConfig.stride");
  expect_error(ccfg(Compression::star, 4, -1), "CompressedConfig.window");
  const auto arr = gaussian(2 * 4 * 20, 1);
  c = ccfg(Compression::nystrom, 4);
  c.projection_e = arr.data();
  expect_error(c, "CompressedConfig.projection_e");
  c = ccfg(Compression::linformer, 4);
  c.inducing = arr.data();
  expect_error(c, "CompressedConfig.inducing");
  c = ccfg(Compression::star, 4);
  c.projection_f = arr.data();
  expect_error(c, "CompressedConfig.projection_f");
  c = ccfg(Compression::induced_points, 4);
  c.memory_k = arr.data();
  expect_error(c, "CompressedConfig.memory_k");
  c = ccfg(Compression::global_memory, 4);
  c.memory_k = arr.data();
  expect_error(c, "CompressedConfig.memory_v");
  c = ccfg(Compression::global_memory, 4);
  c.memory_v = arr.data();
  expect_error(c, "CompressedConfig.memory_k");
  // Non-finite learned values: the field and the first bad index.
  auto bad = arr;
  bad[1 * 4 * 20 + 2 * 20 + 5] = std::numeric_limits<float>::quiet_NaN();  // [1, 2, 5]
  c = ccfg(Compression::linformer, 4);
  c.projection_e = bad.data();
  expect_error(c, "CompressedConfig.projection_e[1, 2, 5]");
  c = ccfg(Compression::linformer, 4);
  c.projection_f = bad.data();
  expect_error(c, "CompressedConfig.projection_f[1, 2, 5]");
  auto bad8 = gaussian(2 * 4 * 8, 2);
  bad8[0 * 32 + 3 * 8 + 7] = std::numeric_limits<float>::infinity();  // [0, 3, 7]
  c = ccfg(Compression::induced_points, 4);
  c.inducing = bad8.data();
  expect_error(c, "CompressedConfig.inducing[0, 3, 7]");
  const auto good8 = gaussian(2 * 4 * 8, 3);
  c = ccfg(Compression::global_memory, 4);
  c.memory_k = bad8.data();
  c.memory_v = good8.data();
  expect_error(c, "CompressedConfig.memory_k[0, 3, 7]");
  c.memory_k = good8.data();
  c.memory_v = bad8.data();
  expect_error(c, "CompressedConfig.memory_v[0, 3, 7]");
  pr.params.dropout = 0.1f;
  expect_error(ccfg(Compression::linformer), "params.dropout");
}

TEST(Compressed, SeedOnlyChangesLinformerDefaultsAndWorkspaceReuseGivesSameBits) {
  Problem pr(1, 2, 60, 60, 16, 16, false, 23);
  for (Compression k : kAllKinds) {
    pr.params.seed = 1;
    const auto a = pr.run(ccfg(k));
    pr.params.seed = 12345;
    const auto b = pr.run(ccfg(k));
    EXPECT_EQ(bitwise_equal(a, b), k != Compression::linformer) << detail::compression_name(k);
    Workspace ws;
    attention(pr.params, ccfg(k), &ws);
    const auto first = pr.output();
    attention(pr.params, ccfg(k), &ws);
    EXPECT_TRUE(bitwise_equal(first, pr.output())) << detail::compression_name(k);
    EXPECT_TRUE(bitwise_equal(first, b)) << detail::compression_name(k);
  }
}

}  // namespace
}  // namespace smyrf::test
