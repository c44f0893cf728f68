// Feature-map ("linear") attention: the backward pass and the double-precision definition
// (gradient and definitions: smyrf/methods/linear.h, "Backward").
//
// One task per (b, h), everything in double, in a fixed order (same bits whatever the thread
// count). With a_ij = phi_q(q_i) . phi_k(k_j) over the keys query i sees:
//   S_i = sum_j phi_k,j v_j^T [m, dv],  z_i = sum_j phi_k,j,  O_i = phi_q,i^T S_i / phi_q,i . z_i
// and, given dO_i, g_i = dO_i / den_i, gden_i = -(dO_i . O_i) / den_i:
//   d phi_q,i = S_i g_i + z_i gden_i,
//   R_j = sum_{i sees j} phi_q,i g_i^T,  r_j = sum_{i sees j} gden_i phi_q,i,
//   d phi_k,j = R_j v_j + r_j,  dV_j = R_j^T phi_k,j,
// then dQ, dK by the maps' Jacobians (vector-Jacobian products below). Non-causal: one S, z
// and one R, r per (b, h). Causal: S, z grow in position order while the queries are read (a
// forward sweep); R, r grow in reverse position order while the keys are read (a reverse
// sweep); the queries' features and g, gden are kept between the sweeps: O(N (m + dv)) memory
// per task, never an N x N matrix. Stabilisers (favor_plus, favor) multiply every a_ij of a
// query, or of a (b, h), by one factor, which cancels in O: they are constants here.
// O is recomputed in double (not read from the forward's float output), so the float backward
// and the double definition differ only by the rounding of the inputs and of the results.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/linear/linear_backward.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/call_scratch.h"
#include "common/error.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "common/timer.h"
#include "common/workspace.h"
#include "hwy/highway.h"
#include "methods/linear/linear.h"
#include "methods/linear/linear_internal.h"
#include "methods/linear/linear_train.h"
#include "methods/linear/features-inl.h"
#include "spec/draws.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace linear {

using detail::LinearTrainArgs;
using detail::LinearTrainScratch;

// Per (b, h): rows of the inputs as doubles, gradient rows written back.
struct Head {
  const LinearTrainArgs* a;
  const detail::Problem* pr;
  std::int64_t b, h;
  const double* w;   // this head's W [dirs][dp], or null
  const double* wt;  // this head's W^T [dp][dirs_p], or null

  std::int64_t bh() const { return b * pr->H + h; }
  // Gated RFA: the gate of key j (double path: its doubles when given) and its gradient.
  bool gated() const { return a->gates32 != nullptr || a->gates64 != nullptr; }
  double gate(std::int64_t j) const {
    const std::int64_t at = bh() * pr->Nk + j;
    return a->gates64 != nullptr ? a->gates64[at] : static_cast<double>(a->gates32[at]);
  }
  void store_ggate(std::int64_t j, double x) const {
    const std::int64_t at = bh() * pr->Nk + j;
    if (a->ggates64 != nullptr) a->ggates64[at] = x;
    if (a->ggates32 != nullptr) a->ggates32[at] = static_cast<float>(x);
  }
  // x[0..dp) = the row, zero padded.
  void load_q(std::int64_t i, double* x) const {
    std::fill_n(x, a->dp, 0.0);
    if (a->q64 != nullptr) std::copy_n(a->q64 + (bh() * pr->Nq + i) * pr->d, pr->d, x);
    else LoadRow(pr->q_row<float>(b, h, i), pr->d, x);
  }
  void load_k(std::int64_t j, double* x) const {
    std::fill_n(x, a->dp, 0.0);
    if (a->k64 != nullptr) std::copy_n(a->k64 + (bh() * pr->Nk + j) * pr->d, pr->d, x);
    else LoadRow(pr->k_row<float>(b, h, j), pr->d, x);
  }
  void load_v(std::int64_t j, double* x) const {
    std::fill_n(x, a->dvp, 0.0);
    if (a->v64 != nullptr) std::copy_n(a->v64 + (bh() * pr->Nk + j) * pr->dv, pr->dv, x);
    else LoadRow(pr->v_row<float>(b, h, j), pr->dv, x);
  }
  void load_go(std::int64_t i, double* x) const {
    std::fill_n(x, a->dvp, 0.0);
    if (a->go64 != nullptr) {
      std::copy_n(a->go64 + (bh() * pr->Nq + i) * pr->dv, pr->dv, x);
    } else {
      const AttentionParams& p = *pr->p;
      LoadRow(a->go32 + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride, pr->dv, x);
    }
  }
  // out[0..n) = x rounded to Out, or zeros when x == nullptr.
  template <class Out>
  static void store(const double* x, std::int64_t n, Out* out) {
    for (std::int64_t t = 0; t < n; ++t) out[t] = x != nullptr ? static_cast<Out>(x[t]) : Out(0);
  }
  // Row `row` of a gradient: contiguous doubles (g64, n rows of `width` per (b, h)) or floats
  // at the input's strides (g32); x == nullptr writes zeros.
  void store_grad(double* g64, float* g32, std::int64_t n, std::int64_t width, std::int64_t bs,
                  std::int64_t hs, std::int64_t rs, std::int64_t row, const double* x) const {
    if (g64 != nullptr) store(x, width, g64 + (bh() * n + row) * width);
    else store(x, width, g32 + b * bs + h * hs + row * rs);
  }
  void store_gq(std::int64_t i, const double* x) const {
    const AttentionParams& p = *pr->p;
    store_grad(a->gq64, a->gq32, pr->Nq, pr->d, p.q_batch_stride, p.q_head_stride, p.q_row_stride, i, x);
  }
  void store_gk(std::int64_t j, const double* x) const {
    const AttentionParams& p = *pr->p;
    store_grad(a->gk64, a->gk32, pr->Nk, pr->d, p.k_batch_stride, p.k_head_stride, p.k_row_stride, j, x);
  }
  void store_gv(std::int64_t j, const double* x) const {
    const AttentionParams& p = *pr->p;
    store_grad(a->gv64, a->gv32, pr->Nk, pr->dv, p.v_batch_stride, p.v_head_stride, p.v_row_stride, j, x);
  }
  // The f64 forward's outputs (o == nullptr: zeros).
  void store_o(std::int64_t i, const double* o, bool saw) const {
    if (a->o64 != nullptr) {
      double* out = a->o64 + (bh() * pr->Nq + i) * pr->dv;
      store(o, pr->dv, out);
    }
    if (a->lse64 != nullptr)
      a->lse64[bh() * pr->Nq + i] =
          saw ? std::numeric_limits<double>::quiet_NaN() : -std::numeric_limits<double>::infinity();
  }
};

// The Head of (b, h).
Head head_of(const LinearTrainArgs& a, std::int64_t b, std::int64_t h) {
  return Head{&a, a.pr, b, h, a.w ? a.w + h * a.s.dirs * a.dp : nullptr,
              a.s.wt ? a.s.wt + h * a.s.d * a.s.dirs_p : nullptr};
}

