// Feature-map ("linear") attention's training path: the backward pass (f32 inputs) and the
// double-precision definition (attention_f64, attention_backward_f64), one implementation over
// the element type of the inputs (definitions and gradient: smyrf/methods/linear.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/problem.h"
#include "methods/linear/linear_internal.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo linear_backward(const Problem& pr, const GradientParams& grads, const LinearConfig& config,
                        Workspace* workspace);
// pr: the checked problem (sizes, masks, causal, scale, seed); in: contiguous doubles.
void linear_forward_f64(const Problem& pr, const DoubleTensors& in, const LinearConfig& config,
                        double* o, double* lse);
void linear_backward_f64(const Problem& pr, const DoubleTensors& in, const LinearConfig& config,
                         const double* grad_o, double* grad_q, double* grad_k, double* grad_v);

// What a task of the training path reads and writes. Exactly one of the two input kinds is
// set: the float rows of `pr` (f64 == nullptr-inputs) or contiguous doubles.
struct LinearTrainArgs {
  const Problem* pr = nullptr;
  LinearMap s{};                   // the map (wt: W^T of all heads, [H][d][dirs_p])
  std::int64_t dp = 0;             // d padded to 8
  std::int64_t dvp = 0;            // dv padded to 8
  const double* w = nullptr;       // [H][dirs][dp]: W per head (rfa: / rfa_sigma), or null
  // Double inputs (contiguous [B, H, N, width]) and outputs, or nullptr.
  const double *q64 = nullptr, *k64 = nullptr, *v64 = nullptr, *go64 = nullptr;
  double *o64 = nullptr, *lse64 = nullptr, *gq64 = nullptr, *gk64 = nullptr, *gv64 = nullptr;
  // Float backward: dO in O's layout, gradients in the layouts of Q, K and V.
  const float* go32 = nullptr;
  float *gq32 = nullptr, *gk32 = nullptr, *gv32 = nullptr;
  // Gated RFA: the gates ([B, H, Nk]; doubles for the double path when given, else floats)
  // and their gradient (float or double), or nullptr.
  const float* gates32 = nullptr;
  const double* gates64 = nullptr;
  float* ggates32 = nullptr;
  double* ggates64 = nullptr;
  bool backward = false;           // gradients (else: the forward's O and lse)
  double* scratch = nullptr;       // per thread: `per_thread` doubles
  std::int64_t per_thread = 0;
  // Non-causal: blocks of kLinearKeyTask rows; `group` (b, h) at a time, each with
  // `per_head` doubles of `heads` (their features, block partials and states); row indices.
  std::int64_t group = 1;
  double* heads = nullptr;
  std::int64_t per_head = 0;
  std::int32_t* rows = nullptr;    // per thread: kLinearKeyTask
};

// Non-causal per-(b, h) buffers (doubles; each region a multiple of 8), dva = dv + 1 padded to
// 8: the value rows augmented with a column of ones ([V, 1]) and dO's rows with gden ([G,
// gden]), so that S and z, R and r, O and its normaliser come out of one product each.
struct LinearTrainHead {
  std::int64_t dva, nkb, nqb;
  std::int64_t phk, Sp, cb, cnt, fac, Sa, SaT, Rp, rcnt, Ra, RaT, dphk, Ap, total;
  static LinearTrainHead make(const LinearTrainArgs& a, std::int64_t Nq, std::int64_t Nk) {
    LinearTrainHead l{};
    const std::int64_t m = a.s.m, mp = a.s.mp, dp = linear_pad8(a.s.d);
    l.dva = linear_pad8(a.pr->dv + 1);
    l.nkb = (Nk + kLinearKeyTask - 1) / kLinearKeyTask;
    l.nqb = (Nq + kLinearKeyTask - 1) / kLinearKeyTask;
    std::int64_t at = 0;
    auto take = [&](std::int64_t n) {
      const std::int64_t o = at;
      at += linear_pad8(n);
      return o;
    };
    l.phk = take(Nk * mp);                // key features by position
    l.Sp = take(l.nkb * m * l.dva);       // per key block: Phi_b^T [V, 1]
    l.cb = take(l.nkb * dp);              // per key block: its stabiliser(s)
    l.cnt = take(l.nkb);                  // per key block: visible keys
    l.fac = take(l.nkb * mp);             // per key block: the factor of each feature row
    l.Sa = take(m * l.dva);               // [S, z]
    l.SaT = take(l.dva * mp);             // its transpose
    l.Rp = take(l.nqb * m * l.dva);       // per query block: Phi_q^T [G, gden]
    l.rcnt = take(l.nqb);                 // per query block: rows that contributed
    l.Ra = take(m * l.dva);               // [R, r]
    l.RaT = take(l.dva * mp);             // its transpose
    const bool efficient = a.s.map == FeatureMap::efficient;
    l.dphk = take(efficient ? Nk * mp : 0);    // efficient: d phi_k by position
    l.Ap = take(efficient ? l.nkb * mp : 0);   // efficient: per block sum of phi_k d phi_k
    l.total = at;
    return l;
  }
};

