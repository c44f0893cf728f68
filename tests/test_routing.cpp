// Routing attention against its double-precision oracle (reference/reference.h), dense
// attention in its one-chunk limit, and its own invariants.
//
// Tolerances. O: the suite's rule (test_util.h) with n_keys = window, the largest key set a
// query can have (a key chunk holds at most ceil(n_k / C) <= window keys; the causal fallback
// set has one). lse: the rule's logit part without the max|V| factor,
//   |lse - lse_ref| <= tolerance(window) / max|V| + 4 eps |lse_ref|,
// since lse = m + log(sum) moves by at most the largest logit error plus the relative error of
// the sum (~log2(n) roundings), and the final addition rounds relative to |lse|.
// Integers (centroid ids, chunk members, key-set sizes) and the fitted centroids (doubles) must
// equal the oracle's exactly: both follow the fma-chain definition in smyrf.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "api/inspect.h"
#include "hwy/targets.h"
#include "methods/routing/routing.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks;
  int K, window, iterations;
  bool given = false;
  bool causal = false;
};

std::vector<Case> cases() {
  return {
      {"basic", 1, 1, 128, 128, 32, 32, false, false, 4, 16, 3},
      {"n1", 1, 1, 1, 1, 8, 8, false, false, 3, 1, 2},
      {"n7", 2, 2, 7, 7, 5, 3, true, false, 3, 2, 2},
      {"n100", 1, 2, 100, 100, 16, 24, false, false, 8, 16, 4},
      {"n257_masks", 2, 1, 257, 257, 24, 16, true, true, 6, 32, 3},
      {"cross_fewer_keys", 1, 2, 150, 61, 16, 16, false, false, 5, 16, 2},
      {"cross_more_keys", 2, 1, 40, 130, 12, 20, true, true, 4, 16, 2},
      {"masks", 3, 2, 150, 140, 32, 32, true, true, 8, 16, 4},
      {"given", 2, 2, 120, 120, 16, 16, true, true, 6, 16, 5, true},
      {"given_cross", 1, 3, 90, 70, 16, 8, false, false, 11, 8, 0, true},
      {"iterations0", 1, 2, 120, 120, 16, 16, false, false, 6, 16, 0},
      {"iterations50", 1, 1, 200, 200, 8, 8, false, true, 7, 16, 50},
      {"one_cluster", 2, 1, 100, 100, 16, 16, false, true, 1, 16, 3},
      {"many_clusters", 1, 1, 180, 180, 33, 9, true, false, 37, 24, 3},
      {"clusters_exceed_tokens", 1, 1, 7, 7, 4, 4, false, false, 20, 2, 2},
      {"d1", 1, 1, 97, 97, 1, 1, false, false, 3, 8, 3},
      {"tiles", 1, 1, 400, 400, 64, 64, false, false, 3, 300, 2},
      {"causal", 2, 2, 100, 100, 16, 16, false, false, 4, 16, 3, false, true},
      {"causal_masks", 2, 1, 130, 130, 16, 16, true, true, 5, 16, 2, false, true},
      {"causal_shorter_queries", 1, 2, 50, 120, 16, 16, false, false, 4, 16, 2, false, true},
      {"causal_longer_queries", 1, 1, 120, 50, 16, 16, false, true, 4, 16, 2, true, true},
      // Large enough for the multi-threaded paths (smaller problems run on one thread).
      {"parallel", 2, 2, 520, 500, 32, 32, true, true, 16, 32, 3},
      {"parallel_causal_given", 1, 2, 700, 700, 32, 16, false, false, 12, 48, 2, true, true},
  };
}

std::vector<float> random_centroids(int H, int K, int d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> c(static_cast<std::size_t>(H * K * d));
  for (float& x : c) x = n(rng);
  return c;
}

RoutingConfig rcfg(int K, int window, int iterations, const float* centroids = nullptr) {
  RoutingConfig c;
  c.n_clusters = K;
  c.window = window;
  c.iterations = iterations;
  c.centroids = centroids;
  return c;
}

