#pragma once

#include "methods/informer/informer.h"
#include "methods/method.h"

namespace smyrf::detail {

template <>
struct Method<InformerConfig> {
  static constexpr const char* kName = "informer";
  static std::string subject(const InformerConfig&) { return "informer attention"; }
  static Capabilities capabilities(const InformerConfig&) {
    Capabilities caps;
    caps.causal = caps.seeded = true;
    return caps;
  }
  static void check(const InformerConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const InformerConfig& config, Workspace* workspace) {
    return informer_forward(pr, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("informer", InformerConfig{}, "InformerConfig{}", {"informer:F"},
                 "Informer ProbSparse: the most peaked queries attend exactly, the others get the mean of V")};
  }
};

}  // namespace smyrf::detail
