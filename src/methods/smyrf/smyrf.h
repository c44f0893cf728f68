// SMYRF forward (see smyrf.h, SmyrfConfig; clustering.h for the exact hash definition).
#pragma once

#include <algorithm>
#include <vector>

#include "common/heuristics.h"
#include "common/phases.h"
#include "common/problem.h"
#include "methods/smyrf/clustering.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// A query's running merge over the rounds so far: the largest logsumexp and the sum of the
// rounds' weights relative to it. One cache line each: queries of a round are scattered over
// the sequence, so two threads would otherwise keep writing to the same lines (false sharing
// doubled the merge time at 2 threads).
struct alignas(64) MergeState {
  float max;
  float sum;
};

// Scratch of one thread in the clustered rounds, in floats (every part a multiple of 16 floats
// so packed rows stay 64-byte aligned): score tile, accumulators, row state, converted query
// rows, one cluster's packed K^T and V.
struct RoundScratch {
  std::size_t key_cap, ldk, ldv, d;
  static RoundScratch make(const Problem& pr, const SmyrfConfig& config) {
    const auto key_cap = static_cast<std::size_t>(std::min<std::int64_t>(config.k_cluster_size, pr.Nk));
    const auto d = static_cast<std::size_t>(pr.d);
    return {key_cap, pad_floats(key_cap), pad_floats(static_cast<std::size_t>(pr.dv)), d};
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

// Everything one round of clustered attention needs (the per-target kernel's argument).
struct RoundArgs {
  const Problem* pr;
  const TokenLists* lists;
  const SortedTokens* sorted;
  int round;
  MergeState* merge;              // [B * H * Nq]
  float* scratch;                 // layout.total() floats per thread
  RoundScratch layout;
  std::int64_t max_clusters;      // clusters of an unmasked batch element
  std::int64_t clusters_per_task;
  std::int64_t* scores_per_task;  // out: scores computed by each task
  PhaseTicks* phase_ticks;        // per thread
};

RunInfo smyrf_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace);

// KeySelection::centroid (centroid.cpp).
struct CentroidScratch {
  std::vector<double> centroid;   // [d]
  std::vector<double> score;      // [Nk]
  std::vector<std::int32_t> order;  // [Nk]
};
struct CentroidArgs {
  const Problem* pr;
  const TokenLists* lists;
  float* scratch;  // layout.total() floats per thread
  RoundScratch layout;
  std::int64_t q_cluster, k_cluster;
  std::int64_t max_groups;        // query clusters of an unmasked batch element
  std::int64_t* scores_per_task;  // out
  CentroidScratch* per_thread;
  std::int32_t* capture = nullptr;  // optional [tasks * k_cluster]: selected key positions, -1 after
};
RunInfo smyrf_centroid_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace,
                               std::vector<std::int32_t>* capture = nullptr);
// Inspection for tests: runs KeySelection::centroid on params (writing params.o) and returns
// the keys of each query cluster, per (b, h) then cluster, ascending positions.
std::vector<std::vector<std::int32_t>> centroid_keys(const AttentionParams& params, const SmyrfConfig& config);

}  // namespace smyrf::detail
