// Sinkhorn sorting attention: the definition and the fast path are described in sinkhorn.h.
// Two passes: (1) per (b, h): block sums, block logits and the Sinkhorn iterations, in double;
// (2) per (b, h, query block): the sorted block and the block's softmax. Plain loops, compiled
// per SIMD target (element-wise loops the compiler vectorises).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/sinkhorn/sinkhorn.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/call_scratch.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "common/timer.h"
#include "hwy/highway.h"
#include "methods/sinkhorn/sinkhorn.h"
#include "methods/sinkhorn/registration.h"
#include "methods/train/train.h"
#include "spec/draws.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace sinkhorn {

// log sum_i exp(x[i * stride]) over n >= 1 values (-inf when every value is -inf).
HWY_INLINE double LogSumExp(const double* x, std::int64_t n, std::int64_t stride) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t i = 0; i < n; ++i) m = std::max(m, x[i * stride]);
  if (std::isinf(m)) return m;
  double s = 0.0;
  for (std::int64_t i = 0; i < n; ++i) s += std::exp(x[i * stride] - m);
  return m + std::log(s);
}

template <class T>
void BlockLogits(const detail::Problem& pr, const SinkhornConfig& c,
                 const detail::TokenLists& lists, const detail::SinkhornPlan& plan,
                 std::int64_t bh, int tid) {
  const std::int64_t b = bh / pr.H, h = bh % pr.H, d = pr.d, NB = plan.NB, bs = plan.bs;
  const std::int64_t nkv = lists.k_count[b], nq = lists.q_count[b];
  if (nkv == 0 || nq == 0) return;
  const std::int64_t nb = detail::sinkhorn_blocks(nkv, bs);
  const std::int32_t* keys = lists.keys(b, pr.Nk);
  const std::int32_t* queries = lists.queries(b, pr.Nq);
  const bool keep = plan.L != nullptr;
  double* ksum = plan.pass1 + static_cast<std::size_t>(keep ? bh : tid) * plan.pass1_doubles;
  double* qmean = ksum + NB * d;
  for (std::int64_t a = 0; a < nb; ++a) {
    double* s = ksum + a * d;
    std::fill_n(s, d, 0.0);
    const std::int64_t r1 = std::min(nkv, (a + 1) * bs);
    for (std::int64_t r = a * bs; r < r1; ++r) {
      const T* k = pr.k_row<T>(b, h, keys[r]);
      for (std::int64_t e = 0; e < d; ++e) s[e] += static_cast<double>(detail::to_float(k[e]));
    }
  }
  double* P = plan.P + bh * NB * NB;  // holds L, then P; row stride NB
  if (c.sort_net != nullptr) {
    const float* W = c.sort_net + h * d * NB;
    for (std::int64_t a = 0; a < nb; ++a)
      for (std::int64_t col = 0; col < nb; ++col) {
        double x = 0.0;
        for (std::int64_t e = 0; e < d; ++e)
          x += ksum[a * d + e] * static_cast<double>(W[e * NB + col]);
        P[a * NB + col] = x;
      }
  } else {
    for (std::int64_t a = 0; a < nb; ++a) {
      double* m = qmean + a * d;
      const std::int64_t r0 = a * nq / nb, r1 = (a + 1) * nq / nb;
      if (r1 > r0) {
        std::fill_n(m, d, 0.0);
        for (std::int64_t r = r0; r < r1; ++r) {
          const T* q = pr.q_row<T>(b, h, queries[r]);
          for (std::int64_t e = 0; e < d; ++e) m[e] += static_cast<double>(detail::to_float(q[e]));
        }
        for (std::int64_t e = 0; e < d; ++e) m[e] /= static_cast<double>(r1 - r0);
      } else {  // empty query block: the mean key of block a
        const double len = static_cast<double>(std::min(nkv, (a + 1) * bs) - a * bs);
        for (std::int64_t e = 0; e < d; ++e) m[e] = ksum[a * d + e] / len;
      }
    }
    for (std::int64_t a = 0; a < nb; ++a)
      for (std::int64_t col = 0; col < nb; ++col) {
        const double len = static_cast<double>(std::min(nkv, (col + 1) * bs) - col * bs);
        double x = 0.0;
        for (std::int64_t e = 0; e < d; ++e) x += qmean[a * d + e] * (ksum[col * d + e] / len);
        P[a * NB + col] = static_cast<double>(pr.scale) * x;
      }
  }
  const double inv_temp = 1.0 / static_cast<double>(c.temperature);
  for (std::int64_t a = 0; a < nb; ++a)
    for (std::int64_t col = 0; col < nb; ++col) P[a * NB + col] *= inv_temp;
  double* log = keep ? plan.lse_log + bh * 2 * c.iterations * NB : nullptr;
  for (int it = 0; it < c.iterations; ++it) {
    for (std::int64_t a = 0; a < nb; ++a) {
      const double l = LogSumExp(P + a * NB, nb, 1);
      for (std::int64_t col = 0; col < nb; ++col) P[a * NB + col] -= l;
      if (keep) log[2 * it * NB + a] = l;
    }
    for (std::int64_t col = 0; col < nb; ++col) {
      const double l = LogSumExp(P + col, nb, NB);
      for (std::int64_t a = 0; a < nb; ++a) P[a * NB + col] -= l;
      if (keep) log[(2 * it + 1) * NB + col] = l;
    }
  }
  if (keep) std::copy_n(P, NB * NB, plan.L + bh * NB * NB);
  for (std::int64_t a = 0; a < nb; ++a) {
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t col = 0; col < nb; ++col) m = std::max(m, P[a * NB + col]);
    for (std::int64_t col = 0; col < nb; ++col) P[a * NB + col] = std::exp(P[a * NB + col] - m);
  }
}