// dx[0..dp) += W^T du.
HWY_INLINE void ProjectBack(const LinearTrainArgs& a, const double* w, const double* du, double* dx) {
  for (std::int64_t r = 0; r < a.s.dirs; ++r) Axpy(du[r], w + r * a.dp, dx, a.dp);
}
// x / |x| in place (0 for a zero row), n a multiple of 8; returns |x|.
HWY_INLINE double UnitNorm(double* x, std::int64_t n) {
  const double norm = std::sqrt(Dot(x, x, n));
  for (std::int64_t t = 0; t < n; ++t) x[t] = norm > 0.0 ? x[t] / norm : 0.0;
  return norm;
}

// Per-(b, h) key statistics of the maps: the key stabiliser c (favor_plus, favor) and, for
// efficient, each feature's max M_f and softmax sum Z_f over the visible keys.
struct KeyStats {
  double c = 0.0;
  const double* kmax = nullptr;
  const double* ksum = nullptr;
};

// phi[0..mp) = the features of row x (zero padded), by the forward's row kernel: the same
// values as the forward's for a query; for a key with the (b, h) constants of ks (efficient:
// exp(k - M) divided here by the softmax sums). xw: a copy of x the kernel prepares in place;
// tmp: 3 dirs_p (or 2 d) doubles.
void RowFeatures(const LinearTrainArgs& a, const Head& hd, const double* x, bool query,
                 const KeyStats& ks, double* phi, double* xw, double* tmp) {
  std::copy_n(x, a.dp, xw);
  const double* st = a.s.map == FeatureMap::efficient ? ks.kmax : &ks.c;
  Features(a.s, hd.wt, xw, query, st, phi, tmp);
  if (a.s.map == FeatureMap::efficient && !query)
    for (std::int64_t t = 0; t < a.s.d; ++t) phi[t] /= ks.ksum[t];
}

// The projection maps' du = d phi / d u applied to dphi (u = W x', rows of W), du[0..dirs_p)
// zero padded; returns favor_plus's sum of du and favor's dphi . phi (their terms in x'; 0
// for rfa).
double ProjectionDu(const LinearTrainArgs& a, const double* phi, const double* dphi, double* du) {
  std::fill_n(du, a.s.dirs_p, 0.0);
  double total = 0.0;
  const std::int64_t m2 = a.s.dirs;
  if (a.s.map == FeatureMap::favor_plus) {
    // phi_r = exp(w_r . x' - |x'|^2 / 2 - c) / sqrt(m): d phi_r / d u_r = phi_r.
    for (std::int64_t r = 0; r < m2; ++r) total += (du[r] = dphi[r] * phi[r]);
    return total;
  }
  // favor: phi_r = e sin(u_r), phi_{m/2 + r} = e cos(u_r) (rfa: e = 1 / sqrt(m/2)).
  for (std::int64_t r = 0; r < m2; ++r) {
    if (a.s.map == FeatureMap::favor) total += dphi[r] * phi[r] + dphi[m2 + r] * phi[m2 + r];
    du[r] = dphi[r] * phi[m2 + r] - dphi[m2 + r] * phi[r];
  }
  return total;
}

bool HasProjection(FeatureMap map) {
  return map == FeatureMap::favor_plus || map == FeatureMap::favor || map == FeatureMap::rfa;
}

// dx[0..dp) = (d phi / d x)^T dphi for row x with features phi (efficient keys: done by the
// caller, their softmax runs over positions). wdu: W^T du of the row when the caller computed
// it for a block (projection maps), else nullptr. Scratch: xs, u, du, dxh.
void FeaturesBack(const LinearTrainArgs& a, const Head& hd, const double* x, bool query,
                  const double* phi, const double* dphi, double* dx, double* xs, double* u,
                  double* du, double* dxh, const double* wdu) {
  std::fill_n(dx, a.dp, 0.0);
  // The Jacobian of x -> x / |x| applied to dxh: (dxh - xh (xh . dxh)) / |x|.
  auto unit_back = [&](const double* dxhat) {
    std::copy_n(x, a.dp, xs);
    const double norm = UnitNorm(xs, a.dp);
    if (norm == 0.0) return;  // dx stays 0
    const double proj = Dot(xs, dxhat, a.dp);
    for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = (dxhat[t] - xs[t] * proj) / norm;
  };
  switch (a.s.map) {
    case FeatureMap::elu:
      for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = dphi[t] * (x[t] > 0.0 ? 1.0 : phi[t]);
      break;
    case FeatureMap::favor_plus:
    case FeatureMap::favor:
    case FeatureMap::rfa: {
      // favor_plus: d phi_r / d x' = phi_r (w_r - x'); favor: phi x'^T plus the trigonometric
      // part; rfa: the trigonometric part, then through x / |x|.
      const double total = ProjectionDu(a, phi, dphi, du);
      double* wd = a.s.map == FeatureMap::rfa ? dxh : dx;
      if (wdu != nullptr) {
        std::copy_n(wdu, a.dp, wd);
      } else {
        std::fill_n(wd, a.dp, 0.0);
        ProjectBack(a, hd.w, du, wd);
      }
      if (a.s.map == FeatureMap::rfa) {
        unit_back(dxh);
        break;
      }
      const double sigma = query ? a.s.qsign * a.s.sq : a.s.sq;
      const double sign = a.s.map == FeatureMap::favor_plus ? -1.0 : 1.0;
      for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = sigma * (dx[t] + sign * sigma * x[t] * total);
      break;
    }
    case FeatureMap::dpfp: {
      const std::int64_t two_d = 2 * a.s.d;
      // r = relu([x, -x]) in xs[0..d) and u[0..d); dr in du[0..2d).
      for (std::int64_t t = 0; t < a.s.d; ++t) {
        xs[t] = std::max(x[t], 0.0);
        u[t] = std::max(-x[t], 0.0);
      }
      auto rl = [&](std::int64_t i) { return i < a.s.d ? xs[i] : u[i - a.s.d]; };
      std::fill_n(du, two_d, 0.0);
      for (int nu = 1; nu <= a.s.nu; ++nu)
        for (std::int64_t i = 0; i < two_d; ++i) {
          const std::int64_t j = (i + nu) % two_d;
          const double gphi = dphi[(nu - 1) * two_d + i];
          du[i] += gphi * rl(j);
          du[j] += gphi * rl(i);
        }
      // relu'(0) = 0 on both sides.
      for (std::int64_t t = 0; t < a.s.d; ++t)
        dx[t] = (x[t] > 0.0 ? du[t] : 0.0) - (x[t] < 0.0 ? du[a.s.d + t] : 0.0);
      break;
    }
    case FeatureMap::efficient: {
      // Queries: softmax over the features, d rho = rho (dphi - rho . dphi).
      const double proj = Dot(phi, dphi, a.s.mp);
      for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = phi[t] * (dphi[t] - proj);
      break;
    }
    case FeatureMap::l2: {
      std::fill_n(dxh, a.dp, 0.0);
      std::copy_n(dphi + 1, a.s.d, dxh);
      unit_back(dxh);
      break;
    }
  }
}

