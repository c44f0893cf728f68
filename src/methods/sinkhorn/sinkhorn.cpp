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
#include "kernels/attention_tile-inl.h"
#include "kernels/tile_matmul-inl.h"
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

// Queries per chunk of a block's products (forward and backward).
constexpr std::int64_t kChunk = 32;

// The per-thread buffers of one query block (pass 2 and the backward); ldn = 2 bs_eff.
struct BlockBuffers {
  float* kc;  // [d][ldn]: keys transposed (own rows, then sorted rows)
  float* vc;  // [ldn][dv]
  float* qc;  // [kChunk][d]: a chunk's queries
  float* S;   // [kChunk][ldn]: scores, then weights
  float* oc;  // [kChunk][dv]: the chunk's outputs (forward)
  static std::size_t floats(std::int64_t be, std::int64_t d, std::int64_t dv) {
    return static_cast<std::size_t>(2 * be * (d + dv) + kChunk * (d + 2 * be + dv));
  }
  BlockBuffers(const detail::Problem& pr, const detail::SinkhornPlan& plan, int tid) {
    const std::int64_t ldn = 2 * plan.bs_eff;
    kc = plan.pass2 + static_cast<std::size_t>(tid) * plan.pass2_floats;
    vc = kc + ldn * pr.d;
    qc = vc + ldn * pr.dv;
    S = qc + kChunk * pr.d;
    oc = S + kChunk * ldn;
  }
  float* end(std::int64_t dv) const { return oc + kChunk * dv; }
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

// The dropout column of the block's key n: its position (own rows) or Nk + t (sorted row t).
HWY_INLINE std::int64_t DropColumn(const detail::Problem& pr, const detail::TokenLists& lists,
                                   const detail::SinkhornPlan& plan, const BlockTask& t, std::int64_t n) {
  const std::int64_t own = t.own_len(plan.bs);
  return n < own ? lists.keys(t.b, pr.Nk)[t.a * plan.bs + n] : pr.Nk + (n - own);
}

// The chunk's rows r < m of queries[r0 ..]: queries into qc; S = qc K^T (scale applied).
template <class T>
HWY_INLINE void ChunkScores(const detail::Problem& pr, const BlockTask& t, const std::int32_t* queries,
                            std::int64_t r0, std::int64_t m, std::int64_t n, std::int64_t ldn,
                            const BlockBuffers& buf) {
  const std::int64_t d = pr.d;
  for (std::int64_t r = 0; r < m; ++r) {
    const T* q = pr.q_row<T>(t.b, t.h, queries[r0 + r]);
    for (std::int64_t e = 0; e < d; ++e) buf.qc[r * d + e] = detail::to_float(q[e]);
  }
  tile::MatMul<4>(DF(), tile::Strided<float>{buf.qc, d, 1}, tile::RowMajor<float>{buf.kc, ldn}, m, d, n, buf.S, ldn);
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t j = 0; j < n; ++j) buf.S[r * ldn + j] *= pr.scale;
}

// Per (b, h, query block): the block's keys, then per chunk of its queries S = Q K^T, one
// softmax per row (max, exp, sum; dropout on the weights of P V), O = P V on the tile kernel.
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
  const std::int64_t ldn = 2 * plan.bs_eff, dv = pr.dv;
  const std::int32_t* queries = lists.queries(t.b, pr.Nq);
  const DF df;
  float sums[kChunk], maxes[kChunk];
  for (std::int64_t r0 = t.r0; r0 < t.r1; r0 += kChunk) {
    const std::int64_t m = std::min(kChunk, t.r1 - r0);
    ChunkScores<T>(pr, t, queries, r0, m, n, ldn, buf);
    for (std::int64_t r = 0; r < m; ++r) {
      float* srow = buf.S + r * ldn;
      float sum;
      const float mx = SoftmaxRow(srow, srow, n, &sum);
      if (drop.active()) {
        const std::uint64_t stream = drop.row(t.b, t.h, 0, queries[r0 + r]);
        for (std::int64_t j = 0; j < n; ++j) srow[j] *= drop.factor(stream, DropColumn(pr, lists, plan, t, j));
      }
      sums[r] = sum;
      maxes[r] = mx;
    }
    tile::MatMul<4>(df, tile::Strided<float>{buf.S, ldn, 1}, tile::RowMajor<float>{buf.vc, dv}, m, n, dv, buf.oc, dv);
    for (std::int64_t r = 0; r < m; ++r) {
      const std::int64_t i = queries[r0 + r];
      float* o = pr.o_row(t.b, t.h, i);
      const float inv = 1.0f / sums[r];
      for (std::int64_t e = 0; e < dv; ++e) o[e] = buf.oc[r * dv + e] * inv;
      if (pr.p->lse != nullptr) pr.p->lse[t.bh * pr.Nq + i] = maxes[r] + std::log(sums[r]);
    }
  }
  plan.scores[task] += n * (t.r1 - t.r0);
}