// Routes of the fast path (detail::RoutingRoutes) against the oracle's (reference::Routes) or
// another run's.
template <class Fast, class Ref>
void expect_routes_equal(const Fast& fast, const Ref& ref) {
  EXPECT_EQ(fast.q_cluster, ref.q_cluster);
  EXPECT_EQ(fast.k_cluster, ref.k_cluster);
  EXPECT_EQ(fast.n_chunks, ref.n_chunks);
  EXPECT_EQ(fast.chunk_queries, ref.chunk_queries);
  EXPECT_EQ(fast.chunk_keys, ref.chunk_keys);
  ASSERT_EQ(fast.centroids.size(), ref.centroids.size());
  for (std::size_t i = 0; i < fast.centroids.size(); ++i)
    ASSERT_EQ(fast.centroids[i], ref.centroids[i]) << "centroid value " << i;
}

// Fast output and lse against the oracle's, within the rules at the top.
void expect_matches_oracle(Problem& pr, const RoutingConfig& config, const std::string& what = "") {
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse_fast(BHN, 7.0f);
  const reference::Output oracle = reference::attention(pr.params, config);
  const auto ref = oracle.o_f32();
  const auto lse_ref = oracle.lse_f32();
  pr.params.lse = lse_fast.data();
  const auto fast = pr.run(config);
  pr.params.lse = nullptr;
  const double tol = pr.tolerance(config.window);
  EXPECT_LE(max_abs_diff(fast, ref), tol) << what;
  const double vmax = std::max(max_abs_v(pr), 1e-30);
  for (std::size_t i = 0; i < BHN; ++i) {
    if (std::isinf(lse_ref[i])) {
      ASSERT_TRUE(std::isinf(lse_fast[i]) && lse_fast[i] < 0) << what << " lse " << i;
    } else {
      ASSERT_NEAR(lse_fast[i], lse_ref[i],
                  tol / vmax + 4 * std::numeric_limits<float>::epsilon() * std::abs(lse_ref[i]))
          << what << " lse " << i;
    }
  }
}

class RoutingCases : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    if (c.given) centroids_ = random_centroids(c.H, c.K, c.d, 77 + c.K);
  }
  Problem make() const {
    const Case& c = GetParam();
    Problem pr(c.B, c.H, c.Nq, c.Nk, c.d, c.dv, c.padded, 17 + c.Nq);
    if (c.masks) pr.random_masks(3 + c.Nk, 0.7, 0.8);
    pr.params.causal = c.causal;
    return pr;
  }
  RoutingConfig config() const {
    const Case& c = GetParam();
    return rcfg(c.K, c.window, c.iterations, c.given ? centroids_.data() : nullptr);
  }
  std::vector<float> centroids_;
};

TEST_P(RoutingCases, RoutesEqualOracleExactly) {
  Problem pr = make();
  expect_routes_equal(detail::routing_routes(pr.params, config()),
                      reference::routes(pr.params, config()));
}

TEST_P(RoutingCases, OutputAndLseMatchOracleWithinRule) {
  Problem pr = make();
  expect_matches_oracle(pr, config());
}

TEST_P(RoutingCases, Bf16RoutesAndOutputMatchOracle) {
  Problem pr = make();
  pr.use_bf16();
  expect_routes_equal(detail::routing_routes(pr.params, config()),
                      reference::routes(pr.params, config()));
  expect_matches_oracle(pr, config(), "bf16");
  // The same (bf16-rounded) values as f32 inputs: the conversion is exact, so the same bits.
  const auto bf = pr.run(config());
  pr.use_f32();
  EXPECT_TRUE(bitwise_equal(bf, pr.run(config())));
}

TEST_P(RoutingCases, AttentionScoresAreTheOracleKeySetSizes) {
  Problem pr = make();
  const auto sets = reference::key_sets(pr.params, config());
  std::size_t pairs = 0;
  for (const auto& s : sets) pairs += s.size();
  pr.params.num_threads = 2;
  const RunInfo info = attention(pr.params, config());
  EXPECT_EQ(info.attention_scores, pairs);
  EXPECT_GT(info.workspace_bytes, 0u);
  EXPECT_GT(info.seconds_total, 0.0);
}

