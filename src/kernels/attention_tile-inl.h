// Attention over one tile of queries against packed keys, written once with Highway and
// compiled per SIMD target (include this from a file that uses hwy/foreach_target.h).
//
// The three steps of an online-softmax (flash-attention) tile, shared by every method:
//   ScoreTile     S = scale * Q K^T          Q by row pointers (rows may be gathered),
//                                            K packed transposed: kt[t * ldk + j]
//   SoftmaxUpdate running max m, running sum l, rescale acc, S <- exp(S - m)
//   PVAccumulate  acc += P V                 V packed row-major: vp[j * ldv + c]
// and Finalize: o = acc / l, lse = m + log(l).
//
// Packed buffers are padded with zeros to whole vectors (ldk, ldv multiples of Lanes), so
// the kernels never read past a row and never need masked loads; padded score columns are
// set to -inf so that exp() turns them into exact zeros.

#if defined(SMYRF_KERNELS_ATTENTION_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_KERNELS_ATTENTION_TILE_INL_H_
#undef SMYRF_KERNELS_ATTENTION_TILE_INL_H_
#else
#define SMYRF_KERNELS_ATTENTION_TILE_INL_H_
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// The accumulator arrays below only live in registers if the loops over them are fully
// unrolled; GCC does not always do it on its own (it kept them in memory, at 1/3 the speed).
#ifndef SMYRF_UNROLL
#define SMYRF_UNROLL _Pragma("GCC unroll 16")
#endif

// Register blocking: R rows x C vectors of accumulators. AVX-512 has 32 vector registers,
// the other x86 targets 16; R*C accumulators + C operands + 1 broadcast must fit.
#if HWY_TARGET <= HWY_AVX3
constexpr size_t kTileRows = 6;
constexpr size_t kTileCols = 4;
#else
constexpr size_t kTileRows = 3;
constexpr size_t kTileCols = 3;
#endif

inline size_t FloatLanes() { return hn::Lanes(DF()); }
// Rounds n up to whole float vectors.
inline size_t PadToLanes(size_t n) {
  const size_t L = FloatLanes();
  return (n + L - 1) / L * L;
}

