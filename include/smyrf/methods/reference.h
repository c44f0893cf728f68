// smyrf/methods/reference.h: ReferenceConfig, the naive double-precision oracle.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors).
#pragma once

namespace smyrf {

// Naive attention accumulated in double: the test oracle. O(Nq*Nk) time, O(Nk) memory per
// thread. Never optimised on purpose.
//
// Definition: AttentionParams' semantics exactly: every active query attends, by one softmax of
// scale * q.k, to every key it sees (key mask; with params.causal only j <= i + Nk - Nq), with
// scores, softmax and sums in double from the inputs (bf16 converted exactly) and O rounded to
// f32. Dropout (params.dropout > 0) applies AttentionParams' keep rule to each weight. No ties
// and no fallback: a query that sees no key gets O = 0 and lse = -inf.
//
// Capabilities.
//   causal:        supported (forward, backward, dropout).
//   dropout:       supported, also with causal (the only method with causal dropout).
//   backward:      attention_backward (f32 inputs without broadcast strides, as for every
//                  backward) and attention_backward_f64.
//   attention_f64: supported.
//   bf16 inputs:   forward only (dropout and backward need f32: smyrf::Error naming
//                  params.dropout or params.dtype).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      forward yes; backward refuses it ("broadcast inputs have no backward").
//   learned parts: none.
//   complexity:    O(Nq Nk (d + dv)) time, O(Nk + dv) doubles per thread.
//                  RunInfo::attention_scores = the (active query, key it sees) pairs (not
//                  counted, 0, when params.lse is set or dropout > 0: the training path).
struct ReferenceConfig {};

}  // namespace smyrf
