// The centroid part of clustered attention's f32 backward (the rule: clustered_train.cpp's
// comment) on the tile kernels, in two passes; every task writes its own outputs, each element
// one chain in a fixed order (same bits whatever the thread count):
//   1. per (b, h, tile of up to 32 live clusters), against the visible keys of b: S = scale
//      qbar K^T, A = exp(S - lse_c), m_c = the sum of A over T_c, W = A f outside T_c (f the
//      dropout factors), r_c = W V; the members' E_i = dO_i . (O_i - r_c) and D_i = E_i / m_c;
//      dm_c = sum E_i / m_c, D_c = m_c dm_c + dr_c . r_c; G = dr V^T; dS = scale A (G' - D_c)
//      with G' = f G outside T_c and dm_c on it; dqbar = dS K, added to each member's dQ
//      divided by |M_c|.
//   2. per (b, h, block of up to 32 visible keys), against every live cluster of bh: the same
//      S (the same products, so the same bits), A, G' and dS with the keys as rows, then
//      dK = dS^T qbar and dV = W^T dr.
// Per thread, 32 rows of the visible keys (pass 1) or of the live clusters (pass 2): O(N).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/clustered/clustered_backward.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "common/parallel.h"
#include "common/problem.h"
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/tile_matmul-inl.h"
#include "methods/clustered/clustered.h"
#include "spec/draws.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace clustered_grad {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

constexpr std::int64_t kRows = 32;

std::int64_t Pad(std::int64_t n) {
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(DF()));
  return (n + L - 1) / L * L;
}

// dst[j] = exp(scale * src[j] - l_j) for j < n, with l_j = lse[j] (lse != nullptr, readable
// up to Pad(n)) or l_j = lse0; the padded tail up to Pad(n) set to 0 (dst may be src). One
// vector at a time, so an element's bits do not depend on its lane.
HWY_INLINE void ScaledExp(const float* src, float* dst, std::int64_t n, float scale, const float* lse, float lse0) {
  const DF df;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(df));
  const auto vs = hn::Set(df, scale), vl = hn::Set(df, lse0);
  std::int64_t j = 0;
  for (; j + L <= n; j += L) {
    const auto l = lse != nullptr ? hn::LoadU(df, lse + j) : vl;
    hn::StoreU(hn::Exp(df, hn::Sub(hn::Mul(hn::LoadU(df, src + j), vs), l)), df, dst + j);
  }
  if (j == Pad(n)) return;
  HWY_ALIGN float x[hn::MaxLanes(df)];
  HWY_ALIGN float l[hn::MaxLanes(df)];
  for (std::int64_t t = 0; t < L; ++t) {
    const bool in = j + t < n;
    x[t] = in ? src[j + t] : 0.0f;
    l[t] = in ? (lse != nullptr ? lse[j + t] : lse0) : std::numeric_limits<float>::infinity();
  }
  hn::StoreU(hn::Exp(df, hn::Sub(hn::Mul(hn::Load(df, x), vs), hn::Load(df, l))), df, dst + j);
}

// The largest of scale * x[j], j < n (-inf when n = 0).
HWY_INLINE float MaxScaled(const float* x, std::int64_t n, float scale) {
  const DF df;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(df));
  const auto vs = hn::Set(df, scale);
  auto m = hn::Set(df, -std::numeric_limits<float>::infinity());
  std::int64_t j = 0;
  for (; j + L <= n; j += L) m = hn::Max(m, hn::Mul(hn::LoadU(df, x + j), vs));
  float mx = hn::GetLane(hn::MaxOfLanes(df, m));
  for (; j < n; ++j) mx = std::max(mx, x[j] * scale);
  return mx;
}

// The sum of x[0, n) in double lanes (a fixed order for a given target).
HWY_INLINE double SumAsDouble(const float* x, std::int64_t n) {
  const hn::ScalableTag<double> dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  auto acc = hn::Zero(dd);
  std::int64_t j = 0;
  for (; j + L <= n; j += L) acc = hn::Add(acc, LoadAs(dd, x + j));
  double z = hn::GetLane(hn::SumOfLanes(dd, acc));
  for (; j < n; ++j) z += static_cast<double>(x[j]);
  return z;
}