TEST_P(RoutingCases, SameBitsAtOneTwoAndThreeThreads) {
  Problem pr = make();
  const auto one = pr.run(config(), 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(config(), 2)));
  EXPECT_TRUE(bitwise_equal(one, pr.run(config(), 3)));
  const auto r1 = [&] { pr.params.num_threads = 1; return detail::routing_routes(pr.params, config()); }();
  pr.params.num_threads = 3;
  expect_routes_equal(detail::routing_routes(pr.params, config()), r1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RoutingCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Routing, MasksRespected) {
  Problem pr(2, 2, 120, 110, 16, 12, true, 10);
  pr.random_masks(12, 0.6, 0.7);
  expect_masks_respected(pr, rcfg(5, 16, 3));
  pr.params.causal = true;
  expect_masks_respected(pr, rcfg(5, 16, 3));
  const auto c = random_centroids(2, 5, 16, 4);
  expect_masks_respected(pr, rcfg(5, 16, 3, c.data()));
}

TEST(Routing, FullyMaskedBatchElementsGetZerosAndMinusInfLse) {
  for (const bool causal : {false, true}) {
    Problem pr(3, 2, 64, 64, 8, 8, true, 3);
    pr.random_masks(1, 0.8, 0.8);
    std::fill(pr.key_mask.begin() + 64, pr.key_mask.begin() + 128, 0);     // b = 1: no key
    std::fill(pr.query_mask.begin() + 128, pr.query_mask.end(), 0);        // b = 2: no query
    pr.params.causal = causal;
    std::vector<float> lse(3 * 2 * 64, 1.0f);
    pr.params.lse = lse.data();
    pr.run(rcfg(4, 8, 2));
    for (std::int64_t b = 1; b < 3; ++b)
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t i = 0; i < 64; ++i) {
          for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(b, h, i)[c], 0.0f);
          const float l = lse[static_cast<std::size_t>((b * 2 + h) * 64 + i)];
          ASSERT_TRUE(std::isinf(l) && l < 0);
        }
    pr.params.lse = nullptr;
    expect_matches_oracle(pr, rcfg(4, 8, 2), causal ? "causal" : "plain");
  }
}

TEST(Routing, WindowCoveringEverythingIsDense) {
  // window >= Nq, Nk: one chunk, the dense kernel itself (bitwise), causal or not.
  Problem pr(2, 2, 77, 91, 24, 20, true, 5);
  pr.random_masks(2, 0.8, 0.9);
  EXPECT_TRUE(bitwise_equal(pr.run(rcfg(4, 91, 3)), pr.run(DenseConfig{})));
  EXPECT_TRUE(bitwise_equal(pr.run(rcfg(4, 1000, 0)), pr.run(DenseConfig{})));
  pr.params.causal = true;
  EXPECT_TRUE(bitwise_equal(pr.run(rcfg(4, 91, 3)), pr.run(DenseConfig{})));
  // The oracle's routing gives one chunk too: the dense key sets.
  expect_matches_oracle(pr, rcfg(4, 91, 3));
}

TEST(Routing, OneChunkThroughMasksEqualsDenseWithinRule) {
  // window < N, but the masks leave at most `window` tokens: the routed path with C = 1 must
  // give dense attention (and causal dense under params.causal).
  Problem pr(2, 2, 100, 100, 16, 16, false, 6);
  pr.random_masks(8, 0.3, 0.3);
  for (std::int64_t b = 0; b < 2; ++b) {
    std::fill(pr.key_mask.begin() + b * 100 + 40, pr.key_mask.begin() + b * 100 + 100, 0);
    std::fill(pr.query_mask.begin() + b * 100 + 60, pr.query_mask.begin() + b * 100 + 100, 0);
  }
  const auto routes = detail::routing_routes(pr.params, rcfg(3, 40, 2));
  EXPECT_EQ(routes.n_chunks, (std::vector<std::int64_t>{1, 1}));
  EXPECT_LE(max_abs_diff(pr.run(rcfg(3, 40, 2)), pr.run(DenseConfig{})), pr.tolerance());
  pr.params.causal = true;
  EXPECT_LE(max_abs_diff(pr.run(rcfg(3, 40, 2)), pr.run(DenseConfig{})), pr.tolerance());
}

