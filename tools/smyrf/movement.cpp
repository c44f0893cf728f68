#include "movement.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace smyrf::cli {
namespace {

// XOR of the bits of x[0, n): integer XOR is associative, so the compiler vectorises it and the
// loop runs at memory speed; the result depends on every word, so nothing is skipped.
std::uint32_t xor_words(const float* x, std::int64_t n) {
  std::uint32_t acc = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t w;
    std::memcpy(&w, x + i, sizeof w);
    acc ^= w;
  }
  return acc;
}

template <class Fn>
double best_seconds(int passes, Fn&& fn) {
  double best = std::numeric_limits<double>::infinity();
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

volatile std::uint32_t g_sink;  // keeps the reads alive

}  // namespace

MovementBound smyrf_movement_bound(const float* q, const float* k, const float* v, std::int64_t n,
                                   std::int64_t d, int rounds, int threads) {
  const double bytes = 3.0 * static_cast<double>(n) * static_cast<double>(d) * sizeof(float);
  const float* arrays[3] = {q, k, v};
  const std::int64_t words = n * d;

  const double t_stream = best_seconds(3, [&] {
    std::uint32_t acc = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(^ : acc)
    for (std::int64_t chunk = 0; chunk < 3 * 64; ++chunk) {
      const std::int64_t a = chunk / 64, part = chunk % 64;
      const std::int64_t begin = words * part / 64, end = words * (part + 1) / 64;
      acc ^= xor_words(arrays[a] + begin, end - begin);
    }
    g_sink = acc;
  });

  // A random order of positions, as a round's hash order is for unrelated q and k.
  std::vector<std::int32_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(11));
  const double t_random = best_seconds(2, [&] {
    std::uint32_t acc = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(^ : acc)
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t row = order[static_cast<std::size_t>(i)];
      for (const float* a : arrays) acc ^= xor_words(a + row * d, d);
    }
    g_sink = acc;
  });

  MovementBound b;
  b.stream_gbs = bytes / t_stream / 1e9;
  b.random_rows_gbs = bytes / t_random / 1e9;
  b.seconds = rounds * std::min(t_random, 2.0 * t_stream);
  return b;
}

}  // namespace smyrf::cli
