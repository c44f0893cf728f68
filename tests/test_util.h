// Shared test fixtures: random problems with awkward layouts, and the tolerance rule.
//
// TOLERANCE RULE (used by every float-vs-double comparison in the suite):
//   max_abs_error(O, O_ref) <= 16 * eps_f32 * max|V| * (1 + L + log2(n_keys))
// where L = max over (query, key) pairs of |scale| * sum_t |q_t k_t| bounds every logit's
// magnitude before cancellation. Why: a float dot product of d terms with FMA is off by at
// most ~eps * sum|q_t k_t| in practice, the softmax output moves by at most
// 2 * max|V| * max_j |delta logit_j|, exp() is accurate to a few ulp, and the running sums over
// n_keys positive terms add ~log2(n_keys) roundings with tile-wise accumulation. The factor 16
// leaves headroom for the tile rescaling and the final division; a wrong tile, mask or merge
// gives errors of order max|V|, many orders above this bound.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::test {

// A problem whose tensors live in padded buffers: every row, head and batch stride is larger
// than contiguous when `padded` is set, so kernels that assume contiguity fail.
struct Problem {
  std::int64_t B, H, Nq, Nk, d, dv;
  bool padded = false;
  std::vector<float> q, k, v, o;
  std::vector<std::uint8_t> key_mask, query_mask;
  AttentionParams params;

  Problem(std::int64_t B_, std::int64_t H_, std::int64_t Nq_, std::int64_t Nk_, std::int64_t d_,
          std::int64_t dv_, bool padded_ = false, std::uint64_t seed = 1)
      : B(B_), H(H_), Nq(Nq_), Nk(Nk_), d(d_), dv(dv_), padded(padded_) {
    const std::int64_t pad = padded ? 3 : 0;
    auto layout = [&](std::vector<float>& buf, std::int64_t n, std::int64_t row,
                      std::int64_t* bs, std::int64_t* hs, std::int64_t* rs) {
      *rs = row + pad;
      *hs = n * *rs + pad * 5;
      *bs = H * *hs + pad * 7;
      buf.assign(static_cast<std::size_t>(B * *bs + 1), std::numeric_limits<float>::quiet_NaN());
    };
    params.batch = B;
    params.heads = H;
    params.nq = Nq;
    params.nk = Nk;
    params.d = d;
    params.dv = dv;
    layout(q, Nq, d, &params.q_batch_stride, &params.q_head_stride, &params.q_row_stride);
    layout(k, Nk, d, &params.k_batch_stride, &params.k_head_stride, &params.k_row_stride);
    layout(v, Nk, dv, &params.v_batch_stride, &params.v_head_stride, &params.v_row_stride);
    layout(o, Nq, dv, &params.o_batch_stride, &params.o_head_stride, &params.o_row_stride);
    fill_gaussian(seed);
    params.q = q.data();
    params.k = k.data();
    params.v = v.data();
    params.o = o.data();
  }

  float* q_at(std::int64_t b, std::int64_t h, std::int64_t i) {
    return q.data() + b * params.q_batch_stride + h * params.q_head_stride + i * params.q_row_stride;
  }
  float* k_at(std::int64_t b, std::int64_t h, std::int64_t j) {
    return k.data() + b * params.k_batch_stride + h * params.k_head_stride + j * params.k_row_stride;
  }
  float* v_at(std::int64_t b, std::int64_t h, std::int64_t j) {
    return v.data() + b * params.v_batch_stride + h * params.v_head_stride + j * params.v_row_stride;
  }
  float* o_at(std::int64_t b, std::int64_t h, std::int64_t i) {
    return o.data() + b * params.o_batch_stride + h * params.o_head_stride + i * params.o_row_stride;
  }

