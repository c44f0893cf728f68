// smyrf/methods/routing.h: RoutingConfig, routing attention, and its exact definition.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

#include <cstdint>

namespace smyrf {

struct AttentionParams;

// Routing attention (Roy, Saffar, Vaswani & Grangier, TACL 2021). Shared centroids mu_c
// (K = n_clusters of them, d dims): given per head in `centroids` ([H, n_clusters, d] floats,
// contiguous, shared by the batch; the model's learned, online-k-means-updated centroids;
// every value must be finite; `iterations` is then unused) or, when nullptr, fitted to this
// call's inputs per (batch, head) by `iterations` rounds of spherical k-means on the
// unit-normalised active queries and visible keys. Each query and key is routed to its most
// similar centroid (largest cosine, ties to the lowest index); queries and keys are sorted by
// (centroid, position) and cut into C = max(ceil(n_q / window), ceil(n_k / window), 1)
// balanced chunks by SMYRF's cluster rule; query chunk c attends to key chunk c (one round).
// Exact arithmetic (all in double, in this order, so cluster ids are reproducible bit for bit):
//   unit vector of a row x (inputs as double): n2 = fma chain over j = 0..d-1 (n2 = fma(x_j,
//     x_j, n2), from 0); u_j = x_j * inv with inv = 1 / sqrt(n2) (one rounded inverse);
//     u = 0 when n2 == 0. Given centroids are normalised by this rule too (a zero row stays 0).
//   similarity sim(u, mu) = fma chain over j = 0..d-1 of u_j * mu_j (from 0); the cosine of
//     the rule. A token goes to the centroid of largest sim, ties to the lowest index.
//   k-means list (per (b, h)): active queries in position order, then visible keys in position
//     order, n entries. Initial mu_c = u of entry floor(c n / K) (c = 0..K-1). Each iteration:
//     assign every entry, then mu_c = unit vector (rule above) of the sum s of its members'
//     unit vectors (the normalised mean), accumulated in list order as fma chains
//     s_j = fma(x_j, inv, s_j) from 0 (x the member's row, inv its inverse norm above); a
//     centroid with no member, or whose s has n2 == 0, keeps its value. Routing uses the
//     centroids after the last iteration (iterations = 0: the initial ones). The softmax
//     scale plays no part in the routing.
// Causal: supported. A query at p = i + Nk - Nq sees the keys of its chunk at positions <= p;
// if there is none it attends to the key at position p alone when 0 <= p and that key is
// visible (with Nq == Nk: its own position), else O = 0 and lse = -inf. With window >= Nq and
// window >= Nk (one chunk) the result is dense attention (the dense kernel is used), causal or
// not. Complexity O(N K d (iterations + 1) + N window d).
//
// Capabilities.
//   causal:        supported (forward, dropout, backward), with the fallback above.
//   dropout:       yes, causal too: weight (b, h, 0, i, j).
//   backward:      attention_backward (f32, no broadcast strides): centroids (fitted or given)
//                  and routes are constants of the gradient (no gradient for
//                  RoutingConfig.centroids: they train by routing_update_centroids below).
//   attention_f64: attention_f64 and attention_backward_f64 over the same pairs (routes from
//                  the inputs rounded to f32).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: the centroids (optional input; when nullptr, fitted per call). A non-finite
//                  value throws "smyrf: RoutingConfig.centroids[h, c, j] = ...: must be finite".
//   complexity:    O(N K d (iterations + 1) + N window d) time. Config checks (smyrf::Error
//                  naming the field): n_clusters in [1, 65536], window >= 1, iterations >= 0.
struct RoutingConfig {
  int n_clusters = 16;
  int window = 64;
  int iterations = 4;
  const float* centroids = nullptr;
};

// The Routing Transformer's online k-means step for given centroids: an explicit update, not a
// gradient (the routes are constants of attention's gradient, and the centroids act on the
// output only through them, so their gradient is zero wherever it exists). Every active query
// and visible key of the call is routed as attention routes it (the unit-vector and similarity
// rules above); then for each head h and centroid c with members, m = the mean of its members'
// unit vectors over the batch (per batch element its queries then its keys, in position order,
// summed in double), and
//   out[h][c] = unit(decay * mu_c + (1 - decay) * m)
// with mu_c the unit vector of the given row and unit() the rule above; a centroid without
// members keeps its given row. This is the moving average of the paper's mini-batch k-means
// (decay = its lambda). out: [H, n_clusters, d] floats, contiguous; it may be
// config.centroids itself (an in-place step). Same checks as attention() (the call's
// params.o and params.v are not read), plus config.centroids non-null and decay in [0, 1]
// (smyrf::Error naming RoutingConfig.centroids or decay). Same bits whatever the thread count.
void routing_update_centroids(const AttentionParams& params, const RoutingConfig& config, float decay,
                              float* out);

}  // namespace smyrf
