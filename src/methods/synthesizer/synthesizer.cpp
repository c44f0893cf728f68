// Synthesizer attention: the definition and the fast paths are described in synthesizer.h.
// The random kind's rows run in per-target code (Highway: max, exp and sum of a logit row);
// the dense kind builds a sub-problem for the dense kernel.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/synthesizer/synthesizer.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"
#include "methods/synthesizer/synthesizer.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace synthesizer {

// ---- random kind: task (h, query block). The block's logit rows are drawn (default) or read
// once, then every batch element attends with them. ----
template <class T>
void RandomT(const detail::SynthRandomArgs& a) {
  const detail::Problem& pr = *a.pr;
  const SynthesizerConfig& c = *a.config;
  const detail::TokenLists& lists = *a.lists;
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, dv = pr.dv;
  const std::int64_t QB = detail::kSynthQueryBlock, blocks = a.blocks;
  const std::size_t ldv = detail::pad_floats(static_cast<std::size_t>(dv));
  // Pack the V rows of the visible keys of every (b, h) once.
  detail::parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    const std::int32_t* keys = lists.keys(b, Nk);
    PackValues([&](std::size_t j) { return pr.v_row<T>(b, h, keys[j]); },
               static_cast<std::size_t>(lists.k_count[b]), static_cast<std::size_t>(dv),
               a.vp + static_cast<std::size_t>(bh) * Nk * ldv, ldv);
  });
  detail::parallel_for_tid(H * blocks, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t h = task / blocks, blk = task % blocks;
    const std::int64_t i0 = blk * QB, i1 = std::min(Nq, i0 + QB), m = i1 - i0;
    float* acc = a.scratch + static_cast<std::size_t>(tid) * a.per_thread;  // [QB][ldv], aligned
    float* prob = acc + detail::pad_floats(static_cast<std::size_t>(QB) * ldv);   // [QB][Nk]
    float* drawn = prob + detail::pad_floats(static_cast<std::size_t>(QB * Nk));  // [QB][Nk]
    // Columns the block can use: all, or (causal) up to the last row's limit.
    const std::int64_t jmax =
        pr.p->causal ? std::min(Nk, std::max<std::int64_t>(pr.key_position(i1 - 1) + 1, 0)) : Nk;
    const float* rows;
    if (c.logits != nullptr) {
      rows = c.logits + (h * Nq + i0) * Nk;
    } else {
      for (std::int64_t r = 0; r < m; ++r)
        for (std::int64_t j = 0; j < jmax; ++j)
          drawn[r * Nk + j] = spec::synthesizer_default_logit(pr.p->seed, h, i0 + r, j, Nk);
      rows = drawn;
    }
    const spec::Dropout drop(pr.p->dropout, pr.p->seed);
    std::int64_t scores = 0;
    std::int64_t cnt[detail::kSynthQueryBlock];
    float inv[detail::kSynthQueryBlock];
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int32_t* keys = lists.keys(b, Nk);
      const std::int64_t nkv = lists.k_count[b];
      const bool all_keys = nkv == Nk;  // keys[t] == t
      std::int64_t tmax = 0;
      for (std::int64_t r = 0; r < m; ++r) {
        const std::int64_t i = i0 + r;
        cnt[r] = 0;
        if (!pr.query_active(b, i)) continue;
        std::int64_t n = nkv;
        if (pr.p->causal)
          n = std::upper_bound(keys, keys + nkv, pr.key_position(i),
                               [](std::int64_t x, std::int32_t k) { return x < k; }) -
              keys;
        cnt[r] = n;
        if (n == 0) continue;
        const float* lrow = rows + r * Nk;
        float* prow = prob + r * Nk;
        const float* src = lrow;
        if (!all_keys) {
          for (std::int64_t t = 0; t < n; ++t) prow[t] = lrow[keys[t]];
          src = prow;
        }
        float sum;
        const float mx = SoftmaxRow(src, prow, n, &sum);
        inv[r] = 1.0f / sum;
        if (pr.p->lse != nullptr) pr.p->lse[(b * H + h) * Nq + i] = mx + std::log(sum);
        if (drop.active()) {
          const std::uint64_t stream = drop.row(b, h, 0, i);
          for (std::int64_t t = 0; t < n; ++t) prow[t] *= drop.factor(stream, keys[t]);
        }
        tmax = std::max(tmax, n);
        scores += n;
      }
      // P.V on the packed V rows of (b, h); rows shorter than tmax padded with zeros.
      for (std::int64_t r = 0; r < m; ++r)
        std::fill(prob + r * Nk + cnt[r], prob + r * Nk + tmax, 0.0f);
      std::fill_n(acc, static_cast<std::size_t>(m) * ldv, 0.0f);
      PVAccumulate(prob, static_cast<std::size_t>(Nk), static_cast<std::size_t>(m),
                   static_cast<std::size_t>(tmax),
                   a.vp + static_cast<std::size_t>(b * H + h) * Nk * ldv, ldv, acc, ldv);
      for (std::int64_t r = 0; r < m; ++r) {
        float* o = pr.o_row(b, h, i0 + r);
        if (cnt[r] == 0) {
          std::fill_n(o, dv, 0.0f);
          continue;
        }
        const float* arow = acc + static_cast<std::size_t>(r) * ldv;
        for (std::int64_t x = 0; x < dv; ++x) o[x] = arow[x] * inv[r];
      }
    }
    a.counts[task] = scores;
  });
}

