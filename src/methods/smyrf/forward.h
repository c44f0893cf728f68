// SMYRF forward, LSH and centroid key selection: internals (contract: smyrf/methods/smyrf.h).
#pragma once

#include <algorithm>
#include <vector>

#include "common/heuristics.h"
#include "common/phases.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "methods/smyrf/clustering.h"
#include "methods/train/train.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

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

// Clusters at least as large as the sequences: one cluster, exactly dense attention.
inline bool whole_clusters(const Problem& pr, const SmyrfConfig& config) {
  return config.q_cluster_size >= pr.Nq && config.k_cluster_size >= pr.Nk;
}

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
  bool select_only = false;         // stop after the selection (nothing written to O or lse)
};
// With select_only (the backward's groups), only the selection runs: params.o and params.lse
// are not written.
RunInfo smyrf_centroid_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace,
                               std::vector<std::int32_t>* capture = nullptr, bool select_only = false);
// Inspection for tests: runs KeySelection::centroid on params (writing params.o) and returns
// the keys of each query cluster, per (b, h) then cluster, ascending positions.
std::vector<std::vector<std::int32_t>> centroid_keys(const Problem& pr, const SmyrfConfig& config);
// The training groups of KeySelection::centroid: each query cluster against its selected keys
// (ascending positions), one launch; the selection is recomputed from the inputs and held
// constant.
TrainGroups<CausalPairs> smyrf_centroid_train_groups(const Problem& pr, const SmyrfConfig& config);
// Runs a TrainGroups set of SMYRF (smyrf.cpp's per-target dispatch of RunTrainGroups).
void run_smyrf_groups(const TrainArgs& a, const TrainGroups<CausalPairs>& set, float* pk, float* pv,
                      float* scratch, std::size_t per_thread);

}  // namespace smyrf::detail
