// State shared by the methods that attend gathered groups of queries to gathered key sets,
// possibly over several rounds merged by logsumexp (SMYRF, Reformer, routing, sparse patterns).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common/heuristics.h"
#include "common/problem.h"

namespace smyrf::detail {

// A query's running merge over the rounds so far: the largest logsumexp and the sum of the
// rounds' weights relative to it ({-inf, 0} while no round gave the query a visible key). One
// cache line each: queries of a round are scattered over the sequence, so two threads would
// otherwise keep writing to the same lines (false sharing doubled the merge time at 2 threads).
struct alignas(64) MergeState {
  float max;
  float sum;
};

// Scratch of one thread, in floats (every part a multiple of 16 floats so packed rows stay
// 64-byte aligned): score tile, accumulators, row state, converted query rows, and packed K^T
// and V for up to key_cap keys.
struct RoundScratch {
  std::size_t key_cap, ldk, ldv, d;
  static RoundScratch make(std::size_t key_cap, std::size_t d, std::size_t dv) {
    return {key_cap, pad_floats(key_cap), pad_floats(dv), d};
  }
  std::size_t s_floats() const { return kDenseQueryTile * kDenseKeyTile; }
  std::size_t acc_floats() const { return kDenseQueryTile * ldv; }
  // row_max, row_sum, inv, lse, and the merge's mx, sum, keep, take.
  std::size_t state_floats() const { return 8 * pad_floats(kDenseQueryTile); }
  std::size_t q_floats() const { return kDenseQueryTile * pad_floats(d); }
  std::size_t kt_floats() const { return d * ldk; }
  std::size_t vp_floats() const { return key_cap * ldv; }
  std::size_t total() const {
    return s_floats() + acc_floats() + state_floats() + q_floats() + kt_floats() + vp_floats();
  }
};

}  // namespace smyrf::detail