// ---- random kind, backward (f32). Phase 1, task (h, query block): per batch element, P from
// the logits and the forward's lse, dO.V^T on the tile kernel, dS = P (M dO.V - D) summed into
// the block's dlogits rows (double, batch order). Phase 2, task (h, key block): per batch
// element, dV of the block's keys = (P M)^T dO over the queries in order. ----
void RandomBackwardT(const detail::SynthRandomBackwardArgs& a) {
  const detail::Problem& pr = *a.pr;
  const SynthesizerConfig& c = *a.config;
  const detail::TokenLists& lists = *a.lists;
  const GradientParams& g = *a.g;
  const AttentionParams& p = *pr.p;
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, dv = pr.dv;
  const std::int64_t QB = detail::kSynthQueryBlock, KB = detail::kSynthKeyBlock;
  const std::size_t ldv = detail::pad_floats(static_cast<std::size_t>(dv));
  const std::size_t ldk = detail::pad_floats(static_cast<std::size_t>(Nk));
  const spec::Dropout drop(p.dropout, p.seed);
  const auto logit = [&](std::int64_t h, std::int64_t i, std::int64_t j) {
    return c.logits != nullptr ? c.logits[(h * Nq + i) * Nk + j]
                               : spec::synthesizer_default_logit(p.seed, h, i, j, Nk);
  };
  // Packed operands: V^T of the visible keys and the dO rows, per (b, h).
  detail::parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    const std::int32_t* keys = lists.keys(b, Nk);
    PackKeysTransposed([&](std::size_t j) { return pr.v_row<float>(b, h, keys[j]); },
                       static_cast<std::size_t>(lists.k_count[b]), static_cast<std::size_t>(dv),
                       a.vt + static_cast<std::size_t>(bh) * dv * ldk, ldk);
    PackValues([&](std::size_t i) {
                 return g.grad_o + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
               },
               static_cast<std::size_t>(Nq), static_cast<std::size_t>(dv),
               a.dop + static_cast<std::size_t>(bh) * Nq * ldv, ldv);
  });
  // Phase 1: dlogits.
  if (c.grad_logits != nullptr) {
    detail::parallel_for_tid(H * a.qblocks, pr.threads, [&](std::int64_t task, int tid) {
      const std::int64_t h = task / a.qblocks, blk = task % a.qblocks;
      const std::int64_t i0 = blk * QB, i1 = std::min(Nq, i0 + QB), m = i1 - i0;
      float* dp = a.scratch + static_cast<std::size_t>(tid) * a.per_thread;  // [QB][ldk]
      double* sum = a.sums + static_cast<std::size_t>(tid) * QB * Nk;        // [QB][Nk]
      std::fill_n(sum, m * Nk, 0.0);
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t bh = b * H + h;
        const std::int32_t* keys = lists.keys(b, Nk);
        const std::int64_t nkv = lists.k_count[b];
        if (nkv == 0) continue;
        std::fill_n(dp, static_cast<std::size_t>(m) * ldk, 0.0f);
        PVAccumulate(a.dop + (static_cast<std::size_t>(bh) * Nq + i0) * ldv, ldv, static_cast<std::size_t>(m),
                     static_cast<std::size_t>(dv), a.vt + static_cast<std::size_t>(bh) * dv * ldk, ldk, dp, ldk);
        for (std::int64_t r = 0; r < m; ++r) {
          const std::int64_t i = i0 + r;
          const float lse = g.lse[bh * Nq + i];
          if (!pr.query_active(b, i) || !(lse > -std::numeric_limits<float>::infinity())) continue;
          std::int64_t n = nkv;
          if (p.causal)
            n = std::upper_bound(keys, keys + nkv, pr.key_position(i),
                                 [](std::int64_t x, std::int32_t k) { return x < k; }) -
                keys;
          const float D = a.delta[bh * Nq + i];
          const std::uint64_t stream = drop.active() ? drop.row(b, h, 0, i) : 0;
          const float* dpr = dp + static_cast<std::size_t>(r) * ldk;
          double* srow = sum + r * Nk;
          for (std::int64_t t = 0; t < n; ++t) {
            const std::int64_t j = keys[t];
            const float pij = std::exp(logit(h, i, j) - lse);
            const float mij = drop.active() ? drop.factor(stream, j) : 1.0f;
            srow[j] += static_cast<double>(pij * (mij * dpr[t] - D));
          }
        }
      }
      for (std::int64_t r = 0; r < m; ++r)
        for (std::int64_t j = 0; j < Nk; ++j)
          c.grad_logits[(h * Nq + i0 + r) * Nk + j] = static_cast<float>(sum[r * Nk + j]);
    });
  }
  // Phase 2: dV by key blocks (positions); each task draws (default) or reads its logit columns.
  detail::parallel_for_tid(H * a.kblocks, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t h = task / a.kblocks, blk = task % a.kblocks;
    const std::int64_t j0 = blk * KB, j1 = std::min(Nk, j0 + KB), w = j1 - j0;
    float* acc = a.scratch + static_cast<std::size_t>(tid) * a.per_thread;      // [KB][ldv]
    float* pt = acc + detail::pad_floats(static_cast<std::size_t>(KB) * ldv);      // [QB][KB]
    float* cols = pt + detail::pad_floats(static_cast<std::size_t>(QB * KB));      // [Nq][KB]
    for (std::int64_t i = 0; i < Nq; ++i)
      for (std::int64_t j = j0; j < j1; ++j) cols[i * KB + (j - j0)] = logit(h, i, j);
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t bh = b * H + h;
      std::fill_n(acc, static_cast<std::size_t>(KB) * ldv, 0.0f);
      for (std::int64_t i0 = 0; i0 < Nq; i0 += QB) {
        const std::int64_t m = std::min(QB, Nq - i0);
        for (std::int64_t r = 0; r < m; ++r) {
          const std::int64_t i = i0 + r;
          float* prow = pt + r * KB;
          const float lse = g.lse[bh * Nq + i];
          const bool live = pr.query_active(b, i) && lse > -std::numeric_limits<float>::infinity();
          const std::uint64_t stream = drop.active() && live ? drop.row(b, h, 0, i) : 0;
          for (std::int64_t j = j0; j < j1; ++j) {
            const bool seen = live && pr.key_visible(b, j) && (!p.causal || j <= pr.key_position(i));
            float x = 0.0f;
            if (seen) {
              x = std::exp(cols[i * KB + (j - j0)] - lse);
              if (drop.active()) x *= drop.factor(stream, j);
            }
            prow[j - j0] = x;
          }
        }
        PVAccumulate<true>(pt, static_cast<std::size_t>(KB), static_cast<std::size_t>(w), static_cast<std::size_t>(m),
                           a.dop + (static_cast<std::size_t>(bh) * Nq + i0) * ldv, ldv, acc, ldv);
      }
      for (std::int64_t j = j0; j < j1; ++j) {
        float* gv = g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + j * p.v_row_stride;
        const float* arow = acc + static_cast<std::size_t>(j - j0) * ldv;
        for (std::int64_t x = 0; x < dv; ++x) gv[x] = pr.key_visible(b, j) ? arow[x] : 0.0f;
      }
    }
  });
}

}  // namespace synthesizer

