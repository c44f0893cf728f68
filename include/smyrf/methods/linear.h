// smyrf/methods/linear.h: LinearConfig, feature-map ("linear") attention, and its exact
// definitions.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

#include <cstdint>

namespace smyrf {

// Feature-map ("linear") attention: exp(scale q.k) replaced by a kernel phi_q(q) . phi_k(k):
//   O_i = sum_j phi_q(q_i) . phi_k(k_j) v_j / sum_j phi_q(q_i) . phi_k(k_j)
// over the keys query i sees (key mask; with params.causal j <= i + Nk - Nq); a query with no
// visible key gets O = 0. Cost O((Nq + Nk) m (d + dv)) time (+ O(Nq chunk (m + dv)) causal),
// O(m dv) state per (b, h), m the number of features. Precision: features and normalisers in
// double; without causal, the value products Phi_k^T V and phi_q . S are float (error about
// (128 + m) 2^-24 relative to sum |phi_q| |phi_k| |v|). Causal: the prefix-sum (RNN) form
// computed in chunks of `chunk` positions with one running state (SLiM's sub-linear-memory
// form). The maps in short (exact definitions below):
//   elu:        phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), m = d.
//   favor_plus: Performer FAVOR+ (Choromanski et al. 2021): positive random features
//               exp(w_r . x - |x|^2 / 2) / sqrt(m), x = sqrt(scale) q (sqrt(|scale|) k), w_r
//               orthogonal (blocks of d Gram-Schmidt rows, scaled by chi(d) norms) or i.i.d.
//               N(0, I); drawn from (seed, head): a new seed redraws them.
//   favor:      the original FAVOR trigonometric features exp(|x|^2 / 2 - c) [sin(w x), cos(w x)]
//               / sqrt(m/2) (m/2 directions, x as for favor_plus; c cancels in the ratio); the
//               normaliser can be <= 0: the raw ratio is kept (the estimator is not positive).
//   rfa:        Random Feature Attention (Peng et al. 2021): x / |x| then [sin(w x), cos(w x)]
//               / sqrt(m/2), w ~ N(0, rfa_sigma^-2 I) (orthogonal blocks when orthogonal);
//               optional gating (causal only): S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T over
//               the visible keys, g_t = gates[b, h, t].
//   dpfp:       DPFP (Schlag et al. 2021): r = relu([x, -x]), phi(x)_{nu, i} = r_i r_{(i + nu)
//               mod 2d} for nu = 1..dpfp_nu, m = 2 d dpfp_nu.
//   efficient:  Efficient Attention (Shen et al. 2021): softmax over features of each q_i times
//               softmax over positions (visible keys) of each key feature: O = rho_q(Q)
//               (rho_k(K)^T V). Not causal.
//   l2:         l2-normalised linear attention (Li et al. 2020): similarity 1 + q^.k^ of the
//               unit vectors, m = d + 1.
// A normaliser of exactly 0 gives O = 0. elu, dpfp, efficient and l2 do not use the softmax
// scale. lse: NaN for active queries that see a key (no softmax), -inf otherwise. No learned
// parts except the optional RFA gates. No dropout (no softmax weights to drop). Backward and
// the double-precision definition for every map, causal and gated forms included: below.
//
// Exact definitions.
//
// Per (batch b, head h), over the keys query i sees (visible keys; with params.causal only
// j <= p = i + Nk - Nq):
//   O_i = sum_j a_ij v_j / sum_j a_ij,   a_ij = phi_q(q_i) . phi_k(k_j)   (m features)
// A masked query, or one that sees no key, gets O = 0. When the normaliser sum_j a_ij is
// exactly 0 the output is O = 0 (possible for l2, whose similarity 1 + q^.k^ is 0 for opposite
// vectors, and for the trigonometric maps favor and rfa, whose a_ij can have either sign: their
// normaliser can also be negative, and the raw ratio is kept - the estimator is not positive).
// params.lse: NaN for every active query that sees at least one key (there is no softmax);
// -inf (as filled at the API edge) for masked queries and queries that see nothing.
//
// Maps (x is a q or k row as given, bf16 converted exactly; s = the softmax scale, used only by
// favor_plus and favor; |.| the Euclidean norm; the random directions w_r are the rows of W
// below, a function of (seed, head, orthogonal)):
//   elu:        phi(x)_t = elu(x_t) + 1 = x_t + 1 if x_t > 0 else exp(x_t); m = d. The softmax
//               scale is not used (Katharopoulos et al. 2020 apply the map to q and k as given).
//   favor_plus: x_q = sign(s) sqrt(|s|) q, x_k = sqrt(|s|) k (so x_q . x_k = s q.k);
//               u_r(x) = w_r . x - |x|^2 / 2 for r < m = n_features (W: m rows);
//               phi(x)_r = exp(u_r(x) - c) / sqrt(m). The stabiliser c cancels exactly in the
//               ratio (it multiplies every a_ij of a query, or every a_ij of a (b, h), by one
//               factor): for a query c = max_r u_r(x_q) (its own row); for keys ONE constant
//               per (b, h), c = max over the visible keys j and r of u_r(x_kj) (causal too: the
//               max over all visible keys, not over the prefix).
//   favor:      x as for favor_plus, W with m/2 rows (n_features even):
//               phi(x) = exp(|x|^2 / 2 - c) [sin(w_r . x) for r < m/2, cos(w_r . x) for r < m/2]
//               / sqrt(m/2), so that E[phi(x_q) . phi(x_k)] = exp(x_q . x_k). Stabilisers (cancel
//               exactly in the ratio): per query c = |x_q|^2 / 2, for keys one constant per
//               (b, h), c = max over visible keys of |x_k|^2 / 2.
//   rfa:        x^ = x / |x| (0 for a zero row), of q and k as given (no scale);
//               phi(x) = [sin(w_r . x^) for r < m/2, cos(w_r . x^) for r < m/2] / sqrt(m/2),
//               w_r = (row r of W with m/2 rows) / rfa_sigma, so w_r ~ N(0, rfa_sigma^-2 I)
//               (orthogonal rows scaled by chi(d) norms when orthogonal = true, i.i.d. when
//               false) and E[phi(x) . phi(y)] = exp(-|x^ - y^|^2 / (2 rfa_sigma^2)).
//               Gated (gates != nullptr, causal only): per (b, h), over the visible keys t in
//               position order, S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T and z_t = g_t z_{t-1}
//               + (1 - g_t) phi(k_t) (S_0 = 0, z_0 = 0), g_t = gates[(b H + h) Nk + t]; a query
//               at p reads O = phi(q)^T S / phi(q) . z with the state after the last visible key
//               t <= p (none: O = 0). Only visible keys' gates are read (finite, in [0, 1]).
//   dpfp:       r = relu([x, -x]) (2d entries), phi(x)_{(nu-1) 2d + i} = r_i r_{(i + nu) mod 2d}
//               for nu = 1..dpfp_nu, i < 2d; m = 2 d dpfp_nu; q and k as given (no scale).
//   efficient:  phi_q(q)_f = softmax over the d features of q (exp(q_f - max) / sum);
//               phi_k(k_j)_f = exp(k_jf - M_f) / sum_{visible j'} exp(k_j'f - M_f), the softmax
//               of feature f over the visible keys (M_f their max). O_i = phi_q(q_i)^T
//               (phi_k(K)^T V): the normaliser is 1 by construction (computed, and divided by,
//               in the fast path: equal up to rounding). No scale (Shen et al. 2021 apply none).
//               Not causal.
//   l2:         x^ = x / |x| (0 for a zero row), phi(x) = [1, x^], m = d + 1: a_ij = 1 + q^.k^.
//
// Computation, per (b, h): non-causal: the visible keys in blocks of 128 consecutive
// positions; per block, its own stabiliser c_b (favor_plus:
// max over its keys and r of u_r; favor: max |x_k|^2 / 2; efficient: per feature f the max
// M_bf), its features with c_b in place of c, and its partial S_b = Phi_b^T V_b [m, dv], z_b =
// sum of its feature rows; then S = sum_b w_b S_b, z = sum_b w_b z_b over the non-empty blocks
// in order, w_b = exp(c_b - c) with c = max_b c_b the (b, h) constant above (1 for maps without
// a stabiliser; efficient: per feature, then row f of S and z divided by the softmax sum z_f).
// Equal to the definition up to rounding (exp(u - c_b) exp(c_b - c) = exp(u - c)); the keys
// are read once. Then every active query reads phi_q . S / phi_q . z. Precision (non-causal):
// features, z, the combination and phi_q . z in double; the two value products in float: S_b
// = Phi_b^T V_b from the features rounded to float (a float chain over the block's keys in
// order; V is exact in float), S rounded to float, and the numerator phi_q^T S from phi_q
// rounded to float (a float chain over r < m in order). Relative to sum_r |phi_q,r| sum_j
// |phi_k,jr| max|v|, the numerator is within (128 + m + 3) 2^-24 (to first order).
// Causal (not gated): SLiM's chunked prefix form (Likhosherstov et al. 2020): key positions in
// chunks of `chunk`; a query at p in chunk [s, e) reads the running state of the keys before s
// plus the lower-triangular block a_ij for keys s <= j <= p; the state then absorbs the chunk.
// Memory O(m dv + chunk m) per (b, h) at a time. Gated rfa: the recurrence above, sequential
// (`chunk` unused). Time O((Nq + Nk) m (d + dv)) (+ O(Nq chunk (m + dv)) for the causal
// blocks; causal favor_plus and favor read the keys twice: the stabiliser pre-pass). Every
// feature, state and sum in double (but the non-causal value products: float, above) in a
// fixed order: same bits whatever the thread count (exp, sin and cos are Highway's vector
// functions, so bits may differ between SIMD targets, within a few ulp). Threads: non-causal:
// (b, h, key block) for the block states (the task that completes a (b, h)'s last block
// combines them), then (b, h, block of 64 queries) for the reads; causal and gated: (b, h).
// Workspace: the states (m dv + m doubles, and m dv floats) of every (b, h) (non-causal) or of
// every thread (causal, gated), the key block records (m dv + m + d doubles each) of a group
// of (b, h) (4 tasks per thread), W^T per head, per-thread blocks of E rows (E = chunk, 16 for
// gated rfa, else 128).
// RunInfo::attention_scores counts feature entries computed: (n_q + n_k) m per (b, h) (n_q
// active queries, n_k visible keys; the causal stabiliser pre-pass over the keys is not
// counted).
//
// The random directions W [rows, d] (double) of head `head` (rows = n_features for favor_plus,
// n_features / 2 for favor and rfa), the same for every batch element; a new seed redraws them.
// With the streams S = 0x4C494E4500000000 + 2 head (tag "LINE") and S + 1:
//   orthogonal = false: W[r][t] = g(r d + t), i.i.d. N(0, 1), with g(c) = standard_normal(seed,
//     S, c).
//   orthogonal = true: rows in blocks of d. Block k (rows k d .. k d + d - 1) starts from the
//     i.i.d. Gaussian d x d matrix G[i][t] = g((k d + i) d + t) and orthogonalises its rows in
//     order by modified Gram-Schmidt in double: for i = 0..d-1, v = G[i]; for l = 0..i-1 (in
//     order) v -= (v . u_l) u_l with the current v (dot products summed in index order);
//     u_i = v / |v| (a row with |v| == 0 stays 0, probability 0). Row k d + i of W is
//     u_i * n_{k d + i}, with n_r = |(g'(r d), ..., g'(r d + d - 1))| the norm of an independent
//     Gaussian d-vector, g'(c) = standard_normal(seed, S + 1, c): so the row norms follow chi(d)
//     like those of i.i.d. Gaussian rows (Choromanski et al. 2021). The last block keeps its
//     first rows - k d rows (the block is orthogonalised whole and then truncated).
//
// Backward (attention_backward) and the double-precision definition (attention_f64,
// attention_backward_f64). The gradient of the definition above, exact, with nothing held
// constant but the random directions W (a function of the seed) and the stabilisers c (each
// multiplies every a_ij of a query, or of a (b, h), by one factor that cancels in O, so its
// derivative contributes 0). With S = sum_j phi_k,j v_j^T, z = sum_j phi_k,j over the keys query i
// sees, den_i = phi_q,i . z and O_i = phi_q,i^T S / den_i, and dO_i given:
//   g_i = dO_i / den_i, gden_i = -(dO_i . O_i) / den_i,
//   d phi_q,i = S g_i + z gden_i;  d phi_k,j = R_j v_j + r_j,  dV_j = R_j^T phi_k,j, with
//   R_j = sum over the queries i that see j of phi_q,i g_i^T and r_j = sum of gden_i phi_q,i;
// then dQ and dK through each map's Jacobian (elu: 1 or exp; favor_plus: phi_r (w_r - x') times
// the scale's root; favor: phi x'^T plus the trigonometric part; rfa and l2: through x / |x|, 0
// for a zero row; dpfp: relu'(0) = 0; efficient: the softmax Jacobians, over the features for q
// and over the visible keys' positions, per feature, for k). A query with den_i = 0 (O = 0 by
// definition), a masked query and one that sees no key get dQ = 0 and contribute nothing; masked
// keys get dK = dV = 0. Computation: one task per (b, h), everything in double from the inputs
// (O is recomputed, the forward's float O and lse are not read), in a fixed order: non-causal,
// S, z once, then each query (dQ and its share of R, r), then each key; causal, S, z grow in
// position order while the queries are read, R, r in reverse order while the keys are read.
// Time O((Nq + Nk) m (d + dv)); memory per task O((Nq + Nk) m + Nq dv + m dv) doubles (the
// features of the keys, and causal, those of the queries with their g_i, between the sweeps).
// The float backward and attention_backward_f64 run the same computation on the same values
// (the double path on its inputs; the float path on its float inputs widened exactly): they
// differ by the rounding of the inputs and the final rounding of the gradients to float.
// attention_f64 is this computation's forward (lse: NaN for active queries that see a key,
// -inf for the others). Same bits whatever the thread count (exp, sin and cos are the C++
// library's here).
//
// Capabilities.
//   causal:        supported (forward), except FeatureMap::efficient: smyrf::Error "smyrf:
//                  params.causal = true: linear attention with FeatureMap::efficient has no
//                  causal form". Gates need causal ("smyrf: LinearConfig.gates = non-null:
//                  gating requires params.causal = true") and map = rfa.
//   dropout:       refused: smyrf::Error "smyrf: params.dropout = <p>: linear attention
//                  has no dropout" (with params.causal: "... only the reference method has
//                  causal dropout").
//   backward:      every map, causal and gated forms included (above).
//   attention_f64: every map, gated RFA included (above).
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes.
//   stride 0:      yes (forward).
//   learned parts: the optional RFA gates (the gate of each visible key finite and in [0, 1],
//                  else smyrf::Error naming LinearConfig.gates[b, h, j]); the random features are
//                  seeded draws. The gates' gradient: grad_gates (below).
//   complexity:    above. Config checks (smyrf::Error naming the field): map a FeatureMap value,
//                  n_features in [1, 65536] (even for favor and rfa), rfa_sigma finite and > 0,
//                  dpfp_nu in [1, 2 d], chunk >= 1.
// Gated RFA's gradient. Per (b, h) the adjoint of the state, R~ (of S) and r~ (of z), runs in
// reverse position order: at key t it holds the gradient of S_t (queries reading S_t add their
// phi_q g_i^T and gden_i phi_q as in the causal sweep above); key t then gets
//   d phi_k(k_t) = (1 - g_t) (R~ v_t + r~),  dv_t = (1 - g_t) R~^T phi_k(k_t),
//   dg_t = <R~, S_{t-1} - phi_k(k_t) v_t^T> + r~ . (z_{t-1} - phi_k(k_t)),
// and R~, r~ are multiplied by g_t before the previous visible key. S_{t-1} is recomputed from
// checkpoints of the forward sweep every 64 positions (the states of one 64-position chunk at a
// time): memory O((Nk / 64 + 64) m dv) doubles per thread beyond the causal sweep's. Masked keys
// get dg = 0. grad_gates (floats, [B, H, Nk], overwritten by attention_backward when non-null)
// and f64->grad_gates (the double path's) need gates given: a non-null grad_gates without
// gates throws smyrf::Error naming LinearConfig.grad_gates. f64->gates, when non-null, holds the
// gates in double for the double path (gates must be given too; otherwise it reads the floats
// widened). attention_backward_f64 throws naming LinearConfig.grad_gates when a float gradient
// is asked of it.
struct LinearDoubleParts {
  const double* gates = nullptr;  // [B, H, Nk]
  double* grad_gates = nullptr;   // [B, H, Nk]
};
enum class FeatureMap : std::uint8_t { elu = 0, favor_plus, favor, rfa, dpfp, efficient, l2 };
struct LinearConfig {
  FeatureMap map = FeatureMap::elu;
  int n_features = 256;          // favor_plus, favor, rfa: m (favor, rfa: even)
  bool orthogonal = true;        // favor_plus, favor, rfa: orthogonal random features
  float rfa_sigma = 1.0f;        // rfa: scale of the random directions, > 0
  int dpfp_nu = 1;               // dpfp: 1 <= nu <= 2d
  int chunk = 64;                // causal: positions per chunk, >= 1
  const float* gates = nullptr;  // rfa with causal only: [B, H, Nk] contiguous, each in [0, 1]
  // The gates' gradient (attention_backward; see "Gated RFA's gradient" above), gates' layout.
  float* grad_gates = nullptr;
  // The double-precision path's gates and their gradient (see "Gated RFA's gradient" above).
  const LinearDoubleParts* f64 = nullptr;
};

}  // namespace smyrf
