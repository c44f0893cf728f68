// Time of phases that interleave inside parallel tasks (SMYRF's gather / attention / merge run
// cluster after cluster): each thread counts ticks per phase, and the wall time of the whole
// parallel section is split in proportion. A tick is a TSC cycle on x86 (about 10 ns to read,
// so the counting costs ~1% at 32-token clusters) and a nanosecond elsewhere.
//
// Bytes moved are an estimate from the shapes: every row a phase reads or writes, counted once
// per pass (cache reuse inside a tile is not counted).
#pragma once

#include <chrono>
#include <cstdint>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "smyrf/smyrf.h"

namespace smyrf::detail {

inline std::uint64_t ticks() {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
#endif
}

// One thread's counters, alone on a cache line.
struct alignas(64) PhaseTicks {
  std::uint64_t gather = 0, attention = 0, merge = 0;
};

// Adds `wall_seconds` to the three phases of `info` in proportion to the summed ticks.
inline void split_wall_time(const PhaseTicks* per_thread, int threads, double wall_seconds,
                            RunInfo& info) {
  double g = 0, a = 0, m = 0;
  for (int t = 0; t < threads; ++t) {
    g += static_cast<double>(per_thread[t].gather);
    a += static_cast<double>(per_thread[t].attention);
    m += static_cast<double>(per_thread[t].merge);
  }
  const double sum = g + a + m;
  if (sum <= 0) return;
  info.gather.seconds += wall_seconds * g / sum;
  info.attention.seconds += wall_seconds * a / sum;
  info.merge.seconds += wall_seconds * m / sum;
}

}  // namespace smyrf::detail
