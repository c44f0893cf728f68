// Projection of tokens on all rounds' LSH directions at once: the lanes of a double vector
// hold the rounds, and one extra lane the squared norm. Each lane is an fma chain over the
// coordinates in index order, so the result is bit-identical to the scalar definition in
// clustering.h (on every target with a fused multiply-add).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/smyrf/hashing.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cstdint>

#include "hwy/highway.h"
#include "kernels/tile_matmul-inl.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace lsh {

// out[i * lanes + c] = fma chain over j < d in order of x_i[j] * a[j * lanes + c], except
// lane c = rounds (the squared norm), the chain of x_i[j] * x_i[j]: the tile kernel with one
// vector of lanes at a time, four tokens per tile (four independent chains per lane).
template <class T>
void ProjectRowsT(const T* base, std::int64_t row_stride, const std::int32_t* idx, std::size_t n,
                  std::size_t d, const double* a, std::size_t lanes, int rounds, double* out) {
  const hn::ScalableTag<double> dd;
  const std::size_t L = hn::Lanes(dd);
  const std::size_t groups = lanes / L;
  const std::size_t norm_group = static_cast<std::size_t>(rounds) / L;
  const tile::SquareLanes<hn::Mask<decltype(dd)>> norm{
      hn::Eq(hn::Iota(dd, 0.0), hn::Set(dd, static_cast<double>(rounds % static_cast<int>(L))))};
  const tile::RowMajor<double> dirs{a, static_cast<std::int64_t>(lanes)};
  const std::int64_t ld = static_cast<std::int64_t>(lanes), nd = static_cast<std::int64_t>(d);
  for (std::size_t i0 = 0; i0 < n; i0 += 4) {
    const std::size_t ntok = n - i0 < 4 ? n - i0 : 4;
    const T* rows[4];
    for (std::size_t t = 0; t < ntok; ++t)
      rows[t] = base + static_cast<std::int64_t>(idx[i0 + t]) * row_stride;
    double* o = out + i0 * lanes;
    for (std::size_t g = 0; g < groups; ++g) {
      const std::int64_t c0 = static_cast<std::int64_t>(g * L);
      if (ntok == 4) {
        if (g == norm_group)
          tile::Tile<4, 1>(dd, tile::RowPtrs<T>{rows}, dirs, nd, c0, o, ld, tile::InOrder(), norm);
        else
          tile::Tile<4, 1>(dd, tile::RowPtrs<T>{rows}, dirs, nd, c0, o, ld);
        continue;
      }
      for (std::size_t t = 0; t < ntok; ++t) {
        const tile::RowPtrs<T> row{rows + t};
        double* ot = o + t * lanes;
        if (g == norm_group)
          tile::Tile<1, 1>(dd, row, dirs, nd, c0, ot, ld, tile::InOrder(), norm);
        else
          tile::Tile<1, 1>(dd, row, dirs, nd, c0, ot, ld);
      }
    }
  }
}

}  // namespace lsh

void ProjectRowsF32(const void* base, std::int64_t row_stride, const std::int32_t* idx,
                    std::size_t n, std::size_t d, const double* a, std::size_t lanes, int rounds,
                    double* out) {
  lsh::ProjectRowsT(static_cast<const float*>(base), row_stride, idx, n, d, a, lanes, rounds, out);
}
void ProjectRowsBF16(const void* base, std::int64_t row_stride, const std::int32_t* idx,
                     std::size_t n, std::size_t d, const double* a, std::size_t lanes, int rounds,
                     double* out) {
  lsh::ProjectRowsT(static_cast<const hwy::bfloat16_t*>(base), row_stride, idx, n, d, a, lanes,
                    rounds, out);
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
