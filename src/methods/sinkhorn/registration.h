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
    return caps;
  }
  static std::string no_backward(const SinkhornConfig&) {
    return "not implemented yet: the gradient through the Sinkhorn iterations and of the sort net";
  }
  static void check(const SinkhornConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace) {
    return sinkhorn_forward(pr, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("sinkhorn", SinkhornConfig{}, "SinkhornConfig{}", {"sinkhorn:F"},
                 "Sinkhorn sorting attention: own block + a doubly-stochastic mix of key blocks")};
  }
};

}  // namespace smyrf::detail