// ---- backward ----------------------------------------------------------------------------

// The backward's per-thread buffers beyond BlockBuffers (whose qc holds the chunk's queries and
// S its scores, then P M); ldn = 2 bs_eff.
struct BackwardBuffers {
  float *kr, *vt, *doc, *dP, *dq;
  static std::size_t floats(std::int64_t be, std::int64_t d, std::int64_t dv) {
    const std::int64_t ldn = 2 * be;
    return static_cast<std::size_t>(ldn * d + dv * ldn + kChunk * (dv + ldn + d));
  }
  BackwardBuffers(float* base, std::int64_t be, std::int64_t d, std::int64_t dv) {
    const std::int64_t ldn = 2 * be;
    kr = base;               // [ldn][d]: the block's keys by row
    vt = kr + ldn * d;       // [dv][ldn]: its values transposed
    doc = vt + dv * ldn;     // [kChunk][dv]: the chunk's dO rows
    dP = doc + kChunk * dv;  // [kChunk][ldn]: dO V^T, then scale dS
    dq = dP + kChunk * ldn;  // [kChunk][d]
  }
};

// Per (b, h, query block): the block's keys again, then per chunk of its queries, with
// P = exp(S - lse) recomputed from the forward's lse, as block products on the tile kernel:
// dP = dO V^T, dS = P (M dP - D), dQ = scale dS K (written), and the rows' gradients
// dK += scale dS^T Q, dV += (P M)^T dO kept for the key pass, with
// c_t = dK~_t . K~_t + dV~_t . V~_t per sorted row.
template <class T>
void BlockBackward(const detail::SinkhornBackwardArgs& x, const spec::Dropout& drop, std::int64_t task, int tid) {
  const detail::Problem& pr = *x.pr;
  const detail::TokenLists& lists = *x.lists;
  const detail::SinkhornPlan& plan = *x.plan;
  const BlockTask t(pr, lists, plan, task);
  if (!t.active()) return;
  const std::int64_t d = pr.d, dv = pr.dv, be = plan.bs_eff, ldn = 2 * be;
  const BlockBuffers buf(pr, plan, tid);
  const BackwardBuffers w(buf.end(dv), be, d, dv);
  double* dacc = plan.acc + static_cast<std::size_t>(tid) * plan.acc_doubles;
  const std::int64_t n = BuildBlock<T>(pr, lists, plan, t, buf, dacc);
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t e = 0; e < d; ++e) w.kr[j * d + e] = buf.kc[e * ldn + j];
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t e = 0; e < dv; ++e) w.vt[e * ldn + j] = buf.vc[j * dv + e];
  float* gk = x.gk_rows + task * ldn * d;
  float* gv = x.gv_rows + task * ldn * dv;
  std::fill_n(gk, n * d, 0.0f);
  std::fill_n(gv, n * dv, 0.0f);
  const AttentionParams& p = *pr.p;
  const GradientParams& g = *x.g;
  const std::int32_t* queries = lists.queries(t.b, pr.Nq);
  const DF df;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(df));
  for (std::int64_t r0 = t.r0; r0 < t.r1; r0 += kChunk) {
    const std::int64_t m = std::min(kChunk, t.r1 - r0);
    ChunkScores<T>(pr, t, queries, r0, m, n, ldn, buf);
    for (std::int64_t r = 0; r < m; ++r) {
      const std::int64_t i = queries[r0 + r];
      std::copy_n(g.grad_o + t.b * p.o_batch_stride + t.h * p.o_head_stride + i * p.o_row_stride, dv,
                  w.doc + r * dv);
    }
    tile::MatMul<4>(df, tile::Strided<float>{w.doc, dv, 1}, tile::RowMajor<float>{w.vt, ldn}, m, dv, n, w.dP, ldn);
    for (std::int64_t r = 0; r < m; ++r) {
      const std::int64_t i = queries[r0 + r];
      const float lse = g.lse[t.bh * pr.Nq + i];
      const float D = x.delta[t.bh * pr.Nq + i];
      float* srow = buf.S + r * ldn;
      float* dprow = w.dP + r * ldn;
      const VF vlse = hn::Set(df, lse);
      std::int64_t j = 0;
      for (; j + L <= n; j += L) hn::StoreU(hn::Exp(df, hn::Sub(hn::LoadU(df, srow + j), vlse)), df, srow + j);
      for (; j < n; ++j) srow[j] = std::exp(srow[j] - lse);
      const std::uint64_t stream = drop.active() ? drop.row(t.b, t.h, 0, i) : 0;
      for (j = 0; j < n; ++j) {
        const float pj = srow[j];
        const float mj = drop.active() ? drop.factor(stream, DropColumn(pr, lists, plan, t, j)) : 1.0f;
        dprow[j] = pr.scale * (pj * (mj * dprow[j] - D));  // scale dS
        srow[j] = pj * mj;                                 // P M
      }
    }
    tile::MatMul<4>(df, tile::Strided<float>{w.dP, ldn, 1}, tile::RowMajor<float>{w.kr, d}, m, n, d, w.dq, d);
    for (std::int64_t r = 0; r < m; ++r) {
      const std::int64_t i = queries[r0 + r];
      std::copy_n(w.dq + r * d, d, g.grad_q + t.b * p.q_batch_stride + t.h * p.q_head_stride + i * p.q_row_stride);
    }
    tile::MatMul<4, tile::Start::out>(df, tile::Strided<float>{w.dP, 1, ldn}, tile::RowMajor<float>{buf.qc, d}, n,
                                      m, d, gk, d);
    tile::MatMul<4, tile::Start::out>(df, tile::Strided<float>{buf.S, 1, ldn}, tile::RowMajor<float>{w.doc, dv}, n,
                                      m, dv, gv, dv);
  }
  const std::int64_t own = t.own_len(plan.bs);
  double* cdot = x.cdot + task * be;
  for (std::int64_t j = own; j < n; ++j) {
    double c = 0.0;
    for (std::int64_t e = 0; e < d; ++e) c += static_cast<double>(gk[j * d + e]) * static_cast<double>(w.kr[j * d + e]);
    for (std::int64_t e = 0; e < dv; ++e) c += static_cast<double>(gv[j * dv + e]) * static_cast<double>(buf.vc[j * dv + e]);
    cdot[j - own] = c;
  }
}

