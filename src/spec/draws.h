// The random draws of every method: the one place where the fast paths and the double
// oracles (src/reference/) get them, so both see the same values bit for bit. Each draw is a
// pure function of its arguments (counter-based generator of src/common/rng.h), whatever the
// thread count or the order of evaluation. tests/test_spec.cpp pins each one to golden
// values: a change in a draw fails there.
//
// Each function returns the value of one entry of the definition; how the fast path lays the
// values out (SIMD lanes, padding, batches of words) is its own business.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/rng.h"

namespace smyrf::spec {

using detail::random_bits;
using detail::standard_normal;
using detail::uniform_open01;

// ---- SMYRF (SmyrfConfig): LSH directions a_r ~ N(0, I) and E2LSH offsets b_r ~ U(0, r). ----

// The stream of round r of head h: head * 1024 + r (r < 1024).
inline std::uint64_t smyrf_stream(std::int64_t head, int round) {
  return static_cast<std::uint64_t>(head) * 1024u + static_cast<std::uint64_t>(round);
}
// Component t (t < d + E, E the transform's appended coordinates) of the direction a_r of
// round `round` of head `head`: standard_normal(seed, stream, t).
inline double smyrf_direction(std::uint64_t seed, std::int64_t head, int round, std::int64_t t) {
  return standard_normal(seed, smyrf_stream(head, round), static_cast<std::uint64_t>(t));
}
// The offset b_r = width * U(0, 1), the uniform of counter 2^40 of the round's stream (width:
// SmyrfConfig::r; 0 when r == 0).
inline double smyrf_offset(std::uint64_t seed, std::int64_t head, int round, float width) {
  return static_cast<double>(width) * uniform_open01(seed, smyrf_stream(head, round), 1ull << 40);
}

// ---- Reformer (ReformerConfig): random rotations R_r [d, n], n = n_buckets / 2. ----

// The stream of round r of head h: tag "REFR" plus head * 1024 + r (r < 1024).
inline std::uint64_t reformer_stream(std::int64_t head, int round) {
  return 0x5245465200000000ull + static_cast<std::uint64_t>(head) * 1024u +
         static_cast<std::uint64_t>(round);
}
// R_r[t][c] = standard_normal(seed, stream, t * n + c), n = n_buckets / 2, c < n.
inline double reformer_rotation(std::uint64_t seed, std::int64_t head, int round, std::int64_t n,
                                std::int64_t t, std::int64_t c) {
  return standard_normal(seed, reformer_stream(head, round),
                         static_cast<std::uint64_t>(t) * static_cast<std::uint64_t>(n) +
                             static_cast<std::uint64_t>(c));
}

// ---- Clustered attention (ClusteredConfig): hash hyperplanes w_t ~ N(0, I). ----

// Stream of head h: tag "Clus" plus the head.
constexpr std::uint64_t kClusteredStream = 0x436C757300000000ull;
// Coordinate j of hyperplane t (bit t of the code) of head `head`, for head dimension d:
// standard_normal(seed, kClusteredStream + head, t * d + j).
inline double clustered_hyperplane(std::uint64_t seed, std::int64_t head, int t, std::int64_t j,
                                   std::int64_t d) {
  return standard_normal(seed, kClusteredStream + static_cast<std::uint64_t>(head),
                         static_cast<std::uint64_t>(t) * static_cast<std::uint64_t>(d) +
                             static_cast<std::uint64_t>(j));
}

// ---- Linear attention (LinearConfig): the random directions of FAVOR+, FAVOR and RFA. ----

// Streams (tag "LINE"): the Gaussian entries of head h come from stream
// kLinearFeatureStream + 2 h, the chi(d) row norms of the orthogonal draw from + 2 h + 1.
constexpr std::uint64_t kLinearFeatureStream = 0x4C494E4500000000ull;

// W [rows, d] (row-major, double): the directions w_r of head `head`, the same for every batch
// element; a new seed redraws them.
//   orthogonal = false: W[r][t] = g(r d + t), i.i.d. N(0, 1), with
//     g(c) = standard_normal(seed, kLinearFeatureStream + 2 head, c).
//   orthogonal = true: rows in blocks of d. Block k (rows k d .. k d + d - 1) starts from the
//     i.i.d. Gaussian d x d matrix G[i][t] = g((k d + i) d + t) and orthogonalises its rows in
//     order by modified Gram-Schmidt in double: for i = 0..d-1, v = G[i]; for l = 0..i-1 (in
//     order) v -= (v . u_l) u_l with the current v (dot products summed in index order);
//     u_i = v / |v| (a row with |v| == 0 stays 0, probability 0). Row k d + i of W is
//     u_i * n_{k d + i}, with n_r = |(g'(r d), ..., g'(r d + d - 1))| the norm of an independent
//     Gaussian d-vector, g'(c) = standard_normal(seed, kLinearFeatureStream + 2 head + 1, c):
//     so the row norms follow chi(d) like those of i.i.d. Gaussian rows (Choromanski et al.
//     2021). The last block keeps its first rows - k d rows (the block is orthogonalised whole
//     and then truncated).
inline std::vector<double> linear_random_features(std::uint64_t seed, std::int64_t head,
                                                  std::int64_t rows, std::int64_t d,
                                                  bool orthogonal) {
  const std::uint64_t stream = kLinearFeatureStream + 2 * static_cast<std::uint64_t>(head);
  std::vector<double> w(static_cast<std::size_t>(rows * d), 0.0);
  auto g = [&](std::int64_t c) {
    return standard_normal(seed, stream, static_cast<std::uint64_t>(c));
  };
  if (!orthogonal) {
    for (std::int64_t c = 0; c < rows * d; ++c) w[static_cast<std::size_t>(c)] = g(c);
    return w;
  }
  std::vector<double> u(static_cast<std::size_t>(d * d));
  for (std::int64_t k = 0; k * d < rows; ++k) {
    for (std::int64_t i = 0; i < d; ++i) {
      double* v = u.data() + i * d;
      for (std::int64_t t = 0; t < d; ++t) v[t] = g((k * d + i) * d + t);
      for (std::int64_t l = 0; l < i; ++l) {
        const double* ul = u.data() + l * d;
        double dot = 0.0;
        for (std::int64_t t = 0; t < d; ++t) {
          const double p = v[t] * ul[t];  // rounded, then added: no fused multiply-add
          dot += p;
        }
        for (std::int64_t t = 0; t < d; ++t) {
          const double p = dot * ul[t];
          v[t] -= p;
        }
      }
      double n2 = 0.0;
      for (std::int64_t t = 0; t < d; ++t) {
        const double p = v[t] * v[t];
        n2 += p;
      }
      const double inv = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
      for (std::int64_t t = 0; t < d; ++t) v[t] *= inv;
    }
    for (std::int64_t i = 0; i < d && k * d + i < rows; ++i) {
      const std::int64_t r = k * d + i;
      double n2 = 0.0;
      for (std::int64_t t = 0; t < d; ++t) {
        const double x = standard_normal(seed, stream + 1, static_cast<std::uint64_t>(r * d + t));
        const double p = x * x;
        n2 += p;
      }
      const double norm = std::sqrt(n2);
      for (std::int64_t t = 0; t < d; ++t)
        w[static_cast<std::size_t>(r * d + t)] = u[static_cast<std::size_t>(i * d + t)] * norm;
    }
  }
  return w;
}

// ---- Sparse attention (SparseConfig, bigbird): the random key blocks. ----

// High 64 bits of the 128-bit product a * b.
inline std::uint64_t mul_high64(std::uint64_t a, std::uint64_t b) {
  const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32;
  const std::uint64_t b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const std::uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
  const std::uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
  return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
}

// Scratch (in int64) that bigbird_random_blocks needs for n_blocks key blocks.
inline std::size_t bigbird_work_size(std::int64_t n_blocks) {
  return static_cast<std::size_t>(std::max<std::int64_t>(n_blocks, 128));
}

// BigBird's random key blocks of query block qb in head `head` (see SparseConfig in smyrf.h).
// Writes them to out in draw order (not sorted) and returns their number r = min(random_blocks,
// n). With g = min(global_blocks, n_blocks):
//   * a global query block (0 <= qb < g) draws nothing (it sees every key);
//   * the candidates are the key blocks of [g, n_blocks) outside the window [qb - 1, qb + 1],
//     in ascending order, ranks 0..n-1;
//   * partial Fisher-Yates over the ranks: a[k] = k; for t = 0..r-1: x = t + floor(u_t (n - t)
//     / 2^64) with u_t = random_bits(seed, stream, t), stream = (head << 32) | (qb mod 2^32);
//     swap a[t], a[x]; the t-th block is the candidate of rank a[t].
// work: bigbird_work_size(n_blocks) int64s.
inline std::int64_t bigbird_random_blocks(std::uint64_t seed, std::int64_t head, std::int64_t qb,
                                          std::int64_t n_blocks, std::int64_t global_blocks,
                                          std::int64_t random_blocks, std::int64_t* out,
                                          std::int64_t* work) {
  const std::int64_t g = std::min(global_blocks, n_blocks);
  if (qb >= 0 && qb < g) return 0;
  const std::int64_t w0 = std::max(qb - 1, g), w1 = std::min(qb + 1, n_blocks - 1);
  const std::int64_t wn = std::max<std::int64_t>(0, w1 - w0 + 1);
  const std::int64_t n = n_blocks - g - wn;
  const std::int64_t r = std::min(random_blocks, n);
  if (r <= 0) return 0;
  const std::uint64_t stream =
      (static_cast<std::uint64_t>(head) << 32) | static_cast<std::uint32_t>(qb);
  auto block_of_rank = [&](std::int64_t k) {
    const std::int64_t c = g + k;
    return (wn > 0 && c >= w0) ? c + wn : c;
  };
  auto draw = [&](std::int64_t t) {
    const std::uint64_t u = random_bits(seed, stream, static_cast<std::uint64_t>(t));
    return t + static_cast<std::int64_t>(mul_high64(u, static_cast<std::uint64_t>(n - t)));
  };
  constexpr std::int64_t kSparseDraws = 64;
  if (r <= kSparseDraws) {
    // The same shuffle with the array kept as a list of the positions that differ from a[k] = k.
    std::int64_t* pos = work;
    std::int64_t* val = work + kSparseDraws;
    std::int64_t used = 0;
    auto get = [&](std::int64_t x) {
      for (std::int64_t e = 0; e < used; ++e)
        if (pos[e] == x) return val[e];
      return x;
    };
    for (std::int64_t t = 0; t < r; ++t) {
      const std::int64_t x = draw(t);
      const std::int64_t vx = get(x), vt = get(t);
      out[t] = block_of_rank(vx);
      // a[x] = old a[t] (a[t] itself is never read again).
      std::int64_t e = 0;
      while (e < used && pos[e] != x) ++e;
      if (e == used) pos[used++] = x;
      val[e] = vt;
    }
  } else {
    for (std::int64_t k = 0; k < n; ++k) work[k] = k;
    for (std::int64_t t = 0; t < r; ++t) {
      const std::int64_t x = draw(t);
      std::swap(work[t], work[x]);
      out[t] = block_of_rank(work[t]);
    }
  }
  return r;
}

// ---- Compressed attention (CompressedConfig, linformer): the default projections E, F. ----

// Random stream of the default Linformer projections: tag "LINP" plus the head.
constexpr std::uint64_t kLinformerStream = 0x4C494E5000000000ull;

// The default projection entries E[h, r, j] and F[h, r, j]: independent Rademacher signs
// scaled to +-1/sqrt(rank) (a Johnson-Lindenstrauss projection with the variance 1/rank of the
// paper's N(0, 1/rank) entries), a function of (seed, head, r, j) only (the same for every
// batch element and every Nk). Word w = random_bits(seed, kLinformerStream + head, r * 2^32 +
// floor(j / 32)) holds the signs of 32 consecutive keys: with b = 2 (j mod 32),
//   E = bit b of w ? +s : -s,   F = bit b + 1 of w ? +s : -s,   s = float(1 / sqrt(rank)).
inline float linformer_scale(std::int64_t rank) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(rank)));
}
inline std::uint64_t linformer_word(std::uint64_t seed, std::int64_t head, std::int64_t r,
                                    std::int64_t j) {
  return random_bits(seed, kLinformerStream + static_cast<std::uint64_t>(head),
                     (static_cast<std::uint64_t>(r) << 32) + static_cast<std::uint64_t>(j >> 5));
}
inline void linformer_projection(std::uint64_t seed, std::int64_t head, std::int64_t r,
                                 std::int64_t j, std::int64_t rank, float* e, float* f) {
  const std::uint64_t w = linformer_word(seed, head, r, j);
  const int b = static_cast<int>(2 * (j & 31));
  const float s = linformer_scale(rank);
  *e = (w >> b) & 1 ? s : -s;
  *f = (w >> (b + 1)) & 1 ? s : -s;
}
// Row r of the default E and F for keys [first, first + nk) (first a multiple of 32; e or f may
// be nullptr), at e[0], f[0]: the same entries as linformer_projection(), one random word per
// 32 keys, stored as float or double (exact).
template <class T>
void linformer_projection_row(std::uint64_t seed, std::int64_t head, std::int64_t r,
                              std::int64_t nk, std::int64_t rank, T* e, T* f, std::int64_t first = 0) {
  const T s = linformer_scale(rank);
  // sign(bit) = 2 bit - 1, multiplied (exactly) rather than selected: random signs would
  // defeat branch prediction.
  auto sign = [](std::uint64_t bit) { return static_cast<T>(2 * static_cast<int>(bit) - 1); };
  for (std::int64_t j0 = 0; j0 < nk; j0 += 32) {
    const std::uint64_t w = linformer_word(seed, head, r, first + j0);
    const int n = static_cast<int>(nk - j0 < 32 ? nk - j0 : 32);
    if (e != nullptr)
      for (int t = 0; t < n; ++t) e[j0 + t] = sign((w >> (2 * t)) & 1) * s;
    if (f != nullptr)
      for (int t = 0; t < n; ++t) f[j0 + t] = sign((w >> (2 * t + 1)) & 1) * s;
  }
}

