// smyrf/methods/clustered.h: ClusteredConfig, clustered and improved clustered attention,
// and their exact definition.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

namespace smyrf {

// Clustered attention (Vyas, Katharopoulos & Fleuret, NeurIPS 2020). Per (batch, head), over
// the n_q active queries (ranked in position order) and the n_k visible keys:
//   Hash: each active query q gets a hash_bits-bit code (a uint64; bit t has value 1 << t):
//   bit t = [dot_t > 0] (so dot_t = 0 gives 0), with dot_t the fma chain in double over
//   j = 0..d-1 (dot = fma(q[j], w_t[j], dot), q[j] converted exactly to double). Hyperplanes
//   w_t ~ N(0, I): w_t[j] = standard_normal(seed, 0x436C757300000000 + head, t * d + j)
//   (seeded draws, smyrf.h): different per head, the same in every batch slot.
//   k-means (Lloyd's, Hamming distance): C = min(n_clusters, n_q); initial centroid c = the
//   code of the query at rank floor(c n_q / C); every query joins the nearest centroid (ties
//   to the lowest index); then `iterations` times: update (each centroid bit = the majority of
//   its members' bits, ties to 0; an empty cluster keeps its centroid), then join again.
//   iterations = 0 keeps the assignment to the initial centroids.
//   Centroid query qbar_c: the members' input rows summed in double in position order,
//   divided by their count, rounded to f32 (also for bf16 inputs).
// Plain clustered (topk = 0): every member gets the centroid's attention row over all visible
// keys, O_i = softmax(scale * qbar_c K^T) V; params.lse gets the centroid's logsumexp.
// Improved clustered attention (topk > 0): with A_c the centroid's attention weights, T_c the
// min(topk, n_k) visible keys of largest centroid logit scale * qbar_c . k_j (i.e. weight;
// ties to the lower position; topk >= n_k: every visible key) and m_c = sum_{j in T_c} A_c(j),
// a member attends exactly to T_c with its own scores, scaled by m_c, and keeps the centroid's
// weights on the other keys: O_i = m_c * softmax_{T_c}(scale q_i K_T^T) V_T + sum_{j not in
// T_c} A_c(j) v_j (T_c = every key: exact attention). params.lse gets lse_i(T_c) - log(m_c),
// the value for which the member's weights on T_c are exp(scale q_i . k_j - lse) (the dense
// logsumexp when T_c holds every key). The fast path ranks the f32 logits of the attention
// kernel, the oracle the double ones: the sets agree unless two logits are within f32
// rounding of each other.
// Training. The hash codes, the k-means clusters and T_c are constants of the gradient
// (recomputed from the inputs, not differentiated). The centroid query is a function of the
// queries, qbar_c = (1/|c|) sum of the members' rows, so the gradient reaching qbar_c through
// the centroid's row A_c (plain: all of O_i; improved: m_c and the keys outside T_c) flows to
// the members: dQ_i += dqbar_c / |c| for every member i of c (the f32 rounding of qbar_c is
// taken as the identity). The member's own scores over T_c carry the usual softmax gradient.
// With G_j = dO_c . v_j outside T_c and dm_c on T_c, where dO_c = sum over the members of dO_i
// and dm_c = sum over the members of dO_i . (O_i - r_c) / m_c, the centroid row's score
// gradient is A_c(j) (G_j - sum_l A_c(l) G_l).
// Dropout: a member's own weights on T_c are weight (b, h, 0, i, j); the centroid's weights
// (the keys outside T_c; plain: all), shared by its members, are dropped once per cluster, as
// the original implementation drops the centroid's attention row: weight (b, h, 1, i_c, j)
// with i_c the position of the cluster's first member. lse is that of the undropped weights.
// RunInfo::attention_scores = per (batch, head), (clusters with members) * n_k, plus for
// improved n_q * min(topk, n_k). Not causal (throws). Complexity
// O(n_q hash_bits d + iterations n_q C + C n_k d + n_q topk d), extra memory O(N). No learned
// parts.
//
// Capabilities.
//   causal:        refused: smyrf::Error "smyrf: params.causal = true: clustered attention has
//                  no causal form".
//   dropout:       yes (not causal): the members' weights on T_c per member, the centroid's
//                  shared weights once per cluster (Dropout above), so the cost stays
//                  O(C n_k (d + dv) + n_q topk (d + dv)).
//   backward:      attention_backward (f32, no broadcast strides): clusters and T_c constant,
//                  dQ through the centroid (Training above). The centroid rows in f32 on the
//                  tile kernel, in two passes: tiles of 32 centroids against every visible key
//                  (their dQ), then blocks of 32 keys against every centroid (the same scores
//                  again; their dK and dV). Extra memory O(32 (n_k + C)) per thread, the
//                  visible keys packed (O(n_k (d + dv)) per head), O(n_q) per head, and for
//                  improved O(C min(topk, n_k) (d + dv)) per head (the members' key gradients
//                  per cluster, added in cluster order).
//   attention_f64: attention_f64 and attention_backward_f64 with the clusters and T_c of the
//                  f32 path (from the inputs rounded to f32) and the centroid the exact mean in
//                  double (not rounded to f32, so the definition is differentiable in Q).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: none.
//   complexity:    O(n_q hash_bits d + iterations n_q C + C n_k d + n_q topk d) time, O(N) extra
//                  memory. Config checks (smyrf::Error naming the field): n_clusters >= 1,
//                  hash_bits in [1, 64], iterations >= 0, topk >= 0.
struct ClusteredConfig {
  int n_clusters = 100;
  int hash_bits = 63;  // 1..64
  int iterations = 10;
  int topk = 0;        // 0: clustered; > 0: improved clustered with this many keys
};

}  // namespace smyrf
