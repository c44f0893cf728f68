// bf16 inputs. bf16 -> f32 is exact and the kernels accumulate in f32, so on the same
// (bf16-representable) values the bf16 path gives exactly the f32 path's bits — except dense on
// CPUs with AVX512_BF16, whose scores come from bf16 pair dot products (other rounding order):
// there the tolerance rule against the reference applies.
#include <gtest/gtest.h>

#include <tuple>

#include "api/inspect.h"
#include "methods/smyrf/clustering.h"
#include "reference/reference.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

// B, H, Nq, Nk, d, dv, padded, masks.
using Shape = std::tuple<int, int, int, int, int, int, bool, bool>;
class Bf16Shapes : public ::testing::TestWithParam<Shape> {
 protected:
  Problem make() const {
    const auto [B, H, Nq, Nk, d, dv, padded, masks] = GetParam();
    Problem pr(B, H, Nq, Nk, d, dv, padded, 31 + Nq);
    if (masks) pr.random_masks(5, 0.7, 0.8);
    pr.params.seed = 9;
    pr.use_bf16();  // rounds the float buffers too
    return pr;
  }
};

std::vector<MethodConfig> methods() {
  SmyrfConfig s;
  s.n_hashes = 3;
  s.q_cluster_size = 16;
  s.k_cluster_size = 16;
  SmyrfConfig e2 = s;
  e2.r = 0.5f;
  e2.transform = Transform::l2_alsh;
  return {ReferenceConfig{}, DenseConfig{}, s, e2};
}

TEST_P(Bf16Shapes, SameBitsAsF32OnTheSameValues) {
  Problem pr = make();
  for (const MethodConfig& m : methods()) {
    const auto bf16 = pr.run(m);
    pr.use_f32();
    const auto f32 = pr.run(m);
    pr.params.q = pr.q16.data();
    pr.params.k = pr.k16.data();
    pr.params.v = pr.v16.data();
    pr.params.dtype = DType::bf16;
    if (std::holds_alternative<DenseConfig>(m)) {
      EXPECT_LE(max_abs_diff(bf16, f32), 2 * pr.tolerance());
    } else {
      EXPECT_TRUE(bitwise_equal(bf16, f32)) << method_name(m);
    }
  }
}

TEST_P(Bf16Shapes, ClustersEqualScalarOracle) {
  Problem pr = make();
  SmyrfConfig s;
  s.n_hashes = 2;
  s.q_cluster_size = s.k_cluster_size = 16;
  EXPECT_EQ(detail::compute_clusters(pr.params, s).q_sorted, reference::clusters(pr.params, s).q_sorted);
  EXPECT_EQ(detail::compute_clusters(pr.params, s).k_sorted, reference::clusters(pr.params, s).k_sorted);
}

TEST_P(Bf16Shapes, DenseMatchesReferenceWithinRule) {
  Problem pr = make();
  const auto ref = pr.run(ReferenceConfig{});
  EXPECT_LE(max_abs_diff(pr.run(DenseConfig{}), ref), pr.tolerance());
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16Shapes,
                         ::testing::Values(Shape{1, 1, 1, 1, 1, 1, false, false},
                                           Shape{2, 2, 113, 97, 64, 64, true, true},
                                           Shape{1, 3, 70, 200, 33, 17, true, false},
                                           Shape{1, 1, 300, 300, 128, 64, false, true}));

TEST(Bf16, NonFiniteInputIsReported) {
  Problem pr(1, 1, 8, 8, 4, 4);
  pr.use_bf16();
  pr.k16[static_cast<std::size_t>(pr.params.k_row_stride * 3 + 2)] = 0x7F80;  // +inf
  try {
    attention(pr.params, DenseConfig{});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("params.k[0, 0, 3, 2] = inf"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace smyrf::test
