// Compressed attention's double-precision definition and its exact gradient (contract:
// smyrf/methods/compressed.h, "Backward"). Plain loops per (batch, head): the synthesised rows
// in double (no f32 roundings: a rounding has no derivative), each query's softmax over its
// synthetic rows and window keys, then the chain back through the synthesis. Parallel over
// heads, each head's batch elements in order, so the learned parts' gradients (sums over the
// batch) are added in batch order whatever the thread count. Nystrom (no learned parts): its
// matrices per (batch, head), and the pseudo-inverse iteration's backward through every
// iterate (nystrom_pinv_backward, shared with the float backward).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"
#include "methods/compressed/compressed.h"
#include "spec/draws.h"

namespace smyrf::detail {
namespace {

constexpr double kNinf = -std::numeric_limits<double>::infinity();

using Rows = std::vector<const double*>;
using GradRows = std::vector<double*>;

double dot(const double* a, const double* b, std::int64_t n) {
  double s = 0.0;
  for (std::int64_t t = 0; t < n; ++t) s += a[t] * b[t];
  return s;
}

// Softmax weights w of scale q . keys_j; returns the logsumexp (-inf without keys).
double softmax(const double* q, const Rows& keys, std::int64_t d, double scale, std::vector<double>& w) {
  w.assign(keys.size(), 0.0);
  if (keys.empty()) return kNinf;
  double m = kNinf;
  for (std::size_t j = 0; j < keys.size(); ++j) {
    w[j] = scale * dot(q, keys[j], d);
    m = std::max(m, w[j]);
  }
  double s = 0.0;
  for (double& x : w) {
    x = std::exp(x - m);
    s += x;
  }
  for (double& x : w) x /= s;
  return m + std::log(s);
}

// out = sum_j w_j values_j.
void combine(const std::vector<double>& w, const Rows& values, std::int64_t width, double* out) {
  std::fill_n(out, width, 0.0);
  for (std::size_t j = 0; j < values.size(); ++j)
    for (std::int64_t c = 0; c < width; ++c) out[c] += w[j] * values[j][c];
}

// The softmax backward of one query row given its weights w (P) and output o:
// D = dO . O, dS_j = P_j (dO . V_j - D); dV_j += P_j dO, dq += scale dS_j K_j,
// dK_j += scale dS_j q. dq may be nullptr.
void softmax_backward(const double* q, const Rows& keys, const Rows& values, const std::vector<double>& w,
                      const double* o, const double* go, std::int64_t d, std::int64_t dv, double scale,
                      double* dq, const GradRows& dkeys, const GradRows& dvalues) {
  const double D = dot(go, o, dv);
  for (std::size_t j = 0; j < keys.size(); ++j) {
    const double ds = w[j] * (dot(go, values[j], dv) - D);
    for (std::int64_t c = 0; c < dv; ++c) dvalues[j][c] += w[j] * go[c];
    if (dq != nullptr)
      for (std::int64_t c = 0; c < d; ++c) dq[c] += scale * ds * keys[j][c];
    for (std::int64_t c = 0; c < d; ++c) dkeys[j][c] += scale * ds * q[c];
  }
}

// Mean of rows[lo, hi) into out (double, no rounding).
void mean(const Rows& rows, std::int64_t lo, std::int64_t hi, std::int64_t width, double* out) {
  std::fill_n(out, width, 0.0);
  for (std::int64_t t = lo; t < hi; ++t)
    for (std::int64_t c = 0; c < width; ++c) out[c] += rows[static_cast<std::size_t>(t)][c];
  for (std::int64_t c = 0; c < width; ++c) out[c] /= static_cast<double>(hi - lo);
}

// dRows[lo, hi) += g / (hi - lo): the gradient of a mean.
void mean_backward(const GradRows& drows, std::int64_t lo, std::int64_t hi, std::int64_t width, const double* g) {
  const double n = static_cast<double>(hi - lo);
  for (std::int64_t t = lo; t < hi; ++t)
    for (std::int64_t c = 0; c < width; ++c) drows[static_cast<std::size_t>(t)][c] += g[c] / n;
}

// ---- Nystrom ----

// C = A B (A [n, k], B [k, m]; row-major, double), each sum in index order (compressed_matmul).
std::vector<double> mul(const double* A, const double* Bm, std::int64_t n, std::int64_t k, std::int64_t m) {
  std::vector<double> C(static_cast<std::size_t>(n * m));
  compressed_matmul(A, Bm, C.data(), n, k, m);
  return C;
}
std::vector<double> transpose(const double* A, std::int64_t n, std::int64_t m) {
  std::vector<double> T(static_cast<std::size_t>(n * m));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) T[static_cast<std::size_t>(j * n + i)] = A[i * m + j];
  return T;
}

// The softmax backward of rows: dS = P (dP - rowsum(P dP)), in place of dP ([n, m]).
void softmax_rows_backward(const double* P, double* dP, std::int64_t n, std::int64_t m) {
  for (std::int64_t i = 0; i < n; ++i) {
    double D = 0.0;
    for (std::int64_t j = 0; j < m; ++j) D += P[i * m + j] * dP[i * m + j];
    for (std::int64_t j = 0; j < m; ++j) dP[i * m + j] = P[i * m + j] * (dP[i * m + j] - D);
  }
}

// Rows of softmax(scale X Y^T) (X [n, d], Y [m, d]).
std::vector<double> softmax_rows(const double* X, std::int64_t n, const double* Y, std::int64_t m, std::int64_t d,
                                 double scale) {
  std::vector<double> P(static_cast<std::size_t>(n * m));
  Rows keys;
  for (std::int64_t j = 0; j < m; ++j) keys.push_back(Y + j * d);
  std::vector<double> w;
  for (std::int64_t i = 0; i < n; ++i) {
    softmax(X + i * d, keys, d, scale, w);
    std::copy(w.begin(), w.end(), P.begin() + i * m);
  }
  return P;
}

// dX += scale dS Y, dY += scale dS^T X for S = scale X Y^T (dS [n, m]).
void scores_backward(const double* dS, const double* X, std::int64_t n, const double* Y, std::int64_t m,
                     std::int64_t d, double scale, double* dX, double* dY) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) {
      const double s = scale * dS[i * m + j];
      for (std::int64_t x = 0; x < d; ++x) {
        dX[i * d + x] += s * Y[j * d + x];
        dY[j * d + x] += s * X[i * d + x];
      }
    }
}

}  // namespace

