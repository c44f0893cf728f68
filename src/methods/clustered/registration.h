#pragma once

#include "methods/clustered/clustered.h"
#include "methods/method.h"

namespace smyrf::detail {

template <>
struct Method<ClusteredConfig> {
  static constexpr const char* kName = "clustered";
  static std::string subject(const ClusteredConfig&) { return "clustered attention"; }
  static Capabilities capabilities(const ClusteredConfig&) {
    Capabilities caps;
    caps.seeded = true;
    return caps;
  }
  static void check(const ClusteredConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace) {
    return clustered_forward(pr, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("clustered", ClusteredConfig{}, "ClusteredConfig{}", {"clustered:F"},
                 "clustered attention: Hamming k-means of query LSH codes, one attention row per centroid"),
            form("improved", ClusteredConfig{.topk = 32}, "ClusteredConfig{.topk = 32}", {"iclustered:F[:K]"},
                 "improved clustered attention: plus exact attention to each cluster's top keys")};
  }
};

}  // namespace smyrf::detail
