// smyrf for LibTorch: attention on at::Tensor, differentiable through torch::autograd.
//
//     #include <smyrf/torch.h>
//     smyrf::torch::Options options;
//     options.method = smyrf::SmyrfConfig{.n_hashes = 4, .q_cluster_size = 32, .k_cluster_size = 32};
//     at::Tensor o = smyrf::torch::attention(q, k, v, options);   // q [B,H,Nq,d] ...
//     o.sum().backward();                                          // grads of q, k, v
//     (and of the learned parts in Options::learned whose set_grad is given)
//
// CMake: link the `smyrf_torch` target (built by torch/CMakeLists.txt when Torch is found).
#pragma once

#include <c10/util/Optional.h>

#include <ATen/core/Tensor.h>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::torch {

// The double-precision values and gradients of a float64 call's learned parts, one struct per
// method with learned parts the library differentiates (the config's `f64` points into it).
struct DoubleParts {
  smyrf::CompressedDoubleParts compressed;
  smyrf::SynthesizerDoubleParts synthesizer;
  smyrf::LinearDoubleParts linear;
  smyrf::SinkhornDoubleParts sinkhorn;
};

// A learned part of a method config, e.g. CompressedConfig::projection_e.
struct LearnedPart {
  std::string name;  // as errors give it: "projection_e"
  // The values the config's pointer addresses: a CPU, contiguous float32 tensor. It may be the
  // parameter itself or a float32 copy of it (source below).
  at::Tensor tensor;
  // Where the library writes this part's gradient, or empty when it computes none (a part
  // that requires grad is then refused, c10::ValueError): sets the config's float grad
  // pointer (e.g. CompressedConfig::grad_projection_e) ...
  std::function<void(smyrf::MethodConfig&, float* grad)> set_grad;
  // ... and, for float64 calls, the double-precision parts' value and gradient pointers
  // (DoubleParts below; grad nullptr in the forward).
  std::function<void(DoubleParts&, const double* value, double* grad)> set_f64;
  // The tensor autograd sees (the parameter, any float dtype; its gradient comes back in its
  // dtype); undefined: `tensor` itself. A float64 source gives the float64 path its exact
  // values through set_f64.
  at::Tensor source;
};

struct Options {
  smyrf::MethodConfig method = smyrf::DenseConfig{};
  double dropout = 0.0;          // on the attention weights; applied only when `training`
  bool training = false;
  std::uint64_t seed = 0;        // seed of the dropout masks and of SMYRF's hashing
  int num_threads = 0;           // 0 = all threads OpenMP offers
  std::optional<double> scale;   // softmax scale; default 1/sqrt(d)
  bool causal = false;           // AttentionParams::causal: query i sees keys j <= i + Nk - Nq
  // AttentionParams::key_bias: a CPU, contiguous float32 tensor [B, H, Nk] (the score of query i
  // on key j gains key_bias[b, h, j]), or undefined. A constant: it gets no gradient. Only for
  // methods whose capabilities say key_bias (smyrf::Error otherwise).
  at::Tensor key_bias;
  // The tensors the method's learned-part pointers (e.g. RoutingConfig::centroids) point into,
  // with the names errors give them ("centroids"): see LearnedPart. The autograd node keeps
  // them alive until its backward has run (the config's raw pointers alone would dangle).
  std::vector<LearnedPart> learned;
  // How errors name the method ("smyrf/centroid"); empty: smyrf::method_name(method).
  std::string label;
  // When set, the forward's RunInfo (scores computed, scratch bytes, seconds) is written here
  // (float32 and bfloat16 inputs; the float64 definition leaves it untouched).
  smyrf::RunInfo* info = nullptr;
};

// O [B, H, Nq, dv] = attention of q [B, H, Nq, d] over k [B, H, Nk, d], v [B, H, Nk, dv] with
// the method of options.method (see include/smyrf/smyrf.h for the semantics of the masks and
// of dropout, and include/smyrf/methods/<method>.h for each method's definition).
//
//   * Tensors: CPU, strided, all of one dtype: float32 runs the library's fast kernels
//     (smyrf::attention / smyrf::attention_backward), float64 its double-precision reference
//     (smyrf::attention_f64 / smyrf::attention_backward_f64; only for configs whose
//     capabilities say f64), bfloat16 the library's bf16 input path (DType::bf16; O is computed
//     in float32 and rounded to bfloat16). The bf16 backward runs in float32 on the inputs
//     converted exactly to float32 and on the float32 O of the forward; its gradients are
//     rounded to bfloat16. With dropout in training the bf16 forward also runs on the exact
//     float32 copies (the library's bf16 path has no dropout). O has the inputs' dtype.
//   * Non-contiguous inputs are copied to contiguous ones first (expanded, i.e. stride-0,
//     K/V heads included: their gradients are then summed by autograd as usual).
//   * key_mask [B, Nk], query_mask [B, Nq]: bool or uint8, true/nonzero = the token takes
//     part. A masked query gets O = 0 and zero gradients.
//   * Differentiable w.r.t. q, k and v (once: double backward throws). Backward keeps only O
//     and the per-query logsumexp and recomputes the rest; SMYRF's clusters are recomputed
//     from the same inputs and seed and treated as constants. A config whose capabilities
//     (smyrf::capabilities) have no backward (or no causal backward, with options.causal)
//     throws c10::ValueError when an input requires grad (and grad mode is on).
//
// Errors: c10::TypeError (dtype, device, layout) and c10::ValueError (dims, shapes, masks,
// options) naming the argument; smyrf::Error from the library for anything it rejects.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const Options& options,
                     const c10::optional<at::Tensor>& key_mask = c10::nullopt,
                     const c10::optional<at::Tensor>& query_mask = c10::nullopt);

// The checks attention() makes on q, k and v alone (device, layout, dtype, dims, matching
// shapes), for callers that need the sizes before they build the options (learned parts are
// shaped by them).
void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace smyrf::torch