void nystrom_pinv_iterates(const double* A2, std::int64_t mq, std::int64_t mk, int iterations, double* Zs) {
  double max_row = 0.0, max_col = 0.0;
  for (std::int64_t i = 0; i < mq; ++i) {
    double s = 0.0;
    for (std::int64_t j = 0; j < mk; ++j) s += std::abs(A2[i * mk + j]);
    max_row = std::max(max_row, s);
  }
  for (std::int64_t j = 0; j < mk; ++j) {
    double s = 0.0;
    for (std::int64_t i = 0; i < mq; ++i) s += std::abs(A2[i * mk + j]);
    max_col = std::max(max_col, s);
  }
  const std::int64_t zn = mk * mq;
  for (std::int64_t i = 0; i < mk; ++i)
    for (std::int64_t j = 0; j < mq; ++j) Zs[i * mq + j] = A2[j * mk + i] / (max_row * max_col);
  for (int it = 0; it < iterations; ++it) {
    const double* Z = Zs + it * zn;
    const std::vector<double> X = mul(A2, Z, mq, mk, mq);
    std::vector<double> P = X;  // 13 I - X (15 I - X (7 I - X))
    for (double& x : P) x = -x;
    for (std::int64_t i = 0; i < mq; ++i) P[static_cast<std::size_t>(i * mq + i)] += 7.0;
    P = mul(X.data(), P.data(), mq, mq, mq);
    for (double& x : P) x = -x;
    for (std::int64_t i = 0; i < mq; ++i) P[static_cast<std::size_t>(i * mq + i)] += 15.0;
    P = mul(X.data(), P.data(), mq, mq, mq);
    for (double& x : P) x = -x;
    for (std::int64_t i = 0; i < mq; ++i) P[static_cast<std::size_t>(i * mq + i)] += 13.0;
    const std::vector<double> next = mul(Z, P.data(), mk, mq, mq);
    for (std::int64_t x = 0; x < zn; ++x) Zs[(it + 1) * zn + x] = 0.25 * next[static_cast<std::size_t>(x)];
  }
}