// The per-thread buffers of one query block's keys (pass 2 and the backward).
struct BlockBuffers {
  float* kc;   // [d][2 be]: keys transposed (own rows, then sorted rows)
  float* vc;   // [2 be][dv]
  float* qf;   // [d]
  float* s;    // [2 be]
  float* acc;  // [dv]
  BlockBuffers(const detail::Problem& pr, const detail::SinkhornPlan& plan, int tid) {
    const std::int64_t be = plan.bs_eff;
    kc = plan.pass2 + static_cast<std::size_t>(tid) * plan.pass2_floats;
    vc = kc + 2 * be * pr.d;
    qf = vc + 2 * be * pr.dv;
    s = qf + pr.d;
    acc = s + 2 * be;
  }
};

// Query block a of (b, h) with its blocks' geometry.
struct BlockTask {
  std::int64_t bh, a, b, h, nkv, nq, nb, r0, r1;
  BlockTask(const detail::Problem& pr, const detail::TokenLists& lists, const detail::SinkhornPlan& plan,
            std::int64_t task)
      : bh(task / plan.NB), a(task % plan.NB), b(bh / pr.H), h(bh % pr.H), nkv(lists.k_count[b]),
        nq(lists.q_count[b]), nb(nkv > 0 ? detail::sinkhorn_blocks(nkv, plan.bs) : 0), r0(a * nq / std::max<std::int64_t>(nb, 1)),
        r1((a + 1) * nq / std::max<std::int64_t>(nb, 1)) {}
  // The block has queries (and so keys).
  bool active() const { return nkv > 0 && nq > 0 && a < nb && r1 > r0; }
  std::int64_t own_len(std::int64_t bs) const { return std::min(nkv, (a + 1) * bs) - a * bs; }
};

// The sorted rows' normalisers of P row `P` (blocks having a row t: every block for t below the
// last block's length, all but the last after it), summed in block order.
HWY_INLINE void SortedDenominators(const double* P, std::int64_t nb, double* full, double* short_rows) {
  double den = 0.0;
  for (std::int64_t col = 0; col + 1 < nb; ++col) den += P[col];
  *short_rows = den;
  *full = den + P[nb - 1];
}

// The keys of query block t.a: its own key rows, then its sorted rows; returns their count n
// (own_len + the sorted rows kept: every row below the last block's length, the others only
// when their weights did not all underflow).
template <class T>
std::int64_t BuildBlock(const detail::Problem& pr, const detail::TokenLists& lists, const detail::SinkhornPlan& plan,
                        const BlockTask& t, const BlockBuffers& buf, double* dacc) {
  const std::int64_t bs = plan.bs, d = pr.d, dv = pr.dv, nkv = t.nkv, nb = t.nb, b = t.b, h = t.h;
  const std::int32_t* keys = lists.keys(b, pr.Nk);
  const double* P = plan.P + t.bh * plan.NB * plan.NB + t.a * plan.NB;
  const std::int64_t ldk = 2 * plan.bs_eff;
  float* kc = buf.kc;
  float* vc = buf.vc;
  std::int64_t n = 0;
  for (std::int64_t r = t.a * bs; r < t.a * bs + t.own_len(bs); ++r, ++n) {
    const T* k = pr.k_row<T>(b, h, keys[r]);
    const T* v = pr.v_row<T>(b, h, keys[r]);
    for (std::int64_t e = 0; e < d; ++e) kc[e * ldk + n] = detail::to_float(k[e]);
    for (std::int64_t e = 0; e < dv; ++e) vc[n * dv + e] = detail::to_float(v[e]);
  }
  double den_full, den_short;
  SortedDenominators(P, nb, &den_full, &den_short);
  const std::int64_t last_len = nkv - (nb - 1) * bs;
  const std::int64_t rows = std::min(bs, nkv);
  for (std::int64_t r = 0; r < rows; ++r) {
    const bool full = r < last_len;
    const std::int64_t nblk = full ? nb : nb - 1;
    const double den = full ? den_full : den_short;
    if (!(den > 0.0)) break;  // only rows past the last block's length can be left out
    const double inv = 1.0 / den;
    std::fill_n(dacc, d, 0.0);
    for (std::int64_t col = 0; col < nblk; ++col) {
      const double w = P[col];
      if (w == 0.0) continue;
      const T* k = pr.k_row<T>(b, h, keys[col * bs + r]);
      for (std::int64_t e = 0; e < d; ++e) dacc[e] += w * static_cast<double>(detail::to_float(k[e]));
    }
    for (std::int64_t e = 0; e < d; ++e) kc[e * ldk + n] = static_cast<float>(dacc[e] * inv);
    std::fill_n(dacc, dv, 0.0);
    for (std::int64_t col = 0; col < nblk; ++col) {
      const double w = P[col];
      if (w == 0.0) continue;
      const T* v = pr.v_row<T>(b, h, keys[col * bs + r]);
      for (std::int64_t e = 0; e < dv; ++e) dacc[e] += w * static_cast<double>(detail::to_float(v[e]));
    }
    for (std::int64_t e = 0; e < dv; ++e) vc[n * dv + e] = static_cast<float>(dacc[e] * inv);
    ++n;
  }
  return n;
}