// A whole vector of input elements as floats (bf16 -> f32 is exact).
HWY_INLINE VF LoadAsFloat(DF df, const float* p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadAsFloat(DF df, const hwy::bfloat16_t* p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dbf;
  return hn::PromoteTo(df, hn::LoadU(dbf, p));
}
inline float ElementAsFloat(float x) { return x; }
inline float ElementAsFloat(hwy::bfloat16_t x) { return hwy::F32FromBF16(x); }

// ---------------------------------------------------------------------------------------
// S[r][c] = scale * sum_t q_r[t] * kt[t][c] for R rows, C vectors of columns.
template <size_t R, size_t C>
HWY_INLINE void ScoreBlock(const float* const* qrows, size_t d, const float* HWY_RESTRICT kt,
                           size_t ldk, float scale, float* HWY_RESTRICT s, size_t lds) {
  const DF df;
  const size_t L = hn::Lanes(df);
  VF acc[R][C];
  SMYRF_UNROLL
  for (size_t r = 0; r < R; ++r)
    SMYRF_UNROLL
    for (size_t c = 0; c < C; ++c) acc[r][c] = hn::Zero(df);
  for (size_t t = 0; t < d; ++t) {
    VF kv[C];
    SMYRF_UNROLL
    for (size_t c = 0; c < C; ++c) kv[c] = hn::Load(df, kt + t * ldk + c * L);
    SMYRF_UNROLL
    for (size_t r = 0; r < R; ++r) {
      const VF qv = hn::Set(df, qrows[r][t]);
      SMYRF_UNROLL
      for (size_t c = 0; c < C; ++c) acc[r][c] = hn::MulAdd(qv, kv[c], acc[r][c]);
    }
  }
  const VF vscale = hn::Set(df, scale);
  SMYRF_UNROLL
  for (size_t r = 0; r < R; ++r)
    SMYRF_UNROLL
    for (size_t c = 0; c < C; ++c) hn::Store(hn::Mul(acc[r][c], vscale), df, s + r * lds + c * L);
}

template <size_t R>
HWY_INLINE void ScoreRows(const float* const* qrows, size_t d, const float* kt, size_t ldk,
                          size_t ncols_padded, float scale, float* s, size_t lds) {
  const size_t L = FloatLanes();
  size_t col = 0;
  for (; col + kTileCols * L <= ncols_padded; col += kTileCols * L)
    ScoreBlock<R, kTileCols>(qrows, d, kt + col, ldk, scale, s + col, lds);
  switch ((ncols_padded - col) / L) {
    case 0: break;
    case 1: ScoreBlock<R, 1>(qrows, d, kt + col, ldk, scale, s + col, lds); break;
    case 2: ScoreBlock<R, 2>(qrows, d, kt + col, ldk, scale, s + col, lds); break;
    default:
      if constexpr (kTileCols > 3) ScoreBlock<R, 3>(qrows, d, kt + col, ldk, scale, s + col, lds);
      break;
  }
}

// Scores of m query rows against n packed keys; s has row stride lds >= PadToLanes(n).
// Columns [n, PadToLanes(n)) are set to -inf.
HWY_INLINE void ScoreTile(const float* const* qrows, size_t m, size_t d, const float* kt,
                          size_t ldk, size_t n, float scale, float* s, size_t lds) {
  const size_t npad = PadToLanes(n);
  size_t row = 0;
  for (; row + kTileRows <= m; row += kTileRows)
    ScoreRows<kTileRows>(qrows + row, d, kt, ldk, npad, scale, s + row * lds, lds);
  switch (m - row) {
    case 0: break;
    case 1: ScoreRows<1>(qrows + row, d, kt, ldk, npad, scale, s + row * lds, lds); break;
    case 2: ScoreRows<2>(qrows + row, d, kt, ldk, npad, scale, s + row * lds, lds); break;
    case 3: ScoreRows<3>(qrows + row, d, kt, ldk, npad, scale, s + row * lds, lds); break;
    case 4: ScoreRows<4>(qrows + row, d, kt, ldk, npad, scale, s + row * lds, lds); break;
    default: ScoreRows<5>(qrows + row, d, kt, ldk, npad, scale, s + row * lds, lds); break;
  }
  if (npad != n) {
    const float ninf = -std::numeric_limits<float>::infinity();
    for (size_t r = 0; r < m; ++r)
      for (size_t c = n; c < npad; ++c) s[r * lds + c] = ninf;
  }
}

// ---------------------------------------------------------------------------------------
// Online softmax over one more key tile (Milakov & Gimelshein 2018; Dao et al. 2022): for each
// row, m' = max(m, max_j s_j); l = l e^(m - m') + sum_j e^(s_j - m'); acc *= e^(m - m');
// s_j <- e^(s_j - m'). Rows start with m = -inf, l = 0, acc = 0.
HWY_INLINE void SoftmaxUpdate(float* s, size_t lds, size_t m, size_t n, float* row_max,
                              float* row_sum, float* acc, size_t ldacc) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const size_t npad = PadToLanes(n);
  for (size_t r = 0; r < m; ++r) {
    float* srow = s + r * lds;
    VF vmax = hn::Load(df, srow);
    for (size_t c = L; c < npad; c += L) vmax = hn::Max(vmax, hn::Load(df, srow + c));
    const float tile_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const float new_max = std::max(row_max[r], tile_max);
    if (new_max == -std::numeric_limits<float>::infinity()) {
      // Nothing visible in this row so far (every score masked to -inf): zero weights, no state.
      for (size_t c = 0; c < npad; c += L) hn::Store(hn::Zero(df), df, srow + c);
      continue;
    }
    const VF vnew = hn::Set(df, new_max);
    VF vsum = hn::Zero(df);
    for (size_t c = 0; c < npad; c += L) {
      const VF p = hn::Exp(df, hn::Sub(hn::Load(df, srow + c), vnew));
      hn::Store(p, df, srow + c);
      vsum = hn::Add(vsum, p);
    }
    const float tile_sum = hn::GetLane(hn::SumOfLanes(df, vsum));
    if (row_max[r] == new_max || row_sum[r] == 0.0f) {
      // Same max, or the row's first tile (acc and l are still zero): nothing to rescale.
      row_sum[r] += tile_sum;
    } else {
      const float corr = std::exp(row_max[r] - new_max);
      row_sum[r] = row_sum[r] * corr + tile_sum;
      const VF vcorr = hn::Set(df, corr);
      float* arow = acc + r * ldacc;
      for (size_t c = 0; c < ldacc; c += L)
        hn::Store(hn::Mul(hn::Load(df, arow + c), vcorr), df, arow + c);
    }
    row_max[r] = new_max;
  }
}

