#pragma once

#include "methods/method.h"
#include "methods/routing/routing.h"
#include "methods/train/train.h"

namespace smyrf::detail {

template <>
struct Method<RoutingConfig> {
  static constexpr const char* kName = "routing";
  static std::string subject(const RoutingConfig&) { return "routing attention"; }
  static Capabilities capabilities(const RoutingConfig&) {
    Capabilities caps;
    caps.causal = caps.learned = caps.key_bias = true;
    caps.dropout = caps.causal_dropout = caps.backward = caps.causal_backward = caps.f64 = true;
    return caps;
  }
  static void check(const RoutingConfig& config, const Problem& pr);
  // Dropout: the forward, then O rebuilt from its lse with the dropped weights.
  static RunInfo forward(const Problem& pr, const RoutingConfig& config, Workspace* workspace);
  // Centroids and routes are constants of the gradient.
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const RoutingConfig& config,
                          Workspace* workspace);
  static KeyPairs key_pairs(const Problem& pr, const RoutingConfig& config);
  static std::vector<MethodInfo> forms() {
    return {form("routing", RoutingConfig{}, "RoutingConfig{}", {"routing:F"},
                 "routing attention: queries and keys routed to their nearest centroid, balanced chunks")};
  }
};

}  // namespace smyrf::detail
