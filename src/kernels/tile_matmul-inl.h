// Tile matrix products with a fixed reduction order, written once with Highway and compiled
// per SIMD target (include this from a file that uses hwy/foreach_target.h).
//
// Every output element is
//   out(r, c) = start(r, c) + sum over t = 0, 1, ..., n - 1 of A(r, j_t) * B(j_t, c)
// evaluated as one chain of multiply-adds over t in order:
//   acc = start;  for t = 0 .. n - 1:  acc = MulAdd(A(r, j_t), B(j_t, c), acc)
// with start = +0 (Start::zero) or the value already in out (Start::out), and j_t = t
// (InOrder) or idx[t] (Indexed: the inner index gathered, for A's columns and B's rows alike).
// The lane type of the tag D (float or double) is the arithmetic type: A's elements are
// converted to it exactly (detail::convert_to), B's by LoadAs (float or bf16 widened to
// double). Nothing else enters an element's chain, so its bits depend neither on the tile
// shape, the vector width nor the thread that computes it.
//
// Vector lanes use hn::MulAdd: a fused multiply-add on targets with HWY_NATIVE_FMA, a rounded
// product then a rounded sum on the others. The scalar forms (Element, the column tail of
// MatMul) use std::fma, which gives the lanes' bits on the targets with HWY_NATIVE_FMA (and on
// every target where each product is exact, e.g. two floats widened to double).
//
// Operands (row and column indices relative to the tile; From(r0) moves to row r0):
//   A: Strided<T>  element (r, j) = p[r * si + j * sj]
//      RowPtrs<T>  element (r, j) = rows[r][j]        (rows gathered by pointer)
//   B: RowMajor<T> element (j, c) = p[j * ld + c]     (columns contiguous: vector loads)
// out: element (r, c) at out[r * ldo + c].
// A Tile may also replace B(j_t, c) by A(r, j_t) in masked lanes (SquareLanes): those lanes are
// then the chain of A(r, j_t)^2, a squared norm computed alongside the products.

#if defined(SMYRF_KERNELS_TILE_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_KERNELS_TILE_MATMUL_INL_H_
#undef SMYRF_KERNELS_TILE_MATMUL_INL_H_
#else
#define SMYRF_KERNELS_TILE_MATMUL_INL_H_
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "common/convert.h"
#include "hwy/highway.h"

// The accumulator arrays only live in registers if the loops over them are fully unrolled.
#ifndef SMYRF_UNROLL
#define SMYRF_UNROLL _Pragma("GCC unroll 16")
#endif

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// One vector of lanes of D from p[0 .. Lanes(d)): elements of D's lane type, or float / bf16
// widened exactly to double.
template <class D>
HWY_INLINE hn::Vec<D> LoadAs(D d, const hn::TFromD<D>* p) {
  return hn::LoadU(d, p);
}
template <class D, hwy::EnableIf<std::is_same_v<hn::TFromD<D>, double>>* = nullptr>
HWY_INLINE hn::Vec<D> LoadAs(D d, const float* p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<float, D>(), p));
}
template <class D, hwy::EnableIf<std::is_same_v<hn::TFromD<D>, double>>* = nullptr>
HWY_INLINE hn::Vec<D> LoadAs(D d, const hwy::bfloat16_t* p) {
  const hn::Rebind<std::uint16_t, D> du16;
  const hn::Rebind<std::uint32_t, D> du32;
  const hn::Rebind<float, D> df32;
  const auto bits = hn::LoadU(du16, reinterpret_cast<const std::uint16_t*>(p));
  const auto f = hn::BitCast(df32, hn::ShiftLeft<16>(hn::PromoteTo(du32, bits)));
  return hn::PromoteTo(d, f);
}

