// Feature-map ("linear") attention (see LinearConfig in smyrf.h). Exact definitions:
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
// favor_plus and favor; |.| the Euclidean norm; the random directions w_r come from
// spec::linear_random_features (src/spec/draws.h), a function of (seed, head, orthogonal)):
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
// Computation, per (b, h): non-causal: the visible keys in blocks of kLinearKeyTask = 128
// consecutive positions (linear_internal.h); per block, its own stabiliser c_b (favor_plus:
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
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Number of features m of the config on a problem with head dimension d.
std::int64_t linear_feature_count(const LinearConfig& config, std::int64_t d);

RunInfo linear_forward(const Problem& pr, const LinearConfig& config, Workspace* workspace);

// The map's name as the messages spell it.
inline const char* feature_map_name(FeatureMap map) {
  switch (map) {
    case FeatureMap::elu: return "elu";
    case FeatureMap::favor_plus: return "favor_plus";
    case FeatureMap::favor: return "favor";
    case FeatureMap::rfa: return "rfa";
    case FeatureMap::dpfp: return "dpfp";
    case FeatureMap::efficient: return "efficient";
    case FeatureMap::l2: return "l2";
  }
  return "?";
}

}  // namespace smyrf::detail
