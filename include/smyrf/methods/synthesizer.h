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
//   causal:        supported (forward).
//   dropout:       refused: smyrf::Error "smyrf: params.dropout = <p>: synthesizer attention
//                  has no dropout" (with params.causal: "... only the reference method has
//                  causal dropout").
//   backward:      refused: attention_backward throws "smyrf: synthesizer attention has no
//                  backward".
//   attention_f64: refused: attention_f64 and attention_backward_f64 throw "smyrf: synthesizer
//                  attention has no double-precision path".
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: w1, b1, w2, b2 (dense) and logits (random), each optional with the seeded
//                  default above; the validation rules above (smyrf::Error naming the field).
//   complexity:    O(Nq Nk dv) (random), O(Nq hidden (d + Nk) + Nq Nk dv) (dense): quadratic.
enum class SynthesizerKind : std::uint8_t { dense = 0, random };
struct SynthesizerConfig {
  SynthesizerKind kind = SynthesizerKind::random;
  int hidden = 64;
  const float* w1 = nullptr;
  const float* b1 = nullptr;
  const float* w2 = nullptr;
  const float* b2 = nullptr;
  const float* logits = nullptr;
};

}  // namespace smyrf