// ---------------------------------------------------------------------------------------
// acc[r][c] += sum_j p[r][j] * vp[j][c] for R rows, C vectors of value columns. With kPT the
// weights are given transposed: p[r][j] is read at p[j * lds + r] (the backward's P^T, dS^T).
template <size_t R, size_t C, bool kPT = false>
HWY_INLINE void PVBlock(const float* HWY_RESTRICT p, size_t lds, size_t n,
                        const float* HWY_RESTRICT vp, size_t ldv, float* HWY_RESTRICT acc,
                        size_t ldacc) {
  const DF df;
  const size_t L = hn::Lanes(df);
  VF a[R][C];
  SMYRF_UNROLL
  for (size_t r = 0; r < R; ++r)
    SMYRF_UNROLL
    for (size_t c = 0; c < C; ++c) a[r][c] = hn::Load(df, acc + r * ldacc + c * L);
  for (size_t j = 0; j < n; ++j) {
    VF vv[C];
    SMYRF_UNROLL
    for (size_t c = 0; c < C; ++c) vv[c] = hn::Load(df, vp + j * ldv + c * L);
    SMYRF_UNROLL
    for (size_t r = 0; r < R; ++r) {
      const VF pv = hn::Set(df, kPT ? p[j * lds + r] : p[r * lds + j]);
      SMYRF_UNROLL
      for (size_t c = 0; c < C; ++c) a[r][c] = hn::MulAdd(pv, vv[c], a[r][c]);
    }
  }
  SMYRF_UNROLL
  for (size_t r = 0; r < R; ++r)
    SMYRF_UNROLL
    for (size_t c = 0; c < C; ++c) hn::Store(a[r][c], df, acc + r * ldacc + c * L);
}

template <size_t R, bool kPT = false>
HWY_INLINE void PVRows(const float* p, size_t lds, size_t n, const float* vp, size_t ldv,
                       float* acc, size_t ldacc) {
  const size_t L = FloatLanes();
  size_t col = 0;
  for (; col + kTileCols * L <= ldacc; col += kTileCols * L)
    PVBlock<R, kTileCols, kPT>(p, lds, n, vp + col, ldv, acc + col, ldacc);
  switch ((ldacc - col) / L) {
    case 0: break;
    case 1: PVBlock<R, 1, kPT>(p, lds, n, vp + col, ldv, acc + col, ldacc); break;
    case 2: PVBlock<R, 2, kPT>(p, lds, n, vp + col, ldv, acc + col, ldacc); break;
    default:
      if constexpr (kTileCols > 3) PVBlock<R, 3, kPT>(p, lds, n, vp + col, ldv, acc + col, ldacc);
      break;
  }
}

// acc (m rows, row stride ldacc = padded dv) += P (m x n) * V (n packed rows of ldv); with kPT,
// P is given as P^T (n rows of stride lds).
template <bool kPT = false>
HWY_INLINE void PVAccumulate(const float* p, size_t lds, size_t m, size_t n, const float* vp,
                             size_t ldv, float* acc, size_t ldacc) {
  auto at = [&](size_t row) { return kPT ? p + row : p + row * lds; };
  size_t row = 0;
  for (; row + kTileRows <= m; row += kTileRows)
    PVRows<kTileRows, kPT>(at(row), lds, n, vp, ldv, acc + row * ldacc, ldacc);
  switch (m - row) {
    case 0: break;
    case 1: PVRows<1, kPT>(at(row), lds, n, vp, ldv, acc + row * ldacc, ldacc); break;
    case 2: PVRows<2, kPT>(at(row), lds, n, vp, ldv, acc + row * ldacc, ldacc); break;
    case 3: PVRows<3, kPT>(at(row), lds, n, vp, ldv, acc + row * ldacc, ldacc); break;
    case 4: PVRows<4, kPT>(at(row), lds, n, vp, ldv, acc + row * ldacc, ldacc); break;
    default: PVRows<5, kPT>(at(row), lds, n, vp, ldv, acc + row * ldacc, ldacc); break;
  }
}

