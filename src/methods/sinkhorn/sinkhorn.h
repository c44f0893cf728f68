// Sinkhorn sorting attention (see SinkhornConfig in smyrf.h). The exact definition, per
// (batch b, head h), with n_q the active queries and n_k the visible keys of b:
//
//   Blocks: nb = ceil(n_k / block_size) (nothing when n_k = 0: every query gets O = 0). Key block
//   a = the visible keys of ranks [a block_size, min((a+1) block_size, n_k)) in position order
//   (only the last may be shorter); query block a = the active queries of ranks
//   [floor(a n_q / nb), floor((a+1) n_q / nb)) (balanced; empty when n_q < nb).
//   Block logits R [nb, nb]:
//     sort_net W given ([H, d, NB] contiguous, NB = ceil(Nk / block_size) columns; a batch
//       element whose masks leave nb < NB blocks uses columns 0..nb-1):
//       R_ab = sum_e (sum of the key rows of block a)_e W[h][e][b];
//     sort_net == nullptr (a parameter-free content sort, for pretrained models without a sort
//       net): R_ab = scale * (mean query of block a) . (mean key of block b), where an empty
//       query block a uses the mean key of block a instead.
//   Sinkhorn in log space: L = R / temperature; `iterations` times: subtract from each row its
//   logsumexp over the columns, then from each column its logsumexp over the rows; P = exp(L)
//   (doubly stochastic up to the iteration count).
//   Sorted block of a: row t (t < the longest block length) is
//     K~_at = sum_{b : block b has a row t} P_ab K_{b,t} / sum_{b : block b has a row t} P_ab,
//   V~ the same (a row whose weights all underflow to 0 is left out). These ratios do not change
//   when a row of P is scaled, so P_ab may be (and is) taken as exp(L_ab - max_c L_ac).
//   Query block a attends by one softmax (scale) to the keys of key block a and the rows of
//   its sorted block: 2 block_size keys at most; lse is the logsumexp over those (a key of the
//   block that equals its sorted row counts twice: with nb = 1 the sorted block is the block
//   itself, so the output is dense attention's and lse = dense lse + log 2).
//   Not causal.
//
// Fast path, per (b, h): block sums and means in double O((n_q + n_k) d), R in double
// O(nb^2 d), Sinkhorn in double O(iterations nb^2); then per (b, h, query block): the sorted
// block accumulated in double O(nb block_size (d + dv)) and the block's softmax in float
// O(block_size 2 block_size (d + dv)). Total O(n_k nb (d + dv) + n_q block_size (d + dv)).
// RunInfo.attention_scores = per (b, h): nb^2 block logits plus, per active query, the keys of
// its softmax (own block + sorted rows). Memory: P of every (b, h), B H nb^2 doubles (block
// sizes far below sqrt(N) make it the largest buffer), plus O(block_size (d + dv)) per thread.
#pragma once

#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo sinkhorn_forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace);

// nb for n_k visible keys.
inline std::int64_t sinkhorn_blocks(std::int64_t n_k, std::int64_t block_size) {
  return (n_k + block_size - 1) / block_size;
}

// ---- Internals shared by the per-target code and the driver (sinkhorn.cpp). ----

struct SinkhornPlan {
  std::int64_t bs;      // block_size
  std::int64_t bs_eff;  // min(block_size, Nk): the longest block
  std::int64_t NB;      // ceil(Nk / block_size): blocks without masks
  double* P;            // [BH][NB][NB]: exp(L_ab - max_c L_ac)
  double* pass1;        // per thread: 2 NB d doubles (block sums, query means)
  std::size_t pass1_doubles;
  float* pass2;  // per thread
  std::size_t pass2_floats;
  double* acc;  // per thread: max(d, dv) doubles
  std::size_t acc_doubles;
  std::int64_t* scores;  // [BH * NB]
};

// Runs both passes (per-target code): block logits and Sinkhorn per (b, h), then the query
// blocks.
struct SinkhornArgs {
  const Problem* pr;
  const SinkhornConfig* config;
  const TokenLists* lists;
  const SinkhornPlan* plan;
  RunInfo* info;  // sort (pass 1) and attention (pass 2) seconds
};

}  // namespace smyrf::detail
