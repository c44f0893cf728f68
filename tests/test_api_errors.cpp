// Bad input at the API edge: a smyrf::Error naming the parameter and the value, and the
// output untouched. Non-finite input: documented behaviour.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>

#include "test_util.h"

namespace smyrf::test {
namespace {

// Expects attention(p, config) to throw smyrf::Error whose message contains every `needles`.
void expect_error(const AttentionParams& p, const MethodConfig& config,
                  std::initializer_list<std::string> needles) {
  try {
    attention(p, config);
    ADD_FAILURE() << "no error; expected one mentioning " << *needles.begin();
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << what;
  }
}

struct Mutation {
  std::string name;
  std::function<void(AttentionParams&)> apply;
  std::vector<std::string> needles;
};

class BadParams : public ::testing::TestWithParam<Mutation> {};

TEST_P(BadParams, ThrowNamingParameterAndValue) {
  Problem pr(2, 2, 8, 8, 4, 4);
  const auto o_before = pr.o;
  GetParam().apply(pr.params);
  for (const MethodConfig& m :
       {MethodConfig{ReferenceConfig{}}, MethodConfig{DenseConfig{}}, MethodConfig{SmyrfConfig{}}}) {
    try {
      attention(pr.params, m);
      ADD_FAILURE() << GetParam().name << ": no error from " << method_name(m);
    } catch (const Error& e) {
      const std::string what = e.what();
      for (const auto& n : GetParam().needles) EXPECT_NE(what.find(n), std::string::npos) << what;
    }
  }
  EXPECT_TRUE(bitwise_equal(o_before, pr.o)) << "output touched before the checks";
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

INSTANTIATE_TEST_SUITE_P(
    Edge, BadParams,
    ::testing::Values(
        Mutation{"batch0", [](AttentionParams& p) { p.batch = 0; }, {"params.batch", "0"}},
        Mutation{"heads_neg", [](AttentionParams& p) { p.heads = -3; }, {"params.heads", "-3"}},
        Mutation{"nq0", [](AttentionParams& p) { p.nq = 0; }, {"params.nq", "0"}},
        Mutation{"nk_neg", [](AttentionParams& p) { p.nk = -1; }, {"params.nk", "-1"}},
        Mutation{"d0", [](AttentionParams& p) { p.d = 0; }, {"params.d ", "0"}},
        Mutation{"dv0", [](AttentionParams& p) { p.dv = 0; }, {"params.dv", "0"}},
        Mutation{"nq_huge", [](AttentionParams& p) { p.nq = std::int64_t{1} << 31; }, {"params.nq", "2147483648"}},
        Mutation{"q_null", [](AttentionParams& p) { p.q = nullptr; }, {"params.q", "nullptr"}},
        Mutation{"k_null", [](AttentionParams& p) { p.k = nullptr; }, {"params.k", "nullptr"}},
        Mutation{"v_null", [](AttentionParams& p) { p.v = nullptr; }, {"params.v", "nullptr"}},
        Mutation{"o_null", [](AttentionParams& p) { p.o = nullptr; }, {"params.o", "nullptr"}},
        Mutation{"q_row_overlap", [](AttentionParams& p) { p.q_row_stride = 2; }, {"params.q_row_stride", "2"}},
        Mutation{"k_neg_stride", [](AttentionParams& p) { p.k_head_stride = -5; }, {"params.k_head_stride", "-5"}},
        Mutation{"v_batch_neg", [](AttentionParams& p) { p.v_batch_stride = -1; }, {"params.v_batch_stride", "-1"}},
        Mutation{"o_rows_alias", [](AttentionParams& p) { p.o_row_stride = 0; }, {"params.o_row_stride", "0"}},
        Mutation{"o_heads_alias", [](AttentionParams& p) { p.o_head_stride = 4; }, {"params.o_head_stride", "4"}},
        Mutation{"o_overlaps_q", [](AttentionParams& p) { p.o = const_cast<float*>(static_cast<const float*>(p.q)); }, {"params.o", "overlaps params.q"}},
        Mutation{"stride_overflow", [](AttentionParams& p) { p.k_batch_stride = std::int64_t{1} << 62; }, {"params.k strides", "overflow"}},
        Mutation{"scale_nan", [](AttentionParams& p) { p.scale = kNaN; }, {"params.scale", "nan"}},
        Mutation{"scale_inf", [](AttentionParams& p) { p.scale = kInf; }, {"params.scale", "inf"}},
        Mutation{"threads_neg", [](AttentionParams& p) { p.num_threads = -2; }, {"params.num_threads", "-2"}},
        Mutation{"threads_huge", [](AttentionParams& p) { p.num_threads = 100000; }, {"params.num_threads", "100000", "1024"}},
        Mutation{"dtype", [](AttentionParams& p) { p.dtype = static_cast<DType>(7); }, {"params.dtype", "7"}},
        Mutation{"mask_stride", [](AttentionParams& p) {
                   static const std::uint8_t m[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
                   p.key_mask = m;
                   p.key_mask_batch_stride = 3;
                 }, {"params.key_mask_batch_stride", "3"}}),
    [](const auto& info) { return info.param.name; });

TEST(BadConfig, SmyrfParametersNamed) {
  Problem pr(1, 1, 8, 8, 4, 4);
  auto check = [&](auto mutate, std::initializer_list<std::string> needles) {
    SmyrfConfig c;
    mutate(c);
    expect_error(pr.params, c, needles);
  };
  check([](SmyrfConfig& c) { c.n_hashes = 0; }, {"SmyrfConfig.n_hashes", "0"});
  check([](SmyrfConfig& c) { c.n_hashes = -4; }, {"SmyrfConfig.n_hashes", "-4"});
  check([](SmyrfConfig& c) { c.q_cluster_size = 0; }, {"SmyrfConfig.q_cluster_size", "0"});
  check([](SmyrfConfig& c) { c.k_cluster_size = -1; }, {"SmyrfConfig.k_cluster_size", "-1"});
  check([](SmyrfConfig& c) { c.r = -1.0f; }, {"SmyrfConfig.r", "-1"});
  check([](SmyrfConfig& c) { c.r = kNaN; }, {"SmyrfConfig.r", "nan"});
  check([](SmyrfConfig& c) { c.transform = static_cast<Transform>(9); }, {"SmyrfConfig.transform", "9"});
  check([](SmyrfConfig& c) { c.transform = Transform::l2_alsh; c.alsh_m = 0; }, {"SmyrfConfig.alsh_m", "0"});
  check([](SmyrfConfig& c) { c.transform = Transform::l2_alsh; c.alsh_u = 1.5f; }, {"SmyrfConfig.alsh_u", "1.5"});
}

TEST(NonFinite, CheckedInputThrowsNamingTensorAndIndex) {
  Problem pr(2, 2, 10, 12, 6, 5);
  pr.k_at(1, 0, 7)[3] = kNaN;
  expect_error(pr.params, DenseConfig{}, {"params.k[1, 0, 7, 3]", "nan", "non-finite"});
  pr.k_at(1, 0, 7)[3] = 0.5f;
  pr.v_at(0, 1, 2)[4] = -kInf;
  expect_error(pr.params, SmyrfConfig{}, {"params.v[0, 1, 2, 4]", "-inf"});
  pr.v_at(0, 1, 2)[4] = 0.5f;
  pr.q_at(0, 0, 9)[0] = kInf;
  expect_error(pr.params, ReferenceConfig{}, {"params.q[0, 0, 9, 0]", "inf"});
}

TEST(NonFinite, MaskedRowsAreNotScanned) {
  Problem pr(1, 1, 10, 12, 6, 5);
  pr.random_masks(1, 1.0, 1.0);
  pr.key_mask[4] = 0;
  pr.k_at(0, 0, 4)[0] = kNaN;
  EXPECT_NO_THROW(attention(pr.params, DenseConfig{}));
}

TEST(NonFinite, UncheckedInputNeverCrashes) {
  // With the scan off, values are unspecified but every method must return normally.
  Problem pr(1, 2, 70, 70, 16, 16);
  pr.params.check_finite = false;
  pr.q_at(0, 0, 3)[1] = kNaN;
  pr.k_at(0, 1, 5)[2] = kInf;
  pr.k_at(0, 0, 6)[0] = -kInf;
  pr.v_at(0, 0, 9)[0] = kNaN;
  SmyrfConfig c;
  c.n_hashes = 3;
  c.q_cluster_size = c.k_cluster_size = 8;
  for (const MethodConfig& m : {MethodConfig{ReferenceConfig{}}, MethodConfig{DenseConfig{}}, MethodConfig{c}})
    EXPECT_NO_THROW(attention(pr.params, m)) << method_name(m);
}

TEST(Api, MethodNamesAndTarget) {
  EXPECT_STREQ(method_name(ReferenceConfig{}), "reference");
  EXPECT_STREQ(method_name(DenseConfig{}), "dense");
  EXPECT_STREQ(method_name(SmyrfConfig{}), "smyrf");
  EXPECT_FALSE(simd_target().empty());
}

}  // namespace
}  // namespace smyrf::test