// ---------------------------------------------------------------------------------------
// Packing: K rows (gathered by index) into kt[t * ldk + j], zero-padded to ldk columns;
// V rows into vp[j * ldv + c], zero-padded to ldv columns.
//
// The transposition is as frequent as the attention itself in SMYRF (every key of every round
// is packed once), and element by element it cost as much as the score FMAs; on AVX-512 it
// goes through registers, 16 x 16 floats at a time.
#undef SMYRF_HAVE_TRANSPOSE16
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define SMYRF_HAVE_TRANSPOSE16 1
// dst[c * ldd + r] = src_r[c] for r, c < 16 (dst 16-float aligned rows).
// GCC 12 warns inside its own unpack intrinsics (their `__Y = __Y` idiom); the inputs are set.
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
HWY_INLINE __m512 Load16AsFloat(const float* p) { return _mm512_loadu_ps(p); }
HWY_INLINE __m512 Load16AsFloat(const hwy::bfloat16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
template <class T>
HWY_INLINE void Transpose16x16(const T* const src[16], float* HWY_RESTRICT dst, size_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = Load16AsFloat(src[i]);
  // Interleave 32-bit pairs, then 64-bit pairs: u[4k + m], 128-bit block l holds rows
  // 4k..4k+3 of column 4l + m.
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {
    const __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * k + 1]), e = _mm512_castps_pd(t[4 * k + 3]);
    r[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e));
    r[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e));
  }
  // Gather the four 128-bit blocks of each column: 0x88 picks blocks (0, 2), 0xDD (1, 3).
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
    const __m512 v1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);
    const __m512 v2 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
    const __m512 v3 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
    _mm512_store_ps(dst + (0 + m) * ldd, _mm512_shuffle_f32x4(v0, v2, 0x88));
    _mm512_store_ps(dst + (8 + m) * ldd, _mm512_shuffle_f32x4(v0, v2, 0xDD));
    _mm512_store_ps(dst + (4 + m) * ldd, _mm512_shuffle_f32x4(v1, v3, 0x88));
    _mm512_store_ps(dst + (12 + m) * ldd, _mm512_shuffle_f32x4(v1, v3, 0xDD));
  }
}
#pragma GCC diagnostic pop
#else
#define SMYRF_HAVE_TRANSPOSE16 0
#endif

// key_row(j) returns a pointer to key j's d elements (float or bf16).
template <class RowFn>
HWY_INLINE void PackKeysTransposed(RowFn key_row, size_t n, size_t d, float* kt, size_t ldk) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(key_row(size_t{0}))>>;
  for (size_t t = 0; t < d; ++t) {
    float* dst = kt + t * ldk;
    for (size_t j = n; j < ldk; ++j) dst[j] = 0.0f;
  }
  constexpr size_t kBlock = 16;
  for (size_t j0 = 0; j0 < n; j0 += kBlock) {
    const size_t j1 = std::min(n, j0 + kBlock);
    const T* rows[kBlock];
    for (size_t j = j0; j < j1; ++j) rows[j - j0] = key_row(j);
    size_t t0 = 0;
#if SMYRF_HAVE_TRANSPOSE16
    if (j1 - j0 == kBlock) {
      for (; t0 + kBlock <= d; t0 += kBlock) {
        const T* src[kBlock];
        for (size_t j = 0; j < kBlock; ++j) src[j] = rows[j] + t0;
        Transpose16x16(src, kt + t0 * ldk + j0, ldk);
      }
    }
#endif
    // Remaining coordinates (and partial blocks of keys) element by element.
    for (size_t t = t0; t < d; ++t) {
      float* dst = kt + t * ldk;
      for (size_t j = j0; j < j1; ++j) dst[j] = ElementAsFloat(rows[j - j0][t]);
    }
  }
}

// value_row(j) returns a pointer to row j's dv elements (float or bf16).
template <class RowFn>
HWY_INLINE void PackValues(RowFn value_row, size_t n, size_t dv, float* vp, size_t ldv) {
  const DF df;
  const size_t L = hn::Lanes(df);
  for (size_t j = 0; j < n; ++j) {
    const auto* HWY_RESTRICT src = value_row(j);
    float* HWY_RESTRICT dst = vp + j * ldv;
    size_t c = 0;
    for (; c + L <= dv; c += L) hn::Store(LoadAsFloat(df, src + c), df, dst + c);
    for (; c < dv; ++c) dst[c] = ElementAsFloat(src[c]);
    for (; c < ldv; ++c) dst[c] = 0.0f;
  }
}

// Query rows for ScoreTile: float inputs are used in place; other types are converted into
// `buffer` (rows of ld floats) first.
template <class T, class RowFn>
HWY_INLINE void QueryRows(RowFn query_row, size_t m, size_t d, float* buffer, size_t ld,
                          const float** rows) {
  if constexpr (std::is_same_v<T, float>) {
    for (size_t i = 0; i < m; ++i) rows[i] = query_row(i);
  } else {
    PackValues(query_row, m, d, buffer, ld);
    for (size_t i = 0; i < m; ++i) rows[i] = buffer + i * ld;
  }
}

