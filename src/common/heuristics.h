// Shape heuristics and padding, in one place.
#pragma once

#include <cstddef>

namespace smyrf::detail {

// Packed buffers are padded to 16 floats (64 bytes): a whole vector on every x86 target and
// a whole cache line, so kernels use aligned full-vector loads only.
constexpr std::size_t kPadFloats = 16;
inline std::size_t pad_floats(std::size_t n) { return (n + kPadFloats - 1) / kPadFloats * kPadFloats; }

// Dense tiles: kDenseQueryTile query rows against kDenseKeyTile keys at a time. The query tile
// is a multiple of the AVX-512 register block (6 rows); the key tile keeps the score tile
// (48 x 128 floats = 24 KiB) and one packed K^T tile within L1 + L2.
constexpr std::size_t kDenseQueryTile = 48;
constexpr std::size_t kDenseKeyTile = 128;

}  // namespace smyrf::detail
