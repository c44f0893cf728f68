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
    caps.dropout = caps.backward = caps.f64 = true;
    if (c.keys == KeySelection::centroid) return caps;
    caps.causal = caps.seeded = caps.key_bias = true;
    caps.causal_backward = caps.causal_dropout = true;
    return caps;
  }
  static void check(const SmyrfConfig& config, const Problem& pr);
  // Dropout: the forward, then O rebuilt from its lse with the dropped weights.
  static RunInfo forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace);
  // Hashes and clusters (centroid: the selected keys) are constants of the gradient. Causal and
  // centroid: on the group engine (causal: with the causal cut and the fallback windows).
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const SmyrfConfig& config,
                          Workspace* workspace);
  // KeySelection::centroid: the (0, key) pairs of every query, the double-precision
  // definition's key sets (lsh's come from its clusters at the edge).
  static KeyPairs centroid_key_pairs(const Problem& pr, const SmyrfConfig& config);
  static std::vector<MethodInfo> forms() {
    return {form("lsh", SmyrfConfig{}, "SmyrfConfig{}", {"smyrf:H:F", "smyrf:HxC"},
                 "SMYRF: asymmetric LSH, balanced clusters, rounds merged by logsumexp"),
            form("centroid", SmyrfConfig{.n_hashes = 1, .keys = KeySelection::centroid},
                 "SmyrfConfig{.n_hashes = 1, .keys = KeySelection::centroid}", {"smyrf-c:F[:Q]"},
                 "SMYRF's centroid key selection: each query cluster attends to its mean query's top keys")};
  }
};

}  // namespace smyrf::detail
