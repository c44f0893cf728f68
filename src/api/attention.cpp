// The entry point: check once at the edge, then dispatch to one method.
#include <algorithm>
#include <limits>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "api/validate.h"
#include "common/timer.h"
#include "hwy/targets.h"
#include "methods/clustered/clustered.h"
#include "methods/compressed/compressed.h"
#include "methods/dense/dense.h"
#include "methods/informer/informer.h"
#include "methods/linear/linear.h"
#include "methods/reformer/reformer.h"
#include "methods/routing/routing.h"
#include "methods/sinkhorn/sinkhorn.h"
#include "methods/sparse/sparse.h"
#include "methods/smyrf/forward.h"
#include "methods/synthesizer/synthesizer.h"
#include "methods/train/train.h"
#include "reference/dense_reference.h"
#include "reference/train_reference.h"
#include "smyrf/smyrf.h"

namespace smyrf {

AttentionParams AttentionParams::contiguous(std::int64_t batch, std::int64_t heads,
                                            std::int64_t nq, std::int64_t nk, std::int64_t d,
                                            std::int64_t dv, const float* q, const float* k,
                                            const float* v, float* o) {
  AttentionParams p;
  p.batch = batch;
  p.heads = heads;
  p.nq = nq;
  p.nk = nk;
  p.d = d;
  p.dv = dv;
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = o;
  p.q_row_stride = d;
  p.q_head_stride = nq * d;
  p.q_batch_stride = heads * nq * d;
  p.k_row_stride = d;
  p.k_head_stride = nk * d;
  p.k_batch_stride = heads * nk * d;
  p.v_row_stride = dv;
  p.v_head_stride = nk * dv;
  p.v_batch_stride = heads * nk * dv;
  p.o_row_stride = dv;
  p.o_head_stride = nq * dv;
  p.o_batch_stride = heads * nq * dv;
  return p;
}

AttentionParams& AttentionParams::with_masks(const std::uint8_t* key_mask_bn,
                                             const std::uint8_t* query_mask_bn) {
  key_mask = key_mask_bn;
  key_mask_batch_stride = key_mask_bn != nullptr ? nk : 0;
  query_mask = query_mask_bn;
  query_mask_batch_stride = query_mask_bn != nullptr ? nq : 0;
  return *this;
}

const char* method_name(const MethodConfig& config) {
  return std::visit(
      [](const auto& c) -> const char* {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, ReferenceConfig>) return "reference";
        if constexpr (std::is_same_v<T, DenseConfig>) return "dense";
        if constexpr (std::is_same_v<T, SmyrfConfig>) return "smyrf";
        if constexpr (std::is_same_v<T, ReformerConfig>) return "reformer";
        if constexpr (std::is_same_v<T, ClusteredConfig>) return "clustered";
        if constexpr (std::is_same_v<T, RoutingConfig>) return "routing";
        if constexpr (std::is_same_v<T, SparseConfig>) return "sparse";
        if constexpr (std::is_same_v<T, LinearConfig>) return "linear";
        if constexpr (std::is_same_v<T, CompressedConfig>) return "compressed";
        if constexpr (std::is_same_v<T, InformerConfig>) return "informer";
        if constexpr (std::is_same_v<T, SinkhornConfig>) return "sinkhorn";
        if constexpr (std::is_same_v<T, SynthesizerConfig>) return "synthesizer";
      },
      config);
}