// Query row i's scores against the block's n keys: s[j] = scale q_i . k_j, and their max.
template <class T>
HWY_INLINE float Scores(const detail::Problem& pr, const T* q, const BlockBuffers& buf, std::int64_t ldk,
                        std::int64_t n) {
  for (std::int64_t e = 0; e < pr.d; ++e) buf.qf[e] = detail::to_float(q[e]);
  std::fill_n(buf.s, n, 0.0f);
  for (std::int64_t e = 0; e < pr.d; ++e) {
    const float qe = buf.qf[e];
    const float* k = buf.kc + e * ldk;
    for (std::int64_t j = 0; j < n; ++j) buf.s[j] += qe * k[j];
  }
  float mx = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < n; ++j) {
    buf.s[j] *= pr.scale;
    mx = std::max(mx, buf.s[j]);
  }
  return mx;
}

// The dropout column of the block's key n: its position (own rows) or Nk + t (sorted row t).
HWY_INLINE std::int64_t DropColumn(const detail::Problem& pr, const detail::TokenLists& lists,
                                   const detail::SinkhornPlan& plan, const BlockTask& t, std::int64_t n) {
  const std::int64_t own = t.own_len(plan.bs);
  return n < own ? lists.keys(t.b, pr.Nk)[t.a * plan.bs + n] : pr.Nk + (n - own);
}

template <class T>
void AttendBlock(const detail::Problem& pr, const detail::TokenLists& lists, const detail::SinkhornPlan& plan,
                 const spec::Dropout& drop, std::int64_t task, int tid) {
  const BlockTask t(pr, lists, plan, task);
  plan.scores[task] = 0;
  if (t.nkv == 0 || t.nq == 0 || t.a >= t.nb) return;
  plan.scores[task] = t.a == 0 ? t.nb * t.nb : 0;  // the block logits, counted once per (b, h)
  if (!t.active()) return;
  const BlockBuffers buf(pr, plan, tid);
  double* dacc = plan.acc + static_cast<std::size_t>(tid) * plan.acc_doubles;
  const std::int64_t n = BuildBlock<T>(pr, lists, plan, t, buf, dacc);
  const std::int64_t ldk = 2 * plan.bs_eff, dv = pr.dv;
  const std::int32_t* queries = lists.queries(t.b, pr.Nq);
  for (std::int64_t r = t.r0; r < t.r1; ++r) {
    const std::int64_t i = queries[r];
    const float mx = Scores<T>(pr, pr.q_row<T>(t.b, t.h, i), buf, ldk, n);
    const std::uint64_t stream = drop.active() ? drop.row(t.b, t.h, 0, i) : 0;
    float sum = 0.0f;
    std::fill_n(buf.acc, dv, 0.0f);
    for (std::int64_t j = 0; j < n; ++j) {
      const float w = std::exp(buf.s[j] - mx);
      sum += w;
      const float wm = drop.active() ? w * drop.factor(stream, DropColumn(pr, lists, plan, t, j)) : w;
      const float* v = buf.vc + j * dv;
      for (std::int64_t e = 0; e < dv; ++e) buf.acc[e] += wm * v[e];
    }
    float* o = pr.o_row(t.b, t.h, i);
    const float inv = 1.0f / sum;
    for (std::int64_t e = 0; e < dv; ++e) o[e] = buf.acc[e] * inv;
    if (pr.p->lse != nullptr) pr.p->lse[t.bh * pr.Nq + i] = mx + std::log(sum);
  }
  plan.scores[task] += n * (t.r1 - t.r0);
}

// ---- backward ----------------------------------------------------------------------------

