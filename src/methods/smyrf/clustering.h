// SMYRF clustering: asymmetric transform, LSH projections, sorting, balanced cluster ranges.
// The exact hash (order of operations, rounding, directions and offsets) and the cluster rule
// are the public contract in smyrf/methods/smyrf.h.
#pragma once

#include <cstdint>
#include <vector>

#include "spec/results.h"
#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Number of coordinates the transform appends (E).
int transform_extra_dims(const SmyrfConfig& config);

// Lanes per token in the projection buffer: R rounds, one lane for the squared norm, then the
// token's transform (alpha and the E appended coordinates, filled once the max norms are
// known), padded to whole AVX-512 double vectors.
inline std::size_t projection_lanes(int n_hashes, int extra_dims) {
  return (static_cast<std::size_t>(n_hashes) + 2 + static_cast<std::size_t>(extra_dims) + 7) / 8 * 8;
}

// Directions of head h: a[j * lanes + r] for j < d + E, r < R (lanes >= R + 1; the other
// lanes are 0); offsets[r] = b_r.
void make_directions(const SmyrfConfig& config, std::uint64_t seed, std::int64_t head,
                     std::int64_t d, std::size_t lanes, double* a, double* offsets);

struct NormStats {
  double max_q2 = 0;  // largest squared norm of the active queries
  double max_k2 = 0;  // largest squared norm of the visible keys
};

// A token's transform: x' = [alpha x, ext_0, ..., ext_{E-1}].
struct TokenTransform {
  double alpha = 1.0;
  double ext[8] = {};
  int extra = 0;  // E
};
TokenTransform transform_token(const SmyrfConfig& config, bool is_query, double n2,
                               const NormStats& stats);

// The hash (smyrf/methods/smyrf.h) from the projection `dot` of x on a_r[0..d) and the transform;
// a_ext[e * a_ext_stride] = a_r[d + e].
inline float hash_from(const SmyrfConfig& config, const TokenTransform& t, double dot,
                       const double* a_ext, std::size_t a_ext_stride, double offset) {
  double p = t.alpha * dot;
  for (int e = 0; e < t.extra; ++e)
    p = __builtin_fma(t.ext[e], a_ext[static_cast<std::size_t>(e) * a_ext_stride], p);
  if (config.r > 0.0f) p = __builtin_floor((p + offset) / static_cast<double>(config.r));
  return static_cast<float>(p);
}

// Both steps at once.
float hash_value(const SmyrfConfig& config, bool is_query, double dot, double n2,
                 const NormStats& stats, const double* a_ext, std::size_t a_ext_stride,
                 double offset);

// Maps a float to an unsigned integer with the same order (IEEE total order; -0 -> +0).
inline std::uint32_t order_key(float v) {
  if (v == 0.0f) v = 0.0f;
  std::uint32_t u;
  static_assert(sizeof(u) == sizeof(v));
  __builtin_memcpy(&u, &v, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Balanced clusters (rule in smyrf/methods/smyrf.h).
std::int64_t cluster_count(std::int64_t n_q, std::int64_t n_k, const SmyrfConfig& config);
struct IndexRange {
  std::int64_t begin, end;
};
inline IndexRange query_cluster(std::int64_t i, std::int64_t n_q, std::int64_t C) {
  return {i * n_q / C, (i + 1) * n_q / C};
}
inline IndexRange key_cluster(std::int64_t i, std::int64_t n_k, std::int64_t C) {
  const std::int64_t begin = i * n_k / C;
  const std::int64_t end = (i + 1) * n_k / C;
  return {begin, end > begin ? end : begin + 1};
}

// Result of hashing and sorting a whole problem, laid out in caller-provided memory.
struct SortedTokens {
  int rounds = 0;
  // q_sorted[(bh * R + r) * Nq + t]: the t-th active query of (b, h) in round r's hash order
  // (original positions); the first q_count[b] entries are used. Same for keys with Nk.
  std::int32_t* q_sorted = nullptr;
  std::int32_t* k_sorted = nullptr;
  std::int64_t* n_clusters = nullptr;  // [B]
};

// Scratch the hashing needs, in floats-agnostic bytes, for arena planning.
struct HashingSlots {
  std::size_t directions, offsets, q_proj, k_proj, stats, sort_tmp, q_sorted, k_sorted,
      n_clusters;
};
HashingSlots plan_hashing(Arena& arena, const Problem& pr, const SmyrfConfig& config);
// Runs transform + projections + sort; returns the sorted lists. Adds phase times to info.
SortedTokens hash_and_sort(const Problem& pr, const SmyrfConfig& config, const TokenLists& lists,
                           const Arena& arena, const HashingSlots& slots, RunInfo& info);

// Per-target projection kernel (hashing.cpp): for n rows base + idx[i] * row_stride (elements
// of type dtype), writes out[i * lanes + r] = dot with round r's direction and
// out[i * lanes + R] = squared norm.
void project_rows(DType dtype, const void* base, std::int64_t row_stride, const std::int32_t* idx,
                  std::size_t n, std::size_t d, const double* a, std::size_t lanes, int rounds,
                  double* out);

ClusterLists compute_clusters(const Problem& pr, const SmyrfConfig& config);

}  // namespace smyrf::detail
