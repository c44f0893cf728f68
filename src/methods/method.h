// The shape of a method. Each method folder specialises Method<its config> once, in its own
// header, with:
//
//   static constexpr const char* kName;          // method_name(), "linear"
//   static std::string subject(const Config&);   // how errors name it: "linear attention"
//   static Capabilities capabilities(const Config&);
//   static void check(const Config&, const Problem&);  // the config's own checks (throw via fail)
//   static RunInfo forward(const Problem&, const Config&, Workspace*);
//   static std::vector<MethodInfo> forms();       // its forms for smyrf::methods()
// and, where the method has them:
//   static RunInfo backward(const Problem&, const GradientParams&, const Config&, Workspace*);
//   static std::string causal_subject(const Config&);  // when the causal refusal names more
//   static std::string no_backward(const Config&);     // why a form has no backward (listed by
//                                                       // `smyrf methods`; a default otherwise)
//   static void check_finite(const Problem&, const Config&);  // the scan of the rows it reads
//   static KeyPairs key_pairs(const Problem&, const Config&);  // the double definition's key sets
//   static std::vector<std::uint8_t> uniform_queries(const Problem&, const Config&);  // with
//       key_pairs: queries whose logits are the constant 0 (no Q or K gradient, no dropout)
//   static void forward_f64(...), backward_f64(...);  // a double definition that is not
//       attention over key sets (see src/api/attention.cpp)
//   inspection hooks (named per method, called through api/inspect.h).
//
// The Problem a method gets was checked at the edge (src/api/): every size, stride, pointer and
// flag is valid, the config's checks have run, and what the capabilities refuse was refused.
// Methods never include src/api/.
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "common/problem.h"
#include "smyrf/registry.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

template <class Config>
struct Method;

// A form of a method for smyrf::methods(): fills the fields from a config of the form.
template <class Config>
MethodInfo form(std::string form_name, const Config& config, std::string spelled,
                std::vector<std::string> specs, std::string summary) {
  MethodInfo m;
  m.name = Method<Config>::kName;
  m.form = std::move(form_name);
  m.config = std::move(spelled);
  m.specs = std::move(specs);
  m.summary = std::move(summary);
  m.caps = Method<Config>::capabilities(config);
  m.example = config;
  if (!m.caps.backward) {
    if constexpr (requires { Method<Config>::no_backward(config); })
      m.no_backward = Method<Config>::no_backward(config);
    else
      m.no_backward = "not implemented yet (the forward is; its gradient is not)";
  }
  return m;
}

}  // namespace smyrf::detail