void SynthRandom(const detail::SynthRandomArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { synthesizer::RandomT<decltype(tag)>(a); });
}
void SynthRandomBackward(const detail::SynthRandomBackwardArgs& a) { synthesizer::RandomBackwardT(a); }

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "methods/synthesizer/registration.h"
#include "common/parallel.h"
#include "common/timer.h"
#include "methods/dense/dense.h"
#include "methods/train/train.h"

namespace smyrf::detail {
HWY_EXPORT(SynthRandom);
HWY_EXPORT(SynthRandomBackward);

namespace {

constexpr ConfigFail config_fail{"SynthesizerConfig"};
std::string float_str(float x) {
  std::ostringstream s;
  s << x;
  return s.str();
}
// Every element of a given array must be finite; the error names the first bad index.
void require_finite(const char* field, const float* a, std::int64_t n) {
  if (a == nullptr) return;
  // A vectorisable scan of the exponent bits first (the arrays can hold H Nq Nk logits).
  std::uint32_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, a + i, sizeof bits);
    bad |= static_cast<std::uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
  }
  if (bad == 0) return;
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(a[i]))
      config_fail(std::string(field) + "[" + std::to_string(i) + "]", float_str(a[i]), "must be finite");
}

// An input row converted to float.
template <class T>
void load_row(const T* src, std::int64_t n, float* dst) {
  for (std::int64_t c = 0; c < n; ++c) dst[c] = to_float(src[c]);
}

