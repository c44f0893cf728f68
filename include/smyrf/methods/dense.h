// smyrf/methods/dense.h: DenseConfig, exact attention.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors).
#pragma once

namespace smyrf {

// Exact attention with an online softmax over key tiles (flash-attention style): O(N) extra
// memory, SIMD kernels with runtime ISA dispatch, threads over batch x heads x query tiles.
//
// Definition: AttentionParams' semantics (the reference method's output) computed in f32:
// every active query attends by one softmax to every key it sees (key mask; with
// params.causal j <= i + Nk - Nq). Scores and sums are accumulated in f32 (bf16 inputs are
// converted exactly, or on CPUs with AVX512_BF16 the scores are bf16 pair products, exact, with
// f32 sums: see DType). No ties, no fallback: a query that sees no key gets O = 0, lse = -inf.
// Other methods fall back to this kernel where their key sets are every visible key (e.g.
// SMYRF or routing with one cluster).
//
// Capabilities.
//   causal:        supported (forward and backward).
//   dropout:       supported without causal; with params.causal smyrf::Error "smyrf:
//                  params.dropout = <p> with params.causal = true: only the reference method
//                  has causal dropout".
//   backward:      attention_backward (f32 inputs without broadcast strides, as for every
//                  backward) and attention_backward_f64.
//   attention_f64: supported (every visible key, as the reference).
//   bf16 inputs:   forward only (dropout and backward need f32: smyrf::Error naming
//                  params.dropout or params.dtype).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      forward yes; backward refuses it ("broadcast inputs have no backward").
//   learned parts: none.
//   complexity:    O(Nq Nk (d + dv)) time; extra memory O(Nk (d + dv)) per (batch, head) for
//                  the packed keys and values plus one score tile per thread.
//                  RunInfo::attention_scores = the (active query, key it sees) pairs.
struct DenseConfig {};

}  // namespace smyrf
