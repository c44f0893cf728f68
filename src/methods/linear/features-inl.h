// Feature-map attention's row kernels, shared by the forward (linear.cpp) and the training path
// (linear_backward.cpp), compiled per SIMD target (include from a file that uses
// hwy/foreach_target.h): vector helpers over padded double rows (multiples of 8 doubles, zero
// padding), the projections W x, and the features of a row (exact definitions:
// smyrf/methods/linear.h).
//
// Axpy is element-wise (one MulAdd per element); Dot keeps lane-wise partial sums and adds the
// lanes at the end: its bits depend on the vector width (the SIMD target), never on the thread.

#if defined(SMYRF_METHODS_LINEAR_FEATURES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_METHODS_LINEAR_FEATURES_INL_H_
#undef SMYRF_METHODS_LINEAR_FEATURES_INL_H_
#else
#define SMYRF_METHODS_LINEAR_FEATURES_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/convert.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/tile_matmul-inl.h"
#include "methods/linear/linear_internal.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace linear {

namespace hn = hwy::HWY_NAMESPACE;
using DD = hn::CappedTag<double, 8>;  // at most 8 lanes: padded rows are multiples of 8
using DF = hn::CappedTag<float, 16>;  // value products: rows of dvp (a multiple of 16)
using detail::LinearMap;

template <class T>
HWY_INLINE void LoadRow(const T* row, std::int64_t n, double* x) {
  for (std::int64_t t = 0; t < n; ++t) x[t] = detail::to_double(row[t]);
}

// y[0..n) += a x[0..n), n a multiple of 8.
HWY_INLINE void Axpy(double a, const double* HWY_RESTRICT x, double* HWY_RESTRICT y,
                     std::int64_t n) {
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto va = hn::Set(dd, a);
  for (std::int64_t i = 0; i < n; i += L)
    hn::StoreU(hn::MulAdd(va, hn::LoadU(dd, x + i), hn::LoadU(dd, y + i)), dd, y + i);
}

// sum_i x_i y_i over n (a multiple of 8): lane-wise partial sums, then the lanes.
HWY_INLINE double Dot(const double* x, const double* y, std::int64_t n) {
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  auto acc = hn::Zero(dd);
  for (std::int64_t i = 0; i < n; i += L)
    acc = hn::MulAdd(hn::LoadU(dd, x + i), hn::LoadU(dd, y + i), acc);
  return hn::GetLane(hn::SumOfLanes(dd, acc));
}

// out[0..cols) = a^T M (a: n entries, M: n rows of stride ld; cols a multiple of 8).
// Tiles of one row (A(0, r) = a[r]) by 8, 2, then 1 vectors of columns: each element the chain
// over r < n in order from 0.
HWY_INLINE void VecMat(const double* a, const double* M, std::int64_t n, std::int64_t ld,
                       std::int64_t cols, double* out) {
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  const tile::Strided<double> x{a, 0, 1};
  const tile::RowMajor<double> m{M, ld};
  std::int64_t c0 = 0;
  for (; c0 + 8 * L <= cols; c0 += 8 * L) tile::Tile<1, 8>(dd, x, m, n, c0, out, 0);
  for (; c0 + 2 * L <= cols; c0 += 2 * L) tile::Tile<1, 2>(dd, x, m, n, c0, out, 0);
  for (; c0 < cols; c0 += L) tile::Tile<1, 1>(dd, x, m, n, c0, out, 0);
}

// Columns [0, cols) (a multiple of the lanes of D) of R rows, X(k, t) = X[k xk + t xt], M of
// row stride ld: tiles of 4, 2, then 1 vectors (4 only where 32 vector registers hold the 16
// accumulators), each element the chain over t < K in order from 0 (in double the same chain
// as VecMat's).
template <class D, std::size_t R>
HWY_INLINE void GemmRowGroup(D dd, const hn::TFromD<D>* X, std::int64_t xk, std::int64_t xt,
                             const hn::TFromD<D>* M, std::int64_t ld, std::int64_t K,
                             std::int64_t cols, hn::TFromD<D>* out, std::int64_t ldo) {
  using T = hn::TFromD<D>;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  const tile::Strided<T> x{X, xk, xt};
  const tile::RowMajor<T> m{M, ld};
  std::int64_t c0 = 0;
  if (HWY_MAX_BYTES >= 64) {
    for (; c0 + 4 * L <= cols; c0 += 4 * L) tile::Tile<R, 4>(dd, x, m, K, c0, out, ldo);
  }
  for (; c0 + 2 * L <= cols; c0 += 2 * L) tile::Tile<R, 2>(dd, x, m, K, c0, out, ldo);
  for (; c0 < cols; c0 += L) tile::Tile<R, 1>(dd, x, m, K, c0, out, ldo);
}

