// Low-rank and compressed attention: internals. The exact definitions, cost and RunInfo counts
// are the public contract in smyrf/methods/compressed.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/problem.h"
#include "common/rng.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Checks the config against the problem (throws smyrf::Error naming the field): sizes, the
// pointers a kind may use, finite learned inputs, params.causal.
void validate_config(const CompressedConfig& config, const Problem& pr);
RunInfo compressed_forward(const Problem& pr, const CompressedConfig& config, Workspace* workspace);

// The kind's name as the messages spell it.
inline const char* compression_name(Compression k) {
  switch (k) {
    case Compression::linformer:
      return "linformer";
    case Compression::nystrom:
      return "nystrom";
    case Compression::memory_compressed:
      return "memory_compressed";
    case Compression::induced_points:
      return "induced_points";
    case Compression::star:
      return "star";
    case Compression::global_memory:
      return "global_memory";
  }
  return "?";
}

// Largest accepted rank and pinv_iterations.
constexpr int kCompressedMaxRank = 65536;
constexpr int kCompressedMaxPinvIterations = 100;

// ---- Pieces of the definition, shared by the fast path and the oracle. ----

// First row of segment t of n rows cut into s segments: floor(t n / s).
inline std::int64_t segment_begin(std::int64_t t, std::int64_t n, std::int64_t s) {
  return t * n / s;
}
// Number of segments of n rows with `rank` segments requested: min(rank, n).
inline std::int64_t segment_count(std::int64_t rank, std::int64_t n) { return rank < n ? rank : n; }

// Random stream (src/common/rng.h) of the default Linformer projections: tag "LINP" plus the
// head.
constexpr std::uint64_t kLinformerStream = 0x4C494E5000000000ull;

// The default projection entries E[h, r, j] and F[h, r, j] (linformer with projection_e or
// projection_f nullptr) as smyrf/methods/compressed.h defines them: word w = random_bits(seed,
// kLinformerStream + head, r * 2^32 + floor(j / 32)) holds the signs of 32 consecutive keys.
inline float linformer_scale(std::int64_t rank) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(rank)));
}
inline std::uint64_t linformer_word(std::uint64_t seed, std::int64_t head, std::int64_t r,
                                    std::int64_t j) {
  return random_bits(seed, kLinformerStream + static_cast<std::uint64_t>(head),
                     (static_cast<std::uint64_t>(r) << 32) + static_cast<std::uint64_t>(j >> 5));
}
inline void linformer_projection(std::uint64_t seed, std::int64_t head, std::int64_t r,
                                 std::int64_t j, std::int64_t rank, float* e, float* f) {
  const std::uint64_t w = linformer_word(seed, head, r, j);
  const int b = static_cast<int>(2 * (j & 31));
  const float s = linformer_scale(rank);
  *e = (w >> b) & 1 ? s : -s;
  *f = (w >> (b + 1)) & 1 ? s : -s;
}
// Row r of the default E and F for keys [0, nk) (e or f may be nullptr): the same entries as
// linformer_projection(), one random word per 32 keys, stored as float or double (exact).
template <class T>
void linformer_projection_row(std::uint64_t seed, std::int64_t head, std::int64_t r,
                              std::int64_t nk, std::int64_t rank, T* e, T* f) {
  const T s = linformer_scale(rank);
  // sign(bit) = 2 bit - 1, multiplied (exactly) rather than selected: random signs would
  // defeat branch prediction.
  auto sign = [](std::uint64_t bit) { return static_cast<T>(2 * static_cast<int>(bit) - 1); };
  for (std::int64_t j0 = 0; j0 < nk; j0 += 32) {
    const std::uint64_t w = linformer_word(seed, head, r, j0);
    const int n = static_cast<int>(nk - j0 < 32 ? nk - j0 : 32);
    if (e != nullptr)
      for (int t = 0; t < n; ++t) e[j0 + t] = sign((w >> (2 * t)) & 1) * s;
    if (f != nullptr)
      for (int t = 0; t < n; ++t) f[j0 + t] = sign((w >> (2 * t + 1)) & 1) * s;
  }
}

}  // namespace smyrf::detail
