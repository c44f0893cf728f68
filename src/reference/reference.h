// The double-precision oracles of every method, for the tests: one reference::attention overload
// per method config, all returning one Output, and reference::attention_backward where a
// backward is defined. Each is written from the method's definition (smyrf.h and the method's
// header) in plain loops, independently of the fast path: it shares with it only the random
// draws of src/spec/draws.h. Integer inspection oracles (clusters, buckets, routes, key sets,
// selections) give the intermediate results the tests compare exactly.
//
// Every entry point validates params and config as attention() does (throws smyrf::Error,
// through detail::reference_problem in common.h), reads the inputs (f32 or bf16, any strides,
// masks, params.causal, scale, seed) and writes nothing: params.o and params.lse are ignored.
#pragma once

#include <cstdint>
#include <vector>

#include "spec/results.h"
#include "smyrf/smyrf.h"

namespace smyrf::reference {

// ---------------------------------------------------------------------------------------
// Forward.

struct Output {
  std::int64_t B = 0, H = 0, Nq = 0, dv = 0;
  // [B, H, Nq, dv] contiguous, computed in double: 0 for a masked query and for one whose key
  // set is empty (unless the method documents a fallback).
  std::vector<double> o;
  // [B, H, Nq]: each query's logsumexp over its key (multi)set as smyrf.h defines it; -inf for
  // a masked query and for one that sees nothing; NaN where the method has no softmax over keys
  // (linear; compressed nystrom).
  std::vector<double> lse;

  // ---- Diagnostics for the tests' tolerance rules; empty unless the overload fills them. ----
  // LinearConfig, [B, H, Nq]:
  //   cond: sum_j |a_ij| / |sum_j a_ij| (1 for nonnegative features; 0 where the query sees no
  //     key or the normaliser is exactly 0, which give O = 0). Gated: the same with the gated
  //     weights a_ij prod_{t > j} g_t (1 - g_j).
  //   cond_abs: non-causal only (0 elsewhere): sum_r |phi_q(q_i)_r| sum_j |phi_k(k_j)_r| over
  //     the visible keys, divided by |sum_j a_ij| (by 1 for efficient attention): the
  //     magnitude that bounds the rounding of the fast path's float value products.
  //   saw: 1 for an active query that sees at least one key.
  std::vector<double> cond, cond_abs;
  std::vector<std::uint8_t> saw;
  // ReformerConfig: the keys query i attends to in round r (after masks, causality, self
  // rule), [((b * H + h) * rounds + r) * Nq + i]; 0 for masked queries.
  int rounds = 0;
  std::vector<std::int64_t> set_size;
  // CompressedConfig, per (b, h) in order:
  //   keys, values: the synthetic key rows (d each) and value rows (dv each) the queries attend
  //     to (nystrom: the landmarks K~ and W = Z (A3 V); star: the relay row);
  //   stage_queries: the rows that attend to the real keys to build the synthetic rows
  //     (nystrom: Q~; star: q_r; induced_points: the inducing rows), d each; empty otherwise;
  //   amplify: nystrom: max_i sum_j |Z_ij| (how much W amplifies errors of A3 V); else 1.
  std::vector<std::vector<double>> keys, values, stage_queries;
  std::vector<double> amplify;

  // o and lse rounded once to f32 (what a float output of the oracle holds).
  std::vector<float> o_f32() const;
  std::vector<float> lse_f32() const;
};

// Exact softmax attention over every key each query sees (key mask, params.causal), with
// dropout (params.dropout) on the weights. Dense is the same definition.
Output attention(const AttentionParams& params, const ReferenceConfig& config);
Output attention(const AttentionParams& params, const DenseConfig& config);
// Either key selection. lsh: every round's clusters, rounds merged by logsumexp; causal with
// SmyrfConfig's fallback window; with dropout, the softmax over the multiset of (round, key)
// with the dropout factors.
Output attention(const AttentionParams& params, const SmyrfConfig& config);
// Fills rounds and set_size.
Output attention(const AttentionParams& params, const ReformerConfig& config);
Output attention(const AttentionParams& params, const ClusteredConfig& config);
Output attention(const AttentionParams& params, const RoutingConfig& config);
Output attention(const AttentionParams& params, const SparseConfig& config);
// Fills cond, cond_abs and saw.
Output attention(const AttentionParams& params, const LinearConfig& config);
// Fills keys, values, stage_queries and amplify.
Output attention(const AttentionParams& params, const CompressedConfig& config);
Output attention(const AttentionParams& params, const InformerConfig& config);
Output attention(const AttentionParams& params, const SinkhornConfig& config);
Output attention(const AttentionParams& params, const SynthesizerConfig& config);

// ---------------------------------------------------------------------------------------
// Backward: dL/dQ, dL/dK, dL/dV of the oracle's own forward (the same O, lse and dropout
// factors) for dL/dO = grad_o ([B, H, Nq, dv] contiguous). SMYRF: lsh only, its clusters
// taken as constants. Rows of masked queries and keys get zero gradients.
struct Gradients {
  std::vector<double> q;  // [B, H, Nq, d]
  std::vector<double> k;  // [B, H, Nk, d]
  std::vector<double> v;  // [B, H, Nk, dv]
};
Gradients attention_backward(const AttentionParams& params, const std::vector<double>& grad_o,
                             const ReferenceConfig& config);
Gradients attention_backward(const AttentionParams& params, const std::vector<double>& grad_o,
                             const DenseConfig& config);
Gradients attention_backward(const AttentionParams& params, const std::vector<double>& grad_o,
                             const SmyrfConfig& config);

// ---------------------------------------------------------------------------------------
// Inspection.

// SMYRF (lsh): each round's active queries and visible keys in (hash, position) order.
using SmyrfClusters = detail::ClusterLists;
SmyrfClusters clusters(const AttentionParams& params, const SmyrfConfig& config);

// SMYRF (centroid): the keys each query cluster attends to, per (b, h) in order then per
// cluster, ascending positions.
std::vector<std::vector<std::int32_t>> selections(const AttentionParams& params,
                                                  const SmyrfConfig& config);

using ReformerBuckets = detail::ReformerBuckets;
ReformerBuckets buckets(const AttentionParams& params, const ReformerConfig& config);

using ClusteredClusters = detail::ClusteredInspection;
ClusteredClusters clusters(const AttentionParams& params, const ClusteredConfig& config);

using Routes = detail::RoutingRoutes;
Routes routes(const AttentionParams& params, const RoutingConfig& config);
// The keys each query attends to: per (b, h, i) in order, ascending positions (empty for a
// masked query or one that sees nothing).
std::vector<std::vector<std::int32_t>> key_sets(const AttentionParams& params,
                                                const RoutingConfig& config);

// Sparse: the ascending keys query i of (b, h) attends to (the pattern, the key mask and
// params.causal); empty for a masked query.
std::vector<std::int32_t> key_set(const AttentionParams& params, const SparseConfig& config,
                                  std::int64_t b, std::int64_t h, std::int64_t i);

// Informer: the exact (selected) queries of each (b, h), ascending positions.
std::vector<std::vector<std::int32_t>> exact_queries(const AttentionParams& params,
                                                     const InformerConfig& config);

}  // namespace smyrf::reference
