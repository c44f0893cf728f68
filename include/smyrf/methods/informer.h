// smyrf/methods/informer.h: InformerConfig, Informer ProbSparse attention, and its exact
// definition.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

namespace smyrf {

// Informer ProbSparse self-attention (Zhou et al., AAAI 2021). Per (batch, head), each active
// query that sees a key draws U keys uniformly with replacement from the keys it sees (visible;
// causal: j <= i + Nk - Nq), the draw a function of (seed, i, t) only (shared by heads and batch
// elements, as in the official code); M(q_i) = max_t s - mean_t s (s = scale q.k; the official
// code divides the sum by L_K instead). The u queries of largest M (ties to the lower position)
// get exact attention; the others the mean of V over the keys they see (causal: the visible
// prefix, the official cumulative sum). Defaults (0): u = min(n_q, ceil(factor ln n_q)),
// U = max(1, min(n_k, ceil(factor ln n_k))). Exact definition below (bit-exact scores, so
// the selection is reproducible). Causal: supported. No learned parts. lse: exact queries
// their lse, the others log(number of keys seen) (uniform weights, logits 0). Cost
// O(n_q U d + u n_k (d + dv) + (n_q + n_k) dv).
//
// Exact definition, per (batch b, head h), with n_q the active queries and n_k the visible keys
// of b:
//
//   Keys a query sees: the visible keys (key mask), with params.causal only those at positions
//   j <= p = i + Nk - Nq; S_i = their ascending list, c_i = |S_i|.
//   Samples: U = sample_keys, or when 0, min(n_k, ceil(factor ln n_k)), at least 1. Query i
//   (with c_i >= 1) draws U keys uniformly WITH replacement from S_i: sample t < U is
//   S_i[floor(r c_i / 2^64)] with r = random_bits(seed, 0x494E465200000000 + i, t) (smyrf.h; tag
//   "INFR"): the same draw for every head and batch element (as the official code shares one
//   sample matrix), though S_i differs with the masks.
//   Measurement: M_i = max_t s_it - (sum_t s_it) / U, with s_it = scale * (q_i . k_{sample t})
//   (the paper's max-mean measurement over the samples; the official code divides the sum by
//   L_K instead, which only shifts the ranking when masks make L_K differ between queries).
//   Exactly: the dot product is the fma chain in double over the d elements in index order
//   (x = fma(q[e], k[e], x) from 0, the inputs converted exactly to double), then
//   s = fma(double(scale), x, +0); the sum runs in sample order (t = 0, 1, ...) in double.
//   Selection: u = top_queries, or when 0, min(n_q, ceil(factor ln n_q)) (so 0 when n_q = 1),
//   capped at the number of active queries that see a key. The u such queries of largest M
//   (ties to the lower position) are the exact queries: softmax attention (scale) over S_i,
//   O_i = sum_j softmax_j(scale q_i . k_j) V_j, lse_i its logsumexp.
//   Every other active query is lazy: O_i = the mean of V over S_i (causal: over the visible
//   prefix j <= p, the official cumulative sum; non-causal: over all visible keys), with
//   lse_i = log(c_i), the logsumexp of uniform weights with logits 0 (so that
//   O = sum_j exp(0 - lse) V_j holds). A query with c_i = 0 gets O = 0, lse = -inf; masked
//   queries O = 0.
//   Training: the samples and the selection are constants of the gradient (recomputed from the
//   inputs, not differentiated). An exact query's gradient is that of softmax attention over
//   S_i. A lazy query's output is the mean of V over S_i, whose weights 1/c_i do not depend on
//   Q or K: its gradient goes to V only, dV_j += dO_i / c_i for j in S_i. Dropout drops the
//   exact queries' softmax weights, weight (b, h, 0, i, j); the lazy means are not dropped
//   (their uniform weights are never formed: dropping them would cost O(n_q n_k)), and lse
//   stays that of the undropped weights.
//
// Cost: sample scores O(n_q U d) (the exact fma chains), selection by sorting (M, position)
// O(n_q log n_q), exact rows O(u n_k (d + dv)) (f32 softmax attention, as dense), lazy means by
// one pass in double (causal: a running prefix sum) O((n_q + n_k) dv).
// RunInfo::attention_scores = the sample scores plus the (exact query, key) pairs attended:
// n_q U + u n_k per (b, h) without masks.
//
// Capabilities.
//   causal:        supported (forward, dropout, backward).
//   dropout:       yes, causal too: the exact queries' weights (b, h, 0, i, j); lazy means are
//                  not dropped (Training above).
//   backward:      attention_backward (f32, no broadcast strides): samples and selection are
//                  constants of the gradient; lazy queries pass gradient to V only (Training
//                  above). Extra memory O(n_k (d + dv)) per (b, h) and O(u (d + dv)) per thread.
//   attention_f64: attention_f64 and attention_backward_f64 on the same selection (from the
//                  inputs rounded to f32): exact queries attend over S_i in double, lazy queries
//                  have the constant logits 0 over S_i (the mean; no Q or K gradient).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: none.
//   complexity:    O(n_q U d + u n_k (d + dv) + (n_q + n_k) dv) time. Config checks (smyrf::Error
//                  naming the field): factor finite and > 0, top_queries >= 0, sample_keys >= 0.
struct InformerConfig {
  float factor = 5.0f;
  int top_queries = 0;
  int sample_keys = 0;
};

}  // namespace smyrf