// The state (S [m][dvp], z [mp]) absorbs a key's features f and value row v: S += f v^T,
// z += f; gated with gate g: S = g S + (1 - g) f v^T, z = g z + (1 - g) f.
void Absorb(const double* f, const double* v, std::int64_t m, std::int64_t mp, std::int64_t dvp, bool gated,
            double g, double* S, double* z) {
  if (!gated) {
    for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], v, S + r * dvp, dvp);
    Axpy(1.0, f, z, mp);
    return;
  }
  const double keep = 1.0 - g;
  for (std::int64_t r = 0; r < m; ++r) {
    const double fr = keep * f[r];
    double* sr = S + r * dvp;
    for (std::int64_t c = 0; c < dvp; ++c) sr[c] = g * sr[c] + fr * v[c];
  }
  for (std::int64_t r = 0; r < mp; ++r) z[r] = g * z[r] + keep * f[r];
}

// Gated RFA's checkpoints for the reverse sweep (contract: linear.h, "Gated RFA's gradient"):
// the state before positions 0, C, 2C, ... (C = kGateChunk) into ck.
void GateCheckpoints(const LinearTrainArgs& a, const Head& hd, const detail::LinearTrainScratch& l, double* ws) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t m = a.s.m, mp = a.s.mp, dvp = a.dvp, C = detail::kGateChunk, sz = m * dvp;
  double *S = ws + l.S, *z = ws + l.z, *ck = ws + l.ck, *vrow = ws + l.vrow, *phk = ws + l.phk;
  std::fill_n(S, sz, 0.0);
  std::fill_n(z, mp, 0.0);
  for (std::int64_t t = 0; t < pr.Nk; ++t) {
    if (t % C == 0) {
      std::copy_n(S, sz, ck + (t / C) * l.state);
      std::copy_n(z, mp, ck + (t / C) * l.state + sz);
    }
    if (!pr.key_visible(hd.b, t)) continue;
    hd.load_v(t, vrow);
    Absorb(phk + t * mp, vrow, m, mp, dvp, true, hd.gate(t), S, z);
  }
}

// Gated RFA, key j of the reverse sweep, with R, r the gradient of S_j, z_j and v its value row:
// d phi_k into dphi, dv into num, and returns dg. The state before j, S_{j-1}, comes from this
// chunk's states (cs), recomputed from the chunk's checkpoint when the sweep enters the chunk
// (*loaded: the chunk cs holds).
double GatedKey(const LinearTrainArgs& a, const Head& hd, const detail::LinearTrainScratch& l, double* ws,
                std::int64_t j, const double* v, std::int64_t* loaded, double* dphi, double* num) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t m = a.s.m, mp = a.s.mp, dvp = a.dvp, C = detail::kGateChunk, st = l.state, sz = m * dvp;
  const double *R = ws + l.R, *rr = ws + l.rr, *phk = ws + l.phk, *ck = ws + l.ck;
  double *cs = ws + l.cs, *tmp_v = ws + l.g;
  const std::int64_t c = j / C, c0 = c * C;
  if (c != *loaded) {  // cs[t - c0] is the state before position t
    std::copy_n(ck + c * st, st, cs);
    for (std::int64_t t = c0; t < std::min(pr.Nk, c0 + C); ++t) {
      double* next_state = cs + (t - c0 + 1) * st;
      std::copy_n(cs + (t - c0) * st, st, next_state);
      if (!pr.key_visible(hd.b, t)) continue;
      hd.load_v(t, tmp_v);
      Absorb(phk + t * mp, tmp_v, m, mp, dvp, true, hd.gate(t), next_state, next_state + sz);
    }
    *loaded = c;
  }
  const double* Sp = cs + (j - c0) * st;  // S_{j-1}
  const double* zp = Sp + sz;
  const double* f = phk + j * mp;
  const double keep = 1.0 - hd.gate(j);
  double dg = 0.0;
  for (std::int64_t r = 0; r < m; ++r) {
    const double rv = Dot(R + r * dvp, v, dvp);
    dphi[r] = keep * (rv + rr[r]);
    dg += Dot(R + r * dvp, Sp + r * dvp, dvp) - f[r] * rv + rr[r] * (zp[r] - f[r]);
  }
  std::fill_n(num, dvp, 0.0);
  for (std::int64_t r = 0; r < m; ++r) Axpy(keep * f[r], R + r * dvp, num, dvp);
  return dg;
}