// acc[0, n) += w g[0, n) (g widened to double) and the dot product of g and x in double, in
// double lanes (a fixed order: the same bits whatever the thread).
HWY_INLINE double AxpyDot(double w, const float* g, const float* x, double* acc, std::int64_t n) {
  const hn::ScalableTag<double> dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto vw = hn::Set(dd, w);
  auto vdot = hn::Zero(dd);
  std::int64_t e = 0;
  for (; e + L <= n; e += L) {
    const auto vg = LoadAs(dd, g + e);
    hn::StoreU(hn::MulAdd(vw, vg, hn::LoadU(dd, acc + e)), dd, acc + e);
    vdot = hn::MulAdd(vg, LoadAs(dd, x + e), vdot);
  }
  double dot = hn::GetLane(hn::SumOfLanes(dd, vdot));
  for (; e < n; ++e) {
    acc[e] += w * static_cast<double>(g[e]);
    dot += static_cast<double>(g[e]) * static_cast<double>(x[e]);
  }
  return dot;
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
  const std::int64_t d = pr.d, dv = pr.dv, be = plan.bs_eff, ldn = 2 * be, bs = plan.bs, NB = plan.NB, nb = t.nb,
                     col = t.a;
  const std::int64_t last_len = t.nkv - (nb - 1) * bs;
  const std::int32_t* keys = lists.keys(t.b, pr.Nk);
  const AttentionParams& p = *pr.p;
  const GradientParams& g = *x.g;
  double* dL = x.dL + t.bh * NB * NB;
  double* acc = plan.acc + static_cast<std::size_t>(tid) * plan.acc_doubles;  // [d + dv]
  // Per query block a: the weight of this block in its sorted rows below the last block's
  // length and past it (0: the block has no queries, or the row is left out), and where its
  // sorted rows start.
  double* w_full = acc + d + dv;
  double* w_short = w_full + NB;
  double* start = w_short + NB;
  for (std::int64_t a = 0; a < nb; ++a) {
    dL[a * NB + col] = 0.0;
    const BlockTask qb(pr, lists, plan, t.bh * NB + a);
    w_full[a] = w_short[a] = 0.0;
    start[a] = static_cast<double>(qb.own_len(bs));
    if (!qb.active()) continue;
    const double* P = plan.P + (t.bh * NB + a) * NB;
    double den_full, den_short;
    SortedDenominators(P, nb, &den_full, &den_short);
    w_full[a] = P[col] / den_full;  // den_full >= 1: the row max of P is 1
    if (den_short > 0.0) w_short[a] = P[col] / den_short;
  }
  float* kv = plan.pass2 + static_cast<std::size_t>(tid) * plan.pass2_floats;  // [d + dv]: the key's K, V rows
  for (std::int64_t r = 0; r < t.own_len(bs); ++r) {
    const std::int64_t j = keys[col * bs + r];
    const T* kj = pr.k_row<T>(t.b, t.h, j);
    const T* vj = pr.v_row<T>(t.b, t.h, j);
    for (std::int64_t e = 0; e < d; ++e) kv[e] = detail::to_float(kj[e]);
    for (std::int64_t e = 0; e < dv; ++e) kv[d + e] = detail::to_float(vj[e]);
    // Its own row's gradient (when query block col has queries), then the sorted rows it enters.
    for (std::int64_t e = 0; e < d; ++e) acc[e] = t.active() ? static_cast<double>(x.gk_rows[(task * ldn + r) * d + e]) : 0.0;
    for (std::int64_t e = 0; e < dv; ++e)
      acc[d + e] = t.active() ? static_cast<double>(x.gv_rows[(task * ldn + r) * dv + e]) : 0.0;
    const double* wa = r < last_len ? w_full : w_short;
    for (std::int64_t a = 0; a < nb; ++a) {
      const double w = wa[a];
      if (w == 0.0) continue;  // no queries, a left-out row, or no weight: adds nothing
      const std::int64_t qt = t.bh * NB + a, row = static_cast<std::int64_t>(start[a]) + r;
      const double dot = AxpyDot(w, x.gk_rows + (qt * ldn + row) * d, kv, acc, d) +
                         AxpyDot(w, x.gv_rows + (qt * ldn + row) * dv, kv + d, acc + d, dv);
      dL[a * NB + col] += w * (dot - x.cdot[qt * be + r]);
    }
    float* ok = g.grad_k + t.b * p.k_batch_stride + t.h * p.k_head_stride + j * p.k_row_stride;
    float* ov = g.grad_v + t.b * p.v_batch_stride + t.h * p.v_head_stride + j * p.v_row_stride;
    for (std::int64_t e = 0; e < d; ++e) ok[e] = static_cast<float>(acc[e]);
    for (std::int64_t e = 0; e < dv; ++e) ov[e] = static_cast<float>(acc[d + e]);
  }
}