// Per-thread rows of a block (non-causal): raw and prepared inputs, projections, features,
// augmented value / gradient rows, products, feature gradients.
struct LinearTrainRows {
  std::int64_t raw, X, P, F, Vg, NUM, DF, dU, WDU, fl, total;
  static LinearTrainRows make(const LinearTrainArgs& a, std::int64_t dva) {
    LinearTrainRows l{};
    const std::int64_t E = kLinearKeyTask, dp = linear_pad8(a.s.d);
    std::int64_t at = 0;
    auto take = [&](std::int64_t n) {
      const std::int64_t o = at;
      at += linear_pad8(n);
      return o;
    };
    l.raw = take(E * dp);
    l.X = take(E * a.s.d);
    l.P = take(E * a.s.dirs_p);
    l.F = take(E * a.s.mp);
    l.Vg = take(E * dva);
    l.NUM = take(E * dva);
    l.DF = take(E * a.s.mp);
    l.dU = take(E * a.s.dirs_p);  // projection maps: d phi / d u per row, then W^T du
    l.WDU = take(E * dp);
    // Float operands of one product (floats, counted in doubles): X [n][K], M [K][c16], out
    // [n][c16], n and K at most R = max(E, mp, dva), c16 the columns padded to 16.
    const std::int64_t R = std::max({E, a.s.mp, dva}), c16 = linear_pad16(std::max(a.s.mp, dva));
    l.fl = take((R * R + 2 * R * c16 + 1) / 2);
    l.total = at;
    return l;
  }
};

// Positions per checkpoint of gated RFA's state (the backward recomputes one such chunk of
// states at a time from its checkpoint).
constexpr std::int64_t kGateChunk = 64;

// Per-thread scratch of the training path (doubles; each region a multiple of 8): row
// temporaries, and for the causal sweeps their states (gated: the checkpoints and one chunk's
// states, each state m dvp + mp doubles: S then z).
struct LinearTrainScratch {
  std::int64_t x, xs, dx, dxh, a, da, phi, dphi, vrow, gorow, num, g, S, z, R, rr, kmax, ksum;
  std::int64_t phk, phq, gst, gden, state, ck, cs, total;
  static LinearTrainScratch make(const LinearTrainArgs& s, std::int64_t Nq, std::int64_t Nk,
                                 bool causal) {
    LinearTrainScratch l{};
    std::int64_t at = 0;
    auto take = [&](std::int64_t n) {
      const std::int64_t o = at;
      at += linear_pad8(n);
      return o;
    };
    l.x = take(s.dp);
    l.xs = take(s.dp);
    l.dx = take(s.dp);
    l.dxh = take(s.dp);
    // Projections and their trigonometric values (Features' tmp: 3 dirs_p), or, for dpfp,
    // relu([x, -x]) and its gradient (2d).
    l.a = take(std::max(3 * s.s.dirs_p, 2 * s.s.d));
    l.da = take(std::max(s.s.dirs_p, 2 * s.s.d));
    l.phi = take(s.s.mp);
    l.dphi = take(s.s.mp);
    l.vrow = take(s.dvp);
    l.gorow = take(s.dvp);
    l.num = take(s.dvp);
    l.g = take(s.dvp);
    // Causal: the running states and the queries kept between the two sweeps.
    const std::int64_t c = causal ? 1 : 0;
    l.S = take(c * s.s.m * s.dvp);
    l.z = take(c * s.s.mp);
    l.R = take(c * s.s.m * s.dvp);
    l.rr = take(c * s.s.mp);
    l.kmax = take(c * s.dp);
    l.ksum = take(c * s.dp);
    l.phk = take(c * Nk * s.s.mp);
    l.phq = take(c * Nq * s.s.mp);
    l.gst = take(c * Nq * s.dvp);
    l.gden = take(c * Nq);
    const bool gated = causal && (s.gates32 != nullptr || s.gates64 != nullptr);
    l.state = linear_pad8(s.s.m * s.dvp + s.s.mp);
    l.ck = take(gated ? (Nk + kGateChunk - 1) / kGateChunk * l.state : 0);
    l.cs = take(gated ? (kGateChunk + 1) * l.state : 0);
    l.total = at;
    return l;
  }
};

}  // namespace smyrf::detail