void nystrom_pinv_backward(const double* A2, std::int64_t mq, std::int64_t mk, int iterations, const double* Zs,
                           double* dZ, double* dA2) {
  const std::int64_t zn = mk * mq, qq = mq * mq;
  for (int it = iterations - 1; it >= 0; --it) {
    // Z' = 1/4 Z P(X), X = A2 Z, P(X) = 13 I - 15 X + 7 X^2 - X^3; G = dZ'.
    const double* Z = Zs + it * zn;
    const std::vector<double> X = mul(A2, Z, mq, mk, mq), X2 = mul(X.data(), X.data(), mq, mq, mq);
    const std::vector<double> X3 = mul(X2.data(), X.data(), mq, mq, mq);
    std::vector<double> P(static_cast<std::size_t>(qq));
    for (std::int64_t x = 0; x < qq; ++x) P[static_cast<std::size_t>(x)] = -15.0 * X[static_cast<std::size_t>(x)] + 7.0 * X2[static_cast<std::size_t>(x)] - X3[static_cast<std::size_t>(x)];
    for (std::int64_t i = 0; i < mq; ++i) P[static_cast<std::size_t>(i * mq + i)] += 13.0;
    // dZ (direct) = 1/4 G P^T; H = dL/dP = 1/4 Z^T G.
    const std::vector<double> Pt = transpose(P.data(), mq, mq);
    std::vector<double> dZn = mul(dZ, Pt.data(), mk, mq, mq);
    for (double& x : dZn) x *= 0.25;
    const std::vector<double> Zt = transpose(Z, mk, mq);
    std::vector<double> H = mul(Zt.data(), dZ, mq, mk, mq);
    for (double& x : H) x *= 0.25;
    // dX = -15 H + 7 (H X^T + X^T H) - (H (X^2)^T + X^T H X^T + (X^2)^T H).
    const std::vector<double> Xt = transpose(X.data(), mq, mq), X2t = transpose(X2.data(), mq, mq);
    const std::vector<double> HXt = mul(H.data(), Xt.data(), mq, mq, mq), XtH = mul(Xt.data(), H.data(), mq, mq, mq);
    const std::vector<double> HX2t = mul(H.data(), X2t.data(), mq, mq, mq), X2tH = mul(X2t.data(), H.data(), mq, mq, mq);
    const std::vector<double> XtHXt = mul(XtH.data(), Xt.data(), mq, mq, mq);
    std::vector<double> dX(static_cast<std::size_t>(qq));
    for (std::size_t x = 0; x < dX.size(); ++x)
      dX[x] = -15.0 * H[x] + 7.0 * (HXt[x] + XtH[x]) - (HX2t[x] + XtHXt[x] + X2tH[x]);
    // X = A2 Z: dA2 += dX Z^T, dZ += A2^T dX.
    const std::vector<double> dA = mul(dX.data(), Zt.data(), mq, mq, mk);
    for (std::int64_t x = 0; x < mq * mk; ++x) dA2[x] += dA[static_cast<std::size_t>(x)];
    const std::vector<double> A2t = transpose(A2, mq, mk);
    const std::vector<double> dZx = mul(A2t.data(), dX.data(), mk, mq, mq);
    for (std::int64_t x = 0; x < zn; ++x) dZ[x] = dZn[static_cast<std::size_t>(x)] + dZx[static_cast<std::size_t>(x)];
  }
  // Z_0 = A2^T / c, c = max_row max_col (A2 > 0: row and column sums; the first maximum's
  // row / column carries the derivative).
  std::int64_t i_max = 0, j_max = 0;
  double max_row = -1.0, max_col = -1.0;
  for (std::int64_t i = 0; i < mq; ++i) {
    double s = 0.0;
    for (std::int64_t j = 0; j < mk; ++j) s += std::abs(A2[i * mk + j]);
    if (s > max_row) max_row = s, i_max = i;
  }
  for (std::int64_t j = 0; j < mk; ++j) {
    double s = 0.0;
    for (std::int64_t i = 0; i < mq; ++i) s += std::abs(A2[i * mk + j]);
    if (s > max_col) max_col = s, j_max = j;
  }
  const double c = max_row * max_col;
  double dc = 0.0;
  for (std::int64_t i = 0; i < mk; ++i)
    for (std::int64_t j = 0; j < mq; ++j) {
      dA2[j * mk + i] += dZ[i * mq + j] / c;
      dc -= dZ[i * mq + j] * A2[j * mk + i] / (c * c);
    }
  for (std::int64_t j = 0; j < mk; ++j) dA2[i_max * mk + j] += dc * max_col;
  for (std::int64_t i = 0; i < mq; ++i) dA2[i * mk + j_max] += dc * max_row;
}

