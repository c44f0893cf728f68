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
    caps.seeded = caps.dropout = caps.backward = caps.f64 = true;
    return caps;
  }
  static void check(const ClusteredConfig& config, const Problem& pr);
  // Dropout: the forward, then the members' rows rebuilt with the dropped weights.
  static RunInfo forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace) {
    RunInfo info = clustered_forward(pr, config, workspace);
    if (pr.p->dropout > 0.0f) clustered_dropout_forward(pr, config, workspace);
    return info;
  }
  // Clusters and T_c are constants of the gradient; the centroid is the members' mean, so its
  // gradient flows to their queries.
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const ClusteredConfig& config,
                          Workspace* workspace) {
    return clustered_backward(pr, grads, config, workspace);
  }
  // The double-precision definition is not attention over key sets (members share their
  // centroid's row): its own forward and backward on contiguous doubles.
  static void forward_f64(const Problem& pr, const ClusteredConfig& config, const DoubleTensors& in, double* o,
                          double* lse) {
    clustered_forward_f64(pr, config, in, o, lse);
  }
  static void backward_f64(const Problem& pr, const ClusteredConfig& config, const DoubleTensors& in,
                           const double* o, const double* lse, const double* grad_o, double* grad_q,
                           double* grad_k, double* grad_v) {
    clustered_backward_f64(pr, config, in, o, lse, grad_o, grad_q, grad_k, grad_v);
  }
  static std::vector<MethodInfo> forms() {
    return {form("clustered", ClusteredConfig{}, "ClusteredConfig{}", {"clustered:F"},
                 "clustered attention: Hamming k-means of query LSH codes, one attention row per centroid"),
            form("improved", ClusteredConfig{.topk = 32}, "ClusteredConfig{.topk = 32}", {"iclustered:F[:K]"},
                 "improved clustered attention: plus exact attention to each cluster's top keys")};
  }
};

}  // namespace smyrf::detail