// ---- Informer (InformerConfig): the sampled keys of each query. ----

// Index into S_i (the ascending keys query i sees, of size count >= 1) of sample t of query i:
// floor(r count / 2^64) with r = random_bits(seed, 0x494E465200000000 + i, t) (tag "INFR"),
// the same for every head and batch element.
inline std::int64_t informer_sample_index(std::uint64_t seed, std::int64_t i, std::int64_t t,
                                          std::int64_t count) {
  const std::uint64_t r = random_bits(seed, 0x494E465200000000ull + static_cast<std::uint64_t>(i),
                                      static_cast<std::uint64_t>(t));
  __extension__ using U128 = unsigned __int128;
  return static_cast<std::int64_t>((static_cast<U128>(r) * static_cast<std::uint64_t>(count)) >>
                                   64);
}

// ---- Synthesizer (SynthesizerConfig): the seeded default weights. ----

// stream(h, part) = tag "SYNT" + 4 h + part (part 0: w1, 1: w2, 2: R).
inline std::uint64_t synthesizer_stream(std::int64_t h, int part) {
  return 0x53594E5400000000ull + 4 * static_cast<std::uint64_t>(h) +
         static_cast<std::uint64_t>(part);
}
// Default w1[h][t][u] = float(standard_normal(seed, stream(h, 0), t hidden + u) / sqrt(d)).
inline float synthesizer_default_w1(std::uint64_t seed, std::int64_t h, std::int64_t t,
                                    std::int64_t u, std::int64_t d, std::int64_t hidden) {
  return static_cast<float>(
      standard_normal(seed, synthesizer_stream(h, 0), static_cast<std::uint64_t>(t * hidden + u)) /
      std::sqrt(static_cast<double>(d)));
}
// Default w2[h][u][j] = float(standard_normal(seed, stream(h, 1), u Nk + j) / sqrt(hidden)).
inline float synthesizer_default_w2(std::uint64_t seed, std::int64_t h, std::int64_t u,
                                    std::int64_t j, std::int64_t nk, std::int64_t hidden) {
  return static_cast<float>(
      standard_normal(seed, synthesizer_stream(h, 1), static_cast<std::uint64_t>(u * nk + j)) /
      std::sqrt(static_cast<double>(hidden)));
}
// Default R[h][i][j] = float(standard_normal(seed, stream(h, 2), i Nk + j)).
inline float synthesizer_default_logit(std::uint64_t seed, std::int64_t h, std::int64_t i,
                                       std::int64_t j, std::int64_t nk) {
  return static_cast<float>(
      standard_normal(seed, synthesizer_stream(h, 2), static_cast<std::uint64_t>(i * nk + j)));
}

