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
  bool backward = false;           // gradients (else: the forward's O and lse)
  double* scratch = nullptr;       // per thread: `per_thread` doubles
  std::int64_t per_thread = 0;
};

// Per-thread scratch of the training path (doubles; each region a multiple of 8).
struct LinearTrainScratch {
  std::int64_t x, xs, dx, dxh, a, da, phi, dphi, vrow, gorow, num, g, S, z, R, rr, kmax, ksum, A;
  std::int64_t phk, phq, gst, gden, dphk, total;
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
    l.S = take(s.s.m * s.dvp);
    l.z = take(s.s.mp);
    l.R = take(s.s.m * s.dvp);
    l.rr = take(s.s.mp);
    l.kmax = take(s.dp);
    l.ksum = take(s.dp);
    l.A = take(s.s.mp);
    l.phk = take(Nk * s.s.mp);
    l.phq = take(causal ? Nq * s.s.mp : 0);
    l.gst = take(causal ? Nq * s.dvp : 0);
    l.gden = take(causal ? Nq : 0);
    l.dphk = take(s.s.map == FeatureMap::efficient ? Nk * s.s.mp : 0);
    l.total = at;
    return l;
  }
};

}  // namespace smyrf::detail
