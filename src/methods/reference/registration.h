// The reference method: the naive double-precision oracle (src/reference/) behind the API, for
// tests and for users who want the exact definition at any cost.
#pragma once

#include "methods/method.h"
#include "methods/train/train.h"
#include "reference/dense_reference.h"
#include "reference/train_reference.h"

namespace smyrf::detail {

template <>
struct Method<ReferenceConfig> {
  static constexpr const char* kName = "reference";
  static std::string subject(const ReferenceConfig&) { return "reference attention"; }
  static Capabilities capabilities(const ReferenceConfig&) {
    Capabilities c;
    c.causal = c.dropout = c.causal_dropout = c.backward = c.causal_backward = c.f64 = c.key_bias = true;
    return c;
  }
  static void check(const ReferenceConfig&, const Problem&) {}
  static RunInfo forward(const Problem& pr, const ReferenceConfig&, Workspace*) {
    if (pr.p->lse == nullptr) return reference_forward(pr);
    reference_train_forward(pr);  // lse and dropout
    return RunInfo{};
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const ReferenceConfig&,
                          Workspace*) {
    reference_backward(pr, grads);
    return RunInfo{};
  }
  static std::vector<MethodInfo> forms() {
    return {form("reference", ReferenceConfig{}, "ReferenceConfig{}", {"reference"},
                 "exact attention accumulated in double: the test oracle, O(Nq Nk) time")};
  }
};

}  // namespace smyrf::detail