  // iid N(0, sigma^2) in the addressed elements; padding stays NaN (a kernel reading it fails).
  void fill_gaussian(std::uint64_t seed, float sigma = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, sigma);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        for (std::int64_t i = 0; i < Nq; ++i)
          for (std::int64_t t = 0; t < d; ++t) q_at(b, h, i)[t] = n(rng);
        for (std::int64_t j = 0; j < Nk; ++j) {
          for (std::int64_t t = 0; t < d; ++t) k_at(b, h, j)[t] = n(rng);
          for (std::int64_t t = 0; t < dv; ++t) v_at(b, h, j)[t] = n(rng);
        }
      }
  }

  // Queries and keys near `centers` shared centre directions (peaked attention).
  void fill_clustered(std::uint64_t seed, int centers, float center_norm, float noise) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<float> c(static_cast<std::size_t>(centers * d));
    for (auto& x : c) x = n(rng) * center_norm / std::sqrt(static_cast<float>(d));
    std::uniform_int_distribution<int> pick(0, centers - 1);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        for (std::int64_t i = 0; i < Nq; ++i) {
          const int ci = pick(rng);
          for (std::int64_t t = 0; t < d; ++t) q_at(b, h, i)[t] = c[static_cast<std::size_t>(ci * d + t)] + noise * n(rng);
        }
        for (std::int64_t j = 0; j < Nk; ++j) {
          const int ci = pick(rng);
          for (std::int64_t t = 0; t < d; ++t) k_at(b, h, j)[t] = c[static_cast<std::size_t>(ci * d + t)] + noise * n(rng);
          for (std::int64_t t = 0; t < dv; ++t) v_at(b, h, j)[t] = n(rng);
        }
      }
  }

  // Masks with roughly `keep` of the tokens kept (0/1 per token), seeded.
  void random_masks(std::uint64_t seed, double keep_keys, double keep_queries) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution kk(keep_keys), kq(keep_queries);
    key_mask.resize(static_cast<std::size_t>(B * Nk));
    query_mask.resize(static_cast<std::size_t>(B * Nq));
    for (auto& m : key_mask) m = kk(rng) ? 1 : 0;
    for (auto& m : query_mask) m = kq(rng) ? 1 : 0;
    params.with_masks(key_mask.data(), query_mask.data());
  }

  // Switches the inputs to bf16: every addressed element is rounded to the nearest bf16 (ties
  // to even) in the float buffers too, so the f32 and bf16 problems hold the same values.
  std::vector<std::uint16_t> q16, k16, v16;
  void use_bf16() {
    auto convert = [](std::vector<float>& f, std::vector<std::uint16_t>& h) {
      h.assign(f.size(), 0x7FC0);  // padding: bf16 NaN, like the float padding
      for (std::size_t i = 0; i < f.size(); ++i) {
        if (std::isnan(f[i])) continue;
        std::uint32_t bits;
        std::memcpy(&bits, &f[i], 4);
        bits += 0x7FFF + ((bits >> 16) & 1);  // round to nearest even
        h[i] = static_cast<std::uint16_t>(bits >> 16);
        const std::uint32_t back = static_cast<std::uint32_t>(h[i]) << 16;
        std::memcpy(&f[i], &back, 4);
      }
    };
    convert(q, q16);
    convert(k, k16);
    convert(v, v16);
    params.q = q16.data();
    params.k = k16.data();
    params.v = v16.data();
    params.dtype = DType::bf16;
  }
  // Back to the float buffers (holding the same, bf16-rounded values).
  void use_f32() {
    params.q = q.data();
    params.k = k.data();
    params.v = v.data();
    params.dtype = DType::f32;
  }

  // Output rows gathered densely [B, H, Nq, dv].
  std::vector<float> output() {
    std::vector<float> out;
    out.reserve(static_cast<std::size_t>(B * H * Nq * dv));
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < Nq; ++i) out.insert(out.end(), o_at(b, h, i), o_at(b, h, i) + dv);
    return out;
  }

  std::vector<float> run(const MethodConfig& config, int threads = 0) {
    params.num_threads = threads;
    attention(params, config);
    return output();
  }

  // The tolerance of the rule above, for this problem's data and scale.
  double tolerance(std::int64_t n_keys = -1) {
    const double scale = params.scale ? std::abs(*params.scale) : 1.0 / std::sqrt(double(d));
    double vmax = 0, L = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        for (std::int64_t j = 0; j < Nk; ++j)
          for (std::int64_t t = 0; t < dv; ++t) vmax = std::max(vmax, double(std::abs(v_at(b, h, j)[t])));
        double s = 0;
        if (Nq * Nk * d <= 20'000'000) {  // exact max over pairs when affordable
          for (std::int64_t i = 0; i < Nq; ++i)
            for (std::int64_t j = 0; j < Nk; ++j) {
              double sij = 0;
              for (std::int64_t t = 0; t < d; ++t) sij += std::abs(double(q_at(b, h, i)[t]) * k_at(b, h, j)[t]);
              s = std::max(s, sij);
            }
        } else {  // else the bound sum_t max_i |q_it| * max_j |k_jt|
          std::vector<double> qm(static_cast<std::size_t>(d)), km(static_cast<std::size_t>(d));
          for (std::int64_t i = 0; i < Nq; ++i)
            for (std::int64_t t = 0; t < d; ++t) qm[t] = std::max(qm[t], double(std::abs(q_at(b, h, i)[t])));
          for (std::int64_t j = 0; j < Nk; ++j)
            for (std::int64_t t = 0; t < d; ++t) km[t] = std::max(km[t], double(std::abs(k_at(b, h, j)[t])));
          for (std::int64_t t = 0; t < d; ++t) s += qm[t] * km[t];
        }
        L = std::max(L, scale * s);
      }
    const double n = double(n_keys > 0 ? n_keys : Nk);
    return 16.0 * std::numeric_limits<float>::epsilon() * vmax * (1.0 + L + std::log2(n + 1));
  }
};

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b);