// Causal, one (b, h): the forward (o64, lse64) or the gradients, by the two sweeps.
void CausalHead(const LinearTrainArgs& a, std::int64_t bh, double* ws) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t b = bh / pr.H, h = bh % pr.H;
  const std::int64_t Nq = pr.Nq, Nk = pr.Nk, m = a.s.m, mp = a.s.mp, dvp = a.dvp;
  const LinearTrainScratch l = LinearTrainScratch::make(a, Nq, Nk, true);
  const Head hd = head_of(a, b, h);
  double *x = ws + l.x, *xs = ws + l.xs, *dx = ws + l.dx, *dxh = ws + l.dxh, *u = ws + l.a, *du = ws + l.da;
  double *dphi = ws + l.dphi, *vrow = ws + l.vrow, *gorow = ws + l.gorow;
  double *num = ws + l.num, *S = ws + l.S, *z = ws + l.z, *R = ws + l.R, *rr = ws + l.rr;
  double *phk = ws + l.phk, *phq = ws + l.phq, *gst = ws + l.gst, *gden_st = ws + l.gden;

  // The key constant c over every visible key (favor_plus, favor; not over the prefix).
  KeyStats ks;
  if (a.s.map == FeatureMap::favor_plus || a.s.map == FeatureMap::favor) {
    double c = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < Nk; ++j) {
      if (!pr.key_visible(b, j)) continue;
      hd.load_k(j, x);
      for (std::int64_t t = 0; t < a.dp; ++t) xs[t] = a.s.sq * x[t];
      const double half = Dot(xs, xs, a.dp) / 2.0;
      if (a.s.map == FeatureMap::favor) {
        c = std::max(c, half);
      } else {
        Project(a.s, hd.wt, xs, u);
        for (std::int64_t r = 0; r < a.s.dirs; ++r) c = std::max(c, u[r] - half);
      }
    }
    ks.c = c;
  }
  // Every visible key's features, kept for both sweeps.
  for (std::int64_t j = 0; j < Nk; ++j) {
    if (!pr.key_visible(b, j)) continue;
    hd.load_k(j, x);
    RowFeatures(a, hd, x, false, ks, phk + j * mp, xs, u);
  }

  // Forward sweep: S, z absorb the keys in position order; each query reads them.
  std::fill_n(S, m * dvp, 0.0);
  std::fill_n(z, mp, 0.0);
  std::int64_t t = 0, seen = 0;
  for (std::int64_t i = 0; i < Nq; ++i) {
    const std::int64_t pos = pr.key_position(i);
    for (; t < Nk && t <= pos; ++t) {
      if (!pr.key_visible(b, t)) continue;
      hd.load_v(t, vrow);
      Absorb(phk + t * mp, vrow, m, mp, dvp, hd.gated(), hd.gated() ? hd.gate(t) : 0.0, S, z);
      ++seen;
    }
    double* f = phq + i * mp;
    double* gi = gst + i * dvp;
    gden_st[i] = 0.0;
    std::fill_n(gi, dvp, 0.0);
    std::fill_n(f, mp, 0.0);
    if (!pr.query_active(b, i) || seen == 0) {
      if (a.backward) hd.store_gq(i, nullptr);
      else hd.store_o(i, nullptr, false);
      continue;
    }
    hd.load_q(i, x);
    RowFeatures(a, hd, x, true, ks, f, xs, u);
    std::fill_n(num, dvp, 0.0);
    for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], S + r * dvp, num, dvp);
    const double den = Dot(f, z, mp);
    if (den == 0.0) {  // O = 0 by definition, a constant: no gradient, no share of R, r
      if (a.backward) hd.store_gq(i, nullptr);
      else hd.store_o(i, nullptr, true);
      continue;
    }
    for (std::int64_t c = 0; c < dvp; ++c) num[c] /= den;  // O_i
    if (!a.backward) {
      hd.store_o(i, num, true);
      continue;
    }
    hd.load_go(i, gorow);
    gden_st[i] = -Dot(gorow, num, dvp) / den;
    for (std::int64_t c = 0; c < dvp; ++c) gi[c] = gorow[c] / den;
    for (std::int64_t r = 0; r < m; ++r) dphi[r] = Dot(S + r * dvp, gi, dvp) + z[r] * gden_st[i];
    std::fill(dphi + m, dphi + mp, 0.0);
    FeaturesBack(a, hd, x, true, f, dphi, dx, xs, u, du, dxh, nullptr);
    hd.store_gq(i, dx);
  }
  if (!a.backward) return;
  const bool gated = hd.gated();
  if (gated) GateCheckpoints(a, hd, l, ws);

  // Reverse sweep: R, r absorb the queries that see key j; key j reads them. Gated: R, r are the
  // gradient of the state S_j, z_j, multiplied by g_j after key j (towards S_{j-1}).
  std::fill_n(R, m * dvp, 0.0);
  std::fill_n(rr, mp, 0.0);
  std::int64_t next = Nq - 1, loaded = -1;
  for (std::int64_t j = Nk - 1; j >= 0; --j) {
    for (; next >= 0 && pr.key_position(next) >= j; --next) {
      const double* f = phq + next * mp;
      for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], gst + next * dvp, R + r * dvp, dvp);
      Axpy(gden_st[next], f, rr, mp);
    }
    if (!pr.key_visible(b, j)) {
      hd.store_gk(j, nullptr);
      hd.store_gv(j, nullptr);
      if (gated) hd.store_ggate(j, 0.0);
      continue;
    }
    const double* f = phk + j * mp;
    hd.load_v(j, vrow);
    if (gated) {
      hd.store_ggate(j, GatedKey(a, hd, l, ws, j, vrow, &loaded, dphi, num));
    } else {
      for (std::int64_t r = 0; r < m; ++r) dphi[r] = Dot(R + r * dvp, vrow, dvp) + rr[r];
      std::fill_n(num, dvp, 0.0);
      for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], R + r * dvp, num, dvp);
    }
    std::fill(dphi + m, dphi + mp, 0.0);
    hd.store_gv(j, num);
    hd.load_k(j, x);
    FeaturesBack(a, hd, x, false, f, dphi, dx, xs, u, du, dxh, nullptr);
    hd.store_gk(j, dx);
    if (gated) {
      const double g = hd.gate(j);
      for (std::int64_t r = 0; r < m * dvp; ++r) R[r] *= g;
      for (std::int64_t r = 0; r < mp; ++r) rr[r] *= g;
    }
  }
}

// ---- Non-causal: blocks of kLinearKeyTask rows, the products as register-tiled GEMMs ----
// Per (b, h), with the augmented rows [V, 1] and [G, gden] (dva columns):
//   keys:    Sp_b = Phi_b^T [V_b, 1]       (per key block, its own stabiliser)
//   combine: [S, z] = sum_b fac_b Sp_b     (block order; fac_b rescales to one stabiliser)
//   queries: [NUM, den] = Phi_q [S, z];  O = NUM / den;  d Phi_q = [G, gden] [S, z]^T;
//            Rp_b = Phi_q,b^T [G_b, gden_b] (per query block)
//   combine: [R, r] = sum_b Rp_b           (block order)
//   keys:    d Phi_k = [V, 1] [R, r]^T;  dV = Phi_k R;  dK by the map's Jacobian (efficient:
//            softmax over positions, after the sum over blocks of phi_k d phi_k).
// Every product element is one chain over its reduction index in order (tile kernel), and
// every sum over blocks runs in block order: the bits do not depend on the thread count.

struct HeadBuffers {
  detail::LinearTrainHead l;
  double* base;
  double* at(std::int64_t off) const { return base + off; }
};

HeadBuffers buffers_of(const LinearTrainArgs& a, std::int64_t slot) {
  return {detail::LinearTrainHead::make(a, a.pr->Nq, a.pr->Nk), a.heads + slot * a.per_head};
}

// What a (b, h, block) task of phases 1, 3 and 5 works with: its (b, h)'s buffers, the
// thread's row temporaries and block rows, and the Head.
struct BlockTask {
  HeadBuffers hb;
  detail::LinearTrainScratch ts;
  detail::LinearTrainRows rl;
  double* rows;
  Head hd;
  BlockTask(const LinearTrainArgs& a, std::int64_t bh, std::int64_t slot, double* ws)
      : hb(buffers_of(a, slot)),
        ts(detail::LinearTrainScratch::make(a, a.pr->Nq, a.pr->Nk, false)),
        rl(detail::LinearTrainRows::make(a, hb.l.dva)),
        rows(ws + ts.total),
        hd(head_of(a, bh / a.pr->H, bh % a.pr->H)) {}
};