// out[k][0..cols) = sum_{t < K} X(k, t) M[t][0..cols) for k < n (out row stride ldo): the
// product X M, rows in groups of 4. Every element is the chain over t in order from 0,
// whatever the grouping. Double, or float (DF: cols a multiple of 16).
template <class D>
HWY_INLINE void GemmT(D dd, const hn::TFromD<D>* X, std::int64_t xk, std::int64_t xt,
                      std::int64_t n, const hn::TFromD<D>* M, std::int64_t ld,
                      std::int64_t K, std::int64_t cols, hn::TFromD<D>* out,
                      std::int64_t ldo) {
  std::int64_t k = 0;
  for (; k + 4 <= n; k += 4)
    GemmRowGroup<D, 4>(dd, X + k * xk, xk, xt, M, ld, K, cols, out + k * ldo, ldo);
  for (; k < n; ++k)
    GemmRowGroup<D, 1>(dd, X + k * xk, xk, xt, M, ld, K, cols, out + k * ldo, ldo);
}

HWY_INLINE void Gemm(const double* X, std::int64_t xk, std::int64_t xt, std::int64_t n,
                     const double* M, std::int64_t ld, std::int64_t K, std::int64_t cols,
                     double* out, std::int64_t ldo) {
  GemmT(DD(), X, xk, xt, n, M, ld, K, cols, out, ldo);
}

HWY_INLINE void GemmF(const float* X, std::int64_t xk, std::int64_t xt, std::int64_t n,
                      const float* M, std::int64_t ld, std::int64_t K, std::int64_t cols,
                      float* out, std::int64_t ldo) {
  GemmT(DF(), X, xk, xt, n, M, ld, K, cols, out, ldo);
}

// P[k][0..dirs_p) = W x_k for n rows (X stride d, P stride dirs_p).
HWY_INLINE void ProjectRows(const LinearMap& s, const double* wt, const double* X,
                            std::int64_t n, double* P) {
  Gemm(X, s.d, 1, n, wt, s.dirs_p, s.d, s.dirs_p, P, s.dirs_p);
}

// proj[0..dirs_p) = W x (zeros in the padding: W^T rows are zero-padded).
HWY_INLINE void Project(const LinearMap& s, const double* wt, const double* x, double* proj) {
  VecMat(x, wt, s.d, s.dirs_p, s.dirs_p, proj);
}

// sum_t x_t^2: lane-wise partial sums over whole vectors, their sum, then the tail in order.
HWY_INLINE double SumSq(const double* x, std::int64_t d) {
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  std::int64_t t = 0;
  double n2 = 0.0;
  if (d >= L) {
    auto acc = hn::Zero(dd);
    for (; t + L <= d; t += L) {
      const auto v = hn::LoadU(dd, x + t);
      acc = hn::MulAdd(v, v, acc);
    }
    n2 = hn::GetLane(hn::SumOfLanes(dd, acc));
  }
  for (; t < d; ++t) n2 += x[t] * x[t];
  return n2;
}

HWY_INLINE double HalfSqNorm(const double* x, std::int64_t d) {
  return 0.5 * SumSq(x, d);
}

// max_r u_r over n >= 1 entries (exact in any order). max_r (u_r - h) = max_r u_r - h exactly:
// rounding a difference is monotonic in u_r.
HWY_INLINE double MaxOf(const double* u, std::int64_t n) {
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  double c = u[0];
  std::int64_t r = 0;
  if (n >= L) {
    auto vm = hn::LoadU(dd, u);
    for (r = L; r + L <= n; r += L) vm = hn::Max(vm, hn::LoadU(dd, u + r));
    c = hn::GetLane(hn::MaxOfLanes(dd, vm));
  }
  for (; r < n; ++r) c = std::max(c, u[r]);
  return c;
}

// Unit vector (0 for a zero row), in place.
HWY_INLINE void Normalise(double* x, std::int64_t d) {
  const double n2 = SumSq(x, d);
  const double inv = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
  for (std::int64_t t = 0; t < d; ++t) x[t] *= inv;
}