namespace {

bool is_centroid(const MethodConfig& config) {
  const auto* s = std::get_if<SmyrfConfig>(&config);
  return s != nullptr && s->keys == KeySelection::centroid;
}

// The methods with a training path (backward, dropout, double-precision forward): reference,
// dense and SMYRF's LSH mode.
bool trainable(const MethodConfig& config) {
  return std::holds_alternative<ReferenceConfig>(config) ||
         std::holds_alternative<DenseConfig>(config) ||
         (std::holds_alternative<SmyrfConfig>(config) && !is_centroid(config));
}

std::string config_name(const MethodConfig& config) {
  if (is_centroid(config)) return "SmyrfConfig.keys = centroid";
  return std::string(method_name(config)) + " attention";
}

// The non-finite scan of the rows a method reads. Reformer with shared_qk reads no K: its keys
// are the normalised q rows of the visible keys, so those Q rows are scanned as keys instead.
void check_finite_inputs(const detail::Problem& pr, const MethodConfig& config) {
  const auto* reformer = std::get_if<ReformerConfig>(&config);
  if (reformer == nullptr || !reformer->shared_qk) return detail::check_inputs_finite(pr);
  AttentionParams keys_from_q = *pr.p;
  keys_from_q.k = keys_from_q.q;
  keys_from_q.k_batch_stride = keys_from_q.q_batch_stride;
  keys_from_q.k_head_stride = keys_from_q.q_head_stride;
  keys_from_q.k_row_stride = keys_from_q.q_row_stride;
  try {
    detail::check_inputs_finite(detail::validate_params(keys_from_q));
  } catch (const Error& e) {
    std::string what = e.what();
    if (const std::size_t at = what.find("params.k["); at != std::string::npos) {
      what.replace(at, 9, "params.q[");
      what += " (the row of a key: ReformerConfig.shared_qk builds keys from Q)";
    }
    throw Error(what);
  }
}

// Checks the method's own config and what it supports of params.
void validate_method(const detail::Problem& pr, const MethodConfig& config) {
  std::visit(
      [&](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, SmyrfConfig> || std::is_same_v<T, ClusteredConfig> ||
                      std::is_same_v<T, RoutingConfig> || std::is_same_v<T, SparseConfig>)
          detail::validate_config(c);
        else if constexpr (!std::is_same_v<T, ReferenceConfig> && !std::is_same_v<T, DenseConfig>)
          detail::validate_config(c, pr);  // the config's checks that need the problem's sizes
      },
      config);
  const AttentionParams& p = *pr.p;
  if (p.causal && (is_centroid(config) || std::holds_alternative<ClusteredConfig>(config)))
    throw Error("smyrf: params.causal = true: " + config_name(config) + " has no causal form");
  if (p.dropout > 0.0f && p.causal && !std::holds_alternative<ReferenceConfig>(config))
    throw Error("smyrf: params.dropout = " + std::to_string(p.dropout) +
                " with params.causal = true: only the reference method has causal dropout");
  if (p.dropout > 0.0f && !trainable(config))
    throw Error("smyrf: params.dropout = " + std::to_string(p.dropout) + ": " +
                config_name(config) + " has no dropout");
}

// The method's forward pass on the validated problem.
RunInfo run_method(const detail::Problem& pr, const AttentionParams& with_lse, const MethodConfig& config,
                   Workspace* workspace) {
  return std::visit(
      [&](const auto& c) -> RunInfo {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, ReferenceConfig>) {
          if (with_lse.lse == nullptr) return detail::reference_forward(pr);
          detail::reference_train_forward(pr);
          return RunInfo{};
        }
        if constexpr (std::is_same_v<T, DenseConfig>) return detail::dense_forward(pr, workspace);
        if constexpr (std::is_same_v<T, SmyrfConfig>)
          return detail::smyrf_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, ReformerConfig>)
          return detail::reformer_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, ClusteredConfig>)
          return detail::clustered_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, RoutingConfig>)
          return detail::routing_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, SparseConfig>)
          return detail::sparse_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, LinearConfig>)
          return detail::linear_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, CompressedConfig>)
          return detail::compressed_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, InformerConfig>)
          return detail::informer_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, SinkhornConfig>)
          return detail::sinkhorn_forward(pr, c, workspace);
        if constexpr (std::is_same_v<T, SynthesizerConfig>)
          return detail::synthesizer_forward(pr, c, workspace);
      },
      config);
}

}  // namespace

RunInfo attention(const AttentionParams& params, const MethodConfig& config,
                  Workspace* workspace) {
  detail::Timer timer;
  validate_method(detail::validate_params(params), config);
  // Dropout reweights the forward's probabilities exp(s - lse): it needs each query's lse,
  // in params.lse or in a buffer of its own.
  AttentionParams with_lse = params;
  std::vector<float> own_lse;
  if (params.dropout > 0.0f && params.lse == nullptr) {
    own_lse.resize(static_cast<std::size_t>(params.batch * params.heads * params.nq));
    with_lse.lse = own_lse.data();
  }
  const detail::Problem pr = detail::validate_params(with_lse);
  if (params.check_finite) check_finite_inputs(pr, config);
  if (with_lse.lse != nullptr)
    std::fill_n(with_lse.lse, pr.B * pr.H * pr.Nq, -std::numeric_limits<float>::infinity());
  RunInfo info;
  try {
    info = run_method(pr, with_lse, config, workspace);
  } catch (const std::bad_alloc&) {
    throw Error("smyrf: out of memory: " + config_name(config) + " could not allocate what these sizes need " +
                "(output values unspecified)");
  }
  if (params.dropout > 0.0f && !std::holds_alternative<ReferenceConfig>(config))
    detail::dropout_forward(pr, config, with_lse.lse, workspace);
  info.seconds_total = timer.seconds();
  return info;
}

