// What each method can do, read from the methods' registrations (the same table the library
// dispatches and refuses by, so it cannot drift from the behaviour):
//
//     for (const smyrf::MethodInfo& m : smyrf::methods())
//       std::printf("%s %s backward=%d\n", m.name.c_str(), m.form.c_str(), m.caps.backward);
//     smyrf::capabilities(smyrf::LinearConfig{.map = smyrf::FeatureMap::efficient}).causal;  // false
//
// `smyrf methods` prints the same table (--json: one object per form).
#pragma once

#include <string>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf {

// What a method config supports. A call asking for something its config does not support throws
// smyrf::Error naming the parameter (params.causal, params.dropout, ...).
struct Capabilities {
  bool causal = false;           // params.causal in attention()
  bool dropout = false;          // params.dropout > 0
  bool causal_dropout = false;   // both at once
  bool backward = false;         // attention_backward
  bool causal_backward = false;  // attention_backward with params.causal
  bool f64 = false;              // attention_f64 / attention_backward_f64 (double-precision definition)
  bool bf16 = true;              // DType::bf16 inputs (forward)
  bool masks = true;             // key_mask and query_mask
  bool cross_lengths = true;     // nq != nk
  bool broadcast = true;         // stride-0 (broadcast) Q, K, V in the forward (e.g. one K/V head for all heads)
  bool learned = false;          // learned parts taken as config inputs (seeded defaults when absent)
  bool key_bias = false;         // params.key_bias (an additive per-key bias: ALiBi, position biases)
  bool seeded = false;           // the output depends on params.seed
};

// The capabilities of one config (they can depend on its fields: SmyrfConfig::keys,
// LinearConfig::map, CompressedConfig::kind and its memory tokens, ...).
Capabilities capabilities(const MethodConfig& config);

// One form of a method: a config kind with its capabilities.
struct MethodInfo {
  std::string name;                // method_name(): "linear"
  std::string form;                // "favor_plus"; equal to name for a method with one form
  std::string config;              // how to ask for it: "LinearConfig{.map = FeatureMap::favor_plus}"
  std::vector<std::string> specs;  // the variant specs of `smyrf bench` / `smyrf eval`: "performer:F"
  std::string summary;             // one line
  Capabilities caps;
  MethodConfig example;            // a config of this form (the defaults)
  std::string no_backward;         // why the form has no backward pass; empty when it has one
};

// Every registered method form, in registration order.
const std::vector<MethodInfo>& methods();

}  // namespace smyrf
