// Fixed sparsity patterns as block-sparse attention: internals (contract, with the exact
// patterns: smyrf/methods/sparse.h).
//
// The fast path (sparse.cpp) cuts each batch element's active queries into groups of at most
// kDenseQueryTile queries whose key sets overlap, builds per group the ascending list of the
// keys that ANY of its queries sees (the union), and attends the group to that list through
// AttendGroup; a SparseMask removes, tile by tile, the (query, key) pairs of the union that the
// pattern gives to other queries of the group. Two patterns are computed as two disjoint parts
// merged by logsumexp (exact softmax over the union of the parts):
//   strided:     part 0 the local window |p - j| <= window (groups of consecutive queries),
//                part 1 the keys j = p (mod stride) outside the window (groups of queries with
//                the same p mod stride, which share those keys);
//   criss_cross: part 0 the query's row (groups inside one row), part 1 its column without the
//                query's own position (groups inside one column).
// Everything here except sparse_forward is also used by the inspection function, so the tests
// see the fast path's own groups, key lists and masks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/problem.h"
#include "common/rng.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo sparse_forward(const Problem& pr, const SparseConfig& config, Workspace* workspace);

// Floor division and the matching modulus in [0, b) (b > 0): positions p = i + Nk - Nq may be
// negative when Nq > Nk.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
inline std::int64_t floor_mod(std::int64_t a, std::int64_t b) { return a - floor_div(a, b) * b; }

// High 64 bits of the 128-bit product a * b.
inline std::uint64_t mul_high64(std::uint64_t a, std::uint64_t b) {
  const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32;
  const std::uint64_t b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const std::uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
  const std::uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
  return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
}

// Scratch (in int64) that bigbird_random_blocks needs for n_blocks key blocks.
inline std::size_t bigbird_work_size(std::int64_t n_blocks) {
  return static_cast<std::size_t>(std::max<std::int64_t>(n_blocks, 128));
}

// BigBird's random key blocks of query block qb in head `head` (part of the definition, see
// smyrf/methods/sparse.h; the fast path and the oracle both call this). Writes them to out in
// draw order (not sorted) and returns their number r = min(random_blocks, n). With
// g = min(global_blocks, n_blocks):
//   * a global query block (0 <= qb < g) draws nothing (it sees every key);
//   * the candidates are the key blocks of [g, n_blocks) outside the window [qb - 1, qb + 1],
//     in ascending order, ranks 0..n-1;
//   * partial Fisher-Yates over the ranks: a[k] = k; for t = 0..r-1: x = t + floor(u_t (n - t)
//     / 2^64) with u_t = random_bits(seed, stream, t), stream = (head << 32) | (qb mod 2^32);
//     swap a[t], a[x]; the t-th block is the candidate of rank a[t].
// work: bigbird_work_size(n_blocks) int64s.
inline std::int64_t bigbird_random_blocks(std::uint64_t seed, std::int64_t head, std::int64_t qb,
                                          std::int64_t n_blocks, std::int64_t global_blocks,
                                          std::int64_t random_blocks, std::int64_t* out,
                                          std::int64_t* work) {
  const std::int64_t g = std::min(global_blocks, n_blocks);
  if (qb >= 0 && qb < g) return 0;
  const std::int64_t w0 = std::max(qb - 1, g), w1 = std::min(qb + 1, n_blocks - 1);
  const std::int64_t wn = std::max<std::int64_t>(0, w1 - w0 + 1);
  const std::int64_t n = n_blocks - g - wn;
  const std::int64_t r = std::min(random_blocks, n);
  if (r <= 0) return 0;
  const std::uint64_t stream =
      (static_cast<std::uint64_t>(head) << 32) | static_cast<std::uint32_t>(qb);
  auto block_of_rank = [&](std::int64_t k) {
    const std::int64_t c = g + k;
    return (wn > 0 && c >= w0) ? c + wn : c;
  };
  auto draw = [&](std::int64_t t) {
    const std::uint64_t u = random_bits(seed, stream, static_cast<std::uint64_t>(t));
    return t + static_cast<std::int64_t>(mul_high64(u, static_cast<std::uint64_t>(n - t)));
  };
  constexpr std::int64_t kSparseDraws = 64;
  if (r <= kSparseDraws) {
    // The same shuffle with the array kept as a list of the positions that differ from a[k] = k.
    std::int64_t* pos = work;
    std::int64_t* val = work + kSparseDraws;
    std::int64_t used = 0;
    auto get = [&](std::int64_t x) {
      for (std::int64_t e = 0; e < used; ++e)
        if (pos[e] == x) return val[e];
      return x;
    };
    for (std::int64_t t = 0; t < r; ++t) {
      const std::int64_t x = draw(t);
      const std::int64_t vx = get(x), vt = get(t);
      out[t] = block_of_rank(vx);
      // a[x] = old a[t] (a[t] itself is never read again).
      std::int64_t e = 0;
      while (e < used && pos[e] != x) ++e;
      if (e == used) pos[used++] = x;
      val[e] = vt;
    }
  } else {
    for (std::int64_t k = 0; k < n; ++k) work[k] = k;
    for (std::int64_t t = 0; t < r; ++t) {
      const std::int64_t x = draw(t);
      std::swap(work[t], work[x]);
      out[t] = block_of_rank(work[t]);
    }
  }
  return r;
}

