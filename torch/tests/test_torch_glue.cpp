// The LibTorch glue from C++: forward against plain ATen softmax attention, float32 gradients
// against the float64 path, and the edge checks. (The Python suite in this folder covers the
// rest: gradcheck, dropout, seeds, the nn.Module.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "smyrf/registry.h"
#include "smyrf/torch.h"

namespace {

using smyrf::torch::Options;

at::Tensor randn(at::IntArrayRef shape) { return at::randn(shape, at::kFloat); }

// softmax(scale q k^T) v in float64 with plain ATen ops; masked keys removed, masked queries 0.
at::Tensor aten_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale, const at::Tensor& key_mask,
                          const at::Tensor& query_mask) {
  at::Tensor s = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-1, -2)) * scale;
  s = s.masked_fill(key_mask.logical_not().view({key_mask.size(0), 1, 1, key_mask.size(1)}),
                    -std::numeric_limits<double>::infinity());
  const at::Tensor o = at::matmul(at::softmax(s, -1), v.to(at::kDouble));
  return o.masked_fill(query_mask.logical_not().view({query_mask.size(0), 1, query_mask.size(1), 1}),
                       0.0);
}

// The suite's tolerance rule (tests/test_util.h):
//   max|O - O_ref| <= 16 eps_f32 max|V| (1 + L + log2 Nk),  L = max |scale| sum_t |q_t k_t|.
double tolerance(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const double L =
      std::abs(scale) * at::matmul(q.abs().to(at::kDouble), k.abs().to(at::kDouble).transpose(-1, -2))
                            .max()
                            .item<double>();
  return 16.0 * std::numeric_limits<float>::epsilon() * v.abs().max().item<double>() *
         (1.0 + L + std::log2(static_cast<double>(k.size(2))));
}

double rel_frobenius(const at::Tensor& a, const at::Tensor& ref) {
  return (a.to(at::kDouble) - ref).norm().item<double>() / ref.norm().item<double>();
}

TEST(TorchGlue, DenseForwardMatchesAtenWithMasks) {
  at::manual_seed(1);
  const at::Tensor q = randn({2, 3, 17, 8}), k = randn({2, 3, 23, 8}), v = randn({2, 3, 23, 5});
  at::Tensor key_mask = at::rand({2, 23}) > 0.3, query_mask = at::rand({2, 17}) > 0.2;
  key_mask.index_put_({0, 0}, true);  // every batch element keeps a key
  key_mask.index_put_({1, 0}, true);
  Options options;
  options.scale = 0.7;
  const at::Tensor o = smyrf::torch::attention(q, k, v, options, key_mask, query_mask);
  ASSERT_EQ(o.sizes(), (at::IntArrayRef{2, 3, 17, 5}));
  ASSERT_EQ(o.scalar_type(), at::kFloat);
  const at::Tensor ref = aten_attention(q, k, v, 0.7, key_mask, query_mask);
  EXPECT_LE((o.to(at::kDouble) - ref).abs().max().item<double>(), tolerance(q, k, v, 0.7));
}

TEST(TorchGlue, NonContiguousInputsGiveTheContiguousResult) {
  at::manual_seed(2);
  const at::Tensor q = randn({2, 9, 4, 8}).transpose(1, 2);  // [2, 4, 9, 8], strided
  const at::Tensor k = randn({1, 1, 11, 8}).expand({2, 4, 11, 8});  // stride-0 heads
  const at::Tensor v = randn({2, 4, 11, 6});
  const Options options;
  const at::Tensor o = smyrf::torch::attention(q, k, v, options);
  const at::Tensor o_ref = smyrf::torch::attention(q.contiguous(), k.contiguous(), v, options);
  EXPECT_TRUE(at::equal(o, o_ref));
}

// dL/d(q, k, v) of L = sum(O * W) for float32 inputs and for the same values in float64.
void expect_float32_gradients_match_float64(const Options& options) {
  at::manual_seed(3);
  const at::Tensor q = randn({2, 2, 24, 8}), k = randn({2, 2, 20, 8}), v = randn({2, 2, 20, 4});
  const at::Tensor w = randn({2, 2, 24, 4});
  at::Tensor key_mask = at::ones({2, 20}, at::kBool), query_mask = at::ones({2, 24}, at::kBool);
  key_mask.index_put_({1, at::indexing::Slice(15)}, false);
  query_mask.index_put_({0, 3}, false);
  auto grads = [&](at::ScalarType dtype) {
    const at::Tensor qd = q.to(dtype).requires_grad_(), kd = k.to(dtype).requires_grad_(),
                     vd = v.to(dtype).requires_grad_();
    const at::Tensor o = smyrf::torch::attention(qd, kd, vd, options, key_mask, query_mask);
    return ::torch::autograd::grad({(o * w.to(dtype)).sum()}, {qd, kd, vd});
  };
  const auto g32 = grads(at::kFloat), g64 = grads(at::kDouble);
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(g32[i].scalar_type(), at::kFloat);
    EXPECT_LE(rel_frobenius(g32[i], g64[i]), 1e-4) << names[i];
  }
  // Masked query 3 of batch 0 and masked keys 15.. of batch 1 get zero gradients.
  EXPECT_EQ(g32[0].select(0, 0).select(1, 3).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(g32[1].select(0, 1).narrow(1, 15, 5).abs().max().item<float>(), 0.0f);
}

TEST(TorchGlue, DenseFloat32GradientsMatchFloat64) { expect_float32_gradients_match_float64({}); }