// ---- dense kind ----

// The dense kind's sub-problem: queries h'_i = [relu(W1^T q_i + b1), 1] ([B, H, Nq, hp]) and
// keys k'_j = [w2[:, j], b2_j] ([H, Nk, hp], or one copy per batch element for the backward,
// whose key gradients are per batch element), with the weights used (given or drawn).
struct DenseRows {
  float* qh = nullptr;
  float* kh = nullptr;
  std::int64_t kh_batch_stride = 0;
  const float* w1 = nullptr;
  const float* b1 = nullptr;
};

struct DenseSlots {
  std::size_t qh, kh, w1, b1, v;
};

DenseSlots plan_dense(Arena& arena, const Problem& pr, const SynthesizerConfig& c, bool per_batch_keys,
                      bool convert_v) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, hidden = c.hidden, hp = hidden + 1;
  DenseSlots s;
  s.qh = arena.add<float>(static_cast<std::size_t>(B * H * Nq * hp));
  s.kh = arena.add<float>(static_cast<std::size_t>((per_batch_keys ? B : 1) * H * Nk * hp));
  s.w1 = arena.add<float>(c.w1 == nullptr ? static_cast<std::size_t>(H * d * hidden) : 0);
  s.b1 = arena.add<float>(c.b1 == nullptr ? static_cast<std::size_t>(H * hidden) : 0);
  s.v = arena.add<float>(convert_v ? static_cast<std::size_t>(B * H * Nk * pr.dv) : 0);
  return s;
}

