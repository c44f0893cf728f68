// Informer ProbSparse attention (see InformerConfig in smyrf.h). The exact definition, per
// (batch b, head h), with n_q the active queries and n_k the visible keys of b:
//
//   Keys a query sees: the visible keys (key mask), with params.causal only those at positions
//   j <= p = i + Nk - Nq; S_i = their ascending list, c_i = |S_i|.
//   Samples: U = sample_keys, or when 0, min(n_k, ceil(factor ln n_k)), at least 1. Query i
//   (with c_i >= 1) draws U keys uniformly WITH replacement from S_i: sample t < U is
//   S_i[floor(r c_i / 2^64)] with r = random_bits(seed, 0x494E465200000000 + i, t) (tag "INFR";
//   spec::informer_sample_index in src/spec/draws.h): the same draw for every head and batch
//   element (as the official code shares one sample matrix), though S_i differs with the masks.
//   Measurement: M_i = max_t s_it - (sum_t s_it) / U, with s_it = scale * (q_i . k_{sample t})
//   (the paper's max-mean measurement over the samples; the official code divides the sum by
//   L_K instead, which only shifts the ranking when masks make L_K differ between queries).
//   Exactly: the dot product is the fma chain in double over the d elements in index order
//   (x = fma(q[e], k[e], x) from 0, the inputs converted exactly to double), then
//   s = fma(double(scale), x, +0); the sum runs in sample order (t = 0, 1, ...) in double; see
//   informer_score.
//   Selection: u = top_queries, or when 0, min(n_q, ceil(factor ln n_q)) (so 0 when n_q = 1),
//   capped at the number of active queries that see a key. The u such queries of largest M
//   (ties to the lower position) are the exact queries: softmax attention (scale) over S_i,
//   O_i = sum_j softmax_j(scale q_i . k_j) V_j, lse_i its logsumexp.
//   Every other active query is lazy: O_i = the mean of V over S_i (causal: over the visible
//   prefix j <= p, the official cumulative sum; non-causal: over all visible keys), with
//   lse_i = log(c_i), the logsumexp of uniform weights with logits 0 (so that
//   O = sum_j exp(0 - lse) V_j holds). A query with c_i = 0 gets O = 0, lse = -inf; masked
//   queries O = 0.
//
// Fast path: sample scores O(n_q U d) (the exact fma chains, 4 samples interleaved), selection
// by sorting (M, position) O(n_q log n_q), exact rows by the shared key-set kernel (AttendGroup,
// with CausalMask when causal) O(u n_k (d + dv)), lazy means by one pass in double (causal: a
// running prefix sum) O((n_q + n_k) dv). RunInfo.attention_scores = the sample scores plus the
// (exact query, key) pairs attended: n_q U + u n_k per (b, h) without masks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"
#include "spec/draws.h"

namespace smyrf::detail {

RunInfo informer_forward(const Problem& pr, const InformerConfig& config, Workspace* workspace);

// ---- Definition pieces (the sample index is spec::informer_sample_index). ----

// U for a batch element with n_k visible keys.
inline std::int64_t informer_samples(const InformerConfig& c, std::int64_t n_k) {
  if (c.sample_keys > 0) return c.sample_keys;
  const double f =
      n_k > 0 ? std::ceil(static_cast<double>(c.factor) * std::log(static_cast<double>(n_k))) : 0.0;
  const std::int64_t u = std::min<std::int64_t>(n_k, static_cast<std::int64_t>(std::min(f, 1e18)));
  return u > 1 ? u : 1;
}
// u for a batch element with n_q active queries (before the cap at the eligible queries).
inline std::int64_t informer_top(const InformerConfig& c, std::int64_t n_q) {
  if (c.top_queries > 0) return std::min<std::int64_t>(c.top_queries, n_q);
  const double f =
      n_q > 0 ? std::ceil(static_cast<double>(c.factor) * std::log(static_cast<double>(n_q))) : 0.0;
  return std::min<std::int64_t>(n_q, static_cast<std::int64_t>(std::min(f, 1e18)));
}
// s = scale * (q . k): the fma chain in double over e = 0..d-1, then times double(scale).
template <class T>
inline double informer_score(const T* q, const T* k, std::int64_t d, float scale) {
  double x = 0.0;
  for (std::int64_t e = 0; e < d; ++e)
    x = std::fma(static_cast<double>(to_float(q[e])), static_cast<double>(to_float(k[e])), x);
  // The product as fma(scale, x, +0): one rounding, and no a * b + c pattern that a compiler
  // could contract with the caller's running sum (the fast path's per-target code has FMA).
  return std::fma(static_cast<double>(scale), x, 0.0);
}

// c_i: the number of keys in the ascending list keys[0, n) at positions <= last.
inline std::int64_t informer_seen(const std::int32_t* keys, std::int64_t n, std::int64_t last) {
  return std::upper_bound(keys, keys + n, last,
                          [](std::int64_t x, std::int32_t k) { return x < k; }) -
         keys;
}

// ---- Internals shared by the per-target code and the driver (informer.cpp). ----

// Active queries per task of the measurement pass.
constexpr std::int64_t kInformerQueryBlock = 64;

struct InformerArgs {
  const Problem* pr;
  const TokenLists* lists;
  const InformerConfig* config;
  std::int64_t blocks;         // query blocks per (b, h) of the measurement pass
  std::int64_t groups;         // exact-query groups per (b, h) (tasks of the exact pass)
  double* m;                   // [BH * Nq]: M of each active query that sees a key
  std::int32_t* selected;      // [BH * Nq]: the exact queries of (b, h), ascending positions
  std::int32_t* n_selected;    // [BH]
  std::uint8_t* exact;         // [BH * Nq]: 1 for an exact query
  double* sums;                // [threads * dv]: running V sums of the lazy pass
  float* scratch;              // [threads * layout floats]: AttendGroup scratch
  std::size_t scratch_floats;  // per thread
  std::size_t key_cap;         // keys packed at a time by AttendGroup
  std::int64_t* scores;        // [BH * max(blocks, groups)]: scores per task
};

}  // namespace smyrf::detail
