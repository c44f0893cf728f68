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
    caps.causal = caps.seeded = true;
    caps.cross_lengths = !c.shared_qk;
    return caps;
  }
  static void check(const ReformerConfig& config, const Problem& pr);
  // With shared_qk the keys are Q rows: those are scanned as keys.
  static void check_finite(const Problem& pr, const ReformerConfig& config);
  static RunInfo forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace) {
    return reformer_forward(pr, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("reformer", ReformerConfig{}, "ReformerConfig{}", {"reformer:H:F"},
                 "Reformer LSH: random rotations, argmax buckets, sorted chunks attend to themselves and the previous one")};
  }
};

}  // namespace smyrf::detail
