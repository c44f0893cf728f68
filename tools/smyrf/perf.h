// `smyrf perf`: the performance targets of the project, each measured as a ratio in one run
// (against the machine's measured FMA peak, another method, or another thread count), so a
// shared, noisy machine shifts numerator and denominator alike.
#pragma once

#include <string>

namespace smyrf::cli {

struct PerfOptions {
  int repeats = 5;
  std::int64_t large_n = 1 << 20;  // the N log N and memory targets
  std::string json = "out/perf.json";
  bool quiet = false;
};

int run_perf(const PerfOptions& options, const char* self_exe);

// Hidden subcommand run in a child process: allocates the tensors of an N-token problem, runs
// SMYRF once, prints "tensor_bytes max_rss_bytes" (the process's peak resident memory).
int run_rss_probe(std::int64_t n);

}  // namespace smyrf::cli
