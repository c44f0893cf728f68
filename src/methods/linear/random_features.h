// The random directions of the FAVOR+, FAVOR and RFA feature maps (LinearConfig; their
// definition, W, is the public contract in smyrf/methods/linear.h). The fast path (linear.cpp)
// and the double oracle (reference/linear_reference.cpp) both call this function, so both use
// the same directions bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/rng.h"

namespace smyrf::detail {

// Streams of common/rng.h (tag "LINE"): the Gaussian entries of head h come from stream
// kLinearFeatureStream + 2 h, the chi(d) row norms of the orthogonal draw from + 2 h + 1.
constexpr std::uint64_t kLinearFeatureStream = 0x4C494E4500000000ull;

// W [rows, d] (row-major, double): the directions w_r of head `head` as smyrf/methods/linear.h
// defines them ("The random directions W"), drawn from the two streams above.
inline std::vector<double> linear_random_features(std::uint64_t seed, std::int64_t head,
                                                  std::int64_t rows, std::int64_t d,
                                                  bool orthogonal) {
  const std::uint64_t stream = kLinearFeatureStream + 2 * static_cast<std::uint64_t>(head);
  std::vector<double> w(static_cast<std::size_t>(rows * d), 0.0);
  auto g = [&](std::int64_t c) {
    return standard_normal(seed, stream, static_cast<std::uint64_t>(c));
  };
  if (!orthogonal) {
    for (std::int64_t c = 0; c < rows * d; ++c) w[static_cast<std::size_t>(c)] = g(c);
    return w;
  }
  std::vector<double> u(static_cast<std::size_t>(d * d));
  for (std::int64_t k = 0; k * d < rows; ++k) {
    for (std::int64_t i = 0; i < d; ++i) {
      double* v = u.data() + i * d;
      for (std::int64_t t = 0; t < d; ++t) v[t] = g((k * d + i) * d + t);
      for (std::int64_t l = 0; l < i; ++l) {
        const double* ul = u.data() + l * d;
        double dot = 0.0;
        for (std::int64_t t = 0; t < d; ++t) dot += v[t] * ul[t];
        for (std::int64_t t = 0; t < d; ++t) v[t] -= dot * ul[t];
      }
      double n2 = 0.0;
      for (std::int64_t t = 0; t < d; ++t) n2 += v[t] * v[t];
      const double inv = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
      for (std::int64_t t = 0; t < d; ++t) v[t] *= inv;
    }
    for (std::int64_t i = 0; i < d && k * d + i < rows; ++i) {
      const std::int64_t r = k * d + i;
      double n2 = 0.0;
      for (std::int64_t t = 0; t < d; ++t) {
        const double x = standard_normal(seed, stream + 1, static_cast<std::uint64_t>(r * d + t));
        n2 += x * x;
      }
      const double norm = std::sqrt(n2);
      for (std::int64_t t = 0; t < d; ++t)
        w[static_cast<std::size_t>(r * d + t)] = u[static_cast<std::size_t>(i * d + t)] * norm;
    }
  }
  return w;
}

}  // namespace smyrf::detail