struct Tables {
  std::int64_t ldn = 0, ldu = 0;
  std::size_t per_bh_keys = 0, per_bh_clusters = 0;
  std::vector<float> packed;    // per bh: K^T [d][ldn], V^T [dv][ldn], K [Nk][d], V [Nk][dv]
  std::vector<float> centroids; // per bh: qbar^T [d][ldu], dr^T [dv][ldu]
  std::vector<float> lse, D, dm;  // per live cluster
  std::vector<std::vector<std::pair<std::int32_t, std::int32_t>>> top_pairs;  // per bh: (key index, cluster - begin), by key
};

void CentroidBackward(const detail::ClusteredCentroidGrad& a) {
  const detail::Problem& pr = *a.pr;
  const GradientParams& g = *a.g;
  const AttentionParams& p = *pr.p;
  const std::int64_t d = pr.d, dv = pr.dv, BH = pr.B * pr.H;
  const float scale = pr.scale;
  const spec::Dropout drop(a.dropout, a.seed);
  const DF df;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(df));
  const std::size_t U = a.begin[BH];
  std::int64_t max_live = 0;
  for (std::int64_t bh = 0; bh < BH; ++bh)
    max_live = std::max<std::int64_t>(max_live, static_cast<std::int64_t>(a.begin[bh + 1] - a.begin[bh]));
  if (max_live == 0) return;

  Tables tb;
  tb.ldn = Pad(pr.Nk);
  tb.ldu = Pad(max_live);
  tb.per_bh_keys = static_cast<std::size_t>((d + dv) * (tb.ldn + pr.Nk));
  tb.per_bh_clusters = static_cast<std::size_t>((d + dv) * tb.ldu);
  tb.packed.assign(static_cast<std::size_t>(BH) * tb.per_bh_keys, 0.0f);
  tb.centroids.assign(static_cast<std::size_t>(BH) * tb.per_bh_clusters, 0.0f);
  tb.lse.assign(U + static_cast<std::size_t>(L), 0.0f);
  tb.D.assign(U + static_cast<std::size_t>(L), 0.0f);
  tb.dm.assign(U + static_cast<std::size_t>(L), 0.0f);
  tb.top_pairs.resize(static_cast<std::size_t>(BH));
  const std::int64_t ldn = tb.ldn, ldu = tb.ldu;
  auto kt_of = [&](std::int64_t bh) { return tb.packed.data() + static_cast<std::size_t>(bh) * tb.per_bh_keys; };
  auto vt_of = [&](std::int64_t bh) { return kt_of(bh) + d * ldn; };
  auto kr_of = [&](std::int64_t bh) { return vt_of(bh) + dv * ldn; };
  auto vr_of = [&](std::int64_t bh) { return kr_of(bh) + pr.Nk * d; };
  auto qt_of = [&](std::int64_t bh) { return tb.centroids.data() + static_cast<std::size_t>(bh) * tb.per_bh_clusters; };
  auto dt_of = [&](std::int64_t bh) { return qt_of(bh) + d * ldu; };

  // Tables per bh: the visible keys packed both ways, the centroid rows transposed, T_c's pairs.
  detail::parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::size_t c0 = a.begin[bh], c1 = a.begin[bh + 1];
    if (c0 == c1) return;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::vector<std::int32_t>& keys = a.keys[b];
    float *kt = kt_of(bh), *vt = vt_of(bh), *kr = kr_of(bh), *vr = vr_of(bh);
    for (std::size_t j = 0; j < keys.size(); ++j) {
      const float* k = pr.k_row<float>(b, h, keys[j]);
      const float* v = pr.v_row<float>(b, h, keys[j]);
      for (std::int64_t t = 0; t < d; ++t) kt[t * ldn + static_cast<std::int64_t>(j)] = kr[static_cast<std::int64_t>(j) * d + t] = k[t];
      for (std::int64_t t = 0; t < dv; ++t) vt[t * ldn + static_cast<std::int64_t>(j)] = vr[static_cast<std::int64_t>(j) * dv + t] = v[t];
    }
    float *qt = qt_of(bh), *dt = dt_of(bh);
    auto& pairs = tb.top_pairs[static_cast<std::size_t>(bh)];
    for (std::size_t u = c0; u < c1; ++u) {
      const std::int64_t c = static_cast<std::int64_t>(u - c0);
      for (std::int64_t t = 0; t < d; ++t) qt[t * ldu + c] = a.qbar[u * static_cast<std::size_t>(d) + static_cast<std::size_t>(t)];
      for (std::int64_t t = 0; t < dv; ++t) dt[t * ldu + c] = a.dr[u * static_cast<std::size_t>(dv) + static_cast<std::size_t>(t)];
      for (std::int32_t j : a.top_index[u]) pairs.emplace_back(j, static_cast<std::int32_t>(c));
    }
    std::sort(pairs.begin(), pairs.end());
  });

  const int threads = detail::resolve_threads(pr.threads);
  auto o_at = [&](const float* base, std::int64_t b, std::int64_t h, std::int64_t i) {
    return base + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
  };

  // Pass 1: per (bh, tile of live clusters).
  const std::int64_t tiles = (max_live + kRows - 1) / kRows;
  const std::size_t per1 = static_cast<std::size_t>(2 * kRows * ldn + kRows * (dv + d));
  std::vector<float> scratch1(static_cast<std::size_t>(threads) * per1);
  detail::parallel_for_tid(BH * tiles, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / tiles, tile = task % tiles;
    const std::size_t u0 = a.begin[bh] + static_cast<std::size_t>(tile * kRows);
    const std::size_t u1 = std::min(a.begin[bh + 1], u0 + static_cast<std::size_t>(kRows));
    if (u0 >= u1) return;
    const std::int64_t b = bh / pr.H, h = bh % pr.H, m = static_cast<std::int64_t>(u1 - u0);
    const std::vector<std::int32_t>& keys = a.keys[b];
    const std::int64_t nk = static_cast<std::int64_t>(keys.size());
    float* S = scratch1.data() + static_cast<std::size_t>(tid) * per1;
    float* G = S + kRows * ldn;
    float* r = G + kRows * ldn;
    float* dq = r + kRows * dv;

    tile::MatMul<4>(df, tile::Strided<float>{a.qbar + u0 * static_cast<std::size_t>(d), d, 1},
                    tile::RowMajor<float>{kt_of(bh), ldn}, m, d, nk, S, ldn);
    for (std::int64_t c = 0; c < m; ++c) {
      const std::size_t u = u0 + static_cast<std::size_t>(c);
      float* s = S + c * ldn;
      const float mx = MaxScaled(s, nk, scale);
      float* e = G + c * ldn;  // exp(scale s - max), for the sum
      ScaledExp(s, e, nk, scale, nullptr, mx);
      const float lse = static_cast<float>(static_cast<double>(mx) + std::log(SumAsDouble(e, nk)));
      tb.lse[u] = lse;
      ScaledExp(s, s, nk, scale, nullptr, lse);  // S <- A
      // W = A f outside T_c, into G.
      float* w = G + c * ldn;
      const std::uint64_t stream = a.stream[u];
      if (drop.active()) {
        for (std::int64_t j = 0; j < nk; ++j) w[j] = s[j] * drop.factor(stream, keys[static_cast<std::size_t>(j)]);
      } else {
        std::copy_n(s, nk, w);
      }
      double mass = 0.0;
      for (std::int32_t j : a.top_index[u]) {
        mass += static_cast<double>(s[j]);
        w[j] = 0.0f;
      }
      tb.dm[u] = static_cast<float>(mass);  // m_c until the members' pass below
    }
    tile::MatMul<4>(df, tile::Strided<float>{G, ldn, 1}, tile::RowMajor<float>{vr_of(bh), dv}, m, nk, dv, r, dv);
    for (std::int64_t c = 0; c < m; ++c) {
      const std::size_t u = u0 + static_cast<std::size_t>(c);
      const double mass = static_cast<double>(tb.dm[u]);
      const float* rc = r + c * dv;
      double e_sum = 0.0;
      for (std::int32_t i : a.members[u]) {
        const float* go = o_at(g.grad_o, b, h, i);
        const float* o = o_at(g.o, b, h, i);
        double e = 0.0;
        for (std::int64_t t = 0; t < dv; ++t)
          e += static_cast<double>(go[t]) * (static_cast<double>(o[t]) - static_cast<double>(rc[t]));
        if (mass > 0.0) {
          e_sum += e;
          a.delta[bh * pr.Nq + i] = static_cast<float>(e / mass);
        }
      }
      const double dmc = mass > 0.0 ? e_sum / mass : 0.0;
      double D = mass * dmc;
      const float* drc = a.dr + u * static_cast<std::size_t>(dv);
      for (std::int64_t t = 0; t < dv; ++t) D += static_cast<double>(drc[t]) * static_cast<double>(rc[t]);
      tb.dm[u] = static_cast<float>(dmc);
      tb.D[u] = static_cast<float>(D);
    }
    tile::MatMul<4>(df, tile::Strided<float>{a.dr + u0 * static_cast<std::size_t>(dv), dv, 1},
                    tile::RowMajor<float>{vt_of(bh), ldn}, m, dv, nk, G, ldn);
    for (std::int64_t c = 0; c < m; ++c) {
      const std::size_t u = u0 + static_cast<std::size_t>(c);
      const float* s = S + c * ldn;
      float* ds = G + c * ldn;
      const float D = tb.D[u];
      const std::uint64_t stream = a.stream[u];
      if (drop.active()) {
        for (std::int64_t j = 0; j < nk; ++j)
          ds[j] = scale * s[j] * (drop.factor(stream, keys[static_cast<std::size_t>(j)]) * ds[j] - D);
      } else {
        for (std::int64_t j = 0; j < nk; ++j) ds[j] = scale * s[j] * (ds[j] - D);
      }
      for (std::int32_t j : a.top_index[u]) ds[j] = scale * s[j] * (tb.dm[u] - D);
    }
    tile::MatMul<4>(df, tile::Strided<float>{G, ldn, 1}, tile::RowMajor<float>{kr_of(bh), d}, m, nk, d, dq, d);
    for (std::int64_t c = 0; c < m; ++c) {
      const std::size_t u = u0 + static_cast<std::size_t>(c);
      const float n = static_cast<float>(a.members[u].size());
      for (std::int32_t i : a.members[u]) {
        float* gq = g.grad_q + b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride;
        for (std::int64_t t = 0; t < d; ++t) gq[t] += dq[c * d + t] / n;
      }
    }
  });

  // Pass 2: per (bh, block of visible keys).
  std::int64_t max_keys = 0;
  for (std::int64_t b = 0; b < pr.B; ++b)
    max_keys = std::max<std::int64_t>(max_keys, static_cast<std::int64_t>(a.keys[b].size()));
  const std::int64_t blocks = (max_keys + kRows - 1) / kRows;
  const std::size_t per2 = static_cast<std::size_t>(2 * kRows * ldu + kRows * (d + dv));
  std::vector<float> scratch2(static_cast<std::size_t>(threads) * per2);
  detail::parallel_for_tid(BH * blocks, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / blocks, blk = task % blocks;
    const std::size_t c0 = a.begin[bh];
    const std::int64_t C = static_cast<std::int64_t>(a.begin[bh + 1] - c0);
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::vector<std::int32_t>& keys = a.keys[b];
    const std::int64_t j0 = blk * kRows;
    const std::int64_t kb = std::min<std::int64_t>(kRows, static_cast<std::int64_t>(keys.size()) - j0);
    if (C == 0 || kb <= 0) return;
    float* A = scratch2.data() + static_cast<std::size_t>(tid) * per2;
    float* G = A + kRows * ldu;
    float* dk = G + kRows * ldu;
    float* dvb = dk + kRows * d;
    const float* lse = tb.lse.data() + c0;
    const float* Dc = tb.D.data() + c0;
    const float* dm = tb.dm.data() + c0;
    tile::MatMul<4>(df, tile::Strided<float>{kr_of(bh) + j0 * d, d, 1}, tile::RowMajor<float>{qt_of(bh), ldu}, kb, d,
                    C, A, ldu);
    tile::MatMul<4>(df, tile::Strided<float>{vr_of(bh) + j0 * dv, dv, 1}, tile::RowMajor<float>{dt_of(bh), ldu}, kb,
                    dv, C, G, ldu);
    // T_c's (key, cluster) pairs of the block, by key.
    const auto& pairs = tb.top_pairs[static_cast<std::size_t>(bh)];
    auto it = std::lower_bound(pairs.begin(), pairs.end(), std::make_pair(static_cast<std::int32_t>(j0), std::int32_t{0}));
    std::vector<float> a_top;
    for (std::int64_t r = 0; r < kb; ++r) {
      float* x = A + r * ldu;
      float* y = G + r * ldu;
      ScaledExp(x, x, C, scale, lse, 0.0f);
      const std::int32_t key = keys[static_cast<std::size_t>(j0 + r)];
      const auto first = it;
      a_top.clear();
      for (; it != pairs.end() && it->first == j0 + r; ++it) a_top.push_back(x[it->second]);
      // y <- dS^T = scale A (f G - D_c); x <- W^T = A f.
      if (drop.active()) {
        for (std::int64_t c = 0; c < C; ++c) {
          const float f = drop.factor(a.stream[c0 + static_cast<std::size_t>(c)], key);
          y[c] = scale * x[c] * (f * y[c] - Dc[c]);
          x[c] *= f;
        }
      } else {
        for (std::int64_t c = 0; c < C; ++c) y[c] = scale * x[c] * (y[c] - Dc[c]);
      }
      // On T_c: G' = dm_c, no W.
      std::size_t q = 0;
      for (auto jt = first; jt != it; ++jt, ++q) {
        const std::int32_t c = jt->second;
        y[c] = scale * a_top[q] * (dm[c] - Dc[c]);
        x[c] = 0.0f;
      }
    }
    tile::MatMul<4>(df, tile::Strided<float>{G, ldu, 1}, tile::RowMajor<float>{a.qbar + c0 * static_cast<std::size_t>(d), d},
                    kb, C, d, dk, d);
    tile::MatMul<4>(df, tile::Strided<float>{A, ldu, 1}, tile::RowMajor<float>{a.dr + c0 * static_cast<std::size_t>(dv), dv},
                    kb, C, dv, dvb, dv);
    for (std::int64_t r = 0; r < kb; ++r) {
      const std::int32_t key = keys[static_cast<std::size_t>(j0 + r)];
      float* gk = g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + key * p.k_row_stride;
      float* gv = g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + key * p.v_row_stride;
      for (std::int64_t t = 0; t < d; ++t) gk[t] += dk[r * d + t];
      for (std::int64_t t = 0; t < dv; ++t) gv[t] += dvb[r * dv + t];
    }
  });
}

}  // namespace clustered_grad

void ClusteredCentroidBackward(const detail::ClusteredCentroidGrad& a) { clustered_grad::CentroidBackward(a); }

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smyrf::detail {
HWY_EXPORT(ClusteredCentroidBackward);
void clustered_centroid_backward(const ClusteredCentroidGrad& a) { HWY_DYNAMIC_DISPATCH(ClusteredCentroidBackward)(a); }
}  // namespace smyrf::detail
#endif  // HWY_ONCE