// ---- Dropout (AttentionParams::dropout): the keep decision of weight (b, h, round, i, j). ----

class Dropout {
 public:
  // p in [0, 1). A weight is dropped when 32 random bits fall below p * 2^32.
  Dropout(float p, std::uint64_t seed)
      : threshold_(static_cast<std::uint32_t>(std::min(std::ldexp(static_cast<double>(p), 32), 4294967295.0))),
        scale_(p > 0.0f ? static_cast<float>(1.0 / (1.0 - static_cast<double>(p))) : 1.0f),
        seed_(detail::mix64(seed ^ 0xD209A1E5C0FFEE11ull)),
        active_(p > 0.0f) {}

  bool active() const { return active_; }
  // 1 / (1 - p): the factor of a kept weight.
  float scale() const { return scale_; }

  // The random stream of one query row (one mix of its coordinates), then one mix per key.
  std::uint64_t row(std::int64_t b, std::int64_t h, int round, std::int64_t i) const {
    const std::uint64_t bh = (static_cast<std::uint64_t>(b) << 32) ^ static_cast<std::uint64_t>(h);
    const std::uint64_t ri = (static_cast<std::uint64_t>(round) << 40) ^ static_cast<std::uint64_t>(i);
    return detail::mix64(detail::mix64(seed_ ^ bh) ^ ri);
  }
  bool keep(std::uint64_t row_stream, std::int64_t j) const {
    return static_cast<std::uint32_t>(detail::mix64(row_stream + static_cast<std::uint64_t>(j)) >> 32) >= threshold_;
  }
  // The factor weight (row, j) is multiplied by: 0 or 1 / (1 - p).
  float factor(std::uint64_t row_stream, std::int64_t j) const {
    return keep(row_stream, j) ? scale_ : 0.0f;
  }

 private:
  std::uint32_t threshold_;
  float scale_;
  std::uint64_t seed_;
  bool active_;
};

}  // namespace smyrf::spec
