// The one way the library reports bad input: smyrf::Error with the text
//   "smyrf: <parameter> = <value>: <why>"
// naming the parameter (params.nq, LinearConfig.n_features, grads.grad_q, ...) and its value.
#pragma once

#include <cstdint>
#include <string>

#include "smyrf/smyrf.h"

namespace smyrf::detail {

[[noreturn]] void fail(const std::string& parameter, const std::string& value, const std::string& why);

// The errors of one config struct: fail("n_features", "0", "must be >= 1") throws
// "smyrf: LinearConfig.n_features = 0: must be >= 1".
struct ConfigFail {
  const char* config;  // "LinearConfig"
  [[noreturn]] void operator()(const std::string& field, const std::string& value,
                               const std::string& why) const {
    detail::fail(std::string(config) + "." + field, value, why);
  }
};

// Values as the messages print them.
std::string str(std::int64_t v);
std::string str(double v);
std::string ptr_str(const void* p);

// fail(name, v, "must be >= lo") unless v >= lo.
inline void at_least(const char* name, int v, int lo) {
  if (v < lo) fail(name, str(std::int64_t{v}), "must be >= " + str(std::int64_t{lo}));
}

// Runs fn; std::bad_alloc (a vector or buffer the sizes ask for that the machine cannot give)
// becomes smyrf::Error naming `what` ("dense attention", "the backward of smyrf attention").
template <class Fn>
decltype(auto) out_of_memory_is_an_error(const std::string& what, Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    throw Error("smyrf: out of memory: " + what + " could not allocate what these sizes need " +
                "(output values unspecified)");
  }
}

}  // namespace smyrf::detail