template <class T>
DenseRows build_dense_rows(const Problem& pr, const SynthesizerConfig& c, Arena& arena, const DenseSlots& slots,
                           bool per_batch_keys) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d;
  const std::int64_t hidden = c.hidden, hp = hidden + 1;
  DenseRows rows;
  rows.qh = arena.at<float>(slots.qh);
  rows.kh = arena.at<float>(slots.kh);
  rows.kh_batch_stride = per_batch_keys ? H * Nk * hp : 0;
  // Weights: given, or the seeded defaults (materialised once per head).
  rows.w1 = c.w1;
  if (rows.w1 == nullptr) {
    float* w = arena.at<float>(slots.w1);
    parallel_for(H, pr.threads, [&](std::int64_t h) {
      for (std::int64_t t = 0; t < d; ++t)
        for (std::int64_t u = 0; u < hidden; ++u)
          w[(h * d + t) * hidden + u] = spec::synthesizer_default_w1(pr.p->seed, h, t, u, d, hidden);
    });
    rows.w1 = w;
  }
  rows.b1 = c.b1;
  if (rows.b1 == nullptr) {
    float* z = arena.at<float>(slots.b1);
    std::fill_n(z, H * hidden, 0.0f);
    rows.b1 = z;
  }
  // Keys k'_j = [w2[:, j], b2_j] (w2 transposed), per head (and batch element).
  float* kh = rows.kh;
  parallel_for(H, pr.threads, [&](std::int64_t h) {
    float* kt = kh + h * Nk * hp;
    for (std::int64_t u = 0; u < hidden; ++u)
      for (std::int64_t j = 0; j < Nk; ++j)
        kt[j * hp + u] = c.w2 != nullptr ? c.w2[(h * hidden + u) * Nk + j]
                                         : spec::synthesizer_default_w2(pr.p->seed, h, u, j, Nk, hidden);
    for (std::int64_t j = 0; j < Nk; ++j) kt[j * hp + hidden] = c.b2 != nullptr ? c.b2[h * Nk + j] : 0.0f;
  });
  if (per_batch_keys)
    for (std::int64_t b = 1; b < B; ++b) std::copy_n(kh, H * Nk * hp, kh + b * H * Nk * hp);
  // Queries h'_i = [relu(W1^T q_i + b1), 1] of the active queries (others are zero rows).
  const std::int64_t blocks = (Nq + kSynthQueryBlock - 1) / kSynthQueryBlock;
  const float* w1 = rows.w1;
  const float* b1 = rows.b1;
  float* qh = rows.qh;
  parallel_for(B * H * blocks, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / blocks, blk = task % blocks;
    const std::int64_t b = bh / H, h = bh % H;
    const float* w = w1 + h * d * hidden;
    const float* bias = b1 + h * hidden;
    const std::int64_t i1 = std::min(Nq, (blk + 1) * kSynthQueryBlock);
    for (std::int64_t i = blk * kSynthQueryBlock; i < i1; ++i) {
      float* out = qh + (bh * Nq + i) * hp;
      if (!pr.query_active(b, i)) {
        std::fill_n(out, hp, 0.0f);
        continue;
      }
      const T* q = pr.q_row<T>(b, h, i);
      std::copy_n(bias, hidden, out);
      for (std::int64_t t = 0; t < d; ++t) {
        const float qt = to_float(q[t]);
        const float* wt = w + t * hidden;
        for (std::int64_t u = 0; u < hidden; ++u) out[u] += qt * wt[u];
      }
      for (std::int64_t u = 0; u < hidden; ++u) out[u] = std::max(out[u], 0.0f);
      out[hidden] = 1.0f;
    }
  });
  return rows;
}

// The sub-problem's params: exact attention with scale 1 between h' and k' (masks, causality,
// dropout, O and lse those of the call); V converted to f32 in `vf` when given.
AttentionParams dense_sub_params(const Problem& pr, const SynthesizerConfig& c, const DenseRows& rows,
                                 const float* vf) {
  const std::int64_t H = pr.H, Nq = pr.Nq, Nk = pr.Nk, dv = pr.dv, hp = c.hidden + 1;
  AttentionParams sub = *pr.p;
  sub.d = hp;
  sub.dtype = DType::f32;
  sub.q = rows.qh;
  sub.q_batch_stride = H * Nq * hp;
  sub.q_head_stride = Nq * hp;
  sub.q_row_stride = hp;
  sub.k = rows.kh;
  sub.k_batch_stride = rows.kh_batch_stride;
  sub.k_head_stride = Nk * hp;
  sub.k_row_stride = hp;
  if (vf != nullptr) {
    sub.v = vf;
    sub.v_batch_stride = H * Nk * dv;
    sub.v_head_stride = Nk * dv;
    sub.v_row_stride = dv;
  }
  sub.scale = 1.0f;
  sub.check_finite = false;
  sub.num_threads = pr.threads;
  return sub;
}

RunInfo synthesizer_dense(const Problem& pr, const SynthesizerConfig& c, Workspace* workspace) {
  const std::int64_t B = pr.B, H = pr.H, Nk = pr.Nk, dv = pr.dv;
  const bool convert_v = pr.dtype != DType::f32;
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const DenseSlots slots = plan_dense(arena, pr, c, false, convert_v);
  scratch.bind();
  DenseRows rows;
  with_input_type(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    rows = build_dense_rows<T>(pr, c, arena, slots, false);
    if (convert_v) {
      float* vf = arena.at<float>(slots.v);
      parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
        const std::int64_t b = bh / H, h = bh % H;
        for (std::int64_t j = 0; j < Nk; ++j) load_row(pr.v_row<T>(b, h, j), dv, vf + (bh * Nk + j) * dv);
      });
    }
  });
  const AttentionParams sub = dense_sub_params(pr, c, rows, convert_v ? arena.at<float>(slots.v) : nullptr);
  const Problem sub_pr = checked_problem(sub);
  RunInfo info = dense_forward(sub_pr, nullptr);
  if (sub.dropout > 0.0f) dropout_forward(sub_pr, DenseConfig{}, sub.lse, nullptr);
  info.workspace_bytes += arena.bytes();
  return info;
}