// Per (b, h, query block): the block's keys again, then per query p_j = exp(s_j - lse_i),
// dS_j = p_j (m_j dO_i . v_j - D_i), dQ_i = scale sum_j dS_j k_j (written), and the rows'
// gradients dk_j += scale dS_j q_i, dv_j += p_j m_j dO_i kept for the key pass, with
// c_t = dK~_t . K~_t + dV~_t . V~_t per sorted row.
template <class T>
void BlockBackward(const detail::SinkhornBackwardArgs& x, const spec::Dropout& drop, std::int64_t task, int tid) {
  const detail::Problem& pr = *x.pr;
  const detail::TokenLists& lists = *x.lists;
  const detail::SinkhornPlan& plan = *x.plan;
  const BlockTask t(pr, lists, plan, task);
  if (!t.active()) return;
  const std::int64_t d = pr.d, dv = pr.dv, be = plan.bs_eff, ldk = 2 * be;
  const BlockBuffers buf(pr, plan, tid);
  float* ds = buf.acc + dv;  // [2 be], after the block's buffers (the backward's per-thread stride holds it)
  float* dq = ds + 2 * be;   // [d]
  double* dacc = plan.acc + static_cast<std::size_t>(tid) * plan.acc_doubles;
  const std::int64_t n = BuildBlock<T>(pr, lists, plan, t, buf, dacc);
  float* gk = x.gk_rows + task * 2 * be * d;
  float* gv = x.gv_rows + task * 2 * be * dv;
  std::fill_n(gk, n * d, 0.0f);
  std::fill_n(gv, n * dv, 0.0f);
  const AttentionParams& p = *pr.p;
  const GradientParams& g = *x.g;
  const std::int32_t* queries = lists.queries(t.b, pr.Nq);
  for (std::int64_t r = t.r0; r < t.r1; ++r) {
    const std::int64_t i = queries[r];
    Scores<T>(pr, pr.q_row<T>(t.b, t.h, i), buf, ldk, n);
    const float lse = g.lse[t.bh * pr.Nq + i];
    const float D = x.delta[t.bh * pr.Nq + i];
    const std::int64_t off = t.b * p.o_batch_stride + t.h * p.o_head_stride + i * p.o_row_stride;
    const float* go = g.grad_o + off;
    const std::uint64_t stream = drop.active() ? drop.row(t.b, t.h, 0, i) : 0;
    for (std::int64_t j = 0; j < n; ++j) {
      const float pj = std::exp(buf.s[j] - lse);
      const float m = drop.active() ? drop.factor(stream, DropColumn(pr, lists, plan, t, j)) : 1.0f;
      const float* v = buf.vc + j * dv;
      float* gvj = gv + j * dv;
      float dp = 0.0f;
      const float pm = pj * m;
      for (std::int64_t e = 0; e < dv; ++e) {
        dp += go[e] * v[e];
        gvj[e] += pm * go[e];
      }
      ds[j] = pj * (m * dp - D);
    }
    for (std::int64_t e = 0; e < d; ++e) {
      const float* k = buf.kc + e * ldk;
      float acc = 0.0f;
      for (std::int64_t j = 0; j < n; ++j) acc += ds[j] * k[j];
      dq[e] = pr.scale * acc;
    }
    float* out = g.grad_q + t.b * p.q_batch_stride + t.h * p.q_head_stride + i * p.q_row_stride;
    std::copy_n(dq, d, out);
    for (std::int64_t j = 0; j < n; ++j) {
      const float c = pr.scale * ds[j];
      float* gkj = gk + j * d;
      for (std::int64_t e = 0; e < d; ++e) gkj[e] += c * buf.qf[e];
    }
  }
  const std::int64_t own = t.own_len(plan.bs);
  double* cdot = x.cdot + task * be;
  for (std::int64_t j = own; j < n; ++j) {
    double c = 0.0;
    for (std::int64_t e = 0; e < d; ++e) c += static_cast<double>(gk[j * d + e]) * static_cast<double>(buf.kc[e * ldk + j]);
    for (std::int64_t e = 0; e < dv; ++e) c += static_cast<double>(gv[j * dv + e]) * static_cast<double>(buf.vc[j * dv + e]);
    cdot[j - own] = c;
  }
}

