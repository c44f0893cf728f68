// smyrf/methods/synthesizer.h: SynthesizerConfig, Synthesizer attention, and its exact definition.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

#include <cstdint>

namespace smyrf {

// Synthesizer (Tay et al., ICML 2021): attention weights not from q.k.
//   dense:  logits_ij = w2[:, j] . relu(W1^T q_i + b1) + b2_j (a two-layer net of the query
//           over the Nk positions); w1 [H, d, hidden], b1 [H, hidden], w2 [H, hidden, Nk],
//           b2 [H, Nk].
//   random: logits_ij = R[h, i, j], R [H, Nq, Nk].
// O_i = softmax_j(logits_ij) V over the visible keys (causal: supported); lse the logsumexp of
// the logits. params.scale is not used. Learned weights are inputs; each nullptr pointer is
// replaced by a seeded draw from (seed, head), the same for every batch element: R ~ N(0, 1),
// w1 ~ N(0, 1/d), w2 ~ N(0, 1/hidden), biases 0. hidden (1..65536) is read by the dense kind
// only. Cost O(Nq Nk dv) (random), O(Nq hidden (d + Nk) + Nq Nk dv) (dense): quadratic, like
// dense. Exact definition below.
//
// Exact definition:
//
//   dense:  logits_ij = b2[h][j] + sum_u w2[h][u][j] relu(b1[h][u] + sum_t q_it w1[h][t][u])
//           with w1 [H, d, hidden], b1 [H, hidden], w2 [H, hidden, Nk], b2 [H, Nk], contiguous,
//           for this call's d and Nk (the net of a head sees the query only, never the keys).
//   random: logits_ij = R[h][i][j], R = config.logits [H, Nq, Nk] contiguous.
//   O_i = sum_j softmax_j(logits_ij) V_j over the keys query i sees (key mask; with
//   params.causal j <= i + Nk - Nq); lse_i = logsumexp_j logits_ij over the same keys. A masked
//   query, or one that sees no key, gets O = 0 and lse = -inf. params.scale is not used (the
//   logits are the net's or R's, unscaled).
//
// Defaults: each pointer that is nullptr is replaced by a seeded draw, a function of
// (params.seed, head) only (the same for every batch element), given pointers are used as
// they are (each independently):
//   w1[h][t][u] = float(standard_normal(seed, stream(h, 0), t * hidden + u) / sqrt(d))
//   w2[h][u][j] = float(standard_normal(seed, stream(h, 1), u * Nk + j) / sqrt(hidden))
//   R[h][i][j]  = float(standard_normal(seed, stream(h, 2), i * Nk + j))
//   b1 = 0, b2 = 0
// with stream(h, part) = 0x53594E5400000000 + 4 h + part (tag "SYNT") and standard_normal of
// smyrf.h. These draws are part of the definition.
//
// Validation: kind is dense or random; dense: 1 <= hidden <= 65536 and logits == nullptr;
// random: w1, b1, w2, b2 == nullptr (hidden is not read); given arrays must be finite.
//
// Computation. dense: the logits are exact attention with scale 1 between the queries
// h'_i = [relu(W1^T q_i + b1), 1] and the keys k'_j = [w2[:, j], b2_j] (hidden + 1 features):
// both are built into buffers and dense attention (DenseConfig) runs on that sub-problem
// (masks and causality carry over; bf16 V is converted to f32 first): O(Nq hidden (d + Nk) +
// Nq Nk dv), RunInfo as dense's (scores: the (query, key) pairs of the sub-problem) plus the
// buffers. random: tasks (head, block of 32 queries), each reading (or drawing, for the
// default R: H Nq Nk normal draws per call) its logit rows once for every batch element; per row
// the max, exp and sum on SIMD vectors, then P.V on the packed V rows with the dense tile kernel:
// O(Nq Nk dv); attention_scores = the (active query, visible key) pairs.
//
// Capabilities.
//   causal:        supported (forward and backward).
//   dropout:       supported without params.causal (both kinds): weight (b, h, 0, i, j) of the
//                  softmax over the visible keys, the keep decision of smyrf.h, as dense's; with
//                  params.causal: smyrf::Error "... only the reference method has causal
//                  dropout".
//   backward:      both kinds, causal included (see Backward below).
//   attention_f64: both kinds (see Backward below).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: w1, b1, w2, b2 (dense) and logits (random), each optional with the seeded
//                  default above; the validation rules above (smyrf::Error naming the field).
//   gradients of learned parts: grad_<field> beside each learned input (below).
//   complexity:    O(Nq Nk dv) (random), O(Nq hidden (d + Nk) + Nq Nk dv) (dense): quadratic.
//
// Backward (attention_backward) and double-precision definition (attention_f64,
// attention_backward_f64), both kinds.
//   The double-precision definition is the definition above computed in double from the
//   inputs (the seeded defaults are the same floats, widened). Constants of the gradient: which
//   keys are visible and which queries active, the dropout mask, and relu's derivative at 0
//   (0: the hidden unit counts as off).
//   The gradient: with P_ij the softmax weights, M_ij the dropout factor (1 without dropout),
//   D_i = dO_i . O_i and dS_ij = P_ij (M_ij dO_i . V_j - D_i) over the keys query i sees:
//     dV_j = sum_i P_ij M_ij dO_i; dK = 0 (the keys are not read);
//     random: dlogits[h][i][j] = sum_b dS_bij, dQ = 0 (the queries are not read);
//     dense:  with a_i = relu(W1^T q_i + b1): dw2[h][u][j] = sum_b sum_i dS_bij a_iu,
//             db2[h][j] = sum_b sum_i dS_bij, g_iu = [a_iu > 0] sum_j dS_ij w2[u][j],
//             dq_i = W1 g_i, dw1[h][t][u] = sum_b sum_i q_it g_iu, db1[h][u] = sum_b sum_i g_iu.
//   Learned parts' gradients: each learned input X has an output grad_X beside it, same layout,
//   written (overwritten, not accumulated) by attention_backward when non-null: dL/dX summed
//   over the batch elements. A non-null grad_X whose X is nullptr (a seeded default is not a
//   parameter) or whose kind does not read X throws smyrf::Error naming grad_X.
//   attention() ignores the grad_ pointers.
//   Double precision: `f64` (SynthesizerDoubleParts below), read only by attention_f64 and
//   attention_backward_f64. f64->X, when non-null, holds learned part X's values in double
//   (X must be given too: whether a part is given, and so the definition's form, is said by
//   the float pointers alone); otherwise the double path reads X's floats widened.
//   attention_backward_f64 writes f64->grad_X (when non-null; same rules as grad_X), and throws
//   naming SynthesizerConfig.grad_X when a float gradient is asked of it.
//   f32 backward. random: tasks (head, block of 32 queries) recompute P = exp(R - lse) from the
//   forward's lse, dO.V^T with the tile kernel, dS, and sum dlogits over the batch in batch
//   order (double); tasks (batch, head, block of 64 keys) then dV = (P M)^T dO. dense: the
//   sub-problem of the forward (queries [a_i, 1], keys [w2[:, j], b2_j]) through the dense
//   backward, then the chain above with sums over the sequence in double, per head in batch
//   order. The same bits at every thread count. Memory: random, per thread a block's rows of
//   P and dS (32 Nk floats each); dense, the sub-problem's rows and their gradients,
//   O(N hidden) per head.
struct SynthesizerDoubleParts {
  const double* w1 = nullptr;      // [H, d, hidden]
  const double* b1 = nullptr;      // [H, hidden]
  const double* w2 = nullptr;      // [H, hidden, Nk]
  const double* b2 = nullptr;      // [H, Nk]
  const double* logits = nullptr;  // [H, Nq, Nk]
  double* grad_w1 = nullptr;
  double* grad_b1 = nullptr;
  double* grad_w2 = nullptr;
  double* grad_b2 = nullptr;
  double* grad_logits = nullptr;
};

enum class SynthesizerKind : std::uint8_t { dense = 0, random };
struct SynthesizerConfig {
  SynthesizerKind kind = SynthesizerKind::random;
  int hidden = 64;
  const float* w1 = nullptr;
  const float* b1 = nullptr;
  const float* w2 = nullptr;
  const float* b2 = nullptr;
  const float* logits = nullptr;
  // Gradients of the learned parts (attention_backward; see Backward above), X's layout.
  float* grad_w1 = nullptr;
  float* grad_b1 = nullptr;
  float* grad_w2 = nullptr;
  float* grad_b2 = nullptr;
  float* grad_logits = nullptr;
  // The double-precision path's learned parts and their gradients (see Backward above).
  const SynthesizerDoubleParts* f64 = nullptr;
};

}  // namespace smyrf
