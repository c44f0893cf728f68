// Dense attention and the reference oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "test_util.h"

namespace smyrf::test {
namespace {

TEST(Reference, MatchesHandComputedSoftmax) {
  // One query, two keys with logits 0 and ln 3: weights 1/4 and 3/4, so O = 3/4 * 4 = 3.
  const float q[] = {1.0f}, k[] = {0.0f, std::log(3.0f)}, v[] = {0.0f, 4.0f};
  float o[1] = {-1.0f};
  AttentionParams p = AttentionParams::contiguous(1, 1, 1, 2, 1, 1, q, k, v, o);
  p.scale = 1.0f;
  attention(p, ReferenceConfig{});
  EXPECT_NEAR(o[0], 3.0f, 1e-6f);
  attention(p, DenseConfig{});
  EXPECT_NEAR(o[0], 3.0f, 1e-6f);
}

// B, H, Nq, Nk, d, dv, padded strides.
using Shape = std::tuple<int, int, int, int, int, int, bool>;
class DenseShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(DenseShapes, MatchesReferenceWithinRule) {
  const auto [B, H, Nq, Nk, d, dv, padded] = GetParam();
  Problem pr(B, H, Nq, Nk, d, dv, padded, 1000 + Nq + Nk);
  const auto ref = pr.run(ReferenceConfig{});
  const auto fast = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(fast, ref), pr.tolerance()) << "tolerance " << pr.tolerance();
}

TEST_P(DenseShapes, MasksMatchReference) {
  const auto [B, H, Nq, Nk, d, dv, padded] = GetParam();
  Problem pr(B, H, Nq, Nk, d, dv, padded, 7 + Nq);
  pr.random_masks(99 + Nk, 0.7, 0.8);
  const auto ref = pr.run(ReferenceConfig{});
  const auto fast = pr.run(DenseConfig{});
  EXPECT_LE(max_abs_diff(fast, ref), pr.tolerance());
}

TEST_P(DenseShapes, SameBitsAtOneAndTwoThreads) {
  const auto [B, H, Nq, Nk, d, dv, padded] = GetParam();
  Problem pr(B, H, Nq, Nk, d, dv, padded, 3);
  EXPECT_TRUE(bitwise_equal(pr.run(DenseConfig{}, 1), pr.run(DenseConfig{}, 2)));
}

INSTANTIATE_TEST_SUITE_P(
    AwkwardShapes, DenseShapes,
    ::testing::Values(Shape{1, 1, 1, 1, 1, 1, false}, Shape{1, 1, 1, 7, 3, 5, false},
                      Shape{2, 3, 17, 13, 16, 16, false}, Shape{1, 2, 113, 203, 64, 64, true},
                      Shape{2, 1, 239, 1, 33, 17, true}, Shape{1, 1, 97, 97, 1, 1, false},
                      Shape{1, 1, 300, 257, 127, 65, true}, Shape{3, 2, 64, 128, 64, 32, false},
                      Shape{1, 1, 521, 1031, 64, 64, false}, Shape{1, 1, 49, 300, 8, 200, true}));

TEST(Dense, FullyMaskedBatchElementGivesZeros) {
  Problem pr(2, 2, 31, 17, 16, 8);
  pr.random_masks(5, 1.0, 1.0);
  std::fill(pr.key_mask.begin(), pr.key_mask.begin() + 17, 0);  // batch 0 sees no key
  for (const MethodConfig& m : {MethodConfig{ReferenceConfig{}}, MethodConfig{DenseConfig{}}}) {
    pr.run(m);
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < 31; ++i)
        for (std::int64_t c = 0; c < 8; ++c) ASSERT_EQ(pr.o_at(0, h, i)[c], 0.0f) << method_name(m);
    EXPECT_NE(pr.o_at(1, 0, 0)[0], 0.0f);
  }
}

TEST(Dense, MaskedQueriesGetZeroAndMaskedKeysAreIgnored) {
  Problem pr(2, 3, 70, 90, 24, 24, true);
  pr.random_masks(11, 0.5, 0.5);
  expect_masks_respected(pr, DenseConfig{});
}

TEST(Dense, BroadcastKeyValueHeadsEqualReplicatedOnes) {
  // One K/V head shared by 4 query heads (head stride 0) == the same head written 4 times.
  Problem shared(2, 4, 40, 50, 32, 16);
  shared.params.k_head_stride = 0;
  shared.params.v_head_stride = 0;
  Problem copied(2, 4, 40, 50, 32, 16);
  copied.q = shared.q;
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t j = 0; j < 50; ++j) {
        std::copy_n(shared.k_at(b, 0, j), 32, copied.k_at(b, h, j));
        std::copy_n(shared.v_at(b, 0, j), 16, copied.v_at(b, h, j));
      }
  EXPECT_TRUE(bitwise_equal(shared.run(DenseConfig{}), copied.run(DenseConfig{})));
}

TEST(Dense, ScaleZeroAveragesValues) {
  Problem pr(1, 1, 5, 9, 4, 3);
  pr.params.scale = 0.0f;
  const auto out = pr.run(DenseConfig{});
  for (std::int64_t c = 0; c < 3; ++c) {
    double mean = 0;
    for (std::int64_t j = 0; j < 9; ++j) mean += pr.v_at(0, 0, j)[c] / 9.0;
    EXPECT_NEAR(out[static_cast<std::size_t>(c)], mean, 1e-6);
  }
}

TEST(Dense, CustomAndNegativeScalesMatchReference) {
  for (float scale : {0.7f, -0.3f, 3.0f}) {
    Problem pr(1, 2, 60, 70, 20, 20);
    pr.params.scale = scale;
    const auto ref = pr.run(ReferenceConfig{});
    EXPECT_LE(max_abs_diff(pr.run(DenseConfig{}), ref), pr.tolerance()) << scale;
  }
}

TEST(Dense, WorkspaceReuseGivesSameBits) {
  Workspace ws;
  Problem big(1, 2, 300, 300, 64, 64), small(2, 1, 20, 30, 8, 8);
  attention(big.params, DenseConfig{}, &ws);
  const auto big1 = big.output();
  attention(small.params, DenseConfig{}, &ws);
  const auto small1 = small.output();
  attention(big.params, DenseConfig{}, &ws);
  EXPECT_TRUE(bitwise_equal(big1, big.output()));
  EXPECT_TRUE(bitwise_equal(small1, small.run(DenseConfig{})));
  EXPECT_GT(ws.capacity_bytes(), 0u);
}

TEST(Dense, ReportsScoresAndWorkspace) {
  Problem pr(2, 3, 10, 20, 8, 8);
  const RunInfo info = attention(pr.params, DenseConfig{});
  EXPECT_EQ(info.attention_scores, 2u * 3u * 10u * 20u);
  EXPECT_GT(info.workspace_bytes, 0u);
  EXPECT_GE(info.seconds_total, 0.0);
}

}  // namespace
}  // namespace smyrf::test