// out = [sin(proj_r)] then [cos(proj_r)] (r < dirs), times f (proj: dirs_p entries);
// tmp + dirs_p, tmp + 2 dirs_p: the vector results.
HWY_INLINE void Trig(const LinearMap& s, const double* proj, double* tmp, double f,
                     double* out) {
  const DD dd;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
  double* sn = tmp + s.dirs_p;
  double* cs = tmp + 2 * s.dirs_p;
  bool in_range = true;  // false also for a NaN (unchecked non-finite inputs)
  for (std::int64_t r = 0; r < s.dirs; ++r) in_range = in_range && std::abs(proj[r]) <= 39000.0;
  if (in_range) {
    for (std::int64_t r = 0; r < s.dirs_p; r += L) {
      const auto v = hn::LoadU(dd, proj + r);
      hn::StoreU(hn::Sin(dd, v), dd, sn + r);
      hn::StoreU(hn::Cos(dd, v), dd, cs + r);
    }
  } else {  // outside the vector functions' range (or NaN): the library's
    for (std::int64_t r = 0; r < s.dirs; ++r) {
      sn[r] = std::sin(proj[r]);
      cs[r] = std::cos(proj[r]);
    }
  }
  for (std::int64_t r = 0; r < s.dirs; ++r) {
    out[r] = sn[r] * f;
    out[s.dirs + r] = cs[r] * f;
  }
}

// The map's preparation of a row before its projection, in place: x_q = sign(s) sqrt(|s|) q,
// x_k = sqrt(|s|) k (favor_plus, favor), the unit vector (rfa, l2); others unchanged.
HWY_INLINE void Prep(const LinearMap& s, double* x, bool query) {
  if (s.map == FeatureMap::favor_plus || s.map == FeatureMap::favor) {
    const double f = query ? s.qsign * s.sq : s.sq;
    for (std::int64_t t = 0; t < s.d; ++t) x[t] *= f;
  } else if (s.map == FeatureMap::rfa || s.map == FeatureMap::l2) {
    Normalise(x, s.d);
  }
}

// Features of one prepared row x into out[0..mp) (zeros after m). proj: W x (dirs_p entries,
// maps with directions; may alias out for favor_plus). st: the (b, h) key statistics (keys
// only); tmp: the scratch's tmp region.
HWY_INLINE void FeaturesOf(const LinearMap& s, const double* x, const double* proj,
                           bool query, const double* st, double* out, double* tmp) {
  const std::int64_t d = s.d;
  switch (s.map) {
    case FeatureMap::elu: {
      // Whole vectors with Highway's Exp (of min(x, 0): the selected lanes), the tail scalar.
      const DD dd;
      const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
      const auto zero = hn::Zero(dd), one = hn::Set(dd, 1.0);
      std::int64_t t = 0;
      for (; t + L <= d; t += L) {
        const auto v = hn::LoadU(dd, x + t);
        hn::StoreU(hn::IfThenElse(hn::Gt(v, zero), hn::Add(v, one), hn::Exp(dd, hn::Min(v, zero))),
                   dd, out + t);
      }
      for (; t < d; ++t) out[t] = x[t] > 0.0 ? x[t] + 1.0 : std::exp(x[t]);
      break;
    }
    case FeatureMap::favor_plus: {
      const double hh = HalfSqNorm(x, d);
      const DD dd;
      const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
      const auto vh = hn::Set(dd, hh);
      for (std::int64_t r = 0; r < s.mp; r += L)
        hn::StoreU(hn::Sub(hn::LoadU(dd, proj + r), vh), dd, out + r);
      double c = query ? out[0] : st[0];  // the (b, h) key constant, or for a query:
      if (query) {  // its own max (exact in any order), over the m real entries
        auto vm = hn::Set(dd, out[0]);
        std::int64_t r = 0;
        for (; r + L <= s.m; r += L) vm = hn::Max(vm, hn::LoadU(dd, out + r));
        c = hn::GetLane(hn::MaxOfLanes(dd, vm));
        for (; r < s.m; ++r) c = std::max(c, out[r]);
      }
      const auto vc = hn::Set(dd, c);
      const auto vinv = hn::Set(dd, 1.0 / std::sqrt(static_cast<double>(s.m)));
      for (std::int64_t r = 0; r < s.mp; r += L)  // arguments <= 0: within Exp's range
        hn::StoreU(hn::Mul(hn::Exp(dd, hn::Sub(hn::LoadU(dd, out + r), vc)), vinv), dd, out + r);
      break;
    }
    case FeatureMap::favor: {
      const double hh = HalfSqNorm(x, d);
      const double c = query ? hh : st[0];
      Trig(s, proj, tmp, std::exp(hh - c) / std::sqrt(static_cast<double>(s.dirs)), out);
      break;
    }
    case FeatureMap::rfa:
      Trig(s, proj, tmp, 1.0 / std::sqrt(static_cast<double>(s.dirs)), out);
      break;
    case FeatureMap::dpfp: {
      for (std::int64_t t = 0; t < d; ++t) {
        tmp[t] = std::max(x[t], 0.0);
        tmp[d + t] = std::max(-x[t], 0.0);
      }
      const std::int64_t n = 2 * d;
      for (int nu = 1; nu <= s.nu; ++nu) {
        double* o = out + (nu - 1) * n;
        for (std::int64_t i = 0; i + nu < n; ++i) o[i] = tmp[i] * tmp[i + nu];
        for (std::int64_t i = n - nu; i < n; ++i) o[i] = tmp[i] * tmp[i + nu - n];
      }
      break;
    }
    case FeatureMap::efficient: {
      // exp(x_t - c_t): for a query c_t = its max (then divided by the sum, in order), for a
      // key the key block's max of feature t (st: d entries; the block's softmax sums are
      // applied when the block states are combined). Whole vectors with Highway's Exp
      // (arguments <= 0), the tail scalar.
      const DD dd;
      const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(dd));
      double mx = x[0];
      if (query)
        for (std::int64_t t = 1; t < d; ++t) mx = std::max(mx, x[t]);
      const auto vm = hn::Set(dd, mx);
      std::int64_t t = 0;
      for (; t + L <= d; t += L) {
        const auto c = query ? vm : hn::LoadU(dd, st + t);
        hn::StoreU(hn::Exp(dd, hn::Sub(hn::LoadU(dd, x + t), c)), dd, out + t);
      }
      for (; t < d; ++t) out[t] = std::exp(x[t] - (query ? mx : st[t]));
      if (query) {
        double sum = 0.0;
        for (std::int64_t u = 0; u < d; ++u) sum += out[u];
        for (std::int64_t u = 0; u < d; ++u) out[u] /= sum;
      }
      break;
    }
    case FeatureMap::l2:
      out[0] = 1.0;
      for (std::int64_t t = 0; t < d; ++t) out[1 + t] = x[t];
      break;
  }
  std::fill(out + s.m, out + s.mp, 0.0);
}

