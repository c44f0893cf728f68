// `smyrf run`: one method on one generated problem, for profiling and quick checks.
#pragma once

#include <cstdint>
#include <string>

#include "inputs.h"
#include "smyrf/smyrf.h"

namespace smyrf::cli {

struct RunOptions {
  std::string method = "smyrf";
  InputSpec spec;  // spec.kind: gaussian | clustered
  std::int64_t n = 4096;
  std::int64_t nk = 0;  // 0: = n
  std::int64_t d = 64;
  std::int64_t dv = 0;  // 0: = d
  std::int64_t batch = 1, heads = 1;
  SmyrfConfig smyrf;
  std::string transform = "xbox_plus";
  int repeats = 1;
  int threads = 0;
  std::uint64_t seed = 1;
  std::int64_t reference_max_n = 4096;
  bool error = true;  // compare with the exact result after the timed calls
};

// Prints the RunInfo of the last call, the wall times and the error. Returns the exit code.
int run_one(const RunOptions& options);

}  // namespace smyrf::cli
