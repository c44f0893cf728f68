// Sinkhorn sorting attention against its double-precision oracle
// (reference/reference.h), dense attention in its one-block limit, and its own
// invariants.
//
// TOLERANCE RULE. O: the suite's rule (test_util.h) with n_keys = 2 block_size (the longest
// softmax). The rule's L (max over query/key pairs of |scale| sum_t |q_t k_t|) also bounds the
// logits against sorted rows: a sorted row is a convex combination of key rows, so
// sum_t |q_t k~_t| <= max_j sum_t |q_t k_jt|; sorted V rows are convex combinations too, so
// max|V| still bounds them. The block logits, Sinkhorn iterations and sorted rows are computed
// in double (as in the oracle) and the sorted rows rounded once to float, an error of one ulp
// per element, inside the rule's eps * L term. lse: the rule's logit part without max|V|,
// |lse - lse_ref| <= tolerance / max|V| + 4 eps |lse_ref|.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "methods/sinkhorn/sinkhorn.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {


void expect_matches_oracle(Problem& pr, const SinkhornConfig& c, const std::string& what) {
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<float> lse_fast(BHN, 7.0f);
  const bool bf16 = pr.params.dtype == DType::bf16;
  pr.params.lse = lse_fast.data();
  const auto fast = pr.run(c);
  if (bf16) pr.use_f32();  // the float buffers hold the same, bf16-rounded values
  pr.params.lse = nullptr;
  const reference::Output oracle = reference::attention(pr.params, c);
  const auto ref = oracle.o_f32();
  const auto lse_ref = oracle.lse_f32();
  if (bf16) pr.use_bf16();
  pr.params.lse = nullptr;
  const double tol = pr.tolerance(2 * std::min<std::int64_t>(c.block_size, pr.Nk));
  EXPECT_LE(max_abs_diff(fast, ref), tol) << what;
  expect_lse_close(lse_fast, lse_ref, tol / std::max(max_abs_v(pr), 1e-30), what);
}

std::vector<float> sort_net(std::int64_t H, std::int64_t d, std::int64_t NB, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.3f);
  std::vector<float> w(static_cast<std::size_t>(H * d * NB));
  for (float& x : w) x = g(rng);
  return w;
}

struct Case {
  std::string name;
  int B, H, Nq, Nk, d, dv;
  bool padded, masks;
  int block, iterations;
  float temperature;
};

std::vector<Case> cases() {
  return {
      {"basic", 1, 2, 128, 128, 16, 16, false, false, 16, 8, 0.75f},
      {"n1", 1, 1, 1, 1, 4, 3, false, false, 1, 8, 0.75f},
      {"n7_padded", 2, 2, 7, 7, 5, 3, true, false, 2, 3, 1.0f},
      {"ragged_last_block", 1, 2, 100, 100, 8, 8, false, false, 16, 5, 0.5f},
      {"block1", 1, 1, 20, 20, 8, 8, false, false, 1, 4, 0.75f},
      {"iterations0", 1, 2, 64, 64, 16, 16, false, true, 8, 0, 0.75f},
      {"iterations100", 1, 2, 64, 64, 16, 16, false, true, 8, 100, 0.1f},
      {"cross_fewer_keys", 2, 2, 120, 41, 16, 12, true, true, 8, 8, 0.75f},
      {"cross_more_keys_empty_query_blocks", 1, 3, 5, 150, 8, 20, false, true, 8, 8, 0.75f},
      {"masks", 3, 2, 150, 140, 16, 16, true, true, 16, 8, 0.75f},
      {"parallel", 2, 2, 600, 550, 32, 32, true, true, 32, 8, 0.75f},
  };
}

class SinkhornCases : public ::testing::TestWithParam<Case> {};

Problem make_problem(const Case& k) {
  Problem pr(k.B, k.H, k.Nq, k.Nk, k.d, k.dv, k.padded, 23);
  if (k.masks) pr.random_masks(5, 0.8, 0.85);
  return pr;
}

SinkhornConfig cfg(const Case& k, const float* net = nullptr) {
  return SinkhornConfig{.block_size = k.block,
                        .iterations = k.iterations,
                        .temperature = k.temperature,
                        .sort_net = net};
}