// Features of one raw row x (d doubles, overwritten) into out[0..mp).
HWY_INLINE void Features(const LinearMap& s, const double* wt, double* x, bool query,
                         const double* st, double* out, double* tmp) {
  Prep(s, x, query);
  double* proj = s.map == FeatureMap::favor_plus ? out : tmp;
  if (s.dirs > 0) Project(s, wt, x, proj);
  FeaturesOf(s, x, proj, query, st, out, tmp);
}


// Features of n raw rows X (stride d, overwritten) into F (stride mp); their projections in
// P (stride dirs_p), computed in groups of rows.
HWY_INLINE void FeatureRows(const LinearMap& s, const double* wt, double* X, std::int64_t n,
                            bool query, const double* st, double* P, double* F, double* tmp) {
  for (std::int64_t k = 0; k < n; ++k) Prep(s, X + k * s.d, query);
  if (s.dirs > 0) ProjectRows(s, wt, X, n, P);
  for (std::int64_t k = 0; k < n; ++k)
    FeaturesOf(s, X + k * s.d, P + k * s.dirs_p, query, st, F + k * s.mp, tmp);
}

// Features of a block of n >= 1 raw key rows X (stride d, prepared in place) into F (stride
// mp), with the block's own stabiliser in cb (favor_plus: max over its keys and r of u_r;
// favor: max |x_k|^2 / 2; efficient: per feature the max M_bf, d entries; unused otherwise);
// their projections in P (stride dirs_p).
HWY_INLINE void KeyBlockFeatures(const LinearMap& s, const double* wt, double* X, std::int64_t n,
                                 double* P, double* cb, double* F, double* tmp) {
  const std::int64_t d = s.d;
  for (std::int64_t k = 0; k < n; ++k) Prep(s, X + k * d, false);
  if (s.dirs > 0) ProjectRows(s, wt, X, n, P);
  if (s.map == FeatureMap::favor_plus) {
    double c = -std::numeric_limits<double>::infinity();
    for (std::int64_t k = 0; k < n; ++k)
      c = std::max(c, MaxOf(P + k * s.dirs_p, s.m) - HalfSqNorm(X + k * d, d));
    cb[0] = c;
  } else if (s.map == FeatureMap::favor) {
    double c = -std::numeric_limits<double>::infinity();
    for (std::int64_t k = 0; k < n; ++k) c = std::max(c, HalfSqNorm(X + k * d, d));
    cb[0] = c;
  } else if (s.map == FeatureMap::efficient) {
    std::copy_n(X, d, cb);
    for (std::int64_t k = 1; k < n; ++k)
      for (std::int64_t t = 0; t < d; ++t) cb[t] = std::max(cb[t], X[k * d + t]);
  }
  for (std::int64_t k = 0; k < n; ++k) FeaturesOf(s, X + k * d, P + k * s.dirs_p, false, cb, F + k * s.mp, tmp);
}

}  // namespace linear
}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // SMYRF_METHODS_LINEAR_FEATURES_INL_H_
