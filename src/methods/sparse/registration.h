#pragma once

#include "methods/method.h"
#include "methods/sparse/sparse.h"

namespace smyrf::detail {

template <>
struct Method<SparseConfig> {
  static constexpr const char* kName = "sparse";
  static std::string subject(const SparseConfig&) { return "sparse attention"; }
  static Capabilities capabilities(const SparseConfig& c) {
    Capabilities caps;
    caps.causal = true;
    caps.seeded = c.pattern == SparsePattern::bigbird;
    return caps;
  }
  static void check(const SparseConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const SparseConfig& config, Workspace* workspace) {
    return sparse_forward(pr, config, workspace);
  }
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