namespace tile {

enum class Start { zero, out };

// A operands.
template <class T>
struct Strided {
  const T* p;
  std::int64_t si, sj;
  T operator()(std::int64_t r, std::int64_t j) const { return p[r * si + j * sj]; }
  Strided From(std::int64_t r0) const { return {p + r0 * si, si, sj}; }
};
template <class T>
struct RowPtrs {
  const T* const* rows;
  T operator()(std::int64_t r, std::int64_t j) const { return rows[r][j]; }
  RowPtrs From(std::int64_t r0) const { return {rows + r0}; }
};

// B operand.
template <class T>
struct RowMajor {
  const T* p;
  std::int64_t ld;
  const T* Row(std::int64_t j) const { return p + j * ld; }
};

// The inner index j_t.
struct InOrder {
  std::int64_t operator()(std::int64_t t) const { return t; }
};
struct Indexed {
  const std::int32_t* idx;
  std::int64_t operator()(std::int64_t t) const { return idx[t]; }
};

// The multiplier of A(r, j) in each vector of a tile: B's lanes (Plain), or B's lanes with
// the lanes of `mask` replaced by A(r, j) itself (SquareLanes: those lanes are the chain of
// A(r, j)^2 over t, a squared norm in the same order).
struct Plain {
  template <class V>
  HWY_INLINE V operator()(V /*a*/, V b) const {
    return b;
  }
};
template <class M>
struct SquareLanes {
  M mask;
  template <class V>
  HWY_INLINE V operator()(V a, V b) const {
    return hn::IfThenElse(mask, a, b);
  }
};

// One register tile: rows r < R of A, columns c0 + [0, C * Lanes(d)) of B, each element the
// chain above over t < n (R x C accumulators held in registers, each load of B serving R rows).
template <std::size_t R, std::size_t C, Start kStart = Start::zero, class D, class A, class B,
          class Idx = InOrder, class Mix = Plain>
HWY_INLINE void Tile(D d, const A& a, const B& b, std::int64_t n, std::int64_t c0,
                     hn::TFromD<D>* out, std::int64_t ldo, Idx idx = {}, Mix mix = {}) {
  using TL = hn::TFromD<D>;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(d));
  hn::Vec<D> acc[R][C];
  SMYRF_UNROLL
  for (std::size_t r = 0; r < R; ++r) {
    SMYRF_UNROLL
    for (std::size_t v = 0; v < C; ++v) {
      TL* o = out + static_cast<std::int64_t>(r) * ldo + c0 + static_cast<std::int64_t>(v) * L;
      acc[r][v] = kStart == Start::zero ? hn::Zero(d) : hn::LoadU(d, o);
    }
  }
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t j = idx(t);
    const auto* brow = b.Row(j) + c0;
    hn::Vec<D> bv[C];
    SMYRF_UNROLL
    for (std::size_t v = 0; v < C; ++v) bv[v] = LoadAs(d, brow + static_cast<std::int64_t>(v) * L);
    SMYRF_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      const hn::Vec<D> av = hn::Set(d, detail::convert_to<TL>(a(static_cast<std::int64_t>(r), j)));
      SMYRF_UNROLL
      for (std::size_t v = 0; v < C; ++v) acc[r][v] = hn::MulAdd(av, mix(av, bv[v]), acc[r][v]);
    }
  }
  SMYRF_UNROLL
  for (std::size_t r = 0; r < R; ++r) {
    SMYRF_UNROLL
    for (std::size_t v = 0; v < C; ++v)
      hn::StoreU(acc[r][v], d,
                 out + static_cast<std::int64_t>(r) * ldo + c0 + static_cast<std::int64_t>(v) * L);
  }
}

// One element (row r, column c) as a scalar chain: acc = std::fma(A(r, j_t), B(j_t, c), acc)
// over t < n in order from `start`.
template <class TL, class A, class B, class Idx = InOrder>
HWY_INLINE TL Element(const A& a, const B& b, std::int64_t r, std::int64_t c, std::int64_t n,
                      TL start = TL(0), Idx idx = {}) {
  TL acc = start;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t j = idx(t);
    acc = std::fma(detail::convert_to<TL>(a(r, j)), detail::convert_to<TL>(b.Row(j)[c]), acc);
  }
  return acc;
}

// Rows [0, rows) and columns [0, cols) of out: column tiles of C vectors, then of one vector
// (rows in tiles of 4, then 1, within each), then the remaining columns by Element.
template <std::size_t C, Start kStart = Start::zero, class D, class A, class B, class Idx = InOrder>
HWY_INLINE void MatMul(D d, const A& a, const B& b, std::int64_t rows, std::int64_t n,
                       std::int64_t cols, hn::TFromD<D>* out, std::int64_t ldo, Idx idx = {}) {
  using TL = hn::TFromD<D>;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(d));
  auto column_tiles = [&](auto vectors, std::int64_t& c) {
    constexpr std::size_t V = decltype(vectors)::value;
    const std::int64_t w = static_cast<std::int64_t>(V) * L;
    for (; c + w <= cols; c += w) {
      std::int64_t r = 0;
      for (; r + 4 <= rows; r += 4)
        Tile<4, V, kStart>(d, a.From(r), b, n, c, out + r * ldo, ldo, idx);
      for (; r < rows; ++r) Tile<1, V, kStart>(d, a.From(r), b, n, c, out + r * ldo, ldo, idx);
    }
  };
  std::int64_t c = 0;
  column_tiles(std::integral_constant<std::size_t, C>(), c);
  column_tiles(std::integral_constant<std::size_t, 1>(), c);
  for (; c < cols; ++c)
    for (std::int64_t r = 0; r < rows; ++r) {
      TL* o = out + r * ldo + c;
      *o = Element<TL>(a, b, r, c, n, kStart == Start::zero ? TL(0) : *o, idx);
    }
}

}  // namespace tile
}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // include guard
