#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "peak.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cstddef>
#include <cstdint>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf::cli {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// 16 independent accumulators: FMA latency (4 cycles) x 2 pipes needs at least 8 in flight.
// Returns a value that depends on every FMA so none is optimised away; *flops gets the count.
float FmaChains(std::uint64_t iterations, double* flops) {
  const hn::ScalableTag<float> df;
  constexpr int kChains = 16;
  using V = hn::Vec<decltype(df)>;
  V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = hn::Set(df, 1.0f + 1e-3f * static_cast<float>(i));
  const V a = hn::Set(df, 0.999999f), b = hn::Set(df, 1e-7f);
  for (std::uint64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = hn::MulAdd(acc[i], a, b);
  }
  V sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = hn::Add(sum, acc[i]);
  *flops = 2.0 * kChains * static_cast<double>(hn::Lanes(df)) * static_cast<double>(iterations);
  return hn::GetLane(hn::SumOfLanes(df, sum));
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf::cli
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <chrono>

#include "peak.h"
#include "smyrf/smyrf.h"

namespace smyrf::cli {
HWY_EXPORT(FmaChains);

Peak measure_fma_peak(int threads, double seconds) {
  if (threads <= 0) threads = omp_get_max_threads();
  // Calibrate one thread's iteration count to about `seconds`.
  std::uint64_t iterations = 1 << 16;
  double flops = 0;
  volatile float sink = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + HWY_DYNAMIC_DISPATCH(FmaChains)(iterations, &flops);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > seconds / 4) {
      iterations = static_cast<std::uint64_t>(static_cast<double>(iterations) * seconds / s);
      break;
    }
    iterations *= 4;
  }
  // Best of three runs of all threads at once.
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double total_flops = 0, checksum = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total_flops, checksum)
    {
      double f = 0;
      checksum += HWY_DYNAMIC_DISPATCH(FmaChains)(iterations, &f);
      total_flops += f;
    }
    sink = sink + static_cast<float>(checksum);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, total_flops / s / 1e9);
  }
  static const std::string target = simd_target();
  return {best, threads, target.c_str()};
}

}  // namespace smyrf::cli
#endif  // HWY_ONCE
