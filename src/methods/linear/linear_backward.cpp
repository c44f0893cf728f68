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
  // x == nullptr writes zeros.
  void store_gq(std::int64_t i, const double* x) const {
    const AttentionParams& p = *pr->p;
    if (a->gq64 != nullptr) {
      double* out = a->gq64 + (bh() * pr->Nq + i) * pr->d;
      store(x, pr->d, out);
    } else {
      float* out = a->gq32 + b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride;
      store(x, pr->d, out);
    }
  }
  void store_gk(std::int64_t j, const double* x) const {
    const AttentionParams& p = *pr->p;
    if (a->gk64 != nullptr) {
      double* out = a->gk64 + (bh() * pr->Nk + j) * pr->d;
      store(x, pr->d, out);
    } else {
      float* out = a->gk32 + b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride;
      store(x, pr->d, out);
    }
  }
  void store_gv(std::int64_t j, const double* x) const {
    const AttentionParams& p = *pr->p;
    if (a->gv64 != nullptr) {
      double* out = a->gv64 + (bh() * pr->Nk + j) * pr->dv;
      store(x, pr->dv, out);
    } else {
      float* out = a->gv32 + b * p.v_batch_stride + h * p.v_head_stride + j * p.v_row_stride;
      store(x, pr->dv, out);
    }
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

// dx[0..dp) = (d phi / d x)^T dphi for row x with features phi (efficient keys: done by the
// caller, their softmax runs over positions). Scratch: xs, u, du, dxh.
void FeaturesBack(const LinearTrainArgs& a, const Head& hd, const double* x, bool query,
                  const double* phi, const double* dphi, double* dx, double* xs, double* u,
                  double* du, double* dxh) {
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
    case FeatureMap::favor_plus: {
      // phi_r = exp(w_r . x' - |x'|^2 / 2 - c) / sqrt(m): d phi_r / d x' = phi_r (w_r - x').
      const double sigma = query ? a.s.qsign * a.s.sq : a.s.sq;
      double total = 0.0;
      for (std::int64_t r = 0; r < a.s.dirs; ++r) total += (du[r] = dphi[r] * phi[r]);
      ProjectBack(a, hd.w, du, dx);
      for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = sigma * (dx[t] - sigma * x[t] * total);
      break;
    }
    case FeatureMap::favor: {
      // phi = e(x') [sin(W x'), cos(W x')], e = exp(|x'|^2 / 2 - c) / sqrt(m / 2).
      const double sigma = query ? a.s.qsign * a.s.sq : a.s.sq;
      for (std::int64_t t = 0; t < a.dp; ++t) xs[t] = sigma * x[t];
      double total = 0.0;  // dphi . phi: the derivative through e, times x'
      for (std::int64_t r = 0; r < a.s.dirs; ++r) {
        total += dphi[r] * phi[r] + dphi[a.s.dirs + r] * phi[a.s.dirs + r];
        // phi_r = e sin(u_r), phi_{m/2 + r} = e cos(u_r).
        du[r] = dphi[r] * phi[a.s.dirs + r] - dphi[a.s.dirs + r] * phi[r];
      }
      ProjectBack(a, hd.w, du, dx);
      for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = sigma * (dx[t] + xs[t] * total);
      break;
    }
    case FeatureMap::rfa: {
      // phi_r = sin(u_r) / sqrt(m/2), phi_{m/2 + r} = cos(u_r) / sqrt(m/2), u = W x / |x|.
      for (std::int64_t r = 0; r < a.s.dirs; ++r)
        du[r] = dphi[r] * phi[a.s.dirs + r] - dphi[a.s.dirs + r] * phi[r];
      std::fill_n(dxh, a.dp, 0.0);
      ProjectBack(a, hd.w, du, dxh);
      unit_back(dxh);
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

// One (b, h): the forward (o64, lse64) or the gradients.
void TrainHead(const LinearTrainArgs& a, std::int64_t bh, double* ws) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t b = bh / pr.H, h = bh % pr.H;
  const std::int64_t Nq = pr.Nq, Nk = pr.Nk, m = a.s.m, mp = a.s.mp, dvp = a.dvp;
  const bool causal = pr.p->causal;
  const LinearTrainScratch l = LinearTrainScratch::make(a, Nq, Nk, causal);
  const Head hd{&a, &pr, b, h, a.w ? a.w + h * a.s.dirs * a.dp : nullptr,
                a.s.wt ? a.s.wt + h * a.s.d * a.s.dirs_p : nullptr};
  double *x = ws + l.x, *xs = ws + l.xs, *dx = ws + l.dx, *dxh = ws + l.dxh, *u = ws + l.a, *du = ws + l.da;
  double *phi = ws + l.phi, *dphi = ws + l.dphi, *vrow = ws + l.vrow, *gorow = ws + l.gorow;
  double *num = ws + l.num, *g = ws + l.g, *S = ws + l.S, *z = ws + l.z, *R = ws + l.R, *rr = ws + l.rr;
  double *phk = ws + l.phk, *phq = ws + l.phq, *gst = ws + l.gst, *gden_st = ws + l.gden;

  // Key statistics over the visible keys (the forward's constants).
  KeyStats ks;
  bool any_key = false;
  if (a.s.map == FeatureMap::favor_plus || a.s.map == FeatureMap::favor || a.s.map == FeatureMap::efficient) {
    double c = -std::numeric_limits<double>::infinity();
    double* kmax = ws + l.kmax;
    double* ksum = ws + l.ksum;
    std::fill_n(kmax, a.dp, -std::numeric_limits<double>::infinity());
    std::fill_n(ksum, a.dp, 0.0);
    for (std::int64_t j = 0; j < Nk; ++j) {
      if (!pr.key_visible(b, j)) continue;
      hd.load_k(j, x);
      if (a.s.map == FeatureMap::efficient) {
        for (std::int64_t t = 0; t < a.s.d; ++t) kmax[t] = std::max(kmax[t], x[t]);
        continue;
      }
      for (std::int64_t t = 0; t < a.dp; ++t) xs[t] = a.s.sq * x[t];
      const double half = Dot(xs, xs, a.dp) / 2.0;
      if (a.s.map == FeatureMap::favor) {
        c = std::max(c, half);
      } else {
        Project(a.s, hd.wt, xs, u);
        for (std::int64_t r = 0; r < a.s.dirs; ++r) c = std::max(c, u[r] - half);
      }
    }
    if (a.s.map == FeatureMap::efficient)
      for (std::int64_t j = 0; j < Nk; ++j) {
        if (!pr.key_visible(b, j)) continue;
        hd.load_k(j, x);
        for (std::int64_t t = 0; t < a.s.d; ++t) ksum[t] += std::exp(x[t] - kmax[t]);
      }
    ks = KeyStats{c, kmax, ksum};
  }
  // Every visible key's features, kept for both passes over the keys.
  for (std::int64_t j = 0; j < Nk; ++j) {
    if (!pr.key_visible(b, j)) continue;
    any_key = true;
    hd.load_k(j, x);
    RowFeatures(a, hd, x, false, ks, phk + j * mp, xs, u);
  }

  std::fill_n(S, m * dvp, 0.0);
  std::fill_n(z, mp, 0.0);
  auto absorb = [&](std::int64_t j) {
    const double* f = phk + j * mp;
    hd.load_v(j, vrow);
    for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], vrow, S + r * dvp, dvp);
    Axpy(1.0, f, z, mp);
  };
  if (!causal)
    for (std::int64_t j = 0; j < Nk; ++j)
      if (pr.key_visible(b, j)) absorb(j);

  std::fill_n(R, m * dvp, 0.0);
  std::fill_n(rr, mp, 0.0);
  // Reads query i against the current S, z: O (forward) or d phi_q, dQ and its g, gden
  // (backward). Returns false when the query contributes nothing (normaliser 0).
  auto read_query = [&](std::int64_t i, double* f, double* gi, double& gden) {
    hd.load_q(i, x);
    RowFeatures(a, hd, x, true, ks, f, xs, u);
    std::fill_n(num, dvp, 0.0);
    for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], S + r * dvp, num, dvp);
    const double den = Dot(f, z, mp);
    if (den == 0.0) {  // O = 0 by definition, a constant
      if (a.backward) hd.store_gq(i, nullptr);
      else hd.store_o(i, nullptr, true);
      gden = 0.0;
      std::fill_n(gi, dvp, 0.0);
      return false;
    }
    for (std::int64_t c = 0; c < dvp; ++c) num[c] /= den;  // O_i
    if (!a.backward) {
      hd.store_o(i, num, true);
      return false;
    }
    hd.load_go(i, gorow);
    gden = -Dot(gorow, num, dvp) / den;
    for (std::int64_t c = 0; c < dvp; ++c) gi[c] = gorow[c] / den;
    for (std::int64_t r = 0; r < m; ++r) dphi[r] = Dot(S + r * dvp, gi, dvp) + z[r] * gden;
    std::fill(dphi + m, dphi + mp, 0.0);
    FeaturesBack(a, hd, x, true, f, dphi, dx, xs, u, du, dxh);
    hd.store_gq(i, dx);
    return true;
  };
  auto add_query = [&](const double* f, const double* gi, double gden) {
    for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], gi, R + r * dvp, dvp);
    Axpy(gden, f, rr, mp);
  };
  auto silent_query = [&](std::int64_t i) {
    if (a.backward) hd.store_gq(i, nullptr);
    else hd.store_o(i, nullptr, false);
  };

  if (!causal) {
    for (std::int64_t i = 0; i < Nq; ++i) {
      if (!pr.query_active(b, i) || !any_key) {
        silent_query(i);
        continue;
      }
      double gden = 0.0;
      if (read_query(i, phi, g, gden)) add_query(phi, g, gden);
    }
  } else {
    std::int64_t t = 0, seen = 0;
    for (std::int64_t i = 0; i < Nq; ++i) {
      const std::int64_t pos = pr.key_position(i);
      for (; t < Nk && t <= pos; ++t)
        if (pr.key_visible(b, t)) {
          absorb(t);
          ++seen;
        }
      gden_st[i] = 0.0;
      std::fill_n(gst + i * dvp, dvp, 0.0);
      std::fill_n(phq + i * mp, mp, 0.0);
      if (!pr.query_active(b, i) || seen == 0) {
        silent_query(i);
        continue;
      }
      read_query(i, phq + i * mp, gst + i * dvp, gden_st[i]);
    }
  }
  if (!a.backward) return;

  // Keys: d phi_k = R v + r, dV = R^T phi_k, then dK.
  const bool efficient = a.s.map == FeatureMap::efficient;
  double* A = ws + l.A;
  if (efficient) std::fill_n(A, mp, 0.0);
  std::int64_t next = Nq - 1;  // causal: the next query (in reverse) to add to R, r
  for (std::int64_t j = Nk - 1; j >= 0; --j) {
    if (causal)
      for (; next >= 0 && pr.key_position(next) >= j; --next)
        if (pr.query_active(b, next)) add_query(phq + next * mp, gst + next * dvp, gden_st[next]);
    if (!pr.key_visible(b, j)) {
      hd.store_gk(j, nullptr);
      hd.store_gv(j, nullptr);
      continue;
    }
    const double* f = phk + j * mp;
    hd.load_v(j, vrow);
    double* dk_phi = efficient ? ws + l.dphk + j * mp : dphi;
    for (std::int64_t r = 0; r < m; ++r) dk_phi[r] = Dot(R + r * dvp, vrow, dvp) + rr[r];
    std::fill(dk_phi + m, dk_phi + mp, 0.0);
    std::fill_n(num, dvp, 0.0);
    for (std::int64_t r = 0; r < m; ++r) Axpy(f[r], R + r * dvp, num, dvp);
    hd.store_gv(j, num);
    if (efficient) {
      for (std::int64_t r = 0; r < m; ++r) A[r] += f[r] * dk_phi[r];
      continue;
    }
    hd.load_k(j, x);
    FeaturesBack(a, hd, x, false, f, dk_phi, dx, xs, u, du, dxh);
    hd.store_gk(j, dx);
  }
  if (efficient)  // softmax of each feature over the visible keys: dk = phi (dphi - A)
    for (std::int64_t j = 0; j < Nk; ++j) {
      if (!pr.key_visible(b, j)) continue;
      const double* f = phk + j * mp;
      const double* df = ws + l.dphk + j * mp;
      for (std::int64_t t = 0; t < a.s.d; ++t) dx[t] = f[t] * (df[t] - A[t]);
      hd.store_gk(j, dx);
    }
}

}  // namespace linear