RunInfo attention_backward(const AttentionParams& params, const GradientParams& grads,
                           const MethodConfig& config, Workspace* workspace) {
  detail::Timer timer;
  const detail::Problem pr = detail::validate_params(params);
  validate_method(pr, config);
  detail::validate_gradients(params, grads);
  if (!trainable(config)) throw Error("smyrf: " + config_name(config) + " has no backward");
  if (params.causal && std::holds_alternative<SmyrfConfig>(config))
    throw Error("smyrf: params.causal = true: the backward of " + config_name(config) +
                " is not causal yet (the reference method's and attention_backward_f64 are)");
  if (params.check_finite) detail::check_inputs_finite(pr);
  RunInfo info;
  if (std::holds_alternative<ReferenceConfig>(config)) {
    detail::reference_backward(pr, grads);
  } else {
    info = detail::train_backward(pr, grads, config, workspace);
  }
  info.seconds_total = timer.seconds();
  return info;
}

namespace {

// A float shadow of a double problem: its sizes, masks, scale, seed and dropout in a validated
// AttentionParams whose inputs are the double tensors rounded to float (what SMYRF hashes).
struct FloatShadow {
  std::vector<float> q, k, v, o;
  AttentionParams params;
  FloatShadow(const AttentionParams& p, const DoubleTensors& in) {
    if (in.q == nullptr) throw Error("smyrf: in.q = nullptr: must point to the queries");
    if (in.k == nullptr) throw Error("smyrf: in.k = nullptr: must point to the keys");
    if (in.v == nullptr) throw Error("smyrf: in.v = nullptr: must point to the values");
    params = p;
    params.q = params.k = params.v = nullptr;
    params.o = nullptr;
    params.lse = nullptr;
    // Sizes first, before allocating; the full checks run on the contiguous copy below.
    const std::pair<const char*, std::int64_t> sizes[] = {{"batch", p.batch}, {"heads", p.heads},
                                                          {"nq", p.nq},       {"nk", p.nk},
                                                          {"d", p.d},         {"dv", p.dv}};
    for (const auto& [name, n] : sizes)
      if (n < 1) throw Error(std::string("smyrf: params.") + name + " = " + std::to_string(n) + ": must be >= 1");
    q.assign(in.q, in.q + p.batch * p.heads * p.nq * p.d);
    k.assign(in.k, in.k + p.batch * p.heads * p.nk * p.d);
    v.assign(in.v, in.v + p.batch * p.heads * p.nk * p.dv);
    o.resize(static_cast<std::size_t>(p.batch * p.heads * p.nq * p.dv));
    AttentionParams c = AttentionParams::contiguous(p.batch, p.heads, p.nq, p.nk, p.d, p.dv,
                                                    q.data(), k.data(), v.data(), o.data());
    c.key_mask = p.key_mask;
    c.key_mask_batch_stride = p.key_mask_batch_stride;
    c.query_mask = p.query_mask;
    c.query_mask_batch_stride = p.query_mask_batch_stride;
    c.scale = p.scale;
    c.seed = p.seed;
    c.num_threads = p.num_threads;
    c.dropout = p.dropout;
    c.causal = p.causal;
    c.check_finite = false;
    params = c;
  }
};

}  // namespace

void attention_f64(const AttentionParams& params, const DoubleTensors& in,
                   const MethodConfig& config, double* o, double* lse) {
  if (o == nullptr) throw Error("smyrf: o = nullptr: must point to the output");
  const FloatShadow shadow(params, in);
  const detail::Problem pr = detail::validate_params(shadow.params);
  validate_method(pr, config);
  if (!trainable(config))
    throw Error("smyrf: " + config_name(config) + " has no double-precision path");
  const detail::KeySets sets(pr, config);
  detail::sets_forward({&pr, in.q, in.k, in.v}, sets, o, lse);
}

void attention_backward_f64(const AttentionParams& params, const DoubleTensors& in,
                            const MethodConfig& config, const double* o, const double* lse,
                            const double* grad_o, double* grad_q, double* grad_k,
                            double* grad_v) {
  if (o == nullptr || lse == nullptr || grad_o == nullptr)
    throw Error("smyrf: o, lse and grad_o of attention_backward_f64 must not be nullptr");
  if (grad_q == nullptr || grad_k == nullptr || grad_v == nullptr)
    throw Error("smyrf: grad_q, grad_k and grad_v of attention_backward_f64 must not be nullptr");
  const FloatShadow shadow(params, in);
  const detail::Problem pr = detail::validate_params(shadow.params);
  validate_method(pr, config);
  if (!trainable(config))
    throw Error("smyrf: " + config_name(config) + " has no double-precision path");
  const detail::KeySets sets(pr, config);
  detail::sets_backward({&pr, in.q, in.k, in.v}, sets, o, lse, grad_o, grad_q, grad_k, grad_v);
}

std::string simd_target() {
  // Highway orders targets best first (lowest bit).
  const std::vector<std::int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

}  // namespace smyrf
