// Clustered and improved clustered attention: internals. The exact definition (hash, k-means,
// centroid precision, key selection, lse) is the public contract in smyrf/methods/clustered.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "spec/results.h"
#include "common/phases.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "methods/train/train.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo clustered_forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace);


// How the fast path parallelises k-means (the results are the same): each (b, h) in one task
// (many heads, or short sequences: one parallel region), or step by step over chunks of
// queries (one long head). automatic: per_head unless B * H < 2 threads and B * H * Nq > 65536.
enum class KMeansSchedule { automatic, per_head, chunked };

// Runs the fast path on a checked problem (writing params.o and params.lse when set)
// and returns its hash codes, clusters and key sets.
ClusteredInspection clustered_inspect(const Problem& pr, const ClusteredConfig& config,
                                      KMeansSchedule schedule = KMeansSchedule::automatic);
// The same results without the member pass: nothing is written to O or lse (the training
// path's clusters and top keys, held constant).
ClusteredInspection clustered_structure(const Problem& pr, const ClusteredConfig& config);

// Training (clustered_train.cpp; the definition and the gradient rule in smyrf/methods/clustered.h).
// The dropout forward after clustered_forward: every member's row rebuilt with the dropped
// weights (the members' own on T_c, the centroid's shared ones once per cluster).
void clustered_dropout_forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace);
RunInfo clustered_backward(const Problem& pr, const GradientParams& grads, const ClusteredConfig& config,
                           Workspace* workspace);
void clustered_forward_f64(const Problem& pr, const ClusteredConfig& config, const DoubleTensors& in,
                           double* o, double* lse);
void clustered_backward_f64(const Problem& pr, const ClusteredConfig& config, const DoubleTensors& in,
                            const double* o, const double* lse, const double* grad_o, double* grad_q,
                            double* grad_k, double* grad_v);
// The member groups' runner (clustered.cpp's per-target dispatch of RunTrainGroups).
void run_clustered_groups(const TrainArgs& a, const TrainGroups<CausalPairs>& set, float* pk, float* pv,
                          float* scratch, std::size_t per_thread);

// The centroid part of the f32 backward (clustered_backward.cpp; the rule in clustered_train.cpp's
// comment), on the tile kernels. The live clusters of bh are u in [begin[bh], begin[bh + 1]);
// per cluster u: its members (positions, ascending), T_c as indices into the visible keys of b
// (keys[b], ascending positions), its centroid query qbar[u * d ..] (f32) and dr[u * dv ..] =
// the sum of its members' dO (f32), its dropout stream. Adds dqbar_c / |M_c| to the members'
// dQ and the centroid parts of dK and dV of the visible keys; writes delta (the member groups'
// D_i = E_i / m_c, improved only). Same bits whatever the thread count.
struct ClusteredCentroidGrad {
  const Problem* pr = nullptr;
  const GradientParams* g = nullptr;
  float dropout = 0.0f;
  std::uint64_t seed = 0;
  const std::size_t* begin = nullptr;                    // [BH + 1]
  const std::vector<std::int32_t>* members = nullptr;    // [U]
  const std::vector<std::int32_t>* top_index = nullptr;  // [U]
  const std::vector<std::int32_t>* keys = nullptr;       // [B]
  const std::uint64_t* stream = nullptr;                 // [U]
  const float* qbar = nullptr;                           // [U * d]
  const float* dr = nullptr;                             // [U * dv]
  float* delta = nullptr;                                // [BH * Nq]
};
void clustered_centroid_backward(const ClusteredCentroidGrad& a);

// ---------------------------------------------------------------------------------------
// Internal: the buffers the per-target kernels of clustered.cpp share. Per (b, h) = bh,
// indices are ranks among the active queries (ascending positions) unless said otherwise.
struct ClusteredArgs {
  const Problem* pr = nullptr;
  const TokenLists* lists = nullptr;
  int bits = 0;                // hash_bits
  int topk = 0;                // ClusteredConfig::topk
  std::int64_t max_clusters = 0;  // Cmax = min(n_clusters, Nq)
  std::int64_t top_stride = 0;    // min(topk, Nk): slots of T_c per cluster
  std::size_t ldw = 0;            // doubles per coordinate of the hyperplanes (bits padded)
  const double* w = nullptr;      // [H][d][ldw]: w[(h * d + j) * ldw + t] = w_t[j]
  std::uint64_t* codes = nullptr;       // [BH * Nq]
  std::int32_t* assign = nullptr;       // [BH * Nq]
  const std::uint64_t* centroid_codes = nullptr;  // [BH * Cmax]
  std::uint64_t* centroid_codes_rw = nullptr;     // the same, for the update
  const std::int32_t* n_clusters = nullptr;       // [B]
  const std::uint8_t* active_bh = nullptr;        // [BH]: k-means still running for bh
  std::uint8_t* changed = nullptr;                // [tasks of the assignment]
  std::int64_t assign_chunk = 0;                  // queries per assignment task
  // Grouping: member[bh * Nq + start[bh * (Cmax + 1) + c] ...] are cluster c's positions,
  // ascending; live[bh * Cmax + u] is the u-th cluster with members (n_live[bh] of them).
  const std::int32_t* member = nullptr;
  const std::int32_t* start = nullptr;
  const std::int32_t* live = nullptr;
  const std::int32_t* n_live = nullptr;
  // Per live cluster u of bh, at index bh * Cmax + u:
  const float* qbar = nullptr;  // centroid query, rows of ldq floats
  std::size_t ldq = 0;
  float* resid = nullptr;       // r_c (plain: the centroid's output), rows of ldv floats
  std::size_t ldv = 0;
  float* lse_c = nullptr;       // the centroid's logsumexp over all visible keys
  float* mass = nullptr;        // m_c (improved)
  std::int32_t* top = nullptr;  // T_c positions, ascending, top_stride slots
  // Centroid pass: rows_per_task live clusters per task, against the visible keys of bh packed
  // once: kt_all[bh * d * ldn + t * ldn + j] (K^T) and vp_all[(bh * Nk + j) * ldv + c] (V).
  std::int64_t rows_per_task = 0;
  std::size_t ldn = 0;          // pad_floats(Nk)
  float* kt_all = nullptr;
  float* vp_all = nullptr;
  float* centroid_scratch = nullptr;  // centroid_floats() per thread
  std::int32_t* selection = nullptr;  // selection_ints() per thread
  // Member pass (improved): AttendGroup scratch.
  RoundScratch layout{};
  float* member_scratch = nullptr;    // layout.total() per thread
  std::int64_t* scores_per_task = nullptr;
  PhaseTicks* phase_ticks = nullptr;  // per thread

  // Per-thread floats of the centroid pass: scores [rows][ldn], accumulators [rows][ldv],
  // centroid queries [rows][ldq] and one double row for their means (2 ldq floats).
  std::size_t centroid_floats() const {
    const std::size_t rows = static_cast<std::size_t>(rows_per_task);
    return rows * ldn + rows * ldv + (rows + 2) * ldq;
  }
  // Per-thread ints of the top-k selection: the chosen indices (top_stride, padded to even),
  // then 2 * top_stride (score, index) candidates.
  std::size_t selection_ints() const { return 5 * static_cast<std::size_t>(top_stride) + 16; }
};

// The k-means update of bh (majority vote, ties to 0; empty clusters keep their code).
// counts: max_clusters * 65 ints of scratch.
void clustered_update_centroids(const ClusteredArgs& a, std::int64_t bh, std::int32_t* counts);

}  // namespace smyrf::detail