// Masks must be respected by `config` on `pr` (masks set): the contents of masked keys cannot
// change any output bit (they are overwritten with values that would dominate every norm and
// logit), and masked queries get exact zeros in every head.
inline void expect_masks_respected(Problem& pr, const MethodConfig& config) {
  const auto before = pr.run(config);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t j = 0; j < pr.Nk; ++j)
      if (!pr.key_mask[static_cast<std::size_t>(b * pr.Nk + j)])
        for (std::int64_t h = 0; h < pr.H; ++h) {
          std::fill_n(pr.k_at(b, h, j), pr.d, 1e5f);
          std::fill_n(pr.v_at(b, h, j), pr.dv, -1e6f);
        }
  EXPECT_TRUE(bitwise_equal(before, pr.run(config))) << method_name(config);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (!pr.query_mask[static_cast<std::size_t>(b * pr.Nq + i)]) {
          for (std::int64_t c = 0; c < pr.dv; ++c) ASSERT_EQ(pr.o_at(b, h, i)[c], 0.0f);
        }
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double diff = std::abs(double(a[i]) - double(b[i]));
    if (std::isnan(diff)) return std::numeric_limits<double>::infinity();
    m = std::max(m, diff);
  }
  return m;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) {
           return std::memcmp(&x, &y, sizeof(float)) == 0;
         });
}

// The largest |V| over every (batch, head, key) of a problem (tolerances scale with it).
inline double max_abs_v(Problem& pr) {
  double m = 0;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        for (std::int64_t c = 0; c < pr.dv; ++c)
          m = std::max(m, double(std::abs(pr.v_at(b, h, j)[c])));
  return m;
}

// lse of the fast path against the oracle's: -inf exactly where the oracle has it, elsewhere
// within tol_logit plus 4 ulp of the value.
inline void expect_lse_close(const std::vector<float>& fast, const std::vector<float>& ref,
                             double tol_logit, const std::string& what) {
  ASSERT_EQ(fast.size(), ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i])) {
      ASSERT_TRUE(std::isinf(fast[i]) && fast[i] < 0) << what << " lse " << i << " " << fast[i];
      continue;
    }
    ASSERT_LE(std::abs(double(fast[i]) - ref[i]),
              tol_logit + 4 * std::numeric_limits<float>::epsilon() * std::abs(ref[i]))
        << what << " lse " << i;
  }
}

// The call throws smyrf::Error whose message contains `part` (the parameter it names), before
// writing anything to the output.
inline void expect_config_error(Problem& pr, const MethodConfig& c, const std::string& part) {
  std::fill(pr.o.begin(), pr.o.end(), 3.0f);
  try {
    attention(pr.params, c);
    ADD_FAILURE() << "no error for " << part;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
  for (float x : pr.o) ASSERT_EQ(x, 3.0f) << "o touched before the error for " << part;
}

// Calls with one Workspace reused (grown by a larger problem in between) give the bits of a call
// with a fresh one.
inline void expect_workspace_reuse_same_bits(Problem& small, Problem& big, const MethodConfig& c) {
  const auto fresh = small.run(c);
  Workspace ws;
  attention(small.params, c, &ws);
  attention(big.params, c, &ws);
  std::fill(small.o.begin(), small.o.end(), 0.0f);
  attention(small.params, c, &ws);
  EXPECT_TRUE(bitwise_equal(fresh, small.output()));
}

}  // namespace smyrf::test