TEST(Routing, CausalFallbackAttendsToOwnPosition) {
  // Small chunks: many queries come before every key of their chunk and fall back to their
  // own position's key: O = V[i] exactly as the oracle says.
  Problem pr(1, 2, 96, 96, 16, 16, false, 12);
  pr.params.causal = true;
  const RoutingConfig config = rcfg(6, 4, 2);
  const auto sets = reference::key_sets(pr.params, config);
  const auto routes = reference::routes(pr.params, config);
  std::int64_t fallbacks = 0;
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::size_t c = 0; c < static_cast<std::size_t>(routes.n_chunks[0]); ++c) {
      const auto& keys = routes.chunk_keys[static_cast<std::size_t>(h) * routes.n_chunks[0] + c];
      for (std::int32_t i : routes.chunk_queries[static_cast<std::size_t>(h) * routes.n_chunks[0] + c])
        if (*std::min_element(keys.begin(), keys.end()) > i) {
          ++fallbacks;
          EXPECT_EQ(sets[static_cast<std::size_t>(h * 96 + i)], std::vector<std::int32_t>{i});
        }
    }
  EXPECT_GT(fallbacks, 5);
  const auto out = pr.run(config);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int32_t i = 0; i < 96; ++i)
      if (sets[static_cast<std::size_t>(h * 96 + i)] == std::vector<std::int32_t>{i}) {
        for (std::int64_t c = 0; c < 16; ++c)
          ASSERT_NEAR(out[static_cast<std::size_t>((h * 96 + i) * 16 + c)], pr.v_at(0, h, i)[c], pr.tolerance(1));
      }
  expect_matches_oracle(pr, config);
  // With keys masked, some queries see no key of their chunk and their own key is masked:
  // no fallback, O = 0 and lse = -inf although visible keys before them exist.
  pr.random_masks(4, 0.5, 1.0);
  const auto masked_sets = reference::key_sets(pr.params, config);
  std::int64_t empty = 0;
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int32_t i = 1; i < 96; ++i)
      if (masked_sets[static_cast<std::size_t>(h * 96 + i)].empty() &&
          std::any_of(pr.key_mask.begin(), pr.key_mask.begin() + i, [](std::uint8_t m) { return m != 0; }))
        ++empty;
  EXPECT_GT(empty, 0);
  expect_matches_oracle(pr, config, "masked own keys");
}

TEST(Routing, CausalQueriesBeforeEveryKeyGetZeros) {
  // Nq > Nk: the first Nq - Nk queries have p < 0 and see nothing at all.
  Problem pr(1, 1, 80, 30, 8, 8);
  pr.params.causal = true;
  std::vector<float> lse(80);
  pr.params.lse = lse.data();
  pr.run(rcfg(3, 8, 2));
  for (std::int64_t i = 0; i < 50; ++i) {
    for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(0, 0, i)[c], 0.0f);
    ASSERT_TRUE(std::isinf(lse[static_cast<std::size_t>(i)]));
  }
  for (std::int64_t i = 50; i < 80; ++i) ASSERT_FALSE(std::isinf(lse[static_cast<std::size_t>(i)])) << i;
}