// Per (b, h, key block col): each key's dK, dV = its own row's gradient (task col) plus, in
// block order, w_a dK~_at over the query blocks a whose sorted row t it enters; and column col
// of dL: dL_a,col = sum_t w_a (dK~_at . K_col,t + dV~_at . V_col,t - c_at).
template <class T>
void KeyBlockBackward(const detail::SinkhornBackwardArgs& x, std::int64_t task, int tid) {
  const detail::Problem& pr = *x.pr;
  const detail::TokenLists& lists = *x.lists;
  const detail::SinkhornPlan& plan = *x.plan;
  const BlockTask t(pr, lists, plan, task);  // t.a: the key block
  if (t.nkv == 0 || t.nq == 0 || t.a >= t.nb) return;
  const std::int64_t d = pr.d, dv = pr.dv, be = plan.bs_eff, bs = plan.bs, NB = plan.NB, nb = t.nb, col = t.a;
  const std::int64_t last_len = t.nkv - (nb - 1) * bs;
  const std::int32_t* keys = lists.keys(t.b, pr.Nk);
  const AttentionParams& p = *pr.p;
  const GradientParams& g = *x.g;
  double* dL = x.dL + t.bh * NB * NB;
  for (std::int64_t a = 0; a < nb; ++a) dL[a * NB + col] = 0.0;
  double* acc = plan.acc + static_cast<std::size_t>(tid) * plan.acc_doubles;  // [d + dv]
  for (std::int64_t r = 0; r < t.own_len(bs); ++r) {
    const std::int64_t j = keys[col * bs + r];
    const T* kj = pr.k_row<T>(t.b, t.h, j);
    const T* vj = pr.v_row<T>(t.b, t.h, j);
    // Its own row's gradient (when query block col has queries), then the sorted rows it enters.
    for (std::int64_t e = 0; e < d; ++e) acc[e] = t.active() ? static_cast<double>(x.gk_rows[(task * 2 * be + r) * d + e]) : 0.0;
    for (std::int64_t e = 0; e < dv; ++e)
      acc[d + e] = t.active() ? static_cast<double>(x.gv_rows[(task * 2 * be + r) * dv + e]) : 0.0;
    const bool full = r < last_len;
    for (std::int64_t a = 0; a < nb; ++a) {
      const std::int64_t qt = t.bh * NB + a;
      const BlockTask qb(pr, lists, plan, qt);
      if (!qb.active()) continue;
      const double* P = plan.P + qt * NB;
      double den_full, den_short;
      SortedDenominators(P, nb, &den_full, &den_short);
      const double den = full ? den_full : den_short;
      if (!(den > 0.0)) continue;
      const double w = P[col] / den;
      const std::int64_t row = qb.own_len(bs) + r;
      const float* gk = x.gk_rows + (qt * 2 * be + row) * d;
      const float* gv = x.gv_rows + (qt * 2 * be + row) * dv;
      double dot = -x.cdot[qt * be + r];
      for (std::int64_t e = 0; e < d; ++e) {
        acc[e] += w * static_cast<double>(gk[e]);
        dot += static_cast<double>(gk[e]) * static_cast<double>(detail::to_float(kj[e]));
      }
      for (std::int64_t e = 0; e < dv; ++e) {
        acc[d + e] += w * static_cast<double>(gv[e]);
        dot += static_cast<double>(gv[e]) * static_cast<double>(detail::to_float(vj[e]));
      }
      dL[a * NB + col] += w * dot;
    }
    float* ok = g.grad_k + t.b * p.k_batch_stride + t.h * p.k_head_stride + j * p.k_row_stride;
    float* ov = g.grad_v + t.b * p.v_batch_stride + t.h * p.v_head_stride + j * p.v_row_stride;
    for (std::int64_t e = 0; e < d; ++e) ok[e] = static_cast<float>(acc[e]);
    for (std::int64_t e = 0; e < dv; ++e) ov[e] = static_cast<float>(acc[d + e]);
  }
}

