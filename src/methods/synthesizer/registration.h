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
    caps.dropout = caps.backward = caps.causal_backward = caps.f64 = true;
    return caps;
  }
  static void check(const SynthesizerConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const SynthesizerConfig& config, Workspace* workspace) {
    return synthesizer_forward(pr, config, workspace);
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const SynthesizerConfig& config,
                          Workspace* workspace) {
    return synthesizer_backward(pr, grads, config, workspace);
  }
  // The double-precision definition is not a softmax over key sets of the inputs: its own
  // forward and backward.
  static void forward_f64(const Problem& pr, const SynthesizerConfig& config, const DoubleTensors& in, double* o,
                          double* lse) {
    synthesizer_forward_f64(pr, in, config, o, lse);
  }
  static void backward_f64(const Problem& pr, const SynthesizerConfig& config, const DoubleTensors& in,
                           const double*, const double*, const double* grad_o, double* grad_q, double* grad_k,
                           double* grad_v) {
    synthesizer_backward_f64(pr, in, config, grad_o, grad_q, grad_k, grad_v);
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
