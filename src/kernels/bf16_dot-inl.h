// Scores from bf16 inputs with the AVX512_BF16 dot product (VDPBF16PS: per f32 lane,
// acc += a_lo * b_lo + a_hi * b_hi for two bf16 pairs): twice the multiply-adds per
// instruction of the f32 FMA path, products exact in f32, sums in f32. Highway 1.0.3 has no
// target with this instruction, so the kernel is written with intrinsics for the AVX-512
// targets and chosen at run time when the CPU has it (`Bf16DotAvailable`).
//
// Layouts: kt2[tp * ldk + j] holds coordinates (2 tp, 2 tp + 1) of key j as one 32-bit pair
// (low half = even coordinate); a query row is the same pairs, qp[tp]. Odd d pads with 0.

#if defined(SMYRF_KERNELS_BF16_DOT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_KERNELS_BF16_DOT_INL_H_
#undef SMYRF_KERNELS_BF16_DOT_INL_H_
#else
#define SMYRF_KERNELS_BF16_DOT_INL_H_
#endif

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/heuristics.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {

#undef SMYRF_HAVE_BF16_DOT
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define SMYRF_HAVE_BF16_DOT 1
#define SMYRF_BF16_ATTR \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512bf16,fma,bmi,bmi2")))

inline bool Bf16DotAvailable() {
  static const bool available = __builtin_cpu_supports("avx512bf16");
  return available;
}

// Packs keys j < n (rows of d bf16) as pairs; columns n..ldk are zero.
template <class RowFn>
void PackKeyPairs(RowFn key_row, std::size_t n, std::size_t d, std::uint32_t* kt2,
                  std::size_t ldk) {
  const std::size_t dp = (d + 1) / 2;
  for (std::size_t tp = 0; tp < dp; ++tp)
    for (std::size_t j = n; j < ldk; ++j) kt2[tp * ldk + j] = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const hwy::bfloat16_t* row = key_row(j);
    for (std::size_t tp = 0; tp < dp; ++tp) {
      const std::uint32_t lo = row[2 * tp].bits;
      const std::uint32_t hi = 2 * tp + 1 < d ? row[2 * tp + 1].bits : 0u;
      kt2[tp * ldk + j] = lo | (hi << 16);
    }
  }
}

// One query row as pairs (qp must hold (d + 1) / 2 entries).
inline void QueryPairs(const hwy::bfloat16_t* row, std::size_t d, std::uint32_t* qp) {
  for (std::size_t tp = 0; tp < (d + 1) / 2; ++tp) {
    const std::uint32_t lo = row[2 * tp].bits;
    const std::uint32_t hi = 2 * tp + 1 < d ? row[2 * tp + 1].bits : 0u;
    qp[tp] = lo | (hi << 16);
  }
}

template <std::size_t R, std::size_t C>
SMYRF_BF16_ATTR inline void ScoreBlockBf16(const std::uint32_t* const* qp, std::size_t dp,
                                           const std::uint32_t* kt2, std::size_t ldk,
                                           float scale, float* s, std::size_t lds) {
  __m512 acc[R][C];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (std::size_t tp = 0; tp < dp; ++tp) {
    __m512bh kv[C];
#pragma GCC unroll 4
    for (std::size_t c = 0; c < C; ++c)
      kv[c] = (__m512bh)_mm512_load_si512(kt2 + tp * ldk + c * 16);
#pragma GCC unroll 8
    for (std::size_t r = 0; r < R; ++r) {
      const __m512bh q = (__m512bh)_mm512_set1_epi32(static_cast<int>(qp[r][tp]));
#pragma GCC unroll 4
      for (std::size_t c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], q, kv[c]);
    }
  }
  const __m512 vscale = _mm512_set1_ps(scale);
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t c = 0; c < C; ++c)
      _mm512_store_ps(s + r * lds + c * 16, _mm512_mul_ps(acc[r][c], vscale));
}

template <std::size_t R>
SMYRF_BF16_ATTR inline void ScoreRowsBf16(const std::uint32_t* const* qp, std::size_t dp,
                                          const std::uint32_t* kt2, std::size_t ldk,
                                          std::size_t ncols, float scale, float* s,
                                          std::size_t lds) {
  std::size_t col = 0;
  for (; col + 64 <= ncols; col += 64) ScoreBlockBf16<R, 4>(qp, dp, kt2 + col, ldk, scale, s + col, lds);
  switch ((ncols - col) / 16) {
    case 0: break;
    case 1: ScoreBlockBf16<R, 1>(qp, dp, kt2 + col, ldk, scale, s + col, lds); break;
    case 2: ScoreBlockBf16<R, 2>(qp, dp, kt2 + col, ldk, scale, s + col, lds); break;
    default: ScoreBlockBf16<R, 3>(qp, dp, kt2 + col, ldk, scale, s + col, lds); break;
  }
}

