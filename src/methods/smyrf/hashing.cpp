// Projection of tokens on all rounds' LSH directions at once: the lanes of a double vector
// hold the rounds, and one extra lane the squared norm. Each lane is an fma chain over the
// coordinates in index order, so the result is bit-identical to the scalar definition in
// clustering.h (on every target with a fused multiply-add).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/smyrf/hashing.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cstdint>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DD = hn::ScalableTag<double>;
using VD = hn::Vec<DD>;

// Four tokens at a time: four independent fma chains hide the fma latency.
inline double AsDouble(float x) { return x; }
inline double AsDouble(hwy::bfloat16_t x) { return hwy::F32FromBF16(x); }

template <bool kNormGroup, class T>
HWY_INLINE void ProjectGroup(const T* const rows[4], std::size_t ntok, std::size_t d,
                             const double* a, std::size_t lanes, std::size_t g, int norm_lane,
                             double* const out[4]) {
  const DD dd;
  const std::size_t L = hn::Lanes(dd);
  const auto norm_mask = hn::Eq(hn::Iota(dd, 0.0), hn::Set(dd, static_cast<double>(norm_lane)));
  VD acc[4] = {hn::Zero(dd), hn::Zero(dd), hn::Zero(dd), hn::Zero(dd)};
  for (std::size_t j = 0; j < d; ++j) {
    const VD aj = hn::LoadU(dd, a + j * lanes + g * L);
    for (std::size_t t = 0; t < 4; ++t) {
      if (t >= ntok) break;
      const VD x = hn::Set(dd, AsDouble(rows[t][j]));
      const VD coeff = kNormGroup ? hn::IfThenElse(norm_mask, x, aj) : aj;
      acc[t] = hn::MulAdd(x, coeff, acc[t]);
    }
  }
  for (std::size_t t = 0; t < ntok; ++t) hn::StoreU(acc[t], dd, out[t] + g * L);
}

template <class T>
void ProjectRowsT(const T* base, std::int64_t row_stride, const std::int32_t* idx, std::size_t n,
                  std::size_t d, const double* a, std::size_t lanes, int rounds, double* out) {
  const DD dd;
  const std::size_t L = hn::Lanes(dd);
  const std::size_t groups = lanes / L;
  const std::size_t norm_group = static_cast<std::size_t>(rounds) / L;
  const int norm_lane = rounds % static_cast<int>(L);
  for (std::size_t i0 = 0; i0 < n; i0 += 4) {
    const std::size_t ntok = n - i0 < 4 ? n - i0 : 4;
    const T* rows[4];
    double* outs[4];
    for (std::size_t t = 0; t < 4; ++t) {
      const std::size_t i = i0 + (t < ntok ? t : 0);
      rows[t] = base + static_cast<std::int64_t>(idx[i]) * row_stride;
      outs[t] = out + i * lanes;
    }
    for (std::size_t g = 0; g < groups; ++g) {
      if (g == norm_group)
        ProjectGroup<true>(rows, ntok, d, a, lanes, g, norm_lane, outs);
      else
        ProjectGroup<false>(rows, ntok, d, a, lanes, g, norm_lane, outs);
    }
  }
}

void ProjectRowsF32(const void* base, std::int64_t row_stride, const std::int32_t* idx,
                    std::size_t n, std::size_t d, const double* a, std::size_t lanes, int rounds,
                    double* out) {
  ProjectRowsT(static_cast<const float*>(base), row_stride, idx, n, d, a, lanes, rounds, out);
}
void ProjectRowsBF16(const void* base, std::int64_t row_stride, const std::int32_t* idx,
                     std::size_t n, std::size_t d, const double* a, std::size_t lanes, int rounds,
                     double* out) {
  ProjectRowsT(static_cast<const hwy::bfloat16_t*>(base), row_stride, idx, n, d, a, lanes, rounds,
               out);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "methods/smyrf/clustering.h"

namespace smyrf::detail {
HWY_EXPORT(ProjectRowsF32);
HWY_EXPORT(ProjectRowsBF16);

void project_rows(DType dtype, const void* base, std::int64_t row_stride, const std::int32_t* idx,
                  std::size_t n, std::size_t d, const double* a, std::size_t lanes, int rounds,
                  double* out) {
  if (dtype == DType::bf16)
    HWY_DYNAMIC_DISPATCH(ProjectRowsBF16)(base, row_stride, idx, n, d, a, lanes, rounds, out);
  else
    HWY_DYNAMIC_DISPATCH(ProjectRowsF32)(base, row_stride, idx, n, d, a, lanes, rounds, out);
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