// out[k][0..cols) = sum_{t < K} X(k, t) M[t][0..cols), k < n (X(k, t) = X[k xk + t xt]), each
// element one chain over t in order: in double for the double definition; for the float
// backward, like the forward's value products, from X and M rounded to float, a float chain,
// widened back (fbuf: the thread's float operands, LinearTrainRows::fl).
HWY_INLINE void Product(const LinearTrainArgs& a, float* fbuf, const double* X, std::int64_t xk,
                        std::int64_t xt, std::int64_t n, const double* M, std::int64_t ld,
                        std::int64_t K, std::int64_t cols, double* out, std::int64_t ldo) {
  if (K == 0) {
    for (std::int64_t k = 0; k < n; ++k) std::fill_n(out + k * ldo, cols, 0.0);
    return;
  }
  if (a.q64 != nullptr) return Gemm(X, xk, xt, n, M, ld, K, cols, out, ldo);
  const std::int64_t c16 = detail::linear_pad16(cols);
  float* xf = fbuf;
  float* mf = xf + n * K;
  float* of = mf + K * c16;
  for (std::int64_t k = 0; k < n; ++k)
    for (std::int64_t t = 0; t < K; ++t) xf[k * K + t] = static_cast<float>(X[k * xk + t * xt]);
  for (std::int64_t t = 0; t < K; ++t) {
    for (std::int64_t c = 0; c < cols; ++c) mf[t * c16 + c] = static_cast<float>(M[t * ld + c]);
    std::fill(mf + t * c16 + cols, mf + (t + 1) * c16, 0.0f);
  }
  GemmF(xf, K, 1, n, mf, c16, K, c16, of, c16);
  for (std::int64_t k = 0; k < n; ++k)
    for (std::int64_t c = 0; c < cols; ++c) out[k * ldo + c] = static_cast<double>(of[k * c16 + c]);
}

// T[c][r] = A[r][c] for r < m, c < dva (T: dva rows of mp, zero padded).
HWY_INLINE void Transpose(const double* A, std::int64_t m, std::int64_t dva, std::int64_t mp, double* T) {
  std::fill_n(T, dva * mp, 0.0);
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t c = 0; c < dva; ++c) T[c * mp + r] = A[r * dva + c];
}

// W^T du of a block's n rows (projection maps; nullptr for the others): du per row from its
// features F and their gradients dF, then one product with W (the tile kernel's chains over
// the directions in order: the bits of ProjectBack's row updates).
const double* BlockProjectionBack(const LinearTrainArgs& a, const Head& hd, const double* F, const double* dF,
                                  std::int64_t n, double* dU, double* WDU) {
  if (!HasProjection(a.s.map) || n == 0) return nullptr;
  for (std::int64_t k = 0; k < n; ++k) ProjectionDu(a, F + k * a.s.mp, dF + k * a.s.mp, dU + k * a.s.dirs_p);
  Gemm(dU, a.s.dirs_p, 1, n, hd.w, a.dp, a.s.dirs, a.dp, WDU, a.dp);
  return WDU;
}

// The block's visible keys (positions in idx), their raw rows, and [V, 1] rows; returns n.
std::int64_t LoadKeyBlock(const LinearTrainArgs& a, const Head& hd, std::int64_t kb,
                          std::int64_t dva, const detail::LinearTrainRows& rl, double* ws,
                          std::int32_t* idx, bool raw_rows) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t j0 = kb * detail::kLinearKeyTask;
  const std::int64_t j1 = std::min(pr.Nk, j0 + detail::kLinearKeyTask);
  std::int64_t n = 0;
  for (std::int64_t j = j0; j < j1; ++j) {
    if (!pr.key_visible(hd.b, j)) continue;
    if (raw_rows) {
      hd.load_k(j, ws + rl.raw + n * a.dp);
      std::copy_n(ws + rl.raw + n * a.dp, a.s.d, ws + rl.X + n * a.s.d);
    }
    double* v = ws + rl.Vg + n * dva;
    hd.load_v(j, v);  // dvp entries: zero padded
    std::fill(v + a.dvp, v + dva, 0.0);
    v[a.pr->dv] = 1.0;
    idx[n++] = static_cast<std::int32_t>(j);
  }
  return n;
}

// Phase 1, (b, h, key block): features with the block's stabiliser, Sp_b = Phi_b^T [V_b, 1].
void KeysForward(const LinearTrainArgs& a, std::int64_t bh, std::int64_t slot, std::int64_t kb,
                 double* ws, std::int32_t* idx) {
  const BlockTask task(a, bh, slot, ws);
  const HeadBuffers& hb = task.hb;
  const detail::LinearTrainHead& l = hb.l;
  const detail::LinearTrainScratch& ts = task.ts;
  const detail::LinearTrainRows& rl = task.rl;
  double* rows = task.rows;
  const Head& hd = task.hd;
  const std::int64_t m = a.s.m, mp = a.s.mp;
  const std::int64_t n = LoadKeyBlock(a, hd, kb, l.dva, rl, rows, idx, true);
  hb.at(l.cnt)[kb] = static_cast<double>(n);
  if (n == 0) return;
  double* cb = hb.at(l.cb) + kb * a.dp;
  KeyBlockFeatures(a.s, hd.wt, rows + rl.X, n, rows + rl.P, cb, rows + rl.F, ws + ts.a);
  for (std::int64_t k = 0; k < n; ++k) std::copy_n(rows + rl.F + k * mp, mp, hb.at(l.phk) + idx[k] * mp);
  Product(a, reinterpret_cast<float*>(rows + rl.fl), rows + rl.F, 1, mp, m, rows + rl.Vg, l.dva, n, l.dva, hb.at(l.Sp) + kb * m * l.dva, l.dva);
}

// Phase 2, (b, h): one stabiliser for the key blocks (fac_b per feature row), [S, z], its
// transpose. efficient: feature f's softmax over every visible key, fac_bf = exp(M_bf - M_f) /
// Z_f with Z_f = sum_b exp(M_bf - M_f) z_bf.
void CombineKeys(const LinearTrainArgs& a, std::int64_t slot) {
  const HeadBuffers hb = buffers_of(a, slot);
  const detail::LinearTrainHead& l = hb.l;
  const std::int64_t m = a.s.m, mp = a.s.mp, dva = l.dva, dv = a.pr->dv;
  const double* cnt = hb.at(l.cnt);
  const double* cb = hb.at(l.cb);
  double* fac = hb.at(l.fac);
  const bool one_c = a.s.map == FeatureMap::favor_plus || a.s.map == FeatureMap::favor;
  const bool efficient = a.s.map == FeatureMap::efficient;
  double c = -std::numeric_limits<double>::infinity();
  std::vector<double> M(efficient ? static_cast<std::size_t>(a.s.d) : 0,
                        -std::numeric_limits<double>::infinity());
  std::vector<double> Z(M.size(), 0.0);
  for (std::int64_t kb = 0; kb < l.nkb; ++kb) {
    if (cnt[kb] == 0.0) continue;
    if (one_c) c = std::max(c, cb[kb * a.dp]);
    for (std::size_t f = 0; f < M.size(); ++f) M[f] = std::max(M[f], cb[kb * a.dp + static_cast<std::int64_t>(f)]);
  }
  for (std::int64_t kb = 0; kb < l.nkb; ++kb) {
    double* fb = fac + kb * mp;
    std::fill_n(fb, mp, 0.0);
    if (cnt[kb] == 0.0) continue;
    std::fill_n(fb, m, one_c ? std::exp(cb[kb * a.dp] - c) : 1.0);
    if (efficient)
      for (std::int64_t f = 0; f < a.s.d; ++f) {
        fb[f] = std::exp(cb[kb * a.dp + f] - M[static_cast<std::size_t>(f)]);
        Z[static_cast<std::size_t>(f)] += fb[f] * hb.at(l.Sp)[(kb * m + f) * dva + dv];
      }
  }
  if (efficient)
    for (std::int64_t kb = 0; kb < l.nkb; ++kb)
      for (std::int64_t f = 0; f < a.s.d; ++f) fac[kb * mp + f] /= Z[static_cast<std::size_t>(f)];
  double* Sa = hb.at(l.Sa);
  std::fill_n(Sa, m * dva, 0.0);
  for (std::int64_t kb = 0; kb < l.nkb; ++kb) {
    if (cnt[kb] == 0.0) continue;
    const double* Sp = hb.at(l.Sp) + kb * m * dva;
    for (std::int64_t r = 0; r < m; ++r) Axpy(fac[kb * mp + r], Sp + r * dva, Sa + r * dva, dva);
  }
  Transpose(Sa, m, dva, mp, hb.at(l.SaT));
}

