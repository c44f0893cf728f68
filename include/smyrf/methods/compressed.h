// smyrf/methods/compressed.h: CompressedConfig, low-rank and compressed attention, and their exact
// definitions.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

#include <cstdint>

namespace smyrf {

// Low-rank and compressed attention: each query attends, by exact softmax, to a short list of
// synthesised key/value rows (and, for star and global_memory, to a local window of real
// keys, merged as one softmax). Exact definitions below.
// Segment means: the n visible keys (or active queries) in position order cut into
// min(rank, n) balanced segments [floor(t n / s), floor((t + 1) n / s)), each averaged (double
// sum, rounded to f32).
//   linformer:         (Wang et al. 2020) K' = E K, V' = F V with E, F [rank, Nk] per head
//                      (inputs; when nullptr, seeded Rademacher signs +-1/sqrt(rank), E and F
//                      independent, a function of (seed, head, r, j)); sums in double over the
//                      visible keys in position order; masked keys' columns are dropped (no
//                      renormalisation). Not causal.
//   nystrom:           Nystromformer (Xiong et al. 2021): rank landmarks = segment means of Q
//                      and K; O = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V, the
//                      pseudo-inverse by pinv_iterations of the paper's iteration. Not causal;
//                      lse NaN for active queries (-inf where nothing is visible).
//   memory_compressed: (Liu et al. 2018) K, V mean-pooled over windows of `stride` consecutive
//                      visible keys (the last may be shorter). Not causal.
//   induced_points:    Set Transformer ISAB (Lee et al. 2019): rank inducing points I attend
//                      to (K, V); queries attend to the results (H_k = A K, H_v = A V). I
//                      [H, rank, d] input; when nullptr, segment means of the keys. Not causal.
//   star:              Star-Transformer (Guo et al. 2019): keys within |p - j| <= window plus
//                      one relay token (the softmax mean of K and V under the mean query). Not
//                      causal.
//   global_memory:     GMAT / ETC (Gupta & Berant 2020; Ainslie et al. 2020): keys within
//                      |p - j| <= window plus rank memory tokens, memory_k [H, rank, d] and
//                      memory_v [H, rank, dv] (inputs; when nullptr, segment means of K, V).
//                      Causal: supported with given memory only (window keys j <= p, memory
//                      always visible); a batch element with no visible key then attends to the
//                      memory alone.
// No dropout. Backward and double-precision definition: every kind (below).
//
// Exact definitions.
//
// Every kind synthesises, per (batch b, head h), M short key/value rows K' [M, d], V' [M, dv]
// and lets each active query attend to them by exact softmax (scale = params.scale); star and
// global_memory add a local window of real keys, merged with the synthetic rows as one softmax
// (two disjoint parts merged by logsumexp). Notation: n_q, n_k = the active queries and the
// visible keys of batch element b, each listed in position order; p = i + Nk - Nq is query i's
// position in key coordinates.
//
//   Segment means of n rows x_0..x_{n-1} (a list in position order) with `rank` segments:
//     s = min(rank, n) segments, segment t = rows [floor(t n / s), floor((t+1) n / s)) (sizes
//     differ by at most one, none empty); its mean = (sum of the rows in double, in list
//     order) / (row count), rounded to f32. n = 0: no segment.
//   linformer (Wang et al. 2020): K'[r] = sum_{j visible} E[h, r, j] K[j], V'[r] = sum_{j
//     visible} F[h, r, j] V[j] (r < rank; masked keys' columns dropped, no renormalisation).
//     E, F = projection_e, projection_f ([H, rank, Nk] contiguous) or, when nullptr, seeded
//     Rademacher signs +-s, s = float(1 / sqrt(rank)) (a Johnson-Lindenstrauss projection with
//     the variance 1/rank of the paper's N(0, 1/rank) entries), E and F independent, a function
//     of (seed, head, r, j) only (the same for every batch element and every Nk): the word
//     w = random_bits(seed, 0x4C494E5000000000 + head, r 2^32 + floor(j / 32)) (tag "LINP")
//     holds the signs of 32 consecutive keys; with c = 2 (j mod 32), E[h, r, j] = +s if bit c
//     of w is set, else -s, and F[h, r, j] = +s if bit c + 1 is set, else -s.
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
//
// Capabilities.
//   causal:        global_memory with given memory_k and memory_v only. Every other kind throws
//                  "smyrf: params.causal = true: compressed attention (<kind>) has no causal
//                  form"; global_memory with the default memory throws "... (global_memory)
//                  with the default memory (CompressedConfig.memory_k = nullptr) has no causal
//                  form (segment means mix future positions)".
//   dropout:       refused: smyrf::Error "smyrf: params.dropout = <p>: compressed attention
//                  has no dropout" (with params.causal: "... only the reference method has
//                  causal dropout").
//   backward:      every kind; with params.causal: global_memory with given memory.
//   attention_f64: every kind.
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: projection_e, projection_f (linformer), inducing (induced_points), memory_k
//                  and memory_v (global_memory, given together or not at all), each optional
//                  with the default above; a pointer given to a kind that does not read it, or a
//                  non-finite value, throws smyrf::Error naming the field.
//   gradients of learned parts: grad_<field> beside each learned input (below).
//   complexity:    above. Config checks (smyrf::Error naming the field): kind a Compression value,
//                  rank in [1, 65536], pinv_iterations in [0, 100], stride >= 1, window >= 0.
//
// Backward (attention_backward) and double-precision definition (attention_f64,
// attention_backward_f64), every kind.
//   The double-precision definition is the definition above computed in double from the
//   inputs, with none of its f32 roundings (segment and window means, the relay query, the
//   synthesised rows are kept in double): a rounding has no derivative. Where those roundings
//   are exact (e.g. means of values on a coarse binary grid over power-of-two counts) it equals
//   reference::attention(params, CompressedConfig) to double rounding.
//   Constants of the gradient: the discrete choices, all functions of the masks and the sizes
//   only: which keys are visible and which queries active, the segments (linformer: none;
//   memory_compressed: the windows of `stride` list entries; global_memory and induced_points
//   with default rows: the segments of the visible keys), the local window |p - j| <= window
//   (and j <= p with params.causal), which synthetic rows a batch element has; nystrom: its
//   landmark segments, and which row and column of A2 give the maxima of Z_0's scale.
//   The gradient, per kind, with dK', dV' the gradients of the synthesised rows K', V' (the
//   softmax backward of the synthetic part given the merged O and lse of the whole softmax,
//   which is that part's exact gradient; star and global_memory add the window part's
//   softmax backward to dQ, dK, dV):
//     linformer:         dK[j] = sum_r E[h, r, j] dK'[r], dV[j] = sum_r F[h, r, j] dV'[r] (j
//                        visible); dE[h, r, j] = sum_b dK'[b, h, r] . K[b, h, j] over the batch
//                        elements where j is visible, dF likewise with V.
//     memory_compressed: each key of window t gets dK'[t] / |t|, dV'[t] / |t|.
//     global_memory:     given memory: dmemory_k[h] = sum_b dK'[b, h], dmemory_v likewise;
//                        default: each key of segment t gets dK'[t] / |t|, dV'[t] / |t|.
//     induced_points:    H_k = A K and H_v = A V are attention of the inducing rows to (K, K)
//                        and (K, V): their softmax backward gives dI, dK (as keys and as the
//                        values of H_k) and dV; given I: dinducing[h] = sum_b dI[b, h];
//                        default I: each key of segment t gets dI[t] / |t| in dK as well.
//     star:              the relay (rk, rv) is attention of q_r to (K, K) and (K, V): its
//                        softmax backward gives dq_r, dK, dV; each active query gets
//                        dq_r / n_q (q_r is their mean).
//     nystrom:           O = A1 W: the softmax backward of A1 (its logsumexp recomputed)
//                        gives dQ, dKt, dW = A1^T dO; W = Z B (B = A3 V): dZ = dW B^T,
//                        dB = Z^T dW; B's softmax backward gives dQt, dK, dV; Z through
//                        every iterate back to A2 (through Z_0 = A2^T / (max_row max_col) the
//                        first maximal row and column carry the maxima's derivative), A2's
//                        softmax backward gives dQt, dKt; each active query / visible key of
//                        landmark segment t gets dQt[t] / |t|, dKt[t] / |t|. lse is not read
//                        (it holds NaN). Extra memory per thread: the pinv_iterations + 1
//                        iterates (rank^2 doubles each).
//   Learned parts' gradients: each learned input X has an output grad_X beside it, same layout
//   ([H, rank, Nk], [H, rank, d] or [H, rank, dv], contiguous), written (overwritten, not
//   accumulated) by attention_backward when non-null: dL/dX summed over the batch elements
//   (in batch order). A non-null grad_X whose X is nullptr (a seeded default or segment means
//   is not a parameter) or whose kind does not read X throws smyrf::Error naming grad_X.
//   attention() ignores the grad_ pointers.
//   Double precision: `f64` (CompressedDoubleParts below), read only by attention_f64 and
//   attention_backward_f64. f64->X, when non-null, holds learned part X's values in double
//   for the double-precision path, which otherwise reads X's floats widened; X must be
//   given too (whether a part is given, and so the definition's form, is said by the float
//   pointers alone). attention_backward_f64 writes f64->grad_X (when non-null; same rules as
//   grad_X), and throws naming CompressedConfig.grad_X when a float gradient is asked of it.
//   f32 backward: the same computation on the float path's own synthesised rows (recomputed as
//   the forward computes them), sums of products over the sequence in double, each softmax
//   backward by the dense kernels (the window part by the sparse local pattern's), partial
//   gradients added in a fixed order: the same bits at every thread count. Memory: the
//   synthesised rows and their gradients, f32 copies of Q (star, global_memory), K and V (star,
//   induced_points, nystrom), the per-batch copies of learned rows, O(N) per head (nystrom:
//   plus its iterates per thread).
struct CompressedDoubleParts {
  const double* projection_e = nullptr;  // [H, rank, Nk]
  const double* projection_f = nullptr;  // [H, rank, Nk]
  const double* inducing = nullptr;      // [H, rank, d]
  const double* memory_k = nullptr;      // [H, rank, d]
  const double* memory_v = nullptr;      // [H, rank, dv]
  double* grad_projection_e = nullptr;
  double* grad_projection_f = nullptr;
  double* grad_inducing = nullptr;
  double* grad_memory_k = nullptr;
  double* grad_memory_v = nullptr;
};

enum class Compression : std::uint8_t {
  linformer = 0, nystrom, memory_compressed, induced_points, star, global_memory
};
struct CompressedConfig {
  Compression kind = Compression::linformer;
  int rank = 64;  // 1..65536: linformer k, nystrom landmarks, inducing points, memory tokens
  const float* projection_e = nullptr;  // linformer: [H, rank, Nk] contiguous or nullptr
  const float* projection_f = nullptr;  // linformer: [H, rank, Nk] contiguous or nullptr
  int pinv_iterations = 6;              // nystrom: 0..100
  int stride = 4;                       // memory_compressed: pooling window and stride
  const float* inducing = nullptr;      // induced_points: [H, rank, d] contiguous or nullptr
  int window = 1;                       // star, global_memory: local radius
  const float* memory_k = nullptr;      // global_memory: [H, rank, d] contiguous or nullptr
  const float* memory_v = nullptr;      // global_memory: [H, rank, dv] contiguous or nullptr
  // Gradients of the learned parts (attention_backward; see Backward above), X's layout.
  float* grad_projection_e = nullptr;
  float* grad_projection_f = nullptr;
  float* grad_inducing = nullptr;
  float* grad_memory_k = nullptr;
  float* grad_memory_v = nullptr;
  // The double-precision path's learned parts and their gradients (see Backward above).
  const CompressedDoubleParts* f64 = nullptr;
};

}  // namespace smyrf
