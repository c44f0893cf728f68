// Low-rank and compressed attention (see CompressedConfig in smyrf.h).
//
// Every kind synthesises, per (batch b, head h), M short key/value rows K' [M, d], V' [M, dv]
// and lets each active query attend to them by exact softmax (scale = params.scale); star and
// global_memory add a local window of real keys, merged with the synthetic rows as one softmax
// (two disjoint parts merged by logsumexp). Notation: n_q, n_k = the active queries and the
// visible keys of batch element b, each listed in position order; p = i + Nk - Nq is query i's
// position in key coordinates. Exact definitions:
//
//   Segment means of n rows x_0..x_{n-1} (a list in position order) with `rank` segments:
//     s = min(rank, n) segments, segment t = rows [floor(t n / s), floor((t+1) n / s)) (sizes
//     differ by at most one, none empty); its mean = (sum of the rows in double, in list
//     order) / (row count), rounded to f32. n = 0: no segment.
//   linformer (Wang et al. 2020): K'[r] = sum_{j visible} E[h, r, j] K[j], V'[r] = sum_{j
//     visible} F[h, r, j] V[j] (r < rank; masked keys' columns dropped, no renormalisation).
//     E, F = projection_e, projection_f ([H, rank, Nk] contiguous) or, when nullptr,
//     spec::linformer_projection() (src/spec/draws.h: seeded Rademacher +-1/sqrt(rank), E and
//     F independent).
//     K' and V' are sums in double over the visible keys in position order (each product of
//     two floats exact), rounded to f32. n_k = 0: O = 0.
//   memory_compressed (Liu et al. 2018): the visible keys in position order cut into windows
//     of `stride` consecutive list entries (the last one may be shorter): M = ceil(n_k /
//     stride); K'[t], V'[t] = the window's mean of K and of V (as segment means: double sum,
//     divided by the count, rounded to f32).
//   nystrom (Xiong et al. 2021): landmarks Qt = segment means of the active queries (m_q =
//     min(rank, n_q) rows), Kt = segment means of the visible keys (m_k = min(rank, n_k) rows).
//     A1 = softmax(scale Q Kt^T) [n_q, m_k], A2 = softmax(scale Qt Kt^T) [m_q, m_k], A3 =
//     softmax(scale Qt K^T) over the visible keys [m_q, n_k]; O = A1 Z (A3 V), Z the
//     approximate pseudo-inverse of A2 after pinv_iterations steps of
//       Z_0 = A2^T / (max_i sum_j |A2_ij| * max_j sum_i |A2_ij|),
//       Z_{t+1} = 1/4 Z_t (13 I - A2 Z_t (15 I - A2 Z_t (7 I - A2 Z_t))).
//     lse: NaN for every active query of a batch element with a visible key (no softmax over
//     keys); -inf otherwise. n_k = 0: O = 0.
//   global_memory (GMAT / ETC): query i sees the visible keys j with |p - j| <= window plus
//     rank memory rows (always visible): memory_k [H, rank, d], memory_v [H, rank, dv], or,
//     when both are nullptr, the segment means of the visible K and V (min(rank, n_k) rows).
//     Causal (given memory only): window keys j <= p; the memory rows stay visible. With given
//     memory, a query of a batch element without visible keys attends to the memory alone.
//   star (Guo et al. 2019): query i sees the visible keys with |p - j| <= window plus one
//     relay row: q_r = mean of the active queries (segment mean with one segment), a =
//     softmax(scale q_r . k_j) over the visible keys, relay key = sum_j a_j K[j], relay value
//     = sum_j a_j V[j]. n_k = 0: O = 0.
//   induced_points (Lee et al. 2019, ISAB): inducing rows I [H, rank, d] (input) or, when
//     nullptr, the segment means of the visible keys; A = softmax(scale I K^T) over the
//     visible keys; K' = A K, V' = A V (one row per inducing row). n_k = 0: O = 0.
//   lse (all but nystrom): the logsumexp of the query's scaled scores over its synthetic rows
//   (and window keys), -inf for a query that sees nothing.
//   Causal: global_memory with given memory only; every other kind (and global_memory with
//   the default memory, whose segment means mix future positions) throws naming params.causal.
//
// Cost per (b, h), with M the synthetic rows (rank; memory_compressed ceil(n_k / stride); star
// 1) and W = 2 window + 1: synthesis O(n_k M (d + dv)) (linformer, induced_points, nystrom's
// A3 V; the default Linformer projections also draw H rank Nk / 32 random words per call),
// O(n (d + dv)) for means; attention O(n_q (M + W) (d + dv)); nystrom adds
// O(pinv_iterations m^3) for Z (m = rank). No Nq x Nk matrix unless M ~ N (memory_compressed
// with stride 1).
// RunInfo::attention_scores counts the softmax score entries computed by the attention kernels
// and Nystrom's A2 (projections and means are not scores), per (b, h) with n_q, n_k >= 1:
//   linformer n_q rank; memory_compressed n_q ceil(n_k / stride); nystrom m_q n_k + m_q m_k +
//   n_q m_k; global_memory n_q M + the window's (query, visible key) pairs; star 2 n_k (the
//   relay's softmax, once for K and once for V) + n_q + the window pairs; induced_points
//   2 M n_k (A, once for K and once for V) + n_q M.
// RunInfo::workspace_bytes: this call's buffers (synthetic rows, masks, bf16 -> f32 copies of
// the rows that meet f32 synthetic rows, the window part's O and lse) plus the largest scratch
// of the kernel calls on sub-problems (one buffer, reused).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"
#include "spec/draws.h"

namespace smyrf::detail {

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

// ---- Pieces of the definition (the default projections are spec::linformer_*). ----

// First row of segment t of n rows cut into s segments: floor(t n / s).
inline std::int64_t segment_begin(std::int64_t t, std::int64_t n, std::int64_t s) {
  return t * n / s;
}
// Number of segments of n rows with `rank` segments requested: min(rank, n).
inline std::int64_t segment_count(std::int64_t rank, std::int64_t n) { return rank < n ? rank : n; }

}  // namespace smyrf::detail
