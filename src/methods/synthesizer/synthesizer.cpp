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

// out[0, n) <- exp(row - max); returns the max and (in *sum) the sum of the exponentials.
// out may be row.
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

}  // namespace synthesizer

void SynthRandom(const detail::SynthRandomArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { synthesizer::RandomT<decltype(tag)>(a); });
}

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

namespace smyrf::detail {
HWY_EXPORT(SynthRandom);

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
RunInfo synthesizer_dense(const Problem& pr, const SynthesizerConfig& c, Workspace* workspace) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
  const std::int64_t hidden = c.hidden, hp = hidden + 1;
  const bool convert_v = pr.dtype != DType::f32;

  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const std::size_t qh_slot = arena.add<float>(static_cast<std::size_t>(B * H * Nq * hp));
  const std::size_t kh_slot = arena.add<float>(static_cast<std::size_t>(H * Nk * hp));
  const std::size_t w1_slot =
      arena.add<float>(c.w1 == nullptr ? static_cast<std::size_t>(H * d * hidden) : 0);
  const std::size_t b1_slot =
      arena.add<float>(c.b1 == nullptr ? static_cast<std::size_t>(H * hidden) : 0);
  const std::size_t v_slot =
      arena.add<float>(convert_v ? static_cast<std::size_t>(B * H * Nk * dv) : 0);
  scratch.bind();
  float* qh = arena.at<float>(qh_slot);
  float* kh = arena.at<float>(kh_slot);

  // Weights: given, or the seeded defaults (materialised once per head).
  const float* w1 = c.w1;
  if (w1 == nullptr) {
    float* w = arena.at<float>(w1_slot);
    parallel_for(H, pr.threads, [&](std::int64_t h) {
      for (std::int64_t t = 0; t < d; ++t)
        for (std::int64_t u = 0; u < hidden; ++u)
          w[(h * d + t) * hidden + u] = spec::synthesizer_default_w1(pr.p->seed, h, t, u, d, hidden);
    });
    w1 = w;
  }
  const float* b1 = c.b1;
  if (b1 == nullptr) {
    float* z = arena.at<float>(b1_slot);
    std::fill_n(z, H * hidden, 0.0f);
    b1 = z;
  }
  // Keys k'_j = [w2[:, j], b2_j] (w2 transposed), per head.
  parallel_for(H, pr.threads, [&](std::int64_t h) {
    float* kt = kh + h * Nk * hp;
    for (std::int64_t u = 0; u < hidden; ++u)
      for (std::int64_t j = 0; j < Nk; ++j)
        kt[j * hp + u] = c.w2 != nullptr ? c.w2[(h * hidden + u) * Nk + j]
                                         : spec::synthesizer_default_w2(pr.p->seed, h, u, j, Nk, hidden);
    for (std::int64_t j = 0; j < Nk; ++j)
      kt[j * hp + hidden] = c.b2 != nullptr ? c.b2[h * Nk + j] : 0.0f;
  });
  // Queries h'_i = [relu(W1^T q_i + b1), 1] of the active queries (others are not read).
  const std::int64_t blocks = (Nq + kSynthQueryBlock - 1) / kSynthQueryBlock;
  with_input_type(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
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
    if (convert_v) {
      float* vf = arena.at<float>(v_slot);
      parallel_for(B * H, pr.threads, [&](std::int64_t bh) {
        const std::int64_t b = bh / H, h = bh % H;
        for (std::int64_t j = 0; j < Nk; ++j)
          load_row(pr.v_row<T>(b, h, j), dv, vf + (bh * Nk + j) * dv);
      });
    }
  });

  // The sub-problem: exact attention with scale 1 between h' and k'.
  const AttentionParams& p = *pr.p;
  AttentionParams sub = p;
  sub.d = hp;
  sub.dtype = DType::f32;
  sub.q = qh;
  sub.q_batch_stride = H * Nq * hp;
  sub.q_head_stride = Nq * hp;
  sub.q_row_stride = hp;
  sub.k = kh;
  sub.k_batch_stride = 0;
  sub.k_head_stride = Nk * hp;
  sub.k_row_stride = hp;
  if (convert_v) {
    sub.v = arena.at<float>(v_slot);
    sub.v_batch_stride = H * Nk * dv;
    sub.v_head_stride = Nk * dv;
    sub.v_row_stride = dv;
  }
  sub.scale = 1.0f;
  sub.check_finite = false;
  sub.dropout = 0.0f;
  sub.num_threads = pr.threads;
  const Problem sub_pr = checked_problem(sub);
  RunInfo info = dense_forward(sub_pr, nullptr);
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

}  // namespace smyrf::detail
#endif  // HWY_ONCE
