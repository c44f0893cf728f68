// smyrf/methods/smyrf.h: SmyrfConfig, its transforms and key selections, and the exact hash.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

#include <cstdint>

namespace smyrf {

// Asymmetric transform that turns maximum-inner-product search into nearest-neighbour search.
// With MQ, MK the largest query and key norms of the (batch, head) and m = alsh_m:
//   xbox_plus: q -> [q, 0, sqrt(MQ^2+MK^2-|q|^2)],  k -> [k, sqrt(MQ^2+MK^2-|k|^2), 0]
//   xbox:      q -> [q, 0],                         k -> [k, sqrt(MK^2-|k|^2)]
//   h2_alsh:   q -> [q * MK/|q|, 0],                k -> [k, sqrt(MK^2-|k|^2)]   (QNF)
//   l2_alsh:   q -> [q/|q|, 1/2, ..., 1/2],         k -> [U k/MK, |k'|^2, |k'|^4, ..., |k'|^(2^m)]
// Arguments of sqrt are clamped at 0; a zero-norm vector is scaled by 0.
enum class Transform : std::uint8_t { xbox_plus = 0, xbox = 1, h2_alsh = 2, l2_alsh = 3 };

// How SMYRF chooses the keys each query cluster attends to.
//   lsh:      the paper's asymmetric LSH: balanced clusters of hashed queries and keys, paired
//             by rank, n_hashes rounds (below).
//   centroid: queries are cut into clusters of q_cluster_size consecutive active positions
//             (sequences with locality: text, audio); each cluster attends exactly to the
//             k_cluster_size visible keys with the largest inner product with the cluster's
//             mean query (ties by position). One round: n_hashes must be 1. Cost: besides the
//             n_q * k_cluster_size attention scores, ceil(n_q / q_cluster_size) * n_k centroid
//             scores (both counted in RunInfo::attention_scores): O(Nq Nk d / q_cluster_size)
//             time, quadratic in N, for the short and medium sequences of pretrained models.
//             Exactly: the selection score of key j is the sum of the cluster's query rows (in
//             position order) dotted with k_j (in index order), in double; with a negative
//             softmax scale its negation, so the largest logits win. The min(k_cluster_size,
//             n_k) keys of largest score (ties to the lower position) are attended by one
//             softmax. Training: the selection is a constant of the gradient (it is recomputed
//             from the inputs and not differentiated, so the centroid passes no gradient to
//             Q); each query's gradient is that of softmax attention over its cluster's
//             selected keys.
enum class KeySelection : std::uint8_t { lsh = 0, centroid = 1 };

// SMYRF (Daras et al., NeurIPS 2020). Per (batch, head) and for each of n_hashes rounds:
// transform, project on one Gaussian direction a (the same for queries and keys), sort queries
// and keys by their hash, cut both sorted lists into C balanced clusters; query cluster i
// attends to key cluster i; rounds are merged with softmax weights over each query's
// per-round logsumexp.
//
// Hash: with r == 0, h(x) = a.x' (the projection itself; buckets of one point). With r > 0,
// the E2LSH hash h(x) = floor((a.x' + b) / r), b ~ U(0, r), and tokens with equal hash are
// ordered by position (so a large r tends to local attention).
//
// The exact hash. In round t (0 <= t < n_hashes) of head h, with x a query or key row as given
// (bf16 converted exactly to float), E the coordinates the transform appends (xbox_plus 2,
// xbox and h2_alsh 1, l2_alsh alsh_m) and everything in double, in this order:
//   dot  = fma chain over j = 0..d-1 of x[j] * a_t[j]       (dot = fma(x[j], a_t[j], dot), from 0)
//   n2   = fma chain over j = 0..d-1 of x[j] * x[j]
//   dot  = -dot for queries when the softmax scale is negative
//   p    = alpha * dot;  p = fma(ext_e, a_t[d + e], p) for e = 0..E-1
//   hash = float(r == 0 ? p : floor((p + b_t) / r))          (rounded once to float)
// where x' = [alpha x, ext_0, ..., ext_{E-1}] is the transform above, computed from n2 and
// the (batch, head)'s largest squared norms MQ^2, MK^2 of the active queries and visible keys
// (xbox_plus: ext = [0, e] for a query and [e, 0] for a key, e = sqrt(max(0, MQ^2 + MK^2 -
// n2)); xbox: alpha = 1, ext = [0] or [sqrt(max(0, MK^2 - n2))]; h2_alsh: as xbox but a query
// has alpha = sqrt(MK^2) / sqrt(n2) (0 when n2 = 0); l2_alsh: a query has alpha = 1 / sqrt(n2)
// (0 when n2 = 0) and ext_e = 1/2, a key alpha = alsh_u / sqrt(MK^2) (0 when MK = 0), ext_0 =
// alpha^2 n2 and ext_e = ext_{e-1}^2). Tokens are ordered by (hash, position); -0 and +0 are
// the same hash. The rounding to float merges only projections within ~6e-8 of each other,
// which then keep their position order.
// Directions and offsets depend on (seed, head, round) only, so a sequence gets the same
// clusters whatever batch slot it occupies: with stream = head * 1024 + t (seeded draws of
// smyrf.h), a_t[j] = standard_normal(seed, stream, j) for j < d + E and b_t = r *
// uniform_open01(seed, stream, 2^40).
//
// Cluster rule (any lengths, any masks): with n_q, n_k the unmasked queries and keys of a
// batch element, C = max(ceil(n_q / q_cluster_size), ceil(n_k / k_cluster_size)). Cluster i
// holds sorted queries [floor(i n_q / C), floor((i+1) n_q / C)) and sorted keys
// [floor(i n_k / C), max(floor((i+1) n_k / C), floor(i n_k / C) + 1)): sizes differ by at most
// one, never exceed the configured sizes, and every key cluster is non-empty when n_k >= 1
// (when n_k < C a key may serve several clusters). With Nq/q_cluster_size = Nk/k_cluster_size
// and exact divisibility this is the original SMYRF chunking. Masked tokens are excluded before
// hashing and from the max norms. When q_cluster_size >= Nq and k_cluster_size >= Nk the
// result is exactly the dense one (the dense kernel is used).
//
// A negative softmax scale hashes -q, so clusters still gather the largest logits.
// Causal (params.causal, none of the peers has it): within its cluster a query sees only the
// keys at positions <= its own (p = i + Nk - Nq); rounds where it sees none add nothing. A
// query that sees no key in any round attends to the up to min(k_cluster_size, Nk) nearest
// visible keys at positions <= p (a local window); with none of those either, O = 0. Clusters
// are the non-causal ones (hashing ignores positions). The causal backward and dropout run on
// the same pairs (clusters and fallback windows constants of the gradient).
// Attention memory: n_hashes * Nq * k_cluster_size scores instead of Nq * Nk.
//
// Capabilities (keys = lsh unless said).
//   causal:        forward, dropout, attention_backward, attention_f64 and
//                  attention_backward_f64 (with the fallback above). keys = centroid has no
//                  causal form: "smyrf: params.causal = true: SmyrfConfig.keys = centroid has
//                  no causal form".
//   dropout:       lsh, causal or not (weight (b, h, round, i, j); the fallback window is round
//                  0); centroid: weight (b, h, 0, i, j).
//   backward:      attention_backward (f32 inputs without broadcast strides, as for every
//                  backward) and attention_backward_f64. lsh: clusters recomputed from the
//                  forward's inputs and treated as constants; centroid: the selected keys
//                  recomputed and treated as constants (no gradient through the selection or
//                  the mean query).
//   attention_f64: attention_f64 and attention_backward_f64 over the same (round, key) pairs
//                  (lsh: clusters from the inputs rounded to f32; centroid: the selection
//                  from the inputs rounded to f32).
//   bf16 inputs:   forward (hashes from the exactly converted values; dropout and backward
//                  need f32).
//   masks:         key and query masks (masked tokens are neither hashed nor in the norms).
//   Nq != Nk:      yes (any lengths, cluster rule above).
//   stride 0:      forward yes; backward refuses it ("broadcast inputs have no backward").
//   learned parts: none.
//   complexity:    lsh: O(n_hashes (Nq + Nk) (d + E)) projections, a 3-pass radix sort of
//                  n_hashes (Nq + Nk) keys, O(n_hashes Nq k_cluster_size (d + dv)) attention;
//                  centroid: above. RunInfo::attention_scores counts the score entries of all
//                  rounds; its phases transform, sort, gather, attention, merge are SMYRF's.
struct SmyrfConfig {
  int n_hashes = 8;
  int q_cluster_size = 32;
  int k_cluster_size = 32;
  float r = 0.0f;  // E2LSH bucket width; 0 = order by the projection itself
  Transform transform = Transform::xbox_plus;
  int alsh_m = 3;         // l2_alsh only: number of appended norm powers
  float alsh_u = 0.83f;   // l2_alsh only: largest key norm after scaling, in (0, 1)
  KeySelection keys = KeySelection::lsh;
};

}  // namespace smyrf
