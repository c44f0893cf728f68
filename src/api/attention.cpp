// The entry point: check once at the edge, then dispatch to one method.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "api/dispatch.h"
#include "api/validate.h"
#include "common/error.h"
#include "common/finite.h"
#include "common/timer.h"
#include "hwy/targets.h"
#include "methods/registry.h"
#include "reference/train_reference.h"
#include "smyrf/registry.h"
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
  return std::visit([](const auto& c) { return detail::Method<std::decay_t<decltype(c)>>::kName; }, config);
}

Capabilities capabilities(const MethodConfig& config) {
  return std::visit(
      [](const auto& c) { return detail::Method<std::decay_t<decltype(c)>>::capabilities(c); }, config);
}

const std::vector<MethodInfo>& methods() {
  static const std::vector<MethodInfo> all = [] {
    std::vector<MethodInfo> out;
    // One entry per alternative of MethodConfig, in its order.
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (
          [&] {
            using C = std::variant_alternative_t<I, MethodConfig>;
            for (MethodInfo& m : detail::Method<C>::forms()) out.push_back(std::move(m));
          }(),
          ...);
    }(std::make_index_sequence<std::variant_size_v<MethodConfig>>{});
    return out;
  }();
  return all;
}

namespace detail {

template <class C>
std::string subject(const C& c) {
  return Method<C>::subject(c);
}
std::string subject(const MethodConfig& config) {
  return std::visit([](const auto& c) { return subject(c); }, config);
}

template <class C>
std::string causal_subject(const C& c) {
  if constexpr (requires { Method<C>::causal_subject(c); })
    return Method<C>::causal_subject(c);
  else
    return Method<C>::subject(c);
}

// The method's own checks, then the refusals of what its capabilities do not cover.
template <class C>
void check_method(const Problem& pr, const C& c) {
  Method<C>::check(c, pr);
  const Capabilities caps = Method<C>::capabilities(c);
  const AttentionParams& p = *pr.p;
  if (p.causal && !caps.causal)
    throw Error("smyrf: params.causal = true: " + causal_subject(c) + " has no causal form");
  if (p.dropout > 0.0f && p.causal && !caps.causal_dropout)
    throw Error("smyrf: params.dropout = " + std::to_string(p.dropout) +
                " with params.causal = true: only the reference method has causal dropout");
  if (p.dropout > 0.0f && !caps.dropout)
    throw Error("smyrf: params.dropout = " + std::to_string(p.dropout) + ": " + subject(c) +
                " has no dropout");
  if (p.key_bias != nullptr && !caps.key_bias)
    throw Error("smyrf: params.key_bias: " + subject(c) + " has no additive key bias");
}

Problem check_call(const AttentionParams& params, const MethodConfig& config) {
  const Problem pr = validate_params(params);
  std::visit([&](const auto& c) { check_method(pr, c); }, config);
  return pr;
}

// The scan of params.check_finite over the rows the method reads.
template <class C>
void check_finite(const Problem& pr, const C& c) {
  if constexpr (requires { Method<C>::check_finite(pr, c); })
    Method<C>::check_finite(pr, c);
  else
    check_inputs_finite(pr);
}

void prepare_call(const Problem& pr, const MethodConfig& config) {
  if (pr.p->check_finite) std::visit([&](const auto& c) { check_finite(pr, c); }, config);
  if (pr.p->lse != nullptr)
    std::fill_n(pr.p->lse, pr.B * pr.H * pr.Nq, -std::numeric_limits<float>::infinity());
}

}  // namespace detail

RunInfo attention(const AttentionParams& params, const MethodConfig& config,
                  Workspace* workspace) {
  detail::Timer timer;
  return detail::out_of_memory_is_an_error(detail::subject(config), [&] {
    detail::check_params(params);
    // Dropout reweights the forward's probabilities exp(s - lse): it needs each query's lse,
    // in params.lse or in a buffer of its own.
    AttentionParams with_lse = params;
    std::vector<float> own_lse;
    if (params.dropout > 0.0f && params.lse == nullptr) {
      own_lse.resize(static_cast<std::size_t>(params.batch * params.heads * params.nq));
      with_lse.lse = own_lse.data();
    }
    const detail::Problem pr = detail::checked_problem(with_lse);
    std::visit([&](const auto& c) { detail::check_method(pr, c); }, config);
    detail::prepare_call(pr, config);
    RunInfo info = std::visit(
        [&](const auto& c) { return detail::Method<std::decay_t<decltype(c)>>::forward(pr, c, workspace); },
        config);
    info.seconds_total = timer.seconds();
    return info;
  });
}

