#pragma once

#include "methods/linear/linear.h"
#include "methods/linear/linear_train.h"
#include "methods/method.h"

namespace smyrf::detail {

template <>
struct Method<LinearConfig> {
  static constexpr const char* kName = "linear";
  static std::string subject(const LinearConfig&) { return "linear attention"; }
  static std::string causal_subject(const LinearConfig& c) {
    return std::string("linear attention with FeatureMap::") + feature_map_name(c.map);
  }
  static Capabilities capabilities(const LinearConfig& c) {
    Capabilities caps;
    caps.causal = c.map != FeatureMap::efficient;
    caps.seeded = c.map == FeatureMap::favor_plus || c.map == FeatureMap::favor || c.map == FeatureMap::rfa;
    caps.learned = c.map == FeatureMap::rfa;  // the gates
    caps.backward = caps.f64 = true;
    caps.causal_backward = caps.causal && caps.backward;
    return caps;
  }
  static void check(const LinearConfig& config, const Problem& pr);
  static RunInfo forward(const Problem& pr, const LinearConfig& config, Workspace* workspace) {
    return linear_forward(pr, config, workspace);
  }
  static RunInfo backward(const Problem& pr, const GradientParams& grads, const LinearConfig& config,
                          Workspace* workspace) {
    return linear_backward(pr, grads, config, workspace);
  }
  // The double-precision definition is not a softmax over key sets: its own forward and backward
  // (o and lse are not read: O is recomputed).
  static void forward_f64(const Problem& pr, const LinearConfig& config, const DoubleTensors& in, double* o,
                          double* lse) {
    linear_forward_f64(pr, in, config, o, lse);
  }
  static void backward_f64(const Problem& pr, const LinearConfig& config, const DoubleTensors& in, const double*,
                           const double*, const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
    linear_backward_f64(pr, in, config, grad_o, grad_q, grad_k, grad_v);
  }
  static std::vector<MethodInfo> forms() {
    auto map = [](FeatureMap m, const char* spec, const char* summary) {
      return form(feature_map_name(m), LinearConfig{.map = m},
                  std::string("LinearConfig{.map = FeatureMap::") + feature_map_name(m) + "}", {spec}, summary);
    };
    return {map(FeatureMap::elu, "linear", "linear attention, elu + 1 features"),
            map(FeatureMap::favor_plus, "performer:F", "Performer FAVOR+: positive orthogonal random features"),
            map(FeatureMap::favor, "favor:F", "the original trigonometric FAVOR features"),
            map(FeatureMap::rfa, "rfa:F", "Random Feature Attention (optional gates, causal)"),
            map(FeatureMap::dpfp, "dpfp[:NU]", "DPFP deterministic parameter-free projection"),
            map(FeatureMap::efficient, "efficient", "Efficient Attention: softmax over features times softmax over positions"),
            map(FeatureMap::l2, "l2", "l2-normalised linear attention")};
  }
};

}  // namespace smyrf::detail