// Phase 3, (b, h, query block): O (forward) or dQ and Rp_b (backward).
void Queries(const LinearTrainArgs& a, std::int64_t bh, std::int64_t slot, std::int64_t qb,
             double* ws, std::int32_t* idx) {
  const detail::Problem& pr = *a.pr;
  const BlockTask task(a, bh, slot, ws);
  const HeadBuffers& hb = task.hb;
  const detail::LinearTrainHead& l = hb.l;
  const detail::LinearTrainScratch& ts = task.ts;
  const detail::LinearTrainRows& rl = task.rl;
  double* rows = task.rows;
  const Head& hd = task.hd;
  const std::int64_t b = hd.b;
  const std::int64_t m = a.s.m, mp = a.s.mp, dva = l.dva, dv = pr.dv;
  bool any_key = false;
  for (std::int64_t kb = 0; kb < l.nkb; ++kb) any_key = any_key || hb.at(l.cnt)[kb] > 0.0;
  const std::int64_t i0 = qb * detail::kLinearKeyTask;
  const std::int64_t i1 = std::min(pr.Nq, i0 + detail::kLinearKeyTask);
  std::int64_t n = 0;
  for (std::int64_t i = i0; i < i1; ++i) {
    if (!pr.query_active(b, i) || !any_key) {
      if (a.backward) hd.store_gq(i, nullptr);
      else hd.store_o(i, nullptr, false);
      continue;
    }
    double* raw = rows + rl.raw + n * a.dp;
    hd.load_q(i, raw);
    std::copy_n(raw, a.s.d, rows + rl.X + n * a.s.d);
    idx[n++] = static_cast<std::int32_t>(i);
  }
  // The queries' features, as the forward computes them (a query's stabiliser is its own).
  FeatureRows(a.s, hd.wt, rows + rl.X, n, true, nullptr, rows + rl.P, rows + rl.F, ws + ts.a);
  double* NUM = rows + rl.NUM;
  double* G = rows + rl.Vg;
  Product(a, reinterpret_cast<float*>(rows + rl.fl), rows + rl.F, mp, 1, n, hb.at(l.Sa), dva, m, dva, NUM, dva);
  // The normalisers in double (as in the forward: phi_q . z), z = the last column of [S, z].
  double* z = ws + ts.dphi;
  std::fill_n(z, mp, 0.0);
  for (std::int64_t r = 0; r < m; ++r) z[r] = hb.at(l.Sa)[r * dva + dv];
  for (std::int64_t k = 0; k < n; ++k) {
    double* o = NUM + k * dva;
    double* g = G + k * dva;
    std::fill_n(g, dva, 0.0);
    const double den = Dot(rows + rl.F + k * mp, z, mp);
    o[dv] = den;
    if (den == 0.0) {  // O = 0 by definition, a constant: no gradient, no share of R, r
      if (!a.backward) hd.store_o(idx[k], nullptr, true);
      continue;
    }
    for (std::int64_t c = 0; c < dv; ++c) o[c] /= den;
    if (!a.backward) {
      hd.store_o(idx[k], o, true);
      continue;
    }
    double* go = ws + ts.gorow;
    hd.load_go(idx[k], go);
    double dot = 0.0;
    for (std::int64_t c = 0; c < dv; ++c) {
      dot += go[c] * o[c];
      g[c] = go[c] / den;
    }
    g[dv] = -dot / den;
  }
  if (!a.backward) return;
  double* dF = rows + rl.DF;
  Product(a, reinterpret_cast<float*>(rows + rl.fl), G, dva, 1, n, hb.at(l.SaT), mp, dva, mp, dF, mp);
  const double* wdu = BlockProjectionBack(a, hd, rows + rl.F, dF, n, rows + rl.dU, rows + rl.WDU);
  for (std::int64_t k = 0; k < n; ++k) {
    if (NUM[k * dva + dv] == 0.0) {
      hd.store_gq(idx[k], nullptr);
      continue;
    }
    FeaturesBack(a, hd, rows + rl.raw + k * a.dp, true, rows + rl.F + k * mp, dF + k * mp, ws + ts.dx,
                 ws + ts.xs, ws + ts.a, ws + ts.da, ws + ts.dxh, wdu ? wdu + k * a.dp : nullptr);
    hd.store_gq(idx[k], ws + ts.dx);
  }
  hb.at(l.rcnt)[qb] = static_cast<double>(n);
  Product(a, reinterpret_cast<float*>(rows + rl.fl), rows + rl.F, 1, mp, m, G, dva, n, dva, hb.at(l.Rp) + qb * m * dva, dva);
}

// Phase 4, (b, h): [R, r] = sum of the query blocks' parts in order, and its transpose.
void CombineQueries(const LinearTrainArgs& a, std::int64_t slot) {
  const HeadBuffers hb = buffers_of(a, slot);
  const detail::LinearTrainHead& l = hb.l;
  const std::int64_t m = a.s.m, dva = l.dva;
  double* Ra = hb.at(l.Ra);
  std::fill_n(Ra, m * dva, 0.0);
  for (std::int64_t qb = 0; qb < l.nqb; ++qb) {
    if (hb.at(l.rcnt)[qb] == 0.0) continue;
    const double* Rp = hb.at(l.Rp) + qb * m * dva;
    for (std::int64_t x = 0; x < m * dva; x += 8) Axpy(1.0, Rp + x, Ra + x, 8);
  }
  Transpose(Ra, m, dva, a.s.mp, hb.at(l.RaT));
}

