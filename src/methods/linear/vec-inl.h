// Vector helpers of feature-map attention over padded double rows (multiples of 8 doubles,
// zero padding), compiled per SIMD target: include from a file that uses
// hwy/foreach_target.h (linear.cpp, linear_backward.cpp).
//
// Axpy is element-wise (one MulAdd per element); Dot keeps lane-wise partial sums and adds the
// lanes at the end: its bits depend on the vector width (the SIMD target), never on the thread.

#if defined(SMYRF_METHODS_LINEAR_VEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_METHODS_LINEAR_VEC_INL_H_
#undef SMYRF_METHODS_LINEAR_VEC_INL_H_
#else
#define SMYRF_METHODS_LINEAR_VEC_INL_H_
#endif

#include <cstdint>

#include "common/convert.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace linear {

namespace hn = hwy::HWY_NAMESPACE;
using DD = hn::CappedTag<double, 8>;  // at most 8 lanes: padded rows are multiples of 8

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

}  // namespace linear
}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // SMYRF_METHODS_LINEAR_VEC_INL_H_
