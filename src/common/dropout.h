// Dropout masks on attention weights: a pure function of (seed, b, h, round, i, j), so the
// forward and the backward call draw the same mask whatever the thread count or the order in
// which tiles are visited.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/rng.h"

namespace smyrf::detail {

class Dropout {
 public:
  // p in [0, 1). A weight is dropped when 32 random bits fall below p * 2^32.
  Dropout(float p, std::uint64_t seed)
      : threshold_(static_cast<std::uint32_t>(std::min(std::ldexp(static_cast<double>(p), 32), 4294967295.0))),
        scale_(p > 0.0f ? static_cast<float>(1.0 / (1.0 - static_cast<double>(p))) : 1.0f),
        seed_(mix64(seed ^ 0xD209A1E5C0FFEE11ull)),
        active_(p > 0.0f) {}

  bool active() const { return active_; }
  // 1 / (1 - p): the factor of a kept weight.
  float scale() const { return scale_; }

  // The random stream of one query row (one mix of its coordinates), then one mix per key.
  std::uint64_t row(std::int64_t b, std::int64_t h, int round, std::int64_t i) const {
    const std::uint64_t bh = (static_cast<std::uint64_t>(b) << 32) ^ static_cast<std::uint64_t>(h);
    const std::uint64_t ri = (static_cast<std::uint64_t>(round) << 40) ^ static_cast<std::uint64_t>(i);
    return mix64(mix64(seed_ ^ bh) ^ ri);
  }
  bool keep(std::uint64_t row_stream, std::int64_t j) const {
    return static_cast<std::uint32_t>(mix64(row_stream + static_cast<std::uint64_t>(j)) >> 32) >= threshold_;
  }
  // The factor weight (row, j) is multiplied by: 0 or 1 / (1 - p).
  float factor(std::uint64_t row_stream, std::int64_t j) const {
    return keep(row_stream, j) ? scale_ : 0.0f;
  }

 private:
  std::uint32_t threshold_;
  float scale_;
  std::uint64_t seed_;
  bool active_;
};

}  // namespace smyrf::detail