// One normalisation L' = L - lse over each of n lines (line l: elements l * line_stride +
// t * elem_stride, t < n), back: dL = dL' - exp(L') * (sum of dL' over the line); then L' is
// turned back into L by adding the line's logsumexp.
HWY_INLINE void NormalisationBackward(double* dL, double* L, const double* lse, std::int64_t n,
                                      std::int64_t line_stride, std::int64_t elem_stride) {
  for (std::int64_t l = 0; l < n; ++l) {
    double* dl = dL + l * line_stride;
    double* ll = L + l * line_stride;
    double s = 0.0;
    for (std::int64_t t = 0; t < n; ++t) s += dl[t * elem_stride];
    for (std::int64_t t = 0; t < n; ++t) {
      dl[t * elem_stride] -= std::exp(ll[t * elem_stride]) * s;
      ll[t * elem_stride] += lse[l];
    }
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
    NormalisationBackward(dL, L, log + (2 * it + 1) * NB, nb, 1, NB);  // the columns
    NormalisationBackward(dL, L, log + 2 * it * NB, nb, NB, 1);        // the rows
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

std::size_t SinkhornBlockFloats(std::int64_t be, std::int64_t d, std::int64_t dv) {
  return sinkhorn::BlockBuffers::floats(be, d, dv);
}
std::size_t SinkhornBackwardFloats(std::int64_t be, std::int64_t d, std::int64_t dv) {
  return sinkhorn::BackwardBuffers::floats(be, d, dv);
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
HWY_EXPORT(SinkhornBackwardFloats);
HWY_EXPORT(SinkhornBlockFloats);

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

// The per-thread floats of a query block's buffers (forward), and the backward's beyond them.
std::size_t sinkhorn_block_floats(std::int64_t be, std::int64_t d, std::int64_t dv) {
  return HWY_DYNAMIC_DISPATCH(SinkhornBlockFloats)(be, d, dv);
}
std::size_t sinkhorn_backward_floats(std::int64_t be, std::int64_t d, std::int64_t dv) {
  return HWY_DYNAMIC_DISPATCH(SinkhornBackwardFloats)(be, d, dv);
}

RunInfo sinkhorn_forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace) {
  Timer timer;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  SinkhornPlan plan{};
  plan.bs = config.block_size;
  plan.bs_eff = std::min<std::int64_t>(config.block_size, pr.Nk);
  plan.NB = sinkhorn_blocks(pr.Nk, config.block_size);
  plan.pass1_doubles = static_cast<std::size_t>(2 * plan.NB * d);
  plan.pass2_floats = sinkhorn_block_floats(plan.bs_eff, d, dv);
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
  plan.pass2_floats = sinkhorn_block_floats(be, d, dv);
  plan.acc_doubles = static_cast<std::size_t>(d + dv + 3 * NB);  // + the key pass's weights
  const std::size_t per_thread = plan.pass2_floats + sinkhorn_backward_floats(be, d, dv);
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
  plan.pass2_floats = per_thread;  // the per-thread stride: BlockBuffers, then BackwardBuffers
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
