#pragma once

#include "methods/method.h"
#include "methods/routing/routing.h"

namespace smyrf::detail {

template <>
struct Method<RoutingConfig> {
  static constexpr const char* kName = "routing";
  static std::string subject(const RoutingConfig&) { return "routing attention"; }
  static Capabilities capabilities(const RoutingConfig&) {
    Capabilities caps;
    caps.causal = caps.learned = true;
    return caps;
  }
  static void check(const RoutingConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const RoutingConfig& config, Workspace* workspace) {
    return routing_forward(pr, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("routing", RoutingConfig{}, "RoutingConfig{}", {"routing:F"},
                 "routing attention: queries and keys routed to their nearest centroid, balanced chunks")};
  }
};

}  // namespace smyrf::detail
