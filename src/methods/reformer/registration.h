#pragma once

#include "methods/method.h"
#include "methods/reformer/reformer.h"

namespace smyrf::detail {

template <>
struct Method<ReformerConfig> {
  static constexpr const char* kName = "reformer";
  static std::string subject(const ReformerConfig&) { return "reformer attention"; }
  static Capabilities capabilities(const ReformerConfig& c) {
    Capabilities caps;
    caps.causal = caps.seeded = caps.key_bias = true;
    caps.dropout = caps.causal_dropout = caps.backward = caps.causal_backward = caps.f64 = true;
    caps.cross_lengths = !c.shared_qk;
    return caps;
  }
  static void check(const ReformerConfig& config, const Problem& pr);
  // With shared_qk the keys are Q rows: those are scanned as keys.
  static void check_finite(const Problem& pr, const ReformerConfig& config);
  // Dropout: the forward, then O rebuilt from its lse with the dropped weights.
  static RunInfo forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace);
  // Buckets and chunks are constants of the gradient; with shared_qk the keys' gradient is
  // chained through k_j = q_j / |q_j| into dQ (dK is zero: K is not read).
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const ReformerConfig& config,
                          Workspace* workspace);
  static KeyPairs key_pairs(const Problem& pr, const ReformerConfig& config);
  // With shared_qk the definition's keys are the normalised queries.
  static bool keys_are_normalised_queries(const ReformerConfig& config) { return config.shared_qk; }
  static std::vector<MethodInfo> forms() {
    return {form("reformer", ReformerConfig{}, "ReformerConfig{}", {"reformer:H:F"},
                 "Reformer LSH: random rotations, argmax buckets, sorted chunks attend to themselves and the previous one")};
  }
};

}  // namespace smyrf::detail
