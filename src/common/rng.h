// Counter-based random numbers: every value is a pure function of (seed, stream, counter), so
// draws are reproducible whatever the thread count or the order of evaluation.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace smyrf::detail {

// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline std::uint64_t random_bits(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  return mix64(mix64(mix64(seed) ^ stream) ^ counter);
}

// Uniform in (0, 1): 53 random bits, never exactly 0 or 1.
inline double uniform_open01(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  return (static_cast<double>(random_bits(seed, stream, counter) >> 11) + 0.5) * 0x1.0p-53;
}

// Standard normal by Box-Muller on two independent uniforms.
inline double standard_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  const double u1 = uniform_open01(seed, stream, 2 * counter);
  const double u2 = uniform_open01(seed, stream, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace smyrf::detail
