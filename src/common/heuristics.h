// Shape heuristics and padding, in one place.
#pragma once

#include <cstddef>

namespace smyrf::detail {

// Packed buffers are padded to 16 floats (64 bytes): a whole vector on every x86 target and
// a whole cache line, so kernels use aligned full-vector loads only.
constexpr std::size_t kPadFloats = 16;
inline std::size_t pad_floats(std::size_t n) { return (n + kPadFloats - 1) / kPadFloats * kPadFloats; }

// Dense tiles: kDenseQueryTile query rows against kDenseKeyTile keys at a time. The query tile
// is a multiple of the AVX-512 register block (6 rows). Measured at N = 4096, d = 64 on Zen 5:
// query tiles of 48..144 and key tiles of 64..512 are within 10% of each other; 256-key tiles
// were the fastest (fewer online-softmax rescales per row), so the score tile is 48 KiB.
constexpr std::size_t kDenseQueryTile = 48;
constexpr std::size_t kDenseKeyTile = 256;

}  // namespace smyrf::detail
