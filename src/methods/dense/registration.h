#pragma once

#include "methods/dense/dense.h"
#include "methods/method.h"
#include "methods/train/train.h"

namespace smyrf::detail {

template <>
struct Method<DenseConfig> {
  static constexpr const char* kName = "dense";
  static std::string subject(const DenseConfig&) { return "dense attention"; }
  static Capabilities capabilities(const DenseConfig&) {
    Capabilities c;
    c.causal = c.dropout = c.backward = c.causal_backward = c.f64 = c.key_bias = true;
    return c;
  }
  static void check(const DenseConfig&, const Problem&) {}
  static RunInfo forward(const Problem& pr, const DenseConfig& config, Workspace* workspace) {
    RunInfo info = dense_forward(pr, workspace);
    if (pr.p->dropout > 0.0f) dropout_forward(pr, config, pr.p->lse, workspace);
    return info;
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const DenseConfig& config,
                          Workspace* workspace) {
    return train_backward(pr, grads, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("dense", DenseConfig{}, "DenseConfig{}", {"dense"},
                 "exact attention, flash-style tiles with an online softmax: O(N) memory")};
  }
};

}  // namespace smyrf::detail
