#pragma once

#include "methods/compressed/compressed.h"
#include "methods/method.h"

namespace smyrf::detail {

template <>
struct Method<CompressedConfig> {
  static constexpr const char* kName = "compressed";
  static std::string subject(const CompressedConfig&) { return "compressed attention"; }
  static std::string causal_subject(const CompressedConfig& c) {
    return std::string("compressed attention (") + compression_name(c.kind) + ")";
  }
  static Capabilities capabilities(const CompressedConfig& c) {
    Capabilities caps;
    // Causal with given memory tokens only: segment means would mix future positions.
    caps.causal = c.kind == Compression::global_memory && c.memory_k != nullptr;
    caps.seeded = c.kind == Compression::linformer;
    caps.learned = c.kind == Compression::linformer || c.kind == Compression::induced_points ||
                   c.kind == Compression::global_memory;
    caps.backward = caps.f64 = true;
    caps.causal_backward = caps.causal;
    return caps;
  }
  static void check(const CompressedConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const CompressedConfig& config, Workspace* workspace) {
    return compressed_forward(pr, config, workspace);
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const CompressedConfig& config,
                          Workspace* workspace) {
    return compressed_backward(pr, grads, config, workspace);
  }
  // The double-precision definition is not a softmax over key sets of the inputs: its own
  // forward and backward.
  static void forward_f64(const Problem& pr, const CompressedConfig& config, const DoubleTensors& in, double* o,
                          double* lse) {
    compressed_forward_f64(pr, in, config, o, lse);
  }
  static void backward_f64(const Problem& pr, const CompressedConfig& config, const DoubleTensors& in,
                           const double*, const double*, const double* grad_o, double* grad_q, double* grad_k,
                           double* grad_v) {
    compressed_backward_f64(pr, in, config, grad_o, grad_q, grad_k, grad_v);
  }
  static std::vector<MethodInfo> forms() {
    auto kind = [](Compression k, const char* spec, const char* summary) {
      return form(compression_name(k), CompressedConfig{.kind = k},
                  std::string("CompressedConfig{.kind = Compression::") + compression_name(k) + "}", {spec},
                  summary);
    };
    return {kind(Compression::linformer, "linformer:F", "Linformer: K' = E K, V' = F V"),
            kind(Compression::nystrom, "nystrom:F", "Nystromformer: segment-mean landmarks, iterative pseudo-inverse"),
            kind(Compression::memory_compressed, "mca:F", "memory-compressed attention: strided mean pooling of K, V"),
            kind(Compression::induced_points, "isab:F", "Set Transformer induced points"),
            kind(Compression::star, "star:F", "Star-Transformer: window + relay token"),
            kind(Compression::global_memory, "gmat:F",
                 "global memory tokens (GMAT / ETC): window + memory; causal with given memory")};
  }
};

}  // namespace smyrf::detail