// The dense kind's backward: the sub-problem's backward (dense kernels) gives dh' and dk', then
// the chain through the net (contract: synthesizer.h, "Backward").
RunInfo synthesizer_dense_backward(const Problem& pr, const GradientParams& g, const SynthesizerConfig& c,
                                   Workspace* workspace) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d;
  const std::int64_t hidden = c.hidden, hp = hidden + 1;
  const AttentionParams& p = *pr.p;
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const DenseSlots slots = plan_dense(arena, pr, c, true, false);
  const std::size_t dq_slot = arena.add<float>(static_cast<std::size_t>(B * H * Nq * hp));
  const std::size_t dk_slot = arena.add<float>(static_cast<std::size_t>(B * H * Nk * hp));
  scratch.bind();
  const DenseRows rows = build_dense_rows<float>(pr, c, arena, slots, true);
  float* dqh = arena.at<float>(dq_slot);
  float* dkh = arena.at<float>(dk_slot);
  const AttentionParams sub = dense_sub_params(pr, c, rows, nullptr);
  RunInfo info = train_backward(checked_problem(sub), GradientParams{g.o, g.lse, g.grad_o, dqh, dkh, g.grad_v},
                                DenseConfig{}, nullptr);
  // relu's derivative: g_iu = dh'_iu where a_iu > 0 (in place).
  parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
    for (std::int64_t i = 0; i < Nq; ++i) {
      const float* a = rows.qh + (bh * Nq + i) * hp;
      float* gi = dqh + (bh * Nq + i) * hp;
      for (std::int64_t u = 0; u < hidden; ++u)
        if (!(a[u] > 0.0f)) gi[u] = 0.0f;
    }
  });
  // dQ = W1 g (masked queries: g = 0), dK = 0.
  parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    const float* w = rows.w1 + h * d * hidden;
    for (std::int64_t i = 0; i < Nq; ++i) {
      const float* gi = dqh + (bh * Nq + i) * hp;
      float* dq = g.grad_q + b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride;
      for (std::int64_t t = 0; t < d; ++t) {
        float acc = 0.0f;
        const float* wt = w + t * hidden;
        for (std::int64_t u = 0; u < hidden; ++u) acc += wt[u] * gi[u];
        dq[t] = acc;
      }
    }
    for (std::int64_t j = 0; j < Nk; ++j)
      std::fill_n(g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride, d, 0.0f);
  });
  // The net's gradients: sums over (b, i) in order, in double; tasks (h, row of the weight).
  if (c.grad_w1 != nullptr || c.grad_b1 != nullptr) {
    parallel_for(H * (d + 1), pr.threads, [&](std::int64_t task) {
      const std::int64_t h = task / (d + 1), t = task % (d + 1);  // t == d: b1
      if (t == d ? c.grad_b1 == nullptr : c.grad_w1 == nullptr) return;
      std::vector<double> acc(static_cast<std::size_t>(hidden), 0.0);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < Nq; ++i) {
          if (!pr.query_active(b, i)) continue;
          const float* gi = dqh + ((b * H + h) * Nq + i) * hp;
          const double x = t == d ? 1.0 : static_cast<double>(pr.q_row<float>(b, h, i)[t]);
          for (std::int64_t u = 0; u < hidden; ++u) acc[u] += x * gi[u];
        }
      float* out = t == d ? c.grad_b1 + h * hidden : c.grad_w1 + (h * d + t) * hidden;
      for (std::int64_t u = 0; u < hidden; ++u) out[u] = static_cast<float>(acc[u]);
    });
  }
  if (c.grad_w2 != nullptr || c.grad_b2 != nullptr) {
    parallel_for(H * hp, pr.threads, [&](std::int64_t task) {
      const std::int64_t h = task / hp, u = task % hp;  // u == hidden: b2
      if (u == hidden ? c.grad_b2 == nullptr : c.grad_w2 == nullptr) return;
      float* out = u == hidden ? c.grad_b2 + h * Nk : c.grad_w2 + (h * hidden + u) * Nk;
      for (std::int64_t j = 0; j < Nk; ++j) {
        double acc = 0.0;
        for (std::int64_t b = 0; b < B; ++b) acc += dkh[((b * H + h) * Nk + j) * hp + u];
        out[j] = static_cast<float>(acc);
      }
    });
  }
  info.workspace_bytes += arena.bytes();
  return info;
}

