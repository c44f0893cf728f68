// Every SIMD target this CPU supports, forced in turn, against the oracles: the runtime
// dispatch must not hide a broken kernel on a target the test machine would not pick.
#include <gtest/gtest.h>

#include "api/inspect.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "methods/smyrf/clustering.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

class Targets : public ::testing::TestWithParam<std::int64_t> {
 protected:
  void SetUp() override {
    hwy::SetSupportedTargetsForTest(GetParam());
    hwy::GetChosenTarget().DeInit();  // next dispatch picks among the mocked targets
  }
  void TearDown() override {
    hwy::SetSupportedTargetsForTest(0);
    hwy::GetChosenTarget().DeInit();
  }
};

TEST_P(Targets, DenseMatchesReference) {
  Problem pr(2, 2, 67, 131, 40, 24, true, 5);
  pr.random_masks(6, 0.8, 0.9);
  const auto ref = pr.run(ReferenceConfig{});
  EXPECT_LE(max_abs_diff(pr.run(DenseConfig{}), ref), pr.tolerance()) << hwy::TargetName(GetParam());
}

TEST_P(Targets, SmyrfMatchesScalarOracle) {
  Problem pr(1, 2, 150, 150, 48, 48, false, 8);
  SmyrfConfig c;
  c.n_hashes = 3;
  c.q_cluster_size = c.k_cluster_size = 32;
  const auto fast_clusters = detail::compute_clusters(pr.params, c);
  const auto ref_clusters = reference::clusters(pr.params, c);
  // Bit-identical hashes need a fused multiply-add, which every AVX2/AVX-512 target has; the
  // emulated and SSE targets may round the projection differently.
  const bool has_fma = GetParam() == HWY_AVX2 || GetParam() == HWY_AVX3 || GetParam() == HWY_AVX3_DL;
  if (has_fma) {
    EXPECT_EQ(fast_clusters.q_sorted, ref_clusters.q_sorted);
    EXPECT_EQ(fast_clusters.k_sorted, ref_clusters.k_sorted);
    const auto ref = reference::attention(pr.params, c).o_f32();
    EXPECT_LE(max_abs_diff(pr.run(c), ref), pr.tolerance(c.k_cluster_size));
  } else {
    // Without identical clusters, compare the clustered path with the dense one in its
    // one-cluster limit.
    Problem small(1, 1, 40, 40, 16, 16, false, 9);
    small.random_masks(1, 0.5, 0.5);
    SmyrfConfig one = c;
    one.q_cluster_size = one.k_cluster_size = 32;
    const auto dense = small.run(DenseConfig{});
    EXPECT_LE(max_abs_diff(small.run(one), dense), small.tolerance());
  }
}

std::vector<std::int64_t> targets() { return hwy::SupportedAndGeneratedTargets(); }

INSTANTIATE_TEST_SUITE_P(Simd, Targets, ::testing::ValuesIn(targets()),
                         [](const auto& info) { return std::string(hwy::TargetName(info.param)); });

}  // namespace
}  // namespace smyrf::test