namespace {

// Nystrom's definition on batch element b, head h (double, no rounding of the landmarks) and,
// when grad_o is given, its gradient.
void nystrom_head(const Problem& pr, const DoubleTensors& in, const CompressedConfig& c, std::int64_t b,
                  std::int64_t h, double* o_out, double* lse_out, const double* grad_o, double* gq, double* gk,
                  double* gv) {
  const std::int64_t H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv, bh = b * H + h;
  const double scale = pr.scale;
  std::vector<std::int64_t> qpos, kpos;
  for (std::int64_t i = 0; i < Nq; ++i)
    if (pr.query_active(b, i)) qpos.push_back(i);
  for (std::int64_t j = 0; j < Nk; ++j)
    if (pr.key_visible(b, j)) kpos.push_back(j);
  const std::int64_t nq = static_cast<std::int64_t>(qpos.size()), nk = static_cast<std::int64_t>(kpos.size());
  if (grad_o == nullptr && lse_out != nullptr && nk > 0)
    for (std::int64_t i : qpos) lse_out[bh * Nq + i] = std::numeric_limits<double>::quiet_NaN();
  if (nq == 0 || nk == 0) return;
  // Gathered rows: Q [nq, d], K [nk, d], V [nk, dv].
  std::vector<double> Q(static_cast<std::size_t>(nq * d)), K(static_cast<std::size_t>(nk * d)), V(static_cast<std::size_t>(nk * dv));
  for (std::int64_t t = 0; t < nq; ++t) std::copy_n(in.q + (bh * Nq + qpos[static_cast<std::size_t>(t)]) * d, d, Q.begin() + t * d);
  for (std::int64_t t = 0; t < nk; ++t) {
    std::copy_n(in.k + (bh * Nk + kpos[static_cast<std::size_t>(t)]) * d, d, K.begin() + t * d);
    std::copy_n(in.v + (bh * Nk + kpos[static_cast<std::size_t>(t)]) * dv, dv, V.begin() + t * dv);
  }
  const std::int64_t mq = segment_count(c.rank, nq), mk = segment_count(c.rank, nk);
  auto means = [](const std::vector<double>& X, std::int64_t n, std::int64_t m, std::int64_t w) {
    std::vector<double> out(static_cast<std::size_t>(m * w), 0.0);
    for (std::int64_t t = 0; t < m; ++t) {
      const std::int64_t lo = segment_begin(t, n, m), hi = segment_begin(t + 1, n, m);
      for (std::int64_t u = lo; u < hi; ++u)
        for (std::int64_t x = 0; x < w; ++x) out[static_cast<std::size_t>(t * w + x)] += X[static_cast<std::size_t>(u * w + x)];
      for (std::int64_t x = 0; x < w; ++x) out[static_cast<std::size_t>(t * w + x)] /= static_cast<double>(hi - lo);
    }
    return out;
  };
  const std::vector<double> Qt = means(Q, nq, mq, d), Kt = means(K, nk, mk, d);
  const std::vector<double> A1 = softmax_rows(Q.data(), nq, Kt.data(), mk, d, scale);
  const std::vector<double> A2 = softmax_rows(Qt.data(), mq, Kt.data(), mk, d, scale);
  const std::vector<double> A3 = softmax_rows(Qt.data(), mq, K.data(), nk, d, scale);
  const int T = c.pinv_iterations;
  std::vector<double> Zs(static_cast<std::size_t>((T + 1) * mk * mq));
  nystrom_pinv_iterates(A2.data(), mq, mk, T, Zs.data());
  const double* Z = Zs.data() + T * mk * mq;
  const std::vector<double> Bm = mul(A3.data(), V.data(), mq, nk, dv);
  const std::vector<double> W = mul(Z, Bm.data(), mk, mq, dv);
  if (grad_o == nullptr) {
    const std::vector<double> O = mul(A1.data(), W.data(), nq, mk, dv);
    for (std::int64_t t = 0; t < nq; ++t)
      std::copy_n(O.begin() + t * dv, dv, o_out + (bh * Nq + qpos[static_cast<std::size_t>(t)]) * dv);
    return;
  }
  std::vector<double> G(static_cast<std::size_t>(nq * dv));
  for (std::int64_t t = 0; t < nq; ++t) std::copy_n(grad_o + (bh * Nq + qpos[static_cast<std::size_t>(t)]) * dv, dv, G.begin() + t * dv);
  std::vector<double> dQ(Q.size(), 0.0), dK(K.size(), 0.0), dQt(Qt.size(), 0.0), dKt(Kt.size(), 0.0);
  // O = A1 W.
  const std::vector<double> A1t = transpose(A1.data(), nq, mk), Wt = transpose(W.data(), mk, dv);
  const std::vector<double> dW = mul(A1t.data(), G.data(), mk, nq, dv);
  std::vector<double> dA1 = mul(G.data(), Wt.data(), nq, dv, mk);
  softmax_rows_backward(A1.data(), dA1.data(), nq, mk);
  scores_backward(dA1.data(), Q.data(), nq, Kt.data(), mk, d, scale, dQ.data(), dKt.data());
  // W = Z B: dZ = dW B^T, dB = Z^T dW.
  const std::vector<double> Bt = transpose(Bm.data(), mq, dv), Zt = transpose(Z, mk, mq);
  std::vector<double> dZ = mul(dW.data(), Bt.data(), mk, dv, mq);
  const std::vector<double> dB = mul(Zt.data(), dW.data(), mq, mk, dv);
  // B = A3 V: dV = A3^T dB, dA3 = dB V^T.
  const std::vector<double> A3t = transpose(A3.data(), mq, nk), Vt = transpose(V.data(), nk, dv);
  const std::vector<double> dV = mul(A3t.data(), dB.data(), nk, mq, dv);
  std::vector<double> dA3 = mul(dB.data(), Vt.data(), mq, dv, nk);
  softmax_rows_backward(A3.data(), dA3.data(), mq, nk);
  scores_backward(dA3.data(), Qt.data(), mq, K.data(), nk, d, scale, dQt.data(), dK.data());
  // Z(A2), A2 = softmax(scale Qt Kt^T).
  std::vector<double> dA2(A2.size(), 0.0);
  nystrom_pinv_backward(A2.data(), mq, mk, T, Zs.data(), dZ.data(), dA2.data());
  softmax_rows_backward(A2.data(), dA2.data(), mq, mk);
  scores_backward(dA2.data(), Qt.data(), mq, Kt.data(), mk, d, scale, dQt.data(), dKt.data());
  // The landmarks are segment means.
  auto mean_grad = [](const std::vector<double>& dM, std::int64_t n, std::int64_t m, std::int64_t w, std::vector<double>& dX) {
    for (std::int64_t t = 0; t < m; ++t) {
      const std::int64_t lo = segment_begin(t, n, m), hi = segment_begin(t + 1, n, m);
      for (std::int64_t u = lo; u < hi; ++u)
        for (std::int64_t x = 0; x < w; ++x)
          dX[static_cast<std::size_t>(u * w + x)] += dM[static_cast<std::size_t>(t * w + x)] / static_cast<double>(hi - lo);
    }
  };
  mean_grad(dQt, nq, mq, d, dQ);
  mean_grad(dKt, nk, mk, d, dK);
  for (std::int64_t t = 0; t < nq; ++t) std::copy_n(dQ.begin() + t * d, d, gq + (bh * Nq + qpos[static_cast<std::size_t>(t)]) * d);
  for (std::int64_t t = 0; t < nk; ++t) {
    std::copy_n(dK.begin() + t * d, d, gk + (bh * Nk + kpos[static_cast<std::size_t>(t)]) * d);
    std::copy_n(dV.begin() + t * dv, dv, gv + (bh * Nk + kpos[static_cast<std::size_t>(t)]) * dv);
  }
}

// A learned part [H, rank, width]: the double values when given, else the floats widened.
struct Learned {
  const float* f = nullptr;
  const double* d = nullptr;
  double at(std::int64_t i) const { return d != nullptr ? d[i] : static_cast<double>(f[i]); }
};

// The double-precision computation; grad_o == nullptr: forward only (o, lse). Otherwise
// the gradients (gq, gk, gv and the learned parts' f64->grad_*) and not o / lse.
void run(const Problem& pr, const DoubleTensors& in, const CompressedConfig& c, double* o_out, double* lse_out,
         const double* grad_o, double* gq, double* gk, double* gv) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
  const double scale = pr.scale;
  const bool backward = grad_o != nullptr;
  const CompressedDoubleParts none;
  const CompressedDoubleParts& f64 = c.f64 != nullptr ? *c.f64 : none;
  const Learned E{c.projection_e, f64.projection_e}, F{c.projection_f, f64.projection_f};
  const Learned I{c.inducing, f64.inducing}, MK{c.memory_k, f64.memory_k}, MV{c.memory_v, f64.memory_v};
  const std::int64_t rank = c.rank;
  const bool windowed = c.kind == Compression::star || c.kind == Compression::global_memory;
  if (backward) {
    std::fill_n(gq, B * H * Nq * d, 0.0);
    std::fill_n(gk, B * H * Nk * d, 0.0);
    std::fill_n(gv, B * H * Nk * dv, 0.0);
  } else {
    std::fill_n(o_out, B * H * Nq * dv, 0.0);
    if (lse_out != nullptr) std::fill_n(lse_out, B * H * Nq, kNinf);
  }
  if (c.kind == Compression::nystrom) {
    parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
      nystrom_head(pr, in, c, bh / H, bh % H, o_out, lse_out, grad_o, gq, gk, gv);
    });
    return;
  }
  parallel_for(H, pr.threads, [&](std::int64_t h) {
    // The learned parts' gradients of this head, overwritten.
    auto zero = [&](double* g, std::int64_t width) {
      if (backward && g != nullptr) std::fill_n(g + h * rank * width, rank * width, 0.0);
    };
    zero(f64.grad_projection_e, Nk);
    zero(f64.grad_projection_f, Nk);
    zero(f64.grad_inducing, d);
    zero(f64.grad_memory_k, d);
    zero(f64.grad_memory_v, dv);
    std::vector<double> w, wi, o(static_cast<std::size_t>(dv)), ks, vs, iq, ilse, dks, dvs, diq;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t bh = b * H + h;
      std::vector<std::int64_t> qpos, kpos;
      for (std::int64_t i = 0; i < Nq; ++i)
        if (pr.query_active(b, i)) qpos.push_back(i);
      for (std::int64_t j = 0; j < Nk; ++j)
        if (pr.key_visible(b, j)) kpos.push_back(j);
      const std::int64_t nq = static_cast<std::int64_t>(qpos.size()), nk = static_cast<std::int64_t>(kpos.size());
      Rows K, V;
      GradRows dK, dV;
      for (std::int64_t j : kpos) {
        K.push_back(in.k + (bh * Nk + j) * d);
        V.push_back(in.v + (bh * Nk + j) * dv);
        if (backward) {
          dK.push_back(gk + (bh * Nk + j) * d);
          dV.push_back(gv + (bh * Nk + j) * dv);
        }
      }
      // ---- Synthesis: M rows ks [M, d], vs [M, dv]; star and induced_points keep their
      // inner queries iq [M, d] and the inner softmax's lse.
      std::int64_t M = 0;
      switch (c.kind) {
        case Compression::linformer:
          M = nk > 0 ? rank : 0;
          ks.assign(static_cast<std::size_t>(M * d), 0.0);
          vs.assign(static_cast<std::size_t>(M * dv), 0.0);
          for (std::int64_t r = 0; r < M; ++r)
            for (std::int64_t t = 0; t < nk; ++t) {
              const std::int64_t j = kpos[static_cast<std::size_t>(t)], at = (h * rank + r) * Nk + j;
              float e_draw = 0.0f, f_draw = 0.0f;
              if (E.f == nullptr || F.f == nullptr) spec::linformer_projection(pr.p->seed, h, r, j, rank, &e_draw, &f_draw);
              const double e = E.f != nullptr ? E.at(at) : e_draw, f = F.f != nullptr ? F.at(at) : f_draw;
              for (std::int64_t x = 0; x < d; ++x) ks[static_cast<std::size_t>(r * d + x)] += e * K[static_cast<std::size_t>(t)][x];
              for (std::int64_t x = 0; x < dv; ++x) vs[static_cast<std::size_t>(r * dv + x)] += f * V[static_cast<std::size_t>(t)][x];
            }
          break;
        case Compression::memory_compressed:
          M = (nk + c.stride - 1) / c.stride;
          ks.assign(static_cast<std::size_t>(M * d), 0.0);
          vs.assign(static_cast<std::size_t>(M * dv), 0.0);
          for (std::int64_t t = 0; t < M; ++t) {
            const std::int64_t lo = t * c.stride, hi = std::min(nk, lo + c.stride);
            mean(K, lo, hi, d, ks.data() + t * d);
            mean(V, lo, hi, dv, vs.data() + t * dv);
          }
          break;
        case Compression::global_memory:
          if (MK.f != nullptr) {
            M = rank;
            ks.resize(static_cast<std::size_t>(M * d));
            vs.resize(static_cast<std::size_t>(M * dv));
            for (std::int64_t x = 0; x < M * d; ++x) ks[static_cast<std::size_t>(x)] = MK.at(h * rank * d + x);
            for (std::int64_t x = 0; x < M * dv; ++x) vs[static_cast<std::size_t>(x)] = MV.at(h * rank * dv + x);
          } else {
            M = segment_count(rank, nk);
            ks.assign(static_cast<std::size_t>(M * d), 0.0);
            vs.assign(static_cast<std::size_t>(M * dv), 0.0);
            for (std::int64_t t = 0; t < M; ++t) {
              mean(K, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, ks.data() + t * d);
              mean(V, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), dv, vs.data() + t * dv);
            }
          }
          break;
        case Compression::star:
        case Compression::induced_points: {
          const bool star = c.kind == Compression::star;
          if (star) {
            M = nq > 0 && nk > 0 ? 1 : 0;
            iq.assign(static_cast<std::size_t>(M * d), 0.0);
            if (M > 0) {
              Rows Q;
              for (std::int64_t i : qpos) Q.push_back(in.q + (bh * Nq + i) * d);
              mean(Q, 0, nq, d, iq.data());
            }
          } else if (I.f != nullptr) {
            M = nk > 0 ? rank : 0;
            iq.resize(static_cast<std::size_t>(M * d));
            for (std::int64_t x = 0; x < M * d; ++x) iq[static_cast<std::size_t>(x)] = I.at(h * rank * d + x);
          } else {
            M = segment_count(rank, nk);
            iq.assign(static_cast<std::size_t>(M * d), 0.0);
            for (std::int64_t t = 0; t < M; ++t)
              mean(K, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, iq.data() + t * d);
          }
          ks.assign(static_cast<std::size_t>(M * d), 0.0);
          vs.assign(static_cast<std::size_t>(M * dv), 0.0);
          ilse.assign(static_cast<std::size_t>(M), kNinf);
          for (std::int64_t r = 0; r < M; ++r) {
            ilse[static_cast<std::size_t>(r)] = softmax(iq.data() + r * d, K, d, scale, wi);
            combine(wi, K, d, ks.data() + r * d);
            combine(wi, V, dv, vs.data() + r * dv);
          }
          break;
        }
        case Compression::nystrom:
          break;  // nystrom_head
      }
      dks.assign(static_cast<std::size_t>(M * d), 0.0);
      dvs.assign(static_cast<std::size_t>(M * dv), 0.0);
      // ---- Attention: each active query over the M rows and (star, global_memory) its window.
      for (std::int64_t i : qpos) {
        Rows keys, values;
        GradRows dkeys, dvalues;
        for (std::int64_t r = 0; r < M; ++r) {
          keys.push_back(ks.data() + r * d);
          values.push_back(vs.data() + r * dv);
          dkeys.push_back(dks.data() + r * d);
          dvalues.push_back(dvs.data() + r * dv);
        }
        if (windowed) {
          const std::int64_t p = pr.key_position(i);
          for (std::int64_t t = 0; t < nk; ++t) {
            const std::int64_t j = kpos[static_cast<std::size_t>(t)];
            if (std::abs(p - j) > c.window || (pr.p->causal && j > p)) continue;
            keys.push_back(K[static_cast<std::size_t>(t)]);
            values.push_back(V[static_cast<std::size_t>(t)]);
            if (backward) {
              dkeys.push_back(dK[static_cast<std::size_t>(t)]);
              dvalues.push_back(dV[static_cast<std::size_t>(t)]);
            }
          }
        }
        if (keys.empty()) continue;  // O = 0, lse = -inf, no gradient
        const double* q = in.q + (bh * Nq + i) * d;
        const double l = softmax(q, keys, d, scale, w);
        combine(w, values, dv, o.data());
        if (!backward) {
          std::copy(o.begin(), o.end(), o_out + (bh * Nq + i) * dv);
          if (lse_out != nullptr) lse_out[bh * Nq + i] = l;
          continue;
        }
        softmax_backward(q, keys, values, w, o.data(), grad_o + (bh * Nq + i) * dv, d, dv, scale,
                         gq + (bh * Nq + i) * d, dkeys, dvalues);
      }
      if (!backward || M == 0) continue;
      // ---- The chain through the synthesis.
      switch (c.kind) {
        case Compression::linformer:
          for (std::int64_t r = 0; r < M; ++r)
            for (std::int64_t t = 0; t < nk; ++t) {
              const std::int64_t j = kpos[static_cast<std::size_t>(t)], at = (h * rank + r) * Nk + j;
              float e_draw = 0.0f, f_draw = 0.0f;
              if (E.f == nullptr || F.f == nullptr) spec::linformer_projection(pr.p->seed, h, r, j, rank, &e_draw, &f_draw);
              const double e = E.f != nullptr ? E.at(at) : e_draw, f = F.f != nullptr ? F.at(at) : f_draw;
              const double* dkr = dks.data() + r * d;
              const double* dvr = dvs.data() + r * dv;
              for (std::int64_t x = 0; x < d; ++x) dK[static_cast<std::size_t>(t)][x] += e * dkr[x];
              for (std::int64_t x = 0; x < dv; ++x) dV[static_cast<std::size_t>(t)][x] += f * dvr[x];
              if (f64.grad_projection_e != nullptr) f64.grad_projection_e[at] += dot(dkr, K[static_cast<std::size_t>(t)], d);
              if (f64.grad_projection_f != nullptr) f64.grad_projection_f[at] += dot(dvr, V[static_cast<std::size_t>(t)], dv);
            }
          break;
        case Compression::memory_compressed:
          for (std::int64_t t = 0; t < M; ++t) {
            const std::int64_t lo = t * c.stride, hi = std::min(nk, lo + c.stride);
            mean_backward(dK, lo, hi, d, dks.data() + t * d);
            mean_backward(dV, lo, hi, dv, dvs.data() + t * dv);
          }
          break;
        case Compression::global_memory:
          if (MK.f != nullptr) {
            if (f64.grad_memory_k != nullptr)
              for (std::int64_t x = 0; x < M * d; ++x) f64.grad_memory_k[h * rank * d + x] += dks[static_cast<std::size_t>(x)];
            if (f64.grad_memory_v != nullptr)
              for (std::int64_t x = 0; x < M * dv; ++x) f64.grad_memory_v[h * rank * dv + x] += dvs[static_cast<std::size_t>(x)];
          } else {
            for (std::int64_t t = 0; t < M; ++t) {
              mean_backward(dK, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, dks.data() + t * d);
              mean_backward(dV, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), dv, dvs.data() + t * dv);
            }
          }
          break;
        case Compression::star:
        case Compression::induced_points: {
          // The inner softmax (queries iq, keys K) with values K (rows ks) and V (rows vs).
          diq.assign(static_cast<std::size_t>(M * d), 0.0);
          for (std::int64_t r = 0; r < M; ++r) {
            const double* qr = iq.data() + r * d;
            softmax(qr, K, d, scale, wi);
            softmax_backward(qr, K, K, wi, ks.data() + r * d, dks.data() + r * d, d, d, scale, diq.data() + r * d, dK, dK);
            softmax_backward(qr, K, V, wi, vs.data() + r * dv, dvs.data() + r * dv, d, dv, scale, diq.data() + r * d, dK, dV);
          }
          if (c.kind == Compression::star) {
            for (std::int64_t i : qpos)
              for (std::int64_t x = 0; x < d; ++x) gq[(bh * Nq + i) * d + x] += diq[static_cast<std::size_t>(x)] / static_cast<double>(nq);
          } else if (I.f != nullptr) {
            if (f64.grad_inducing != nullptr)
              for (std::int64_t x = 0; x < M * d; ++x) f64.grad_inducing[h * rank * d + x] += diq[static_cast<std::size_t>(x)];
          } else {
            for (std::int64_t t = 0; t < M; ++t)
              mean_backward(dK, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, diq.data() + t * d);
          }
          break;
        }
        case Compression::nystrom:
          break;
      }
    }
  });
}

}  // namespace

void compressed_forward_f64(const Problem& pr, const DoubleTensors& in, const CompressedConfig& config, double* o,
                            double* lse) {
  run(pr, in, config, o, lse, nullptr, nullptr, nullptr, nullptr);
}

void compressed_backward_f64(const Problem& pr, const DoubleTensors& in, const CompressedConfig& config,
                             const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  // The float gradients belong to attention_backward; this call writes f64->grad_*.
  const std::pair<const char*, const float*> float_grads[] = {{"grad_projection_e", config.grad_projection_e},
                                                              {"grad_projection_f", config.grad_projection_f},
                                                              {"grad_inducing", config.grad_inducing},
                                                              {"grad_memory_k", config.grad_memory_k},
                                                              {"grad_memory_v", config.grad_memory_v}};
  for (const auto& [name, p] : float_grads)
    if (p != nullptr)
      fail(std::string("CompressedConfig.") + name, ptr_str(p),
           std::string("written by attention_backward; attention_backward_f64 writes CompressedConfig.f64->") + name +
               ": must be nullptr");
  run(pr, in, config, nullptr, nullptr, grad_o, grad_q, grad_k, grad_v);
}

}  // namespace smyrf::detail