// As ScoreTile (attention_tile-inl.h), from pairs. The block ladders repeat ScoreTile's shape
// on purpose: they must carry the AVX512_BF16 target attribute for the kernel to inline.
// S = scale * Q K^T for m rows and n keys,
// columns [n, n rounded up to 16) set to -inf.
SMYRF_BF16_ATTR inline void ScoreTileBf16(const std::uint32_t* const* qp, std::size_t m,
                                          std::size_t d, const std::uint32_t* kt2,
                                          std::size_t ldk, std::size_t n, float scale, float* s,
                                          std::size_t lds) {
  const std::size_t dp = (d + 1) / 2;
  const std::size_t npad = (n + 15) / 16 * 16;
  std::size_t row = 0;
  for (; row + 6 <= m; row += 6) ScoreRowsBf16<6>(qp + row, dp, kt2, ldk, npad, scale, s + row * lds, lds);
  switch (m - row) {
    case 0: break;
    case 1: ScoreRowsBf16<1>(qp + row, dp, kt2, ldk, npad, scale, s + row * lds, lds); break;
    case 2: ScoreRowsBf16<2>(qp + row, dp, kt2, ldk, npad, scale, s + row * lds, lds); break;
    case 3: ScoreRowsBf16<3>(qp + row, dp, kt2, ldk, npad, scale, s + row * lds, lds); break;
    case 4: ScoreRowsBf16<4>(qp + row, dp, kt2, ldk, npad, scale, s + row * lds, lds); break;
    default: ScoreRowsBf16<5>(qp + row, dp, kt2, ldk, npad, scale, s + row * lds, lds); break;
  }
  const float ninf = -std::numeric_limits<float>::infinity();
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = n; c < npad; ++c) s[r * lds + c] = ninf;
}
#undef SMYRF_BF16_ATTR
#else
#define SMYRF_HAVE_BF16_DOT 0
#endif

// ---------------------------------------------------------------------------------------
// The score step for any input type: the methods call these three and stay unaware of which
// kernel runs. `pairs` is UseBf16Dot<T>() (bf16 inputs on a CPU with AVX512_BF16).
template <class T>
HWY_INLINE bool UseBf16Dot() {
#if SMYRF_HAVE_BF16_DOT
  if constexpr (std::is_same_v<T, hwy::bfloat16_t>) return Bf16DotAvailable();
#endif
  return false;
}

// Packs n keys into kt (room for d x ldk floats): bf16 pairs or K^T floats.
template <class T, class RowFn>
HWY_INLINE void PackKeysForScores(bool pairs, RowFn key_row, std::size_t n, std::size_t d,
                                  float* kt, std::size_t ldk) {
#if SMYRF_HAVE_BF16_DOT
  if constexpr (std::is_same_v<T, hwy::bfloat16_t>) {
    if (pairs) return PackKeyPairs(key_row, n, d, reinterpret_cast<std::uint32_t*>(kt), ldk);
  }
#endif
  (void)pairs;
  PackKeysTransposed(key_row, n, d, kt, ldk);
}

// The m query rows of a tile, as float rows (qrows) or bf16 pairs (qpairs); buffer holds
// m rows of ld floats.
struct QueryTile {
  const float* rows[detail::kDenseQueryTile];
  const std::uint32_t* pairs[detail::kDenseQueryTile];
};
template <class T, class RowFn>
HWY_INLINE void PrepareQueries(bool pairs, RowFn query_row, std::size_t m, std::size_t d,
                               float* buffer, std::size_t ld, QueryTile* tile) {
#if SMYRF_HAVE_BF16_DOT
  if constexpr (std::is_same_v<T, hwy::bfloat16_t>) {
    if (pairs) {
      auto* qp = reinterpret_cast<std::uint32_t*>(buffer);
      for (std::size_t r = 0; r < m; ++r) {
        QueryPairs(query_row(r), d, qp + r * ld);
        tile->pairs[r] = qp + r * ld;
      }
      return;
    }
  }
#endif
  (void)pairs;
  QueryRows<T>(query_row, m, d, buffer, ld, tile->rows);
}

// S = scale * Q K^T for the tile's m rows against packed keys [j0, j0 + n).
HWY_INLINE void TileScores(bool pairs, const QueryTile& tile, std::size_t m, std::size_t d,
                           const float* kt, std::size_t ldk, std::size_t j0, std::size_t n,
                           float scale, float* s, std::size_t lds) {
#if SMYRF_HAVE_BF16_DOT
  if (pairs) {
    return ScoreTileBf16(tile.pairs, m, d, reinterpret_cast<const std::uint32_t*>(kt) + j0, ldk,
                         n, scale, s, lds);
  }
#endif
  (void)pairs;
  ScoreTile(tile.rows, m, d, kt + j0, ldk, n, scale, s, lds);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // SMYRF_KERNELS_BF16_DOT_INL_H_