TEST(TorchGlue, CausalDenseMatchesAten) {
  at::manual_seed(3);
  const at::Tensor q = randn({2, 2, 9, 6}), k = randn({2, 2, 13, 6}), v = randn({2, 2, 13, 4});
  Options options;
  options.causal = true;
  const at::Tensor o = smyrf::torch::attention(q, k, v, options);
  // Query i sees keys j <= i + Nk - Nq (aligned at the end).
  const at::Tensor future = at::ones({9, 13}, at::kBool).triu(13 - 9 + 1);
  at::Tensor s = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-1, -2)) /
                 std::sqrt(6.0);
  s = s.masked_fill(future, -std::numeric_limits<double>::infinity());
  const at::Tensor ref = at::matmul(at::softmax(s, -1), v.to(at::kDouble));
  EXPECT_LE((o.to(at::kDouble) - ref).abs().max().item<double>(),
            tolerance(q, k, v, 1.0 / std::sqrt(6.0)));
}

TEST(TorchGlue, Bfloat16ForwardAndBackward) {
  at::manual_seed(4);
  const at::Tensor q = randn({1, 2, 11, 8}).to(at::kBFloat16), k = randn({1, 2, 11, 8}).to(at::kBFloat16),
                   v = randn({1, 2, 11, 8}).to(at::kBFloat16);
  const Options options;
  const at::Tensor o32 = smyrf::torch::attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), options);
  const at::Tensor qb = q.clone().requires_grad_();
  const at::Tensor ob = smyrf::torch::attention(qb, k, v, options);
  ASSERT_EQ(ob.scalar_type(), at::kBFloat16);
  // O rounded to bf16: within half an ulp (2^-8 relative) of float32's, plus the f32 rule.
  EXPECT_TRUE(((ob.to(at::kFloat) - o32).abs() <=
               o32.abs() * std::ldexp(1.0, -8) + tolerance(q.to(at::kFloat), k.to(at::kFloat),
                                                           v.to(at::kFloat), 1 / std::sqrt(8.0)))
                  .all()
                  .item<bool>());
  ob.sum().backward();
  ASSERT_EQ(qb.grad().scalar_type(), at::kBFloat16);
}

TEST(TorchGlue, SmyrfFloat32GradientsMatchFloat64WithDropout) {
  Options options;
  options.method = smyrf::SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8};
  options.dropout = 0.25;
  options.training = true;
  options.seed = 77;
  expect_float32_gradients_match_float64(options);
}

// Runs f, which must throw c10::Error of kind E whose message contains every part.
template <class E>
void expect_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string what = e.what_without_backtrace();
    for (const std::string& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  }
}

TEST(TorchGlue, EdgeErrorsNameTheArgument) {
  const at::Tensor q = randn({1, 2, 5, 4}), k = randn({1, 2, 6, 4}), v = randn({1, 2, 6, 3});
  const Options options;
  using smyrf::torch::attention;
  expect_error<c10::TypeError>([&] { attention(q.to(at::kHalf), k, v, options); },
                               {"q:", "float32, float64 or bfloat16", "Half"});
  expect_error<c10::TypeError>([&] { attention(q, k.to(at::kDouble), v, options); },
                               {"q, k, v:", "one dtype"});
  expect_error<c10::ValueError>([&] { attention(q, k[0], v, options); }, {"k:", "4 dims"});
  expect_error<c10::ValueError>([&] { attention(q, randn({1, 2, 6, 5}), v, options); },
                                {"k:", "head dim"});
  expect_error<c10::ValueError>([&] { attention(q, k, randn({1, 2, 7, 3}), options); },
                                {"v:", "Nk"});
  expect_error<c10::ValueError>([&] { attention(q.narrow(2, 0, 0), k, v, options); },
                                {"q:", ">= 1"});
  expect_error<c10::ValueError>(
      [&] { attention(q, k, v, options, at::ones({1, 5}, at::kBool)); },
      {"key_mask:", "[B, Nk] = [1, 6]", "[1, 5]"});
  expect_error<c10::TypeError>(
      [&] { attention(q, k, v, options, c10::nullopt, at::ones({1, 5}, at::kFloat)); },
      {"query_mask:", "bool or uint8"});
  Options bad = options;
  bad.dropout = 1.0;
  expect_error<c10::ValueError>([&] { attention(q, k, v, bad); }, {"dropout = 1", "[0, 1)"});
  bad = options;
  bad.scale = std::numeric_limits<double>::infinity();
  expect_error<c10::ValueError>([&] { attention(q, k, v, bad); }, {"scale = inf"});
  bad = options;
  // Every registered form has a backward and a double definition, so the glue's refusals of a
  // form without them ("method ... has no backward", "float64 ... has none") cannot be reached
  // by a registered form; this fails when a form without them is registered, to test them then.
  for (const smyrf::MethodInfo& m : smyrf::methods())
    EXPECT_TRUE(m.caps.backward && m.caps.f64) << m.name << "/" << m.form << ": test the glue's refusal with it";
  // Learned parts: kept alive by the node, refused when they require grad.
  bad = options;
  const at::Tensor centroids = randn({2, 3, 4}).requires_grad_();
  bad.method = smyrf::RoutingConfig{.n_clusters = 3, .centroids = centroids.data_ptr<float>()};
  smyrf::torch::LearnedPart part;
  part.name = "centroids";
  part.tensor = centroids;
  bad.learned = {part};
  expect_error<c10::ValueError>([&] { attention(q, k, v, bad); },
                                {"centroids: requires grad", "routing"});
  part.tensor = centroids.to(at::kDouble);
  bad.learned = {part};
  expect_error<c10::TypeError>([&] { attention(q, k, v, bad); }, {"centroids:", "float32"});
  // What the library itself rejects arrives as smyrf::Error naming the config field.
  bad.learned.clear();
  bad.method = smyrf::SmyrfConfig{.n_hashes = 0};
  EXPECT_THROW(attention(q, k, v, bad), smyrf::Error);
}

}  // namespace
