#pragma once

#include "methods/method.h"
#include "methods/smyrf/clustering.h"
#include "methods/smyrf/forward.h"
#include "methods/train/train.h"

namespace smyrf::detail {

template <>
struct Method<SmyrfConfig> {
  static constexpr const char* kName = "smyrf";
  static std::string subject(const SmyrfConfig& c) {
    return c.keys == KeySelection::centroid ? "SmyrfConfig.keys = centroid" : "smyrf attention";
  }
  static Capabilities capabilities(const SmyrfConfig& c) {
    Capabilities caps;
    if (c.keys == KeySelection::centroid) return caps;
    caps.causal = caps.dropout = caps.backward = caps.f64 = caps.seeded = true;
    return caps;
  }
  static void check(const SmyrfConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace) {
    RunInfo info = smyrf_forward(pr, config, workspace);
    if (pr.p->dropout > 0.0f) dropout_forward(pr, config, pr.p->lse, workspace);
    return info;
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const SmyrfConfig& config,
                          Workspace* workspace) {
    return train_backward(pr, grads, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("lsh", SmyrfConfig{}, "SmyrfConfig{}", {"smyrf:H:F", "smyrf:HxC"},
                 "SMYRF: asymmetric LSH, balanced clusters, rounds merged by logsumexp"),
            form("centroid", SmyrfConfig{.n_hashes = 1, .keys = KeySelection::centroid},
                 "SmyrfConfig{.n_hashes = 1, .keys = KeySelection::centroid}", {"smyrf-c:F[:Q]"},
                 "SMYRF's centroid key selection: each query cluster attends to its mean query's top keys")};
  }
};

}  // namespace smyrf::detail