// Phase 5, (b, h, key block): d phi_k = [V, 1] [R, r]^T, dV = Phi_k R, dK (efficient: kept
// with the block's sum of phi_k d phi_k for phase 6).
void KeysBackward(const LinearTrainArgs& a, std::int64_t bh, std::int64_t slot, std::int64_t kb,
                  double* ws, std::int32_t* idx) {
  const detail::Problem& pr = *a.pr;
  const BlockTask task(a, bh, slot, ws);
  const HeadBuffers& hb = task.hb;
  const detail::LinearTrainHead& l = hb.l;
  const detail::LinearTrainScratch& ts = task.ts;
  const detail::LinearTrainRows& rl = task.rl;
  double* rows = task.rows;
  const Head& hd = task.hd;
  const std::int64_t m = a.s.m, mp = a.s.mp, dva = l.dva;
  const std::int64_t j0 = kb * detail::kLinearKeyTask;
  for (std::int64_t j = j0; j < std::min(pr.Nk, j0 + detail::kLinearKeyTask); ++j)
    if (!pr.key_visible(hd.b, j)) {
      hd.store_gk(j, nullptr);
      hd.store_gv(j, nullptr);
    }
  const bool efficient = a.s.map == FeatureMap::efficient;
  if (efficient) std::fill_n(hb.at(l.Ap) + kb * mp, mp, 0.0);
  const std::int64_t n = LoadKeyBlock(a, hd, kb, dva, rl, rows, idx, !efficient);
  if (n == 0) return;
  // The features at the (b, h)'s one stabiliser: the block's rows times fac_b.
  double* F = rows + rl.F;
  const double* fac = hb.at(l.fac) + kb * mp;
  for (std::int64_t k = 0; k < n; ++k) {
    double* f = hb.at(l.phk) + idx[k] * mp;
    for (std::int64_t r = 0; r < mp; ++r) F[k * mp + r] = f[r] * fac[r];
  }
  double* dF = efficient ? hb.at(l.dphk) : rows + rl.DF;  // efficient: by position
  double* DV = rows + rl.NUM;
  if (efficient) {
    Product(a, reinterpret_cast<float*>(rows + rl.fl), rows + rl.Vg, dva, 1, n, hb.at(l.RaT), mp, dva, mp, rows + rl.DF, mp);
    for (std::int64_t k = 0; k < n; ++k) std::copy_n(rows + rl.DF + k * mp, mp, dF + idx[k] * mp);
  } else {
    Product(a, reinterpret_cast<float*>(rows + rl.fl), rows + rl.Vg, dva, 1, n, hb.at(l.RaT), mp, dva, mp, dF, mp);
  }
  Product(a, reinterpret_cast<float*>(rows + rl.fl), F, mp, 1, n, hb.at(l.Ra), dva, m, dva, DV, dva);
  for (std::int64_t k = 0; k < n; ++k) hd.store_gv(idx[k], DV + k * dva);
  if (efficient) {
    double* A = hb.at(l.Ap) + kb * mp;
    for (std::int64_t k = 0; k < n; ++k)
      for (std::int64_t f = 0; f < m; ++f) A[f] += F[k * mp + f] * rows[rl.DF + k * mp + f];
    for (std::int64_t k = 0; k < n; ++k) std::copy_n(F + k * mp, mp, hb.at(l.phk) + idx[k] * mp);
    return;
  }
  const double* wdu = BlockProjectionBack(a, hd, F, dF, n, rows + rl.dU, rows + rl.WDU);
  for (std::int64_t k = 0; k < n; ++k) {
    FeaturesBack(a, hd, rows + rl.raw + k * a.dp, false, F + k * mp, dF + k * mp, ws + ts.dx, ws + ts.xs,
                 ws + ts.a, ws + ts.da, ws + ts.dxh, wdu ? wdu + k * a.dp : nullptr);
    hd.store_gk(idx[k], ws + ts.dx);
  }
}

// Phase 6, efficient, (b, h, key block): dK = phi_k (d phi_k - A), A = sum of the blocks' parts
// in order (each task sums them itself: d of them, cheap).
void EfficientKeys(const LinearTrainArgs& a, std::int64_t bh, std::int64_t slot, std::int64_t kb, double* ws) {
  const detail::Problem& pr = *a.pr;
  const HeadBuffers hb = buffers_of(a, slot);
  const detail::LinearTrainHead& l = hb.l;
  const detail::LinearTrainScratch ts = detail::LinearTrainScratch::make(a, pr.Nq, pr.Nk, false);
  const Head hd = head_of(a, bh / pr.H, bh % pr.H);
  const std::int64_t mp = a.s.mp;
  double* A = ws + ts.dxh;
  std::fill_n(A, a.dp, 0.0);
  for (std::int64_t b2 = 0; b2 < l.nkb; ++b2)
    if (hb.at(l.cnt)[b2] > 0.0) Axpy(1.0, hb.at(l.Ap) + b2 * mp, A, a.dp);
  const std::int64_t j0 = kb * detail::kLinearKeyTask;
  for (std::int64_t j = j0; j < std::min(pr.Nk, j0 + detail::kLinearKeyTask); ++j) {
    if (!pr.key_visible(hd.b, j)) continue;
    const double* f = hb.at(l.phk) + j * mp;
    const double* df = hb.at(l.dphk) + j * mp;
    double* dx = ws + ts.dx;
    for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = f[t] * (df[t] - A[t]);
    hd.store_gk(j, dx);
  }
}

}  // namespace linear