RunInfo attention_backward(const AttentionParams& params, const GradientParams& grads,
                           const MethodConfig& config, Workspace* workspace) {
  detail::Timer timer;
  return detail::out_of_memory_is_an_error("the backward of " + detail::subject(config), [&] {
    const detail::Problem pr = detail::check_call(params, config);
    detail::validate_gradients(params, grads);
    const Capabilities caps = capabilities(config);
    if (!caps.backward) throw Error("smyrf: " + detail::subject(config) + " has no backward");
    if (params.causal && !caps.causal_backward)
      throw Error("smyrf: params.causal = true: the backward of " + detail::subject(config) +
                  " is not causal yet (the reference method's and attention_backward_f64 are)");
    if (params.check_finite) detail::check_inputs_finite(pr);
    RunInfo info = std::visit(
        [&](const auto& c) -> RunInfo {
          using M = detail::Method<std::decay_t<decltype(c)>>;
          if constexpr (requires { M::backward(pr, grads, c, workspace); })
            return M::backward(pr, grads, c, workspace);
          else
            throw Error("smyrf: " + detail::subject(c) + " has no backward");  // no capability either
        },
        config);
    info.seconds_total = timer.seconds();
    return info;
  });
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
    c.key_bias = p.key_bias;
    c.key_bias_batch_stride = p.key_bias_batch_stride;
    c.key_bias_head_stride = p.key_bias_head_stride;
    c.num_threads = p.num_threads;
    c.dropout = p.dropout;
    c.causal = p.causal;
    c.check_finite = false;
    params = c;
  }
};

// The checked problem of a double call, refused when the method has no double-precision
// definition.
detail::Problem f64_problem(const FloatShadow& shadow, const MethodConfig& config) {
  const detail::Problem pr = detail::check_call(shadow.params, config);
  if (!capabilities(config).f64)
    throw Error("smyrf: " + detail::subject(config) + " has no double-precision path");
  return pr;
}

// attention_f64's key sets: every key a query sees for reference and dense; SMYRF (lsh) with the
// fast path's clusters, (centroid) with its selected keys (the double definition is the float
// method's, on its own clusters).
detail::KeySets f64_key_sets(const detail::Problem& pr, const MethodConfig& config) {
  return std::visit(
      [&](const auto& c) -> detail::KeySets {
        using M = detail::Method<std::decay_t<decltype(c)>>;
        if constexpr (requires { M::uniform_queries(pr, c); }) {
          return detail::KeySets(pr, M::key_pairs(pr, c), M::uniform_queries(pr, c));
        } else if constexpr (requires { M::key_pairs(pr, c); }) {
          return detail::KeySets(pr, M::key_pairs(pr, c));
        } else if constexpr (std::is_same_v<std::decay_t<decltype(c)>, SmyrfConfig>) {
          // Clusters at least as large as the sequences are dense attention (as in the forward).
          if (c.q_cluster_size >= pr.Nq && c.k_cluster_size >= pr.Nk) return detail::KeySets(pr);
          if (c.keys == KeySelection::centroid) return detail::KeySets(pr, M::centroid_key_pairs(pr, c));
          return detail::KeySets(pr, c, detail::compute_clusters(pr, c));
        } else {
          return detail::KeySets(pr);
        }
      },
      config);
}

// Methods whose keys are the normalised queries (Reformer's shared_qk): the double definition
// reads k_j = q_j / |q_j| (0 for q_j = 0) and chains the keys' gradient into dQ.
bool keys_are_normalised_queries(const MethodConfig& config) {
  return std::visit(
      [](const auto& c) {
        using M = detail::Method<std::decay_t<decltype(c)>>;
        if constexpr (requires { M::keys_are_normalised_queries(c); })
          return M::keys_are_normalised_queries(c);
        else
          return false;
      },
      config);
}

std::vector<double> normalised_queries(const detail::Problem& pr, const double* q) {
  std::vector<double> k(static_cast<std::size_t>(pr.B * pr.H * pr.Nk * pr.d), 0.0);
  for (std::int64_t row = 0; row < pr.B * pr.H * pr.Nk; ++row) {
    double n2 = 0.0;
    for (std::int64_t c = 0; c < pr.d; ++c) n2 += q[row * pr.d + c] * q[row * pr.d + c];
    if (n2 > 0.0)
      for (std::int64_t c = 0; c < pr.d; ++c) k[static_cast<std::size_t>(row * pr.d + c)] = q[row * pr.d + c] / std::sqrt(n2);
  }
  return k;
}