// Per (b, h): back through the normalisations (rebuilding each stage's L from the next by
// adding back its logsumexps), dR = dL / temperature, and the block logits' chain into dK, dQ
// and this (b, h)'s share of the sort net's gradient.
template <class T>
void SortBackward(const detail::SinkhornBackwardArgs& x, std::int64_t bh) {
  const detail::Problem& pr = *x.pr;
  const detail::TokenLists& lists = *x.lists;
  const detail::SinkhornPlan& plan = *x.plan;
  const SinkhornConfig& c = *x.config;
  const std::int64_t b = bh / pr.H, h = bh % pr.H, d = pr.d, NB = plan.NB, bs = plan.bs;
  const std::int64_t nkv = lists.k_count[b], nq = lists.q_count[b];
  if (nkv == 0 || nq == 0) return;
  const std::int64_t nb = detail::sinkhorn_blocks(nkv, bs);
  double* L = plan.L + bh * NB * NB;
  double* dL = x.dL + bh * NB * NB;
  const double* log = plan.lse_log + bh * 2 * c.iterations * NB;
  for (int it = c.iterations - 1; it >= 0; --it) {
    const double* col_lse = log + (2 * it + 1) * NB;
    for (std::int64_t col = 0; col < nb; ++col) {
      double s = 0.0;
      for (std::int64_t a = 0; a < nb; ++a) s += dL[a * NB + col];
      for (std::int64_t a = 0; a < nb; ++a) {
        dL[a * NB + col] -= std::exp(L[a * NB + col]) * s;
        L[a * NB + col] += col_lse[col];
      }
    }
    const double* row_lse = log + 2 * it * NB;
    for (std::int64_t a = 0; a < nb; ++a) {
      double s = 0.0;
      for (std::int64_t col = 0; col < nb; ++col) s += dL[a * NB + col];
      for (std::int64_t col = 0; col < nb; ++col) {
        dL[a * NB + col] -= std::exp(L[a * NB + col]) * s;
        L[a * NB + col] += row_lse[a];
      }
    }
  }
  const double inv_temp = 1.0 / static_cast<double>(c.temperature);
  for (std::int64_t a = 0; a < nb; ++a)
    for (std::int64_t col = 0; col < nb; ++col) dL[a * NB + col] *= inv_temp;
  const AttentionParams& p = *pr.p;
  const GradientParams& g = *x.g;
  const std::int32_t* keys = lists.keys(b, pr.Nk);
  const std::int32_t* queries = lists.queries(b, pr.Nq);
  const double* ksum = plan.pass1 + static_cast<std::size_t>(bh) * plan.pass1_doubles;
  const double* qmean = ksum + NB * d;
  std::vector<double> dvec(static_cast<std::size_t>(d)), dkm(static_cast<std::size_t>(nb * d), 0.0);
  const auto add_rows = [&](float* base, std::int64_t bstride, std::int64_t hstride, std::int64_t rstride,
                            const std::int32_t* list, std::int64_t r0, std::int64_t r1, double factor) {
    for (std::int64_t r = r0; r < r1; ++r) {
      float* row = base + b * bstride + h * hstride + list[r] * rstride;
      for (std::int64_t e = 0; e < d; ++e)
        row[e] = static_cast<float>(static_cast<double>(row[e]) + dvec[static_cast<std::size_t>(e)] * factor);
    }
  };
  const auto block_len = [&](std::int64_t a) { return static_cast<double>(std::min(nkv, (a + 1) * bs) - a * bs); };
  if (c.sort_net != nullptr) {
    const float* W = c.sort_net + h * d * NB;
    double* gw = x.gw != nullptr ? x.gw + bh * d * NB : nullptr;
    for (std::int64_t a = 0; a < nb; ++a) {
      for (std::int64_t e = 0; e < d; ++e) {
        double s = 0.0;
        for (std::int64_t col = 0; col < nb; ++col) s += static_cast<double>(W[e * NB + col]) * dL[a * NB + col];
        dvec[static_cast<std::size_t>(e)] = s;
        if (gw != nullptr)
          for (std::int64_t col = 0; col < nb; ++col) gw[e * NB + col] += ksum[a * d + e] * dL[a * NB + col];
      }
      add_rows(g.grad_k, p.k_batch_stride, p.k_head_stride, p.k_row_stride, keys, a * bs, std::min(nkv, (a + 1) * bs),
               1.0);
    }
    return;
  }
  const double scale = static_cast<double>(pr.scale);
  for (std::int64_t a = 0; a < nb; ++a) {
    std::fill(dvec.begin(), dvec.end(), 0.0);
    for (std::int64_t col = 0; col < nb; ++col) {
      const double r = scale * dL[a * NB + col];
      const double inv_len = 1.0 / block_len(col);
      for (std::int64_t e = 0; e < d; ++e) {
        dvec[static_cast<std::size_t>(e)] += r * (ksum[col * d + e] * inv_len);
        dkm[static_cast<std::size_t>(col * d + e)] += r * qmean[a * d + e];
      }
    }
    const std::int64_t r0 = a * nq / nb, r1 = (a + 1) * nq / nb;
    if (r1 > r0) {
      add_rows(g.grad_q, p.q_batch_stride, p.q_head_stride, p.q_row_stride, queries, r0, r1,
               1.0 / static_cast<double>(r1 - r0));
    } else {
      for (std::int64_t e = 0; e < d; ++e) dkm[static_cast<std::size_t>(a * d + e)] += dvec[static_cast<std::size_t>(e)];
    }
  }
  for (std::int64_t a = 0; a < nb; ++a) {
    std::copy_n(dkm.begin() + a * d, d, dvec.begin());
    add_rows(g.grad_k, p.k_batch_stride, p.k_head_stride, p.k_row_stride, keys, a * bs, std::min(nkv, (a + 1) * bs),
             1.0 / block_len(a));
  }
}

template <class T>
void BackwardT(const detail::SinkhornBackwardArgs& x) {
  const detail::Problem& pr = *x.pr;
  const detail::SinkhornPlan& plan = *x.plan;
  const std::int64_t BH = pr.B * pr.H, NB = plan.NB;
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  detail::parallel_for_tid(BH, pr.threads, [&](std::int64_t bh, int tid) {
    BlockLogits<T>(pr, *x.config, *x.lists, plan, bh, tid);
  });
  detail::parallel_for_tid(BH * NB, pr.threads,
                           [&](std::int64_t task, int tid) { BlockBackward<T>(x, drop, task, tid); });
  detail::parallel_for_tid(BH * NB, pr.threads, [&](std::int64_t task, int tid) { KeyBlockBackward<T>(x, task, tid); });
  detail::parallel_for(BH, pr.threads, [&](std::int64_t bh) { SortBackward<T>(x, bh); });
}