void LinearTrainRun(const detail::LinearTrainArgs& a) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t BH = pr.B * pr.H;
  auto ws = [&](int tid) { return a.scratch + static_cast<std::int64_t>(tid) * a.per_thread; };
  if (pr.p->causal) {
    detail::parallel_for_tid(BH, pr.threads, [&](std::int64_t bh, int tid) { linear::CausalHead(a, bh, ws(tid)); });
    return;
  }
  const detail::LinearTrainHead l = detail::LinearTrainHead::make(a, pr.Nq, pr.Nk);
  auto rows = [&](int tid) { return a.rows + static_cast<std::int64_t>(tid) * detail::kLinearKeyTask; };
  for (std::int64_t g0 = 0; g0 < BH; g0 += a.group) {
    const std::int64_t G = std::min(a.group, BH - g0);
    detail::parallel_for_tid(G * l.nkb, pr.threads, [&](std::int64_t t, int tid) {
      linear::KeysForward(a, g0 + t / l.nkb, t / l.nkb, t % l.nkb, ws(tid), rows(tid));
    });
    detail::parallel_for(G, pr.threads, [&](std::int64_t g) { linear::CombineKeys(a, g); });
    detail::parallel_for_tid(G * l.nqb, pr.threads, [&](std::int64_t t, int tid) {
      linear::Queries(a, g0 + t / l.nqb, t / l.nqb, t % l.nqb, ws(tid), rows(tid));
    });
    if (!a.backward) continue;
    detail::parallel_for(G, pr.threads, [&](std::int64_t g) { linear::CombineQueries(a, g); });
    detail::parallel_for_tid(G * l.nkb, pr.threads, [&](std::int64_t t, int tid) {
      linear::KeysBackward(a, g0 + t / l.nkb, t / l.nkb, t % l.nkb, ws(tid), rows(tid));
    });
    if (a.s.map == FeatureMap::efficient)
      detail::parallel_for_tid(G * l.nkb, pr.threads, [&](std::int64_t t, int tid) {
        linear::EfficientKeys(a, g0 + t / l.nkb, t / l.nkb, t % l.nkb, ws(tid));
      });
  }
}
}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smyrf::detail {

HWY_EXPORT(LinearTrainRun);

namespace {

// The map's sizes and W, W^T per head (from the shared draw, rfa: divided by rfa_sigma).
struct TrainSetup {
  LinearTrainArgs args;
  std::vector<double> w, wt;
  TrainSetup(const Problem& pr, const LinearConfig& config) {
    LinearTrainArgs& a = args;
    a.pr = &pr;
    a.s.map = config.map;
    a.s.d = pr.d;
    a.dp = linear_pad8(pr.d);
    a.dvp = linear_pad8(pr.dv);
    a.s.m = linear_feature_count(config, pr.d);
    a.s.mp = linear_pad8(a.s.m);
    a.s.dirs = config.map == FeatureMap::favor_plus                               ? config.n_features
             : config.map == FeatureMap::favor || config.map == FeatureMap::rfa ? config.n_features / 2
                                                                                : 0;
    a.s.dirs_p = linear_pad8(a.s.dirs);
    a.s.sq = std::sqrt(std::abs(static_cast<double>(pr.scale)));
    a.s.qsign = pr.scale < 0.0f ? -1.0 : 1.0;
    a.s.nu = config.dpfp_nu;
    if (a.s.dirs > 0) {
      w.assign(static_cast<std::size_t>(pr.H * a.s.dirs * a.dp), 0.0);
      wt.assign(static_cast<std::size_t>(pr.H * pr.d * a.s.dirs_p), 0.0);
      const double sigma = config.map == FeatureMap::rfa ? static_cast<double>(config.rfa_sigma) : 1.0;
      for (std::int64_t h = 0; h < pr.H; ++h) {
        const std::vector<double> draw =
            spec::linear_random_features(pr.p->seed, h, a.s.dirs, pr.d, config.orthogonal);
        for (std::int64_t r = 0; r < a.s.dirs; ++r)
          for (std::int64_t t = 0; t < pr.d; ++t) {
            const double x = draw[static_cast<std::size_t>(r * pr.d + t)] / sigma;
            w[static_cast<std::size_t>((h * a.s.dirs + r) * a.dp + t)] = x;
            wt[static_cast<std::size_t>((h * pr.d + t) * a.s.dirs_p + r)] = x;
          }
      }
      a.w = w.data();
      a.s.wt = wt.data();
    }
    a.gates32 = config.gates;
    a.gates64 = config.f64 != nullptr ? config.f64->gates : nullptr;
    const bool causal = pr.p->causal;
    a.per_thread = LinearTrainScratch::make(a, pr.Nq, pr.Nk, causal).total;
    if (!causal) {
      const LinearTrainHead l = LinearTrainHead::make(a, pr.Nq, pr.Nk);
      a.per_thread += LinearTrainRows::make(a, l.dva).total;
      a.per_head = l.total;
      // Enough (b, h) at a time for 4 block tasks per thread (a function of the sizes and the
      // thread count only; the results do not depend on it).
      const std::int64_t blocks = std::max(l.nkb, l.nqb);
      a.group = std::clamp<std::int64_t>((4 * pr.threads + blocks - 1) / blocks, 1, pr.B * pr.H);
    }
  }
  std::size_t scratch_doubles() const {
    return static_cast<std::size_t>(args.pr->threads * args.per_thread + args.group * args.per_head);
  }
  std::size_t row_ints() const { return static_cast<std::size_t>(args.pr->threads * kLinearKeyTask); }
};

// Runs with `scratch` (scratch_doubles()) and `rows` (row_ints()).
void run(LinearTrainArgs& a, double* scratch, std::int32_t* rows) {
  a.scratch = scratch;
  a.heads = scratch + a.pr->threads * a.per_thread;
  a.rows = rows;
  HWY_DYNAMIC_DISPATCH(LinearTrainRun)(a);
}

}  // namespace

RunInfo linear_backward(const Problem& pr, const GradientParams& grads, const LinearConfig& config,
                        Workspace* workspace) {
  Timer total;
  TrainSetup setup(pr, config);
  LinearTrainArgs& a = setup.args;
  a.go32 = grads.grad_o;
  a.gq32 = grads.grad_q;
  a.gk32 = grads.grad_k;
  a.gv32 = grads.grad_v;
  a.gates64 = nullptr;  // the float path reads the float gates
  a.ggates32 = config.grad_gates;
  a.backward = true;
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  const std::size_t slot = scratch.arena().add<double>(setup.scratch_doubles());
  const std::size_t rows_slot = scratch.arena().add<std::int32_t>(setup.row_ints());
  scratch.bind();
  RunInfo info;
  info.workspace_bytes = scratch.bytes() + (setup.w.size() + setup.wt.size()) * sizeof(double);
  Timer attn;
  run(a, scratch.arena().at<double>(slot), scratch.arena().at<std::int32_t>(rows_slot));
  info.attention.seconds = attn.seconds();
  info.seconds_total = total.seconds();
  return info;
}

void linear_forward_f64(const Problem& pr, const DoubleTensors& in, const LinearConfig& config,
                        double* o, double* lse) {
  TrainSetup setup(pr, config);
  LinearTrainArgs& a = setup.args;
  a.q64 = in.q;
  a.k64 = in.k;
  a.v64 = in.v;
  a.o64 = o;
  a.lse64 = lse;
  std::vector<double> scratch(setup.scratch_doubles());
  std::vector<std::int32_t> rows(setup.row_ints());
  run(a, scratch.data(), rows.data());
}

void linear_backward_f64(const Problem& pr, const DoubleTensors& in, const LinearConfig& config,
                         const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  if (config.grad_gates != nullptr)
    fail("LinearConfig.grad_gates", ptr_str(config.grad_gates),
         "written by attention_backward; attention_backward_f64 writes LinearConfig.f64->grad_gates: must be "
         "nullptr");
  TrainSetup setup(pr, config);
  LinearTrainArgs& a = setup.args;
  a.q64 = in.q;
  a.k64 = in.k;
  a.v64 = in.v;
  a.go64 = grad_o;
  a.gq64 = grad_q;
  a.gk64 = grad_k;
  a.gv64 = grad_v;
  a.ggates64 = config.f64 != nullptr ? config.f64->grad_gates : nullptr;
  a.backward = true;
  std::vector<double> scratch(setup.scratch_doubles());
  std::vector<std::int32_t> rows(setup.row_ints());
  run(a, scratch.data(), rows.data());
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