TEST(Routing, OneClusterIsPositionOrderChunks) {
  // n_clusters = 1: every token in centroid 0, chunks are runs of consecutive active positions.
  Problem pr(1, 1, 100, 100, 16, 16, false, 14);
  pr.random_masks(3, 0.9, 0.9);
  const auto r = detail::routing_routes(pr.params, rcfg(1, 16, 3));
  for (std::size_t i = 0; i < r.q_cluster.size(); ++i) EXPECT_EQ(r.q_cluster[i], pr.query_mask[i] ? 0 : -1);
  for (std::size_t j = 0; j < r.k_cluster.size(); ++j) EXPECT_EQ(r.k_cluster[j], pr.key_mask[j] ? 0 : -1);
  std::vector<std::int32_t> all_q, all_k;
  for (const auto& c : r.chunk_queries) all_q.insert(all_q.end(), c.begin(), c.end());
  for (const auto& c : r.chunk_keys) all_k.insert(all_k.end(), c.begin(), c.end());
  EXPECT_TRUE(std::is_sorted(all_q.begin(), all_q.end()));
  EXPECT_TRUE(std::is_sorted(all_k.begin(), all_k.end()));
  expect_matches_oracle(pr, rcfg(1, 16, 3));
}

TEST(Routing, GivenCentroidsAreNormalisedAndIgnoreIterations) {
  Problem pr(2, 2, 100, 100, 16, 16, true, 15);
  const auto c = random_centroids(2, 5, 16, 9);
  auto scaled = c;
  for (float& x : scaled) x *= 4.0f;  // a power of two: exactly the same unit centroids
  const auto base = pr.run(rcfg(5, 16, 0, c.data()));
  EXPECT_TRUE(bitwise_equal(base, pr.run(rcfg(5, 16, 7, c.data()))));
  EXPECT_TRUE(bitwise_equal(base, pr.run(rcfg(5, 16, 0, scaled.data()))));
  // Shared by the batch: the same sequence in two batch slots routes the same way.
  const auto r = detail::routing_routes(pr.params, rcfg(5, 16, 0, c.data()));
  for (std::size_t i = 0; i < 2 * 5 * 16; ++i) EXPECT_EQ(r.centroids[i], r.centroids[2 * 5 * 16 + i]);
  // Each reported centroid is the given row's unit vector.
  for (std::size_t row = 0; row < 10; ++row) {
    double n2 = 0;
    for (std::size_t j = 0; j < 16; ++j) n2 = std::fma(double(c[row * 16 + j]), double(c[row * 16 + j]), n2);
    for (std::size_t j = 0; j < 16; ++j)
      EXPECT_EQ(r.centroids[row * 16 + j], double(c[row * 16 + j]) * (1.0 / std::sqrt(n2)));
  }
  // Given and fitted centroids route differently (and both as the oracle says).
  const auto fitted = detail::routing_routes(pr.params, rcfg(5, 16, 3));
  EXPECT_NE(fitted.q_cluster, r.q_cluster);
  expect_routes_equal(fitted, reference::routes(pr.params, rcfg(5, 16, 3)));
}

TEST(Routing, TiesGoToTheLowestCentroid) {
  // Centroids 1 and 3 repeat centroids 0 and 2 (times a power of two): never chosen. Zero
  // query rows have similarity 0 to everything: centroid 0.
  Problem pr(1, 1, 64, 64, 8, 8, false, 16);
  auto c = random_centroids(1, 4, 8, 3);
  for (int j = 0; j < 8; ++j) {
    c[static_cast<std::size_t>(8 + j)] = 2.0f * c[static_cast<std::size_t>(j)];
    c[static_cast<std::size_t>(24 + j)] = c[static_cast<std::size_t>(16 + j)];
  }
  for (std::int64_t i = 0; i < 64; i += 5) std::fill_n(pr.q_at(0, 0, i), 8, 0.0f);
  const auto r = detail::routing_routes(pr.params, rcfg(4, 8, 0, c.data()));
  for (std::int32_t id : r.q_cluster) EXPECT_TRUE(id == 0 || id == 2);
  for (std::int32_t id : r.k_cluster) EXPECT_TRUE(id == 0 || id == 2);
  for (std::int64_t i = 0; i < 64; i += 5) EXPECT_EQ(r.q_cluster[static_cast<std::size_t>(i)], 0);
  expect_routes_equal(r, reference::routes(pr.params, rcfg(4, 8, 0, c.data())));
  expect_matches_oracle(pr, rcfg(4, 8, 0, c.data()));
}

