// Informer ProbSparse attention: internals. The exact definition (samples, bit-exact scores,
// selection, lazy queries, cost) is the public contract in smyrf/methods/informer.h.
//
// Fast path: sample scores (the exact fma chains, 4 samples interleaved), selection by sorting
// (M, position), exact rows by the shared key-set kernel (AttendGroup, with CausalMask when
// causal), lazy means by one pass in double (causal: a running prefix sum).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/problem.h"
#include "smyrf/smyrf.h"
#include "spec/draws.h"

namespace smyrf::detail {

RunInfo informer_forward(const Problem& pr, const InformerConfig& config, Workspace* workspace);
// The selection of the forward (passes 1 and 2) without writing O or lse: 1 at [(b * H + h) *
// Nq + i] for each exact query.
std::vector<std::uint8_t> informer_exact_queries(const Problem& pr, const InformerConfig& config);

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