// Methods whose double-precision definition is not attention over key sets give their own
// (forward_f64 / backward_f64 on contiguous doubles): true when the config's method did.
bool own_forward_f64(const detail::Problem& pr, const MethodConfig& config, const DoubleTensors& in, double* o,
                     double* lse) {
  return std::visit(
      [&](const auto& c) {
        using M = detail::Method<std::decay_t<decltype(c)>>;
        if constexpr (requires { M::forward_f64(pr, c, in, o, lse); }) {
          M::forward_f64(pr, c, in, o, lse);
          return true;
        } else {
          return false;
        }
      },
      config);
}
bool own_backward_f64(const detail::Problem& pr, const MethodConfig& config, const DoubleTensors& in,
                      const double* o, const double* lse, const double* grad_o, double* grad_q, double* grad_k,
                      double* grad_v) {
  return std::visit(
      [&](const auto& c) {
        using M = detail::Method<std::decay_t<decltype(c)>>;
        if constexpr (requires { M::backward_f64(pr, c, in, o, lse, grad_o, grad_q, grad_k, grad_v); }) {
          M::backward_f64(pr, c, in, o, lse, grad_o, grad_q, grad_k, grad_v);
          return true;
        } else {
          return false;
        }
      },
      config);
}

}  // namespace

void attention_f64(const AttentionParams& params, const DoubleTensors& in,
                   const MethodConfig& config, double* o, double* lse) {
  if (o == nullptr) throw Error("smyrf: o = nullptr: must point to the output");
  detail::out_of_memory_is_an_error("the double-precision " + detail::subject(config), [&] {
    const FloatShadow shadow(params, in);
    const detail::Problem pr = f64_problem(shadow, config);
    if (own_forward_f64(pr, config, in, o, lse)) return;
    const detail::KeySets sets = f64_key_sets(pr, config);
    if (keys_are_normalised_queries(config)) {
      const std::vector<double> k = normalised_queries(pr, in.q);
      detail::sets_forward({&pr, in.q, k.data(), in.v}, sets, o, lse);
    } else {
      detail::sets_forward({&pr, in.q, in.k, in.v}, sets, o, lse);
    }
  });
}

void attention_backward_f64(const AttentionParams& params, const DoubleTensors& in,
                            const MethodConfig& config, const double* o, const double* lse,
                            const double* grad_o, double* grad_q, double* grad_k,
                            double* grad_v) {
  if (o == nullptr || lse == nullptr || grad_o == nullptr)
    throw Error("smyrf: o, lse and grad_o of attention_backward_f64 must not be nullptr");
  if (grad_q == nullptr || grad_k == nullptr || grad_v == nullptr)
    throw Error("smyrf: grad_q, grad_k and grad_v of attention_backward_f64 must not be nullptr");
  detail::out_of_memory_is_an_error("the double-precision backward of " + detail::subject(config), [&] {
    const FloatShadow shadow(params, in);
    const detail::Problem pr = f64_problem(shadow, config);
    if (own_backward_f64(pr, config, in, o, lse, grad_o, grad_q, grad_k, grad_v)) return;
    const detail::KeySets sets = f64_key_sets(pr, config);
    if (!keys_are_normalised_queries(config)) {
      detail::sets_backward({&pr, in.q, in.k, in.v}, sets, o, lse, grad_o, grad_q, grad_k, grad_v);
      return;
    }
    const std::vector<double> k = normalised_queries(pr, in.q);
    std::vector<double> dk(k.size());
    detail::sets_backward({&pr, in.q, k.data(), in.v}, sets, o, lse, grad_o, grad_q, dk.data(), grad_v);
    for (std::int64_t row = 0; row < pr.B * pr.H * pr.Nk; ++row) {
      const double* x = in.q + row * pr.d;
      double n2 = 0.0, kd = 0.0;
      for (std::int64_t c = 0; c < pr.d; ++c) {
        n2 += x[c] * x[c];
        kd += k[static_cast<std::size_t>(row * pr.d + c)] * dk[static_cast<std::size_t>(row * pr.d + c)];
      }
      for (std::int64_t c = 0; c < pr.d; ++c) {
        grad_k[row * pr.d + c] = 0.0;
        if (n2 > 0.0)
          grad_q[row * pr.d + c] += (dk[static_cast<std::size_t>(row * pr.d + c)] -
                                     k[static_cast<std::size_t>(row * pr.d + c)] * kd) / std::sqrt(n2);
      }
    }
  });
}

std::string simd_target() {
  // Highway orders targets best first (lowest bit).
  const std::vector<std::int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

}  // namespace smyrf
