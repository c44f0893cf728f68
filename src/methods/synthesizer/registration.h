#pragma once

#include "methods/method.h"
#include "methods/synthesizer/synthesizer.h"

namespace smyrf::detail {

template <>
struct Method<SynthesizerConfig> {
  static constexpr const char* kName = "synthesizer";
  static std::string subject(const SynthesizerConfig&) { return "synthesizer attention"; }
  static Capabilities capabilities(const SynthesizerConfig&) {
    Capabilities caps;
    caps.causal = caps.learned = caps.seeded = true;
    return caps;
  }
  static std::string no_backward(const SynthesizerConfig&) {
    return "not implemented yet: the gradient through the synthesised weights and of W1, b1, W2, b2, R";
  }
  static void check(const SynthesizerConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const SynthesizerConfig& config, Workspace* workspace) {
    return synthesizer_forward(pr, config, workspace);
  }
  static std::vector<MethodInfo> forms() {
    return {form("dense", SynthesizerConfig{.kind = SynthesizerKind::dense},
                 "SynthesizerConfig{.kind = SynthesizerKind::dense}", {"synthesizer-dense"},
                 "Synthesizer: weights from a two-layer net of the query"),
            form("random", SynthesizerConfig{.kind = SynthesizerKind::random},
                 "SynthesizerConfig{.kind = SynthesizerKind::random}", {"synthesizer-random"},
                 "Synthesizer: a free weight matrix")};
  }
};

}  // namespace smyrf::detail
