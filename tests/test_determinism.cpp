// Determinism of every method, in one place: the same inputs and seed give the same bits at 1,
// 2 and 7 threads and on repeated calls (with and without a reused Workspace), for every method
// config of the API, with masks and padded strides, causal where the method has a causal form.
// Seeded methods also get a second seed, which must change their output (a method that ignored
// the seed would pass the bit checks vacuously).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "method_cases.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

class Determinism : public ::testing::TestWithParam<Case> {};

TEST_P(Determinism, SameBitsAtOneTwoAndSevenThreadsAndOnRepeatedCalls) {
  const Case& c = GetParam();
  Problem pr(2, 3, 45, 53, 12, 10, /*padded=*/true, 7);
  pr.random_masks(3, 0.85, 0.9);
  pr.params.causal = c.causal;
  pr.params.seed = 11;
  const std::vector<float> one = pr.run(c.config, 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(c.config, 2))) << c.name << ": 1 vs 2 threads";
  EXPECT_TRUE(bitwise_equal(one, pr.run(c.config, 7))) << c.name << ": 1 vs 7 threads";
  EXPECT_TRUE(bitwise_equal(one, pr.run(c.config, 2))) << c.name << ": repeated call";
  Problem big(1, 2, 90, 70, 16, 16, false, 8);
  big.params.causal = c.causal;
  expect_workspace_reuse_same_bits(pr, big, c.config);
  if (c.seeded) {
    pr.params.seed = 12;
    EXPECT_FALSE(bitwise_equal(one, pr.run(c.config, 2))) << c.name << ": the seed plays no part";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryMethod, Determinism, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace smyrf::test
