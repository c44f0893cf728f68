#pragma once

#include "methods/informer/informer.h"
#include "methods/method.h"
#include "methods/train/train.h"

namespace smyrf::detail {

template <>
struct Method<InformerConfig> {
  static constexpr const char* kName = "informer";
  static std::string subject(const InformerConfig&) { return "informer attention"; }
  static Capabilities capabilities(const InformerConfig&) {
    Capabilities caps;
    caps.causal = caps.seeded = true;
    caps.dropout = caps.causal_dropout = caps.backward = caps.causal_backward = caps.f64 = true;
    return caps;
  }
  static void check(const InformerConfig& config, const Problem& pr);
  // Dropout: the forward, then the exact queries' rows rebuilt from their lse with the dropped
  // weights (the lazy means are not dropped).
  static RunInfo forward(const Problem& pr, const InformerConfig& config, Workspace* workspace);
  // Samples and the selection are constants of the gradient: the exact queries on the group
  // engine, the lazy means' gradient to V only.
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const InformerConfig& config,
                          Workspace* workspace);
  // The (0, key) pairs of every query: the exact queries' visible keys, the lazy queries' too.
  static KeyPairs key_pairs(const Problem& pr, const InformerConfig& config);
  // The lazy queries: their weights are uniform over their keys (logits 0), so the double
  // definition gives them no Q or K gradient and no dropout.
  static std::vector<std::uint8_t> uniform_queries(const Problem& pr, const InformerConfig& config);
  static std::vector<MethodInfo> forms() {
    return {form("informer", InformerConfig{}, "InformerConfig{}", {"informer:F"},
                 "Informer ProbSparse: the most peaked queries attend exactly, the others get the mean of V")};
  }
};

}  // namespace smyrf::detail
