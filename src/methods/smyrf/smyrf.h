// SMYRF forward (see smyrf.h, SmyrfConfig; clustering.h for the exact hash definition).
#pragma once

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

// Everything one round of clustered attention needs (the per-target kernel's argument).
struct RoundArgs {
  const Problem* pr;
  const SmyrfConfig* config;
  const TokenLists* lists;
  const SortedTokens* sorted;
  int round;
  MergeState* merge;              // [B * H * Nq]
  float* scratch;                 // per_thread floats per thread
  std::size_t per_thread;
  std::int64_t max_clusters;      // clusters of an unmasked batch element
  std::int64_t clusters_per_task;
  std::int64_t* scores_per_task;  // out: scores computed by each task
  PhaseTicks* phase_ticks;        // per thread
};

RunInfo smyrf_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