TEST_P(SinkhornCases, ContentSortAndSortNetMatchOracleWithinRule) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  expect_matches_oracle(pr, cfg(k), k.name + " content sort");
  const auto net = sort_net(k.H, k.d, detail::sinkhorn_blocks(k.Nk, k.block), 3);
  expect_matches_oracle(pr, cfg(k, net.data()), k.name + " sort net");
}

TEST_P(SinkhornCases, Bf16MatchesOracleOnTheRoundedValues) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  pr.use_bf16();
  expect_matches_oracle(pr, cfg(k), k.name + " bf16");
}

TEST_P(SinkhornCases, SameBitsAtOneTwoAndSevenThreads) {
  const Case& k = GetParam();
  Problem pr = make_problem(k);
  const auto net = sort_net(k.H, k.d, detail::sinkhorn_blocks(k.Nk, k.block), 4);
  for (const float* w : {static_cast<const float*>(nullptr), net.data()}) {
    const auto one = pr.run(cfg(k, w), 1);
    EXPECT_TRUE(bitwise_equal(one, pr.run(cfg(k, w), 2))) << k.name;
    EXPECT_TRUE(bitwise_equal(one, pr.run(cfg(k, w), 7))) << k.name;
  }
}

INSTANTIATE_TEST_SUITE_P(All, SinkhornCases, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// One block (block_size >= n_k): the sorted block is the block itself, so every key appears
// twice: dense attention's output, lse = dense lse + log 2.
// Both sides are float computations, each within the rule of the exact result: 2 * rule.
TEST(Sinkhorn, OneBlockIsDenseWithEveryKeyTwice) {
  for (int iterations : {0, 1, 8}) {
    Problem pr(2, 2, 90, 70, 16, 16, true, 4);
    pr.random_masks(9, 0.8, 0.9);
    std::vector<float> lse_d(2 * 2 * 90), lse_s(lse_d.size());
    pr.params.lse = lse_d.data();
    const auto dense = pr.run(DenseConfig{});
    pr.params.lse = lse_s.data();
    const auto sink = pr.run(SinkhornConfig{.block_size = 1000, .iterations = iterations});
    const double tol = pr.tolerance(140);
    EXPECT_LE(max_abs_diff(sink, dense), 2 * tol);
    for (float& l : lse_d)
      if (!std::isinf(l)) l += static_cast<float>(std::log(2.0));
    expect_lse_close(lse_s, lse_d, 2 * tol / max_abs_v(pr), "one block");
  }
}

TEST(Sinkhorn, SortNetChangesTheResultAndSeedPlaysNoPart) {
  Problem pr(1, 2, 64, 64, 8, 8, false, 5);
  const SinkhornConfig content{.block_size = 8};
  const auto net = sort_net(2, 8, 8, 1);
  const SinkhornConfig learned{.block_size = 8, .sort_net = net.data()};
  const auto a = pr.run(content);
  EXPECT_GT(max_abs_diff(a, pr.run(learned)), 1e-3);
  pr.params.seed = 99;
  EXPECT_TRUE(bitwise_equal(a, pr.run(content)));
}

// attention_scores: per (b, h) nb^2 block logits plus, per active query, its block's length
// plus the sorted rows (min(block_size, n_k) when no weight underflows).
TEST(Sinkhorn, AttentionScoresCountBlockLogitsAndKeys) {
  Problem pr(2, 2, 50, 45, 8, 8, false, 6);
  pr.random_masks(2, 0.8, 0.9);
  const std::int64_t bs = 8;
  std::size_t expected = 0;
  for (std::int64_t b = 0; b < 2; ++b) {
    std::int64_t nq = 0, nk = 0;
    for (std::int64_t i = 0; i < 50; ++i) nq += pr.query_mask[b * 50 + i];
    for (std::int64_t j = 0; j < 45; ++j) nk += pr.key_mask[b * 45 + j];
    const std::int64_t nb = (nk + bs - 1) / bs;
    std::size_t per_head = static_cast<std::size_t>(nb * nb);
    for (std::int64_t a = 0; a < nb; ++a) {
      const std::int64_t len = std::min(nk, (a + 1) * bs) - a * bs;
      per_head +=
          static_cast<std::size_t>(((a + 1) * nq / nb - a * nq / nb) * (len + std::min(bs, nk)));
    }
    expected += 2 * per_head;
  }
  EXPECT_EQ(attention(pr.params, SinkhornConfig{.block_size = 8}).attention_scores, expected);
}

TEST(Sinkhorn, MasksRespectedAndFullyMaskedBatchElement) {
  Problem pr(3, 2, 90, 80, 8, 8, true, 8);
  pr.random_masks(3, 0.7, 0.8);
  const SinkhornConfig c{.block_size = 8};
  expect_masks_respected(pr, c);
  for (std::int64_t j = 0; j < 80; ++j) pr.key_mask[static_cast<std::size_t>(80 + j)] = 0;
  std::vector<float> lse(3 * 2 * 90, 1.0f);
  pr.params.lse = lse.data();
  pr.run(c);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 90; ++i) {
      for (std::int64_t x = 0; x < 8; ++x) ASSERT_EQ(pr.o_at(1, h, i)[x], 0.0f);
      const float l = lse[static_cast<std::size_t>((1 * 2 + h) * 90 + i)];
      ASSERT_TRUE(std::isinf(l) && l < 0);
    }
}