// Sets s[r][c] = -inf for the columns c >= visible[r] of m rows (row stride lds, n columns):
// the per-row cut of a causal mask, or any mask that keeps a prefix of a tile's keys.
HWY_INLINE void MaskColumnsFrom(float* s, size_t lds, size_t m, size_t n, const size_t* visible) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t r = 0; r < m; ++r)
    for (size_t c = visible[r]; c < n; ++c) s[r * lds + c] = ninf;
}

// out[0, n) <- exp(row - max); returns the max and (in *sum) the sum of the exponentials.
// out may be row (a score row of the keyset methods, a logit row of the Synthesizer).
HWY_INLINE float SoftmaxRow(const float* row, float* out, std::int64_t n, float* sum) {
  const DF df;
  const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(df));
  const float ninf = -std::numeric_limits<float>::infinity();
  VF vmax = hn::Set(df, ninf);
  std::int64_t t = 0;
  for (; t + L <= n; t += L) vmax = hn::Max(vmax, hn::LoadU(df, row + t));
  float mx = hn::GetLane(hn::MaxOfLanes(df, vmax));
  for (std::int64_t r = t; r < n; ++r) mx = std::max(mx, row[r]);
  const VF vm = hn::Set(df, mx);
  VF vsum = hn::Zero(df);
  for (t = 0; t + L <= n; t += L) {
    const VF e = hn::Exp(df, hn::Sub(hn::LoadU(df, row + t), vm));
    hn::StoreU(e, df, out + t);
    vsum = hn::Add(vsum, e);
  }
  float total = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; t < n; ++t) {
    out[t] = std::exp(row[t] - mx);
    total += out[t];
  }
  *sum = total;
  return mx;
}

// An additive per-key bias (params.key_bias) on a tile of scores: s[r][c] += bias[c] for m rows
// of n key columns (row stride lds), or, on a transposed tile whose rows are keys,
// s[r][c] += bias[r] for n key rows of m columns.
HWY_INLINE void AddKeyBiasColumns(float* s, size_t lds, size_t m, size_t n, const float* bias) {
  for (size_t r = 0; r < m; ++r)
    for (size_t c = 0; c < n; ++c) s[r * lds + c] += bias[c];
}
HWY_INLINE void AddKeyBiasRows(float* s, size_t lds, size_t n, size_t m, const float* bias) {
  for (size_t r = 0; r < n; ++r)
    for (size_t c = 0; c < m; ++c) s[r * lds + c] += bias[r];
}

// Starts m rows of online-softmax state (row_max, row_sum hold PadToLanes(m) floats).
HWY_INLINE void ResetTileState(size_t m, size_t ldacc, float* row_max, float* row_sum,
                               float* acc) {
  // The state of the rows up to the next whole vector is set too: FinalizeRows reads it.
  const size_t m_padded = PadToLanes(m);
  for (size_t r = 0; r < m_padded; ++r) {
    row_max[r] = -std::numeric_limits<float>::infinity();
    row_sum[r] = r < m ? 0.0f : 1.0f;
  }
  for (size_t i = 0; i < m * ldacc; ++i) acc[i] = 0.0f;
}

// Writes out[c] = arow[c] * factor for c < n (n need not be a whole number of vectors; out
// may be a caller's row, so the tail is written element by element).
HWY_INLINE void ScaleRowTo(const float* HWY_RESTRICT arow, float factor, float* HWY_RESTRICT out,
                           size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const VF f = hn::Set(df, factor);
  size_t c = 0;
  for (; c + L <= n; c += L) hn::StoreU(hn::Mul(hn::Load(df, arow + c), f), df, out + c);
  for (; c < n; ++c) out[c] = arow[c] * factor;
}

// For m rows of finished online-softmax state, vectorised over rows: inv[r] = 1 / l[r] and,
// when lse is given, lse[r] = m[r] + log(l[r]) (the row's logsumexp). A row that saw no key
// (l = 0, m = -inf) gets inv = 0 and lse = -inf, so its output is 0. Buffers hold whole
// vectors (padded to 16 floats).
HWY_INLINE void FinalizeRows(size_t m, const float* row_max, const float* row_sum, float* inv,
                             float* lse) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const VF one = hn::Set(df, 1.0f);
  for (size_t r = 0; r < m; r += L) {
    const VF l = hn::Load(df, row_sum + r);
    hn::Store(hn::IfThenElseZero(hn::Gt(l, hn::Zero(df)), hn::Div(one, l)), df, inv + r);
    if (lse != nullptr) hn::Store(hn::Add(hn::Load(df, row_max + r), hn::Log(df, l)), df, lse + r);
  }
}
}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // SMYRF_KERNELS_ATTENTION_TILE_INL_H_
