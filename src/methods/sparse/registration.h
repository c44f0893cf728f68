#pragma once

#include "methods/method.h"
#include "methods/sparse/sparse.h"
#include "methods/train/train.h"

namespace smyrf::detail {

template <>
struct Method<SparseConfig> {
  static constexpr const char* kName = "sparse";
  static std::string subject(const SparseConfig&) { return "sparse attention"; }
  static Capabilities capabilities(const SparseConfig& c) {
    Capabilities caps;
    caps.causal = caps.dropout = caps.causal_dropout = caps.backward = caps.causal_backward = caps.f64 = true;
    caps.key_bias = true;
    caps.seeded = c.pattern == SparsePattern::bigbird;
    return caps;
  }
  static void check(const SparseConfig& config, const Problem& pr);
  // Dropout: the forward, then O rebuilt from its lse with the dropped weights.
  static RunInfo forward(const Problem& pr, const SparseConfig& config, Workspace* workspace);
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const SparseConfig& config,
                          Workspace* workspace);
  // The (part, key) pairs of every query: the double-precision definition's key sets.
  static KeyPairs key_pairs(const Problem& pr, const SparseConfig& config);
  static std::vector<MethodInfo> forms() {
    auto pattern = [](const char* name, SparsePattern p, const char* spelled, const char* spec,
                      const char* summary) {
      return form(name, SparseConfig{.pattern = p}, std::string("SparseConfig{.pattern = SparsePattern::") + spelled + "}",
                  {spec}, summary);
    };
    return {pattern("local", SparsePattern::local, "local", "local:F", "sliding window"),
            pattern("dilated", SparsePattern::dilated, "dilated", "dilated:F[:R]", "dilated sliding window"),
            pattern("strided", SparsePattern::strided, "strided", "strided:F", "Sparse Transformer strided"),
            pattern("fixed", SparsePattern::fixed, "fixed", "fixed:F", "Sparse Transformer fixed"),
            pattern("longformer", SparsePattern::longformer, "longformer", "longformer:F[:G]",
                    "Longformer: window + global tokens"),
            pattern("bigbird", SparsePattern::bigbird, "bigbird", "bigbird:F",
                    "BigBird: window + global + random blocks"),
            pattern("axial_rows", SparsePattern::axial_rows, "axial_rows", "axial-rows:F", "axial attention, rows"),
            pattern("axial_columns", SparsePattern::axial_columns, "axial_columns", "axial-cols:F",
                    "axial attention, columns"),
            pattern("criss_cross", SparsePattern::criss_cross, "criss_cross", "criss-cross:F",
                    "criss-cross: row and column")};
  }
};

}  // namespace smyrf::detail
