// Deterministic threading: work is cut into independent tasks that write disjoint outputs, so
// results never depend on which thread ran what or in which order.
#pragma once

#include <omp.h>

#include <cstdint>

namespace smyrf::detail {

inline int resolve_threads(int requested) {
  return requested > 0 ? requested : omp_get_max_threads();
}

// Runs fn(task) for task in [0, n) on `threads` threads with dynamic scheduling.
template <class Fn>
void parallel_for(std::int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    for (std::int64_t t = 0; t < n; ++t) fn(t);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::int64_t t = 0; t < n; ++t) fn(t);
}

// Same, with the calling thread's index (for per-thread scratch).
template <class Fn>
void parallel_for_tid(std::int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    for (std::int64_t t = 0; t < n; ++t) fn(t, 0);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::int64_t t = 0; t < n; ++t) fn(t, omp_get_thread_num());
}

}  // namespace smyrf::detail