TEST(Routing, IterationsZeroStartsFromEvenlySpacedTokensAndMoreIterationsMove) {
  Problem pr(1, 1, 90, 70, 8, 8, false, 17);
  pr.fill_clustered(5, 6, 6.0f, 0.5f);
  const auto r0 = detail::routing_routes(pr.params, rcfg(5, 16, 0));
  // n = 160 tokens (90 queries, then 70 keys): initial centroid c is token floor(c * 160 / 5).
  for (std::int64_t c = 0; c < 5; ++c) {
    const std::int64_t t = c * 160 / 5;
    const float* x = t < 90 ? pr.q_at(0, 0, t) : pr.k_at(0, 0, t - 90);
    double n2 = 0;
    for (int j = 0; j < 8; ++j) n2 = std::fma(double(x[j]), double(x[j]), n2);
    for (int j = 0; j < 8; ++j)
      EXPECT_EQ(r0.centroids[static_cast<std::size_t>(c * 8 + j)], double(x[j]) * (1.0 / std::sqrt(n2)));
  }
  const auto r4 = detail::routing_routes(pr.params, rcfg(5, 16, 4));
  EXPECT_NE(r0.centroids, r4.centroids);
  expect_routes_equal(r4, reference::routes(pr.params, rcfg(5, 16, 4)));
  // Fitted centroids are unit vectors.
  for (int c = 0; c < 5; ++c) {
    double n2 = 0;
    for (int j = 0; j < 8; ++j) n2 += r4.centroids[static_cast<std::size_t>(c * 8 + j)] * r4.centroids[static_cast<std::size_t>(c * 8 + j)];
    EXPECT_NEAR(n2, 1.0, 1e-12);
  }
}

TEST(Routing, RoutingGathersSimilarTokens) {
  // Clustered inputs (peaked attention): content-based chunks must beat chunks of consecutive
  // positions (n_clusters = 1) at approximating dense attention.
  Problem pr(1, 1, 512, 512, 32, 32, false, 21);
  pr.fill_clustered(22, 8, 12.0f, 0.3f);
  const auto exact = pr.run(DenseConfig{});
  auto rel = [&](const std::vector<float>& a) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      num += (double(a[i]) - exact[i]) * (double(a[i]) - exact[i]);
      den += double(exact[i]) * exact[i];
    }
    return std::sqrt(num / den);
  };
  const double routed = rel(pr.run(rcfg(8, 64, 6)));
  const double blind = rel(pr.run(rcfg(1, 64, 6)));
  RecordProperty("rel_err_routed", std::to_string(routed));
  RecordProperty("rel_err_position_chunks", std::to_string(blind));
  EXPECT_LT(routed, 0.5 * blind);
}

TEST(Routing, SeedPlaysNoPartAndWorkspaceReuseGivesSameBits) {
  Problem pr(1, 2, 150, 150, 16, 16, false, 23);
  pr.params.seed = 1;
  const auto a = pr.run(rcfg(6, 16, 3));
  pr.params.seed = 12345;
  EXPECT_TRUE(bitwise_equal(a, pr.run(rcfg(6, 16, 3))));  // no random choice in routing
  Workspace ws;
  attention(pr.params, rcfg(6, 16, 3), &ws);
  const auto first = pr.output();
  attention(pr.params, rcfg(6, 16, 3), &ws);
  EXPECT_TRUE(bitwise_equal(first, pr.output()));
  EXPECT_TRUE(bitwise_equal(first, a));
}

