// smyrf for LibTorch: attention on at::Tensor, differentiable through torch::autograd.
//
//     #include <smyrf/torch.h>
//     smyrf::torch::Options options;
//     options.method = smyrf::SmyrfConfig{.n_hashes = 4, .q_cluster_size = 32, .k_cluster_size = 32};
//     at::Tensor o = smyrf::torch::attention(q, k, v, options);   // q [B,H,Nq,d] ...
//     o.sum().backward();                                          // grads of q, k, v
//
// CMake: link the `smyrf_torch` target (built by torch/CMakeLists.txt when Torch is found).
#pragma once

#include <c10/util/Optional.h>

#include <ATen/core/Tensor.h>
#include <cstdint>
#include <optional>

#include "smyrf/smyrf.h"

namespace smyrf::torch {

struct Options {
  smyrf::MethodConfig method = smyrf::DenseConfig{};
  double dropout = 0.0;          // on the attention weights; applied only when `training`
  bool training = false;
  std::uint64_t seed = 0;        // seed of the dropout masks and of SMYRF's hashing
  int num_threads = 0;           // 0 = all threads OpenMP offers
  std::optional<double> scale;   // softmax scale; default 1/sqrt(d)
};

// O [B, H, Nq, dv] = attention of q [B, H, Nq, d] over k [B, H, Nk, d], v [B, H, Nk, dv] with
// the method of options.method (see include/smyrf/smyrf.h for the semantics of the masks and
// of dropout, and include/smyrf/methods/<method>.h for each method's definition).
//
//   * Tensors: CPU, strided, all of one dtype: float32 runs the library's fast kernels
//     (smyrf::attention / smyrf::attention_backward), float64 its double-precision reference
//     (smyrf::attention_f64 / smyrf::attention_backward_f64). O has the inputs' dtype.
//   * Non-contiguous inputs are copied to contiguous ones first (expanded, i.e. stride-0,
//     K/V heads included: their gradients are then summed by autograd as usual).
//   * key_mask [B, Nk], query_mask [B, Nq]: bool or uint8, true/nonzero = the token takes
//     part. A masked query gets O = 0 and zero gradients.
//   * Differentiable w.r.t. q, k and v (once: double backward throws). Backward keeps only O
//     and the per-query logsumexp and recomputes the rest; SMYRF's clusters are recomputed
//     from the same inputs and seed and treated as constants. SmyrfConfig::keys = centroid
//     has no backward: calling it with inputs that require grad throws.
//
// Errors: c10::TypeError (dtype, device, layout) and c10::ValueError (dims, shapes, masks,
// options) naming the argument; smyrf::Error from the library for anything it rejects.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const Options& options,
                     const c10::optional<at::Tensor>& key_mask = c10::nullopt,
                     const c10::optional<at::Tensor>& query_mask = c10::nullopt);

}  // namespace smyrf::torch