template <class T>
void RunT(const detail::SinkhornArgs& a) {
  const detail::Problem& pr = *a.pr;
  detail::Timer timer;
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  detail::parallel_for_tid(pr.B * pr.H, pr.threads, [&](std::int64_t bh, int tid) {
    BlockLogits<T>(pr, *a.config, *a.lists, *a.plan, bh, tid);
  });
  a.info->sort.seconds = timer.lap();
  detail::parallel_for_tid(pr.B * pr.H * a.plan->NB, pr.threads, [&](std::int64_t task, int tid) {
    AttendBlock<T>(pr, *a.lists, *a.plan, drop, task, tid);
  });
  a.info->attention.seconds = timer.lap();
}

}  // namespace sinkhorn

void SinkhornRun(const detail::SinkhornArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { sinkhorn::RunT<decltype(tag)>(a); });
}

void SinkhornBackward(const detail::SinkhornBackwardArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { sinkhorn::BackwardT<decltype(tag)>(a); });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace smyrf::detail {
HWY_EXPORT(SinkhornRun);
HWY_EXPORT(SinkhornBackward);

namespace {

constexpr ConfigFail config_fail{"SinkhornConfig"};
std::string float_str(float x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

}  // namespace

void Method<SinkhornConfig>::check(const SinkhornConfig& c, const Problem& pr) {
  if (c.block_size < 1) config_fail("block_size", std::to_string(c.block_size), "must be >= 1");
  if (c.iterations < 0 || c.iterations > 1000)
    config_fail("iterations", std::to_string(c.iterations), "must be in [0, 1000]");
  if (!std::isfinite(c.temperature) || !(c.temperature > 0.0f))
    config_fail("temperature", float_str(c.temperature), "must be finite and > 0");
  // The sort matrices: B * H * nb^2 doubles, nb = ceil(nk / block_size) (exact in double here).
  const double nb = static_cast<double>(sinkhorn_blocks(pr.Nk, c.block_size));
  const double sort_bytes = 8.0 * static_cast<double>(pr.B * pr.H) * nb * nb;
  if (sort_bytes > 0x1p50)
    config_fail("block_size", std::to_string(c.block_size),
         "too small for nk = " + std::to_string(pr.Nk) + ": the sort matrices (B * H * nb^2 doubles, nb = " +
             float_str(static_cast<float>(nb)) + " blocks) would need " + float_str(static_cast<float>(sort_bytes)) +
             " bytes");
  if (c.sort_net != nullptr) {
    const std::int64_t n = pr.H * pr.d * sinkhorn_blocks(pr.Nk, c.block_size);
    for (std::int64_t i = 0; i < n; ++i)
      if (!std::isfinite(c.sort_net[i]))
        config_fail("sort_net[" + std::to_string(i) + "]", float_str(c.sort_net[i]),
             "must be finite ([heads, d, ceil(nk / block_size)] floats, contiguous)");
  }
  // The sort net's gradient only of a given sort net (the content sort has no parameter), and
  // its double values only beside its floats.
  const SinkhornDoubleParts none;
  const SinkhornDoubleParts& f64 = c.f64 != nullptr ? *c.f64 : none;
  for (const auto& [name, grad] : {std::pair<std::string, const void*>{"grad_sort_net", c.grad_sort_net},
                                   std::pair<std::string, const void*>{"f64->grad_sort_net", f64.grad_sort_net}})
    if (grad != nullptr && c.sort_net == nullptr)
      config_fail(name, ptr_str(grad),
                  "must be nullptr: SinkhornConfig.sort_net = nullptr (the content sort has no parameter)");
  if (f64.sort_net != nullptr && c.sort_net == nullptr)
    config_fail("f64->sort_net", ptr_str(f64.sort_net),
                "replaces SinkhornConfig.sort_net, which is nullptr: give both or neither");
}

RunInfo sinkhorn_forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace) {
  Timer timer;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  SinkhornPlan plan{};
  plan.bs = config.block_size;
  plan.bs_eff = std::min<std::int64_t>(config.block_size, pr.Nk);
  plan.NB = sinkhorn_blocks(pr.Nk, config.block_size);
  plan.pass1_doubles = static_cast<std::size_t>(2 * plan.NB * d);
  plan.pass2_floats =
      static_cast<std::size_t>(2 * plan.bs_eff * (d + dv) + d + 2 * plan.bs_eff + dv);
  plan.acc_doubles = static_cast<std::size_t>(d + dv);
  const std::size_t T = static_cast<std::size_t>(pr.threads);

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t p_slot = arena.add<double>(static_cast<std::size_t>(BH * plan.NB * plan.NB));
  const std::size_t p1_slot = arena.add<double>(plan.pass1_doubles * T);
  const std::size_t p2_slot = arena.add<float>(plan.pass2_floats * T);
  const std::size_t acc_slot = arena.add<double>(plan.acc_doubles * T);
  const std::size_t scores_slot = arena.add<std::int64_t>(static_cast<std::size_t>(BH * plan.NB));
  const TokenLists lists = scratch.bind();
  plan.P = arena.at<double>(p_slot);
  plan.pass1 = arena.at<double>(p1_slot);
  plan.pass2 = arena.at<float>(p2_slot);
  plan.acc = arena.at<double>(acc_slot);
  plan.scores = arena.at<std::int64_t>(scores_slot);
  zero_unattended_rows(pr, lists);

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  const SinkhornArgs args{&pr, &config, &lists, &plan, &info};
  HWY_DYNAMIC_DISPATCH(SinkhornRun)(args);
  for (std::int64_t t = 0; t < BH * plan.NB; ++t)
    info.attention_scores += static_cast<std::size_t>(plan.scores[t]);
  return info;
}

RunInfo sinkhorn_backward(const Problem& pr, const GradientParams& g, const SinkhornConfig& config,
                          Workspace* workspace) {
  Timer timer;
  zero_gradients(pr, g);
  const std::vector<float> delta = gradient_delta(pr, g);
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  SinkhornPlan plan{};
  plan.bs = config.block_size;
  plan.bs_eff = std::min<std::int64_t>(config.block_size, pr.Nk);
  plan.NB = sinkhorn_blocks(pr.Nk, config.block_size);
  const std::int64_t NB = plan.NB, be = plan.bs_eff;
  plan.pass1_doubles = static_cast<std::size_t>(2 * NB * d);
  plan.pass2_floats = static_cast<std::size_t>(2 * be * (d + dv) + d + 2 * be + dv);
  plan.acc_doubles = static_cast<std::size_t>(d + dv);
  const std::size_t per_thread = plan.pass2_floats + static_cast<std::size_t>(2 * be + d);  // + dS, dQ
  const std::size_t T = static_cast<std::size_t>(pr.threads);
  const bool want_gw = config.grad_sort_net != nullptr;

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const auto nbh = static_cast<std::size_t>(BH);
  const std::size_t p_slot = arena.add<double>(nbh * static_cast<std::size_t>(NB * NB));
  const std::size_t l_slot = arena.add<double>(nbh * static_cast<std::size_t>(NB * NB));
  const std::size_t log_slot = arena.add<double>(nbh * static_cast<std::size_t>(2 * config.iterations * NB));
  const std::size_t dl_slot = arena.add<double>(nbh * static_cast<std::size_t>(NB * NB));
  const std::size_t p1_slot = arena.add<double>(plan.pass1_doubles * nbh);
  const std::size_t p2_slot = arena.add<float>(per_thread * T);
  const std::size_t acc_slot = arena.add<double>(plan.acc_doubles * T);
  const std::size_t scores_slot = arena.add<std::int64_t>(nbh * static_cast<std::size_t>(NB));
  const std::size_t gk_slot = arena.add<float>(nbh * static_cast<std::size_t>(NB * 2 * be * d));
  const std::size_t gv_slot = arena.add<float>(nbh * static_cast<std::size_t>(NB * 2 * be * dv));
  const std::size_t cdot_slot = arena.add<double>(nbh * static_cast<std::size_t>(NB * be));
  const std::size_t gw_slot = arena.add<double>(want_gw ? nbh * static_cast<std::size_t>(d * NB) : 0);
  const TokenLists lists = scratch.bind();
  plan.P = arena.at<double>(p_slot);
  plan.L = arena.at<double>(l_slot);
  plan.lse_log = arena.at<double>(log_slot);
  plan.pass1 = arena.at<double>(p1_slot);
  plan.pass2 = arena.at<float>(p2_slot);
  plan.pass2_floats = per_thread;  // the per-thread stride: BlockBuffers, then dS and dQ
  plan.acc = arena.at<double>(acc_slot);
  plan.scores = arena.at<std::int64_t>(scores_slot);
  double* gw = want_gw ? arena.at<double>(gw_slot) : nullptr;
  if (gw != nullptr) std::fill_n(gw, BH * d * NB, 0.0);
  const SinkhornBackwardArgs args{&pr,
                                  &config,
                                  &lists,
                                  &plan,
                                  &g,
                                  delta.data(),
                                  arena.at<float>(gk_slot),
                                  arena.at<float>(gv_slot),
                                  arena.at<double>(cdot_slot),
                                  arena.at<double>(dl_slot),
                                  gw};
  HWY_DYNAMIC_DISPATCH(SinkhornBackward)(args);
  // The sort net's gradient: each head's shares summed over the batch in batch order.
  if (want_gw)
    parallel_for(pr.H, pr.threads, [&](std::int64_t h) {
      for (std::int64_t x = 0; x < d * NB; ++x) {
        double s = 0.0;
        for (std::int64_t b = 0; b < pr.B; ++b) s += gw[(b * pr.H + h) * d * NB + x];
        config.grad_sort_net[h * d * NB + x] = static_cast<float>(s);
      }
    });
  RunInfo info;
  info.workspace_bytes = arena.bytes() + delta.size() * sizeof(float);
  info.attention.seconds = timer.seconds();
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