// The per-(query, key) cut of a group's union, applied to each score tile (the mask functor of
// AttendGroup). Keys are ascending in every tile. With p = query position + offset:
//   radius >= 0, keep mode:    keys with |p - j| <= radius, or j < shared_below, stay visible;
//   radius >= 0, exclude mode: keys with |p - j| <= radius are removed;
//   causal:                    keys j > p are removed.
// Each row costs a few binary searches; rows (and tiles) the rule leaves whole are untouched.
struct SparseMask {
  std::int64_t offset = 0;
  std::int64_t radius = -1;  // < 0: no interval rule
  std::int64_t shared_below = 0;
  bool exclude = false;
  bool causal = false;

  // The group sees its whole union: AttendGroup can run without a mask.
  bool trivial() const { return radius < 0 && !causal; }

  void operator()(const std::int32_t* qpos, std::size_t m, const std::int32_t* kpos, std::size_t n,
                  float* s, std::size_t lds) const {
    if (n == 0) return;
    const float ninf = -std::numeric_limits<float>::infinity();
    const std::int64_t first = kpos[0], last = kpos[n - 1];
    auto lower = [&](std::int64_t x) {  // first column with key >= x
      return static_cast<std::size_t>(std::lower_bound(kpos, kpos + n, x) - kpos);
    };
    auto upper = [&](std::int64_t x) {  // first column with key > x
      return static_cast<std::size_t>(std::upper_bound(kpos, kpos + n, x) - kpos);
    };
    auto cut = [&](float* row, std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) row[c] = ninf;
    };
    const std::size_t shared_end = (radius >= 0 && !exclude && shared_below > first) ? lower(shared_below) : 0;
    for (std::size_t r = 0; r < m; ++r) {
      const std::int64_t p = qpos[r] + offset;
      float* row = s + r * lds;
      std::size_t end = n;  // columns [end, n) are in the future of p
      if (causal && last > p) end = upper(p);
      if (radius >= 0) {
        const std::int64_t lo = p - radius, hi = p + radius;
        if (exclude) {
          if (hi >= first && lo <= last) cut(row, lower(lo), std::min(upper(hi), end));
        } else if (lo > first || hi < last) {
          const std::size_t c0 = lo > first ? lower(lo) : 0;
          const std::size_t c1 = hi < last ? upper(hi) : n;
          // Visible: [0, shared_end) and [c0, c1).
          if (shared_end < c0) cut(row, shared_end, std::min(c0, end));
          cut(row, std::max(c1, shared_end), end);
        }
      }
      cut(row, end, n);
    }
  }
};

// ---- Group construction (sparse.cpp), shared by the forward and the inspection below. ----

// Number of disjoint parts ("rounds", merged by logsumexp): 2 for strided and criss_cross.
int sparse_rounds(const SparseConfig& config);

// Keys packed at a time per group (AttendGroup streams longer lists).
std::size_t sparse_key_cap(const Problem& pr, const SparseConfig& config);

// Int64 scratch per thread for sparse_group_keys (bigbird's block lists).
std::size_t sparse_block_scratch(const Problem& pr, const SparseConfig& config);

// The groups of batch element b in round `round`: writes the active queries in group order to
// order[0, n_active) and group g's range order[starts[g], starts[g + 1]) (starts holds up to
// Nq + 1 entries); returns the number of groups. Each group has at most kDenseQueryTile queries.
std::int64_t sparse_make_groups(const Problem& pr, const SparseConfig& config, int round,
                                std::int64_t b, std::int32_t* order, std::int32_t* starts);

struct SparseGroupKeys {
  const std::int32_t* keys = nullptr;  // ascending visible keys (in `key_buffer` or the lists)
  std::size_t count = 0;
  SparseMask mask;
};

// The union of the keys the group's queries q[0, m) (positions, in group order) see in round
// `round`, and the mask that cuts it per query. key_buffer: Nk int32; blocks:
// sparse_block_scratch int64.
SparseGroupKeys sparse_group_keys(const Problem& pr, const SparseConfig& config,
                                  const TokenLists& lists, int round, std::int64_t b,
                                  std::int64_t h, const std::int32_t* q, std::size_t m,
                                  std::int32_t* key_buffer, std::int64_t* blocks);

// ---- Inspection (tests and tools). ----

// For batch element b and head h: entry i holds the ascending key positions that query i
// attends to in the fast path (over all rounds; a key listed twice would be attended twice),
// gathered from the fast path's groups, key lists and masks, tile by tile. Empty for masked
// queries and for batch elements without a visible key. Validates params and config.
std::vector<std::vector<std::int32_t>> sparse_visible_keys(const AttentionParams& params,
                                                           const SparseConfig& config,
                                                           std::int64_t b, std::int64_t h);
// The same for one query.
std::vector<std::int32_t> sparse_visible_keys(const AttentionParams& params,
                                              const SparseConfig& config, std::int64_t b,
                                              std::int64_t h, std::int64_t i);

}  // namespace smyrf::detail
