#pragma once

#include "methods/method.h"
#include "methods/sinkhorn/sinkhorn.h"

namespace smyrf::detail {

template <>
struct Method<SinkhornConfig> {
  static constexpr const char* kName = "sinkhorn";
  static std::string subject(const SinkhornConfig&) { return "sinkhorn attention"; }
  static Capabilities capabilities(const SinkhornConfig&) {
    Capabilities caps;
    caps.learned = true;  // the sort net
    caps.dropout = caps.backward = caps.f64 = true;
    return caps;
  }
  static void check(const SinkhornConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace) {
    return sinkhorn_forward(pr, config, workspace);
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const SinkhornConfig& config,
                          Workspace* workspace) {
    return sinkhorn_backward(pr, grads, config, workspace);
  }
  // The double-precision definition is not a softmax over key sets of the inputs (the sorted
  // rows are mixtures of keys): its own forward and backward.
  static void forward_f64(const Problem& pr, const SinkhornConfig& config, const DoubleTensors& in, double* o,
                          double* lse) {
    sinkhorn_forward_f64(pr, in, config, o, lse);
  }
  static void backward_f64(const Problem& pr, const SinkhornConfig& config, const DoubleTensors& in,
                           const double*, const double*, const double* grad_o, double* grad_q, double* grad_k,
                           double* grad_v) {
    sinkhorn_backward_f64(pr, in, config, grad_o, grad_q, grad_k, grad_v);
  }
  static std::vector<MethodInfo> forms() {
    return {form("sinkhorn", SinkhornConfig{}, "SinkhornConfig{}", {"sinkhorn:F"},
                 "Sinkhorn sorting attention: own block + a doubly-stochastic mix of key blocks")};
  }
};

}  // namespace smyrf::detail
