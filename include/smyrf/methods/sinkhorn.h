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
//   Dropout (params.dropout = p > 0): the softmax weight of query i on a key of its own block
//   at position j is weight (b, h, 0, i, j) of smyrf.h's dropout, on sorted row t weight
//   (b, h, 0, i, Nk + t): kept ones are multiplied by 1 / (1 - p), dropped ones by 0; lse is
//   unchanged.
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
// Backward (attention_backward) and double-precision definition (attention_f64,
// attention_backward_f64).
//   The double-precision definition is the definition above computed in double from the
//   inputs (sort_net widened, or SinkhornConfig::f64->sort_net). Constants of the gradient:
//   the blocks (which keys and queries each holds), which sorted rows are left out (all weights
//   underflowed), and the dropout mask. Everything else is differentiated, the Sinkhorn
//   iterations included (as in the paper, whose sort net learns through them):
//     the softmax of query i over its keys n (own keys, sorted rows) with weights p_n and
//     dropout factors m_n: D_i = dO_i . O_i, ds_n = p_n (m_n dO_i . v_n - D_i),
//     dq_i += scale sum_n ds_n k_n, dk_n += scale ds_n q_i, dv_n += p_n m_n dO_i;
//     a sorted row t of block a, K~ = sum_b w_b K_bt with w_b = P_ab / sum_c P_ac over the
//     blocks having a row t: dK_bt += w_b dK~, dV_bt += w_b dV~ and
//     dL_ab += w_b (dK~ . (K_bt - K~) + dV~ . (V_bt - V~)) (L the final log-space matrix);
//     each normalisation L' = L - lse (over a row or a column) back: dL = dL' - exp(L') times
//     the sum of dL' over that row or column, last iteration first; dR = dL / temperature;
//     sort_net: dW[h][e][b] = sum over the batch of sum_a (key sum of block a)_e dR_ab, and
//     each key of block a gets dK += sum_b W[h][:, b] dR_ab; content sort: with qm_a, km_b the
//     means, dqm_a = scale sum_b dR_ab km_b spread as dqm_a / |query block a| over its queries
//     (to key block a's mean when the query block is empty), dkm_b = scale sum_a dR_ab qm_a
//     spread as dkm_b / |key block b|.
//   Learned part's gradient: grad_sort_net ([H, d, NB], sort_net's layout), written
//   (overwritten) by attention_backward when non-null: dL/dW summed over the batch (a batch
//   element with nb < NB blocks leaves the columns it does not read at 0 for its share).
//   A non-null grad_sort_net with sort_net == nullptr (the content sort has no parameter)
//   throws smyrf::Error naming SinkhornConfig.grad_sort_net. attention() ignores it.
//   Double precision: `f64` (SinkhornDoubleParts below), read only by attention_f64 and
//   attention_backward_f64: f64->sort_net, when non-null, holds sort_net's values in double
//   (sort_net must be given too); attention_backward_f64 writes f64->grad_sort_net (same rules
//   as grad_sort_net) and throws naming SinkhornConfig.grad_sort_net when the float gradient is
//   asked of it.
//   f32 backward: per (b, h) the block logits and Sinkhorn again (keeping each normalisation's
//   logsumexps, from which the backward rebuilds every intermediate L); per (b, h, query block)
//   the block's keys rebuilt as in the forward, the softmax backward from the forward's lse
//   (dQ written; the own rows' and sorted rows' gradients kept, float, 2 block_size (d + dv)
//   per task); per (b, h, key block) each key's gradient gathered from its own block's task and
//   from every sorted row it enters (in block order) and that block's column of dL; per (b, h)
//   the Sinkhorn backward and the block logits' chain; the sort net's gradient summed over the
//   batch in batch order. Same bits at every thread count. Cost: about twice the forward's
//   sorted-block work plus the softmax backward; memory O(N (d + dv)) per (b, h) for the
//   rows' gradients plus O(iterations nb) logsumexps, beside the forward's.
//
// Capabilities.
//   causal:        refused: smyrf::Error "smyrf: params.causal = true: sinkhorn attention has
//                  no causal form".
//   dropout:       supported (above), forward and backward.
//   backward:      yes (above).
//   attention_f64: yes (above).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: sort_net (optional; every value finite, else smyrf::Error naming
//                  SinkhornConfig.sort_net[i]); without it the parameter-free content sort.
//   gradients of learned parts: grad_sort_net (above).
//   complexity:    above. Config checks (smyrf::Error naming the field): block_size >= 1 and not
//                  so small that the sort matrices would exceed 2^50 bytes, iterations in
//                  [0, 1000], temperature finite and > 0.
struct SinkhornDoubleParts {
  const double* sort_net = nullptr;  // [H, d, NB]
  double* grad_sort_net = nullptr;
};

struct SinkhornConfig {
  int block_size = 64;
  int iterations = 8;
  float temperature = 0.75f;
  const float* sort_net = nullptr;  // [H, d, ceil(Nk / block_size)] contiguous or nullptr
  float* grad_sort_net = nullptr;    // sort_net's gradient (attention_backward; see Backward)
  const SinkhornDoubleParts* f64 = nullptr;  // the double path's sort net (see Backward)
};

}  // namespace smyrf