void LinearTrainRun(const detail::LinearTrainArgs& a) {
  detail::parallel_for_tid(a.pr->B * a.pr->H, a.pr->threads, [&](std::int64_t bh, int tid) {
    linear::TrainHead(a, bh, a.scratch + static_cast<std::int64_t>(tid) * a.per_thread);
  });
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
    a.per_thread = LinearTrainScratch::make(a, pr.Nq, pr.Nk, pr.p->causal).total;
  }
};

void run(LinearTrainArgs& a, double* scratch) {
  a.scratch = scratch;
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
  a.backward = true;
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  const std::size_t slot = scratch.arena().add<double>(static_cast<std::size_t>(pr.threads * a.per_thread));
  scratch.bind();
  RunInfo info;
  info.workspace_bytes = scratch.bytes() + (setup.w.size() + setup.wt.size()) * sizeof(double);
  Timer attn;
  run(a, scratch.arena().at<double>(slot));
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
  std::vector<double> scratch(static_cast<std::size_t>(pr.threads * a.per_thread));
  run(a, scratch.data());
}

void linear_backward_f64(const Problem& pr, const DoubleTensors& in, const LinearConfig& config,
                         const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  TrainSetup setup(pr, config);
  LinearTrainArgs& a = setup.args;
  a.q64 = in.q;
  a.k64 = in.k;
  a.v64 = in.v;
  a.go64 = grad_o;
  a.gq64 = grad_q;
  a.gk64 = grad_k;
  a.gv64 = grad_v;
  a.backward = true;
  std::vector<double> scratch(static_cast<std::size_t>(pr.threads * a.per_thread));
  run(a, scratch.data());
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