// A reused Workspace (grown by a larger call in between) gives the same bits.
TEST(Sinkhorn, WorkspaceReuseGivesSameBits) {
  Problem small(2, 2, 60, 50, 8, 8, true, 12), big(1, 3, 200, 210, 16, 16, false, 13);
  small.random_masks(1, 0.8, 0.9);
  SinkhornConfig c{.block_size = 8};
  expect_workspace_reuse_same_bits(small, big, c);
}

TEST(Sinkhorn, BadConfigsThrowNamingTheField) {
  Problem pr(1, 2, 10, 10, 4, 4);
  expect_config_error(pr, SinkhornConfig{.block_size = 0}, "SinkhornConfig.block_size = 0");
  expect_config_error(pr, SinkhornConfig{.iterations = -1}, "SinkhornConfig.iterations = -1");
  expect_config_error(pr, SinkhornConfig{.iterations = 1001}, "SinkhornConfig.iterations = 1001");
  expect_config_error(pr, SinkhornConfig{.temperature = 0.0f}, "SinkhornConfig.temperature = 0");
  expect_config_error(pr, SinkhornConfig{.temperature = -1.0f}, "SinkhornConfig.temperature = -1");
  expect_config_error(pr, SinkhornConfig{.temperature = std::numeric_limits<float>::infinity()},
               "SinkhornConfig.temperature = inf");
  std::vector<float> net(2 * 4 * 3, 0.1f);  // [H, d, ceil(10 / 4)]
  net[23] = std::numeric_limits<float>::quiet_NaN();
  expect_config_error(pr, SinkhornConfig{.block_size = 4, .sort_net = net.data()},
               "SinkhornConfig.sort_net[23] = nan");
  pr.params.causal = true;
  expect_config_error(pr, SinkhornConfig{}, "params.causal = true");
}

// Memory the call cannot have is an error, not a crash: the nb x nb sort matrices with
// block_size 1 on long key sequences. 2^24 keys: 2^51 bytes, refused by the config check;
// 2^21 keys: 32 TiB, refused when the workspace is reserved (more than any machine here has).
TEST(Sinkhorn, SortMatricesTooLargeForMemoryAreAnError) {
  for (const std::int64_t nk : {std::int64_t{1} << 24, std::int64_t{1} << 21}) {
    std::vector<float> q(1, 0.5f), k(static_cast<std::size_t>(nk), 0.25f), v(static_cast<std::size_t>(nk), 1.0f);
    std::vector<float> o(1, 7.0f);
    const AttentionParams p = AttentionParams::contiguous(1, 1, 1, nk, 1, 1, q.data(), k.data(), v.data(), o.data());
    try {
      attention(p, SinkhornConfig{.block_size = 1});
      ADD_FAILURE() << "no error for nk = " << nk;
    } catch (const Error& e) {
      const std::string what = e.what();
      if (nk == (std::int64_t{1} << 24)) {
        EXPECT_NE(what.find("SinkhornConfig.block_size = 1: too small for nk = 16777216"), std::string::npos) << what;
      } else {
        EXPECT_NE(what.find("out of memory"), std::string::npos) << what;
        EXPECT_NE(what.find("GiB"), std::string::npos) << what;
      }
    }
    EXPECT_EQ(o[0], 7.0f);
  }
}

}  // namespace
}  // namespace smyrf::test
