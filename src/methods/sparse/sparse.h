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
#include "smyrf/smyrf.h"
#include "spec/draws.h"

namespace smyrf::detail {

RunInfo sparse_forward(const Problem& pr, const SparseConfig& config, Workspace* workspace);

// Floor division and the matching modulus in [0, b) (b > 0): positions p = i + Nk - Nq may be
// negative when Nq > Nk.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
inline std::int64_t floor_mod(std::int64_t a, std::int64_t b) { return a - floor_div(a, b) * b; }

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

// ---- Training (sparse.cpp): the groups of every part as a TrainGroups set (methods/train). ----

template <class Mask>
struct TrainGroups;
TrainGroups<SparseMask> sparse_train_groups(const Problem& pr, const SparseConfig& config);

// ---- Inspection (tests and tools). ----

// For batch element b and head h: entry i holds the ascending key positions that query i
// attends to in the fast path (over all rounds; a key listed twice would be attended twice),
// gathered from the fast path's groups, key lists and masks, tile by tile. Empty for masked
// queries and for batch elements without a visible key.
std::vector<std::vector<std::int32_t>> sparse_visible_keys(const Problem& pr,
                                                           const SparseConfig& config,
                                                           std::int64_t b, std::int64_t h);
// The same for one query.
std::vector<std::int32_t> sparse_visible_keys(const Problem& pr,
                                              const SparseConfig& config, std::int64_t b,
                                              std::int64_t h, std::int64_t i);

}  // namespace smyrf::detail
