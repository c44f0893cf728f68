// Stable LSD radix sort of (32-bit key, 32-bit payload) pairs: O(n) per pass, 3 passes of
// 11 bits, skipping passes whose digit is the same for every key (common for the high bits of
// hash values that share sign and exponent). Stability makes ties keep their input order.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace smyrf::detail {

inline constexpr std::size_t kSmallSort = 256;

struct KeyIndex {
  std::uint32_t key;
  std::int32_t index;
};

// Sorts data[0, n) by key, stably; tmp must hold n entries. The result is in data. Returns the
// number of radix passes that moved data (0 for the comparison sort of short inputs).
inline int radix_sort(KeyIndex* data, KeyIndex* tmp, std::size_t n) {
  // Below a few hundred items the 3 x 2048 counters cost more than the items: a stable
  // comparison sort gives the same order.
  if (n < kSmallSort) {
    std::stable_sort(data, data + n, [](const KeyIndex& a, const KeyIndex& b) { return a.key < b.key; });
    return 0;
  }
  constexpr int kBits = 11, kBuckets = 1 << kBits, kPasses = (32 + kBits - 1) / kBits;
  std::uint32_t counts[kPasses][kBuckets] = {};
  for (std::size_t i = 0; i < n; ++i)
    for (int p = 0; p < kPasses; ++p) ++counts[p][(data[i].key >> (p * kBits)) & (kBuckets - 1)];
  KeyIndex* src = data;
  KeyIndex* dst = tmp;
  int moved = 0;
  for (int p = 0; p < kPasses; ++p) {
    std::uint32_t* c = counts[p];
    bool trivial = false;
    for (int b = 0; b < kBuckets; ++b)
      if (c[b] != 0) {
        trivial = c[b] == n;
        break;
      }
    if (trivial) continue;
    std::uint32_t offset = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const std::uint32_t count = c[b];
      c[b] = offset;
      offset += count;
    }
    const int shift = p * kBits;
    for (std::size_t i = 0; i < n; ++i) dst[c[(src[i].key >> shift) & (kBuckets - 1)]++] = src[i];
    std::swap(src, dst);
    ++moved;
  }
  if (src != data)
    for (std::size_t i = 0; i < n; ++i) data[i] = src[i];
  return moved;
}

}  // namespace smyrf::detail
