// smyrf/methods/sinkhorn.h: SinkhornConfig, Sinkhorn sorting attention, and its exact definition.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

namespace smyrf {

// Sinkhorn sorting attention (Tay et al., ICML 2020). Per (batch, head): the visible keys
// (position order) are cut into nb = ceil(n_k / block_size) blocks of block_size (the last may
// be shorter), the active queries into nb balanced blocks. Block logits R [nb, nb]: with
// sort_net [H, d, ceil(Nk / block_size)] given (a batch element with fewer blocks uses the first
// nb columns), R_ab = (sum of the key rows of block a) . sort_net[:, b]; when nullptr,
// R_ab = scale * (mean query of block a) . (mean key of block b) (a parameter-free content sort
// for pretrained models; an empty query block uses its key block's mean). `iterations`
// Sinkhorn normalisations of R / temperature in log space (rows, then columns) give P; query
// block a attends by one softmax to its own key block and the sorted block, row t =
// sum_b P_ab (K_bt, V_bt) / sum_b P_ab over the blocks having a row t (2 block_size keys). With
// one block the sorted block is the block itself: dense output, lse + log 2. Exact definition
// below. Not causal. Cost O(n_k nb (d + dv) + n_q block_size (d + dv)); memory nb^2 doubles
// per (batch, head).
//
// Exact definition, per (batch b, head h), with n_q the active queries and n_k the visible keys
// of b:
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
// Computation, per (b, h): block sums and means in double O((n_q + n_k) d), R in double
// O(nb^2 d), Sinkhorn in double O(iterations nb^2); then per (b, h, query block): the sorted
// block accumulated in double O(nb block_size (d + dv)) and the block's softmax in float
// O(block_size 2 block_size (d + dv)). Total O(n_k nb (d + dv) + n_q block_size (d + dv)).
// RunInfo::attention_scores = per (b, h): nb^2 block logits plus, per active query, the keys of
// its softmax (own block + sorted rows). Memory: P of every (b, h), B H nb^2 doubles (block
// sizes far below sqrt(N) make it the largest buffer), plus O(block_size (d + dv)) per thread.
//
// Capabilities.
//   causal:        refused: smyrf::Error "smyrf: params.causal = true: sinkhorn attention has
//                  no causal form".
//   dropout:       refused: smyrf::Error "smyrf: params.dropout = <p>: sinkhorn attention
//                  has no dropout" (with params.causal: "... only the reference method has
//                  causal dropout").
//   backward:      refused: attention_backward throws "smyrf: sinkhorn attention has no
//                  backward".
//   attention_f64: refused: attention_f64 and attention_backward_f64 throw "smyrf: sinkhorn
//                  attention has no double-precision path".
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: sort_net (optional; every value finite, else smyrf::Error naming
//                  SinkhornConfig.sort_net[i]); without it the parameter-free content sort.
//   complexity:    above. Config checks (smyrf::Error naming the field): block_size >= 1 and not
//                  so small that the sort matrices would exceed 2^50 bytes, iterations in
//                  [0, 1000], temperature finite and > 0.
struct SinkhornConfig {
  int block_size = 64;
  int iterations = 8;
  float temperature = 0.75f;
  const float* sort_net = nullptr;  // [H, d, ceil(Nk / block_size)] contiguous or nullptr
};

}  // namespace smyrf