RunInfo synthesizer_random(const Problem& pr, const SynthesizerConfig& c, Workspace* workspace) {
  const std::int64_t QB = kSynthQueryBlock, Nk = pr.Nk;
  const std::int64_t blocks = (pr.Nq + QB - 1) / QB;
  const std::size_t ldv = pad_floats(static_cast<std::size_t>(pr.dv));
  const std::size_t per_thread =
      pad_floats(static_cast<std::size_t>(QB) * ldv) +
      pad_floats(static_cast<std::size_t>(QB * Nk)) +
      pad_floats(c.logits == nullptr ? static_cast<std::size_t>(QB * Nk) : 0);
  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t scratch_slot =
      arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  const std::size_t count_slot = arena.add<std::int64_t>(static_cast<std::size_t>(pr.H * blocks));
  const std::size_t vp_slot = arena.add<float>(static_cast<std::size_t>(pr.B * pr.H * Nk) * ldv);
  const TokenLists lists = scratch.bind();
  const SynthRandomArgs args{&pr,
                             &c,
                             &lists,
                             blocks,
                             arena.at<float>(scratch_slot),
                             per_thread,
                             arena.at<float>(vp_slot),
                             arena.at<std::int64_t>(count_slot)};
  HWY_DYNAMIC_DISPATCH(SynthRandom)(args);
  RunInfo info;
  info.workspace_bytes = arena.bytes();
  for (std::int64_t t = 0; t < pr.H * blocks; ++t)
    info.attention_scores += static_cast<std::size_t>(args.counts[t]);
  return info;
}

RunInfo synthesizer_random_backward(const Problem& pr, const GradientParams& g, const SynthesizerConfig& c,
                                    Workspace* workspace) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
  const std::int64_t QB = kSynthQueryBlock, KB = kSynthKeyBlock;
  const std::size_t ldv = pad_floats(static_cast<std::size_t>(dv));
  const std::size_t ldk = pad_floats(static_cast<std::size_t>(Nk));
  const std::vector<float> delta = gradient_delta(pr, g);
  const std::size_t per_thread =
      std::max(pad_floats(static_cast<std::size_t>(QB) * ldk),
               pad_floats(static_cast<std::size_t>(KB) * ldv) + pad_floats(static_cast<std::size_t>(QB * KB)) +
                   pad_floats(static_cast<std::size_t>(Nq * KB)));
  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t scratch_slot = arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  const std::size_t sums_slot = arena.add<double>(
      c.grad_logits != nullptr ? static_cast<std::size_t>(QB * Nk) * static_cast<std::size_t>(pr.threads) : 0);
  const std::size_t vt_slot = arena.add<float>(static_cast<std::size_t>(B * H * dv) * ldk);
  const std::size_t dop_slot = arena.add<float>(static_cast<std::size_t>(B * H * Nq) * ldv);
  const TokenLists lists = scratch.bind();
  const SynthRandomBackwardArgs args{&pr,
                                     &c,
                                     &lists,
                                     &g,
                                     delta.data(),
                                     (Nq + QB - 1) / QB,
                                     (Nk + KB - 1) / KB,
                                     arena.at<float>(scratch_slot),
                                     per_thread,
                                     c.grad_logits != nullptr ? arena.at<double>(sums_slot) : nullptr,
                                     arena.at<float>(vt_slot),
                                     arena.at<float>(dop_slot)};
  HWY_DYNAMIC_DISPATCH(SynthRandomBackward)(args);
  // The queries and keys are not read: zero gradients.
  const AttentionParams& p = *pr.p;
  parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / H, h = bh % H;
    for (std::int64_t i = 0; i < Nq; ++i)
      std::fill_n(g.grad_q + b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride, d, 0.0f);
    for (std::int64_t j = 0; j < Nk; ++j)
      std::fill_n(g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride, d, 0.0f);
  });
  RunInfo info;
  info.workspace_bytes = arena.bytes() + delta.size() * sizeof(float);
  return info;
}

}  // namespace