TEST(Routing, EverySimdTargetRoutesExactlyAsTheOracle) {
  // Forced in turn: every target this CPU supports (targets without a vector fma take the
  // scalar std::fma chains, so the ids are exact there too).
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().DeInit();
    Problem pr(2, 1, 90, 80, 20, 12, true, 31);
    pr.random_masks(2, 0.8, 0.9);
    const RoutingConfig config = rcfg(11, 16, 3);
    expect_routes_equal(detail::routing_routes(pr.params, config),
                        reference::routes(pr.params, config));
    pr.params.causal = true;
    expect_matches_oracle(pr, config, hwy::TargetName(target));
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().DeInit();
}

TEST(Routing, BadConfigsThrowNamingTheParameter) {
  Problem pr(1, 2, 40, 40, 8, 8);
  auto expect_error = [&](const RoutingConfig& c, const std::string& name) {
    expect_config_error(pr, c, name);
  };
  expect_error(rcfg(0, 16, 3), "RoutingConfig.n_clusters");
  expect_error(rcfg(4, 0, 3), "RoutingConfig.window");
  expect_error(rcfg(4, 16, -1), "RoutingConfig.iterations");
  auto c = random_centroids(2, 4, 8, 1);
  c[37] = std::numeric_limits<float>::quiet_NaN();
  expect_error(rcfg(4, 16, 3, c.data()), "RoutingConfig.centroids");
  c[37] = std::numeric_limits<float>::infinity();
  expect_error(rcfg(4, 100, 3, c.data()), "RoutingConfig.centroids");  // checked on the dense path too
  EXPECT_THROW(detail::routing_routes(pr.params, rcfg(4, 16, 3, c.data())), Error);
  pr.params.dropout = -0.1f;  // dropout is supported; it must be in [0, 1)
  expect_error(rcfg(4, 16, 3), "params.dropout");
}

// ---- The online k-means step (routing_update_centroids) ----

// The expected step, computed here from the routes in plain double: per head and centroid the
// members' unit vectors summed, their mean, the moving average with the unit centroid, its
// unit vector; an empty centroid keeps its row.
std::vector<float> expected_update(Problem& pr, const RoutingConfig& config, double decay) {
  const auto routes = detail::routing_routes(pr.params, config);
  const std::int64_t K = config.n_clusters, d = pr.d;
  std::vector<float> out(config.centroids, config.centroids + pr.H * K * d);
  auto unit = [&](const float* x, double* u) {
    double n2 = 0;
    for (std::int64_t j = 0; j < d; ++j) n2 += double(x[j]) * double(x[j]);
    for (std::int64_t j = 0; j < d; ++j) u[j] = n2 > 0 ? double(x[j]) / std::sqrt(n2) : 0.0;
  };
  for (std::int64_t h = 0; h < pr.H; ++h)
    for (std::int64_t c = 0; c < K; ++c) {
      std::vector<double> sum(static_cast<std::size_t>(d), 0.0), u(static_cast<std::size_t>(d));
      double n = 0;
      for (std::int64_t b = 0; b < pr.B; ++b) {
        for (std::int64_t i = 0; i < pr.Nq; ++i)
          if (routes.q_cluster[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)] == c) {
            unit(pr.q_at(b, h, i), u.data());
            for (std::int64_t j = 0; j < d; ++j) sum[j] += u[j];
            ++n;
          }
        for (std::int64_t i = 0; i < pr.Nk; ++i)
          if (routes.k_cluster[static_cast<std::size_t>((b * pr.H + h) * pr.Nk + i)] == c) {
            unit(pr.k_at(b, h, i), u.data());
            for (std::int64_t j = 0; j < d; ++j) sum[j] += u[j];
            ++n;
          }
      }
      if (n == 0) continue;
      std::vector<double> mu(static_cast<std::size_t>(d)), x(static_cast<std::size_t>(d));
      unit(config.centroids + (h * K + c) * d, mu.data());
      for (std::int64_t j = 0; j < d; ++j) x[j] = decay * mu[j] + (1 - decay) * sum[j] / n;
      double n2 = 0;
      for (double e : x) n2 += e * e;
      for (std::int64_t j = 0; j < d; ++j) out[static_cast<std::size_t>((h * K + c) * d + j)] = float(x[j] / std::sqrt(n2));
    }
  return out;
}

TEST(RoutingCentroidUpdate, IsTheMovingAverageOfTheMembersMean) {
  for (const bool causal : {false, true}) {
    Problem pr(2, 2, 60, 70, 8, 4, true, 31);
    pr.random_masks(32, 0.8, 0.9);
    pr.params.causal = causal;
    const auto cent = random_centroids(2, 5, 8, 33);
    const RoutingConfig config = rcfg(5, 8, 0, cent.data());
    for (const double decay : {0.0, 0.9, 0.999, 1.0}) {
      const std::vector<float> want = expected_update(pr, config, decay);
      std::vector<float> got(want.size(), std::nanf(""));
      routing_update_centroids(pr.params, config, static_cast<float>(decay), got.data());
      for (std::size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 4e-7 * (1 + std::abs(want[i]))) << "decay " << decay << " at " << i;
    }
    // In place: the same result.
    std::vector<float> in_place = cent, copy(cent.size());
    routing_update_centroids(pr.params, config, 0.9f, copy.data());
    routing_update_centroids(pr.params, rcfg(5, 8, 0, in_place.data()), 0.9f, in_place.data());
    EXPECT_TRUE(bitwise_equal(copy, in_place));
  }
}

TEST(RoutingCentroidUpdate, EmptyCentroidsKeepTheirRows) {
  // Every token has a positive first coordinate: centroid 1 (-e0, scaled) has none.
  Problem pr(1, 1, 30, 30, 4, 4, false, 41);
  for (std::int64_t i = 0; i < 30; ++i) {
    pr.q_at(0, 0, i)[0] = 5.0f + std::abs(pr.q_at(0, 0, i)[0]);
    pr.k_at(0, 0, i)[0] = 5.0f + std::abs(pr.k_at(0, 0, i)[0]);
  }
  const std::vector<float> cent = {1, 0, 0, 0, -3, 0, 0, 0};
  std::vector<float> out(8);
  routing_update_centroids(pr.params, rcfg(2, 8, 0, cent.data()), 0.5f, out.data());
  for (std::size_t j = 4; j < 8; ++j) EXPECT_EQ(out[j], cent[j]);
  EXPECT_NE(out[1], 0.0f);  // centroid 0 moved towards its members
}

TEST(RoutingCentroidUpdate, SameBitsForEveryThreadCount) {
  Problem pr(3, 2, 200, 180, 16, 8, false, 51);
  const auto cent = random_centroids(2, 7, 16, 52);
  std::vector<float> first;
  for (int threads : {1, 2, 7}) {
    pr.params.num_threads = threads;
    std::vector<float> out(cent.size());
    routing_update_centroids(pr.params, rcfg(7, 16, 0, cent.data()), 0.99f, out.data());
    if (threads == 1) first = out;
    EXPECT_TRUE(bitwise_equal(first, out)) << threads;
  }
}

TEST(RoutingCentroidUpdate, ErrorsNameTheParameter) {
  Problem pr(1, 1, 8, 8, 4, 4, false, 61);
  const auto cent = random_centroids(1, 2, 4, 62);
  std::vector<float> out(8);
  auto expect_error = [&](const RoutingConfig& c, float decay, float* o, const std::string& name) {
    try {
      routing_update_centroids(pr.params, c, decay, o);
      ADD_FAILURE() << "no error for " << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  expect_error(rcfg(2, 4, 0), 0.9f, out.data(), "RoutingConfig.centroids");
  expect_error(rcfg(2, 4, 0, cent.data()), 1.5f, out.data(), "decay");
  expect_error(rcfg(2, 4, 0, cent.data()), std::nanf(""), out.data(), "decay");
  expect_error(rcfg(2, 4, 0, cent.data()), 0.9f, nullptr, "out");
  expect_error(rcfg(0, 4, 0, cent.data()), 0.9f, out.data(), "n_clusters");
}

}  // namespace
}  // namespace smyrf::test