void Method<SynthesizerConfig>::check(const SynthesizerConfig& c, const Problem& pr) {
  const std::int64_t H = pr.H, d = pr.d, Nq = pr.Nq, Nk = pr.Nk;
  if (c.kind == SynthesizerKind::dense) {
    if (c.hidden < 1 || c.hidden > 65536)
      config_fail("hidden", std::to_string(c.hidden), "must be in [1, 65536]");
    if (c.logits != nullptr)
      config_fail("logits", ptr_str(c.logits), "must be nullptr with kind = dense (random kind only)");
    const std::int64_t hid = c.hidden;
    require_finite("w1", c.w1, H * d * hid);
    require_finite("b1", c.b1, H * hid);
    require_finite("w2", c.w2, H * hid * Nk);
    require_finite("b2", c.b2, H * Nk);
  } else if (c.kind == SynthesizerKind::random) {
    const std::pair<const char*, const float*> dense_only[] = {
        {"w1", c.w1}, {"b1", c.b1}, {"w2", c.w2}, {"b2", c.b2}};
    for (const auto& [name, a] : dense_only)
      if (a != nullptr)
        config_fail(name, ptr_str(a), "must be nullptr with kind = random (dense kind only)");
    require_finite("logits", c.logits, H * Nq * Nk);
  } else {
    config_fail("kind", std::to_string(static_cast<int>(c.kind)),
         "must be SynthesizerKind::dense or SynthesizerKind::random");
  }
  // Gradients of learned parts: only of a part that is given (a default is not a parameter), and
  // double values only of a given part.
  const SynthesizerDoubleParts none;
  const SynthesizerDoubleParts& f64 = c.f64 != nullptr ? *c.f64 : none;
  const bool dense = c.kind == SynthesizerKind::dense;
  struct Part {
    const char* name;
    const float* input;
    const void* grad;
    const void* value64;
    const void* grad64;
    bool read;
  };
  const Part parts[] = {{"w1", c.w1, c.grad_w1, f64.w1, f64.grad_w1, dense},
                        {"b1", c.b1, c.grad_b1, f64.b1, f64.grad_b1, dense},
                        {"w2", c.w2, c.grad_w2, f64.w2, f64.grad_w2, dense},
                        {"b2", c.b2, c.grad_b2, f64.b2, f64.grad_b2, dense},
                        {"logits", c.logits, c.grad_logits, f64.logits, f64.grad_logits, !dense}};
  for (const Part& x : parts) {
    const std::string field = x.name;
    for (const auto& [name, grad] : {std::pair{"grad_" + field, x.grad}, std::pair{"f64->grad_" + field, x.grad64}}) {
      if (grad == nullptr) continue;
      if (!x.read)
        config_fail(name, ptr_str(grad),
                    std::string("must be nullptr with kind = ") + (dense ? "dense" : "random") + " (" + field +
                        " is not read)");
      if (x.input == nullptr)
        config_fail(name, ptr_str(grad),
                    "must be nullptr: SynthesizerConfig." + field + " = nullptr (the default is not a parameter)");
    }
    if (x.value64 != nullptr && x.input == nullptr)
      config_fail("f64->" + field, ptr_str(x.value64),
                  "replaces SynthesizerConfig." + field + ", which is nullptr: give both or neither");
  }
}

RunInfo synthesizer_forward(const Problem& pr, const SynthesizerConfig& config,
                            Workspace* workspace) {
  Timer timer;
  RunInfo info;
  if (config.kind == SynthesizerKind::dense) {
    info = synthesizer_dense(pr, config, workspace);
  } else {
    info = synthesizer_random(pr, config, workspace);
  }
  info.attention.seconds = timer.seconds();
  return info;
}

RunInfo synthesizer_backward(const Problem& pr, const GradientParams& grads, const SynthesizerConfig& config,
                             Workspace* workspace) {
  Timer timer;
  RunInfo info = config.kind == SynthesizerKind::dense ? synthesizer_dense_backward(pr, grads, config, workspace)
                                                       : synthesizer_random_backward(pr, grads, config, workspace);
  info.attention.seconds = timer.seconds();
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
