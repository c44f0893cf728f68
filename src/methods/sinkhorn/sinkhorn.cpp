// Sinkhorn sorting attention: the definition and the fast path are described in sinkhorn.h.
// Two passes: (1) per (b, h): block sums, block logits and the Sinkhorn iterations, in double;
// (2) per (b, h, query block): the sorted block and the block's softmax. Plain loops, compiled
// per SIMD target (element-wise loops the compiler vectorises).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/sinkhorn/sinkhorn.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/call_scratch.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "common/timer.h"
#include "hwy/highway.h"
#include "methods/sinkhorn/sinkhorn.h"
#include "methods/sinkhorn/registration.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace sinkhorn {

// log sum_i exp(x[i * stride]) over n >= 1 values (-inf when every value is -inf).
HWY_INLINE double LogSumExp(const double* x, std::int64_t n, std::int64_t stride) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t i = 0; i < n; ++i) m = std::max(m, x[i * stride]);
  if (std::isinf(m)) return m;
  double s = 0.0;
  for (std::int64_t i = 0; i < n; ++i) s += std::exp(x[i * stride] - m);
  return m + std::log(s);
}

template <class T>
void BlockLogits(const detail::Problem& pr, const SinkhornConfig& c,
                 const detail::TokenLists& lists, const detail::SinkhornPlan& plan,
                 std::int64_t bh, int tid) {
  const std::int64_t b = bh / pr.H, h = bh % pr.H, d = pr.d, NB = plan.NB, bs = plan.bs;
  const std::int64_t nkv = lists.k_count[b], nq = lists.q_count[b];
  if (nkv == 0 || nq == 0) return;
  const std::int64_t nb = detail::sinkhorn_blocks(nkv, bs);
  const std::int32_t* keys = lists.keys(b, pr.Nk);
  const std::int32_t* queries = lists.queries(b, pr.Nq);
  double* ksum = plan.pass1 + static_cast<std::size_t>(tid) * plan.pass1_doubles;
  double* qmean = ksum + NB * d;
  for (std::int64_t a = 0; a < nb; ++a) {
    double* s = ksum + a * d;
    std::fill_n(s, d, 0.0);
    const std::int64_t r1 = std::min(nkv, (a + 1) * bs);
    for (std::int64_t r = a * bs; r < r1; ++r) {
      const T* k = pr.k_row<T>(b, h, keys[r]);
      for (std::int64_t e = 0; e < d; ++e) s[e] += static_cast<double>(detail::to_float(k[e]));
    }
  }
  double* P = plan.P + bh * NB * NB;  // holds L, then P; row stride NB
  if (c.sort_net != nullptr) {
    const float* W = c.sort_net + h * d * NB;
    for (std::int64_t a = 0; a < nb; ++a)
      for (std::int64_t col = 0; col < nb; ++col) {
        double x = 0.0;
        for (std::int64_t e = 0; e < d; ++e)
          x += ksum[a * d + e] * static_cast<double>(W[e * NB + col]);
        P[a * NB + col] = x;
      }
  } else {
    for (std::int64_t a = 0; a < nb; ++a) {
      double* m = qmean + a * d;
      const std::int64_t r0 = a * nq / nb, r1 = (a + 1) * nq / nb;
      if (r1 > r0) {
        std::fill_n(m, d, 0.0);
        for (std::int64_t r = r0; r < r1; ++r) {
          const T* q = pr.q_row<T>(b, h, queries[r]);
          for (std::int64_t e = 0; e < d; ++e) m[e] += static_cast<double>(detail::to_float(q[e]));
        }
        for (std::int64_t e = 0; e < d; ++e) m[e] /= static_cast<double>(r1 - r0);
      } else {  // empty query block: the mean key of block a
        const double len = static_cast<double>(std::min(nkv, (a + 1) * bs) - a * bs);
        for (std::int64_t e = 0; e < d; ++e) m[e] = ksum[a * d + e] / len;
      }
    }
    for (std::int64_t a = 0; a < nb; ++a)
      for (std::int64_t col = 0; col < nb; ++col) {
        const double len = static_cast<double>(std::min(nkv, (col + 1) * bs) - col * bs);
        double x = 0.0;
        for (std::int64_t e = 0; e < d; ++e) x += qmean[a * d + e] * (ksum[col * d + e] / len);
        P[a * NB + col] = static_cast<double>(pr.scale) * x;
      }
  }
  const double inv_temp = 1.0 / static_cast<double>(c.temperature);
  for (std::int64_t a = 0; a < nb; ++a)
    for (std::int64_t col = 0; col < nb; ++col) P[a * NB + col] *= inv_temp;
  for (int it = 0; it < c.iterations; ++it) {
    for (std::int64_t a = 0; a < nb; ++a) {
      const double l = LogSumExp(P + a * NB, nb, 1);
      for (std::int64_t col = 0; col < nb; ++col) P[a * NB + col] -= l;
    }
    for (std::int64_t col = 0; col < nb; ++col) {
      const double l = LogSumExp(P + col, nb, NB);
      for (std::int64_t a = 0; a < nb; ++a) P[a * NB + col] -= l;
    }
  }
  for (std::int64_t a = 0; a < nb; ++a) {
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t col = 0; col < nb; ++col) m = std::max(m, P[a * NB + col]);
    for (std::int64_t col = 0; col < nb; ++col) P[a * NB + col] = std::exp(P[a * NB + col] - m);
  }
}

template <class T>
void AttendBlock(const detail::Problem& pr, const detail::TokenLists& lists,
                 const detail::SinkhornPlan& plan, std::int64_t task, int tid) {
  const std::int64_t NB = plan.NB, bs = plan.bs, d = pr.d, dv = pr.dv;
  const std::int64_t bh = task / NB, a = task % NB;
  const std::int64_t b = bh / pr.H, h = bh % pr.H;
  plan.scores[task] = 0;
  const std::int64_t nkv = lists.k_count[b], nq = lists.q_count[b];
  if (nkv == 0 || nq == 0) return;
  const std::int64_t nb = detail::sinkhorn_blocks(nkv, bs);
  if (a >= nb) return;
  const std::int64_t r0 = a * nq / nb, r1 = (a + 1) * nq / nb;
  plan.scores[task] = a == 0 ? nb * nb : 0;  // the block logits, counted once per (b, h)
  if (r1 <= r0) return;
  const std::int32_t* keys = lists.keys(b, pr.Nk);
  const std::int32_t* queries = lists.queries(b, pr.Nq);
  const double* P = plan.P + bh * NB * NB + a * NB;
  const std::int64_t be = plan.bs_eff;
  // Keys transposed ([d][2 be], so that the scores vectorise over keys), values by row.
  const std::int64_t ldk = 2 * be;
  float* kc = plan.pass2 + static_cast<std::size_t>(tid) * plan.pass2_floats;  // [d][2 be]
  float* vc = kc + 2 * be * d;                                                 // [2 be][dv]
  float* qf = vc + 2 * be * dv;                                                // [d]
  float* s = qf + d;                                                           // [2 be]
  float* acc = s + 2 * be;                                                     // [dv]
  double* dacc = plan.acc + static_cast<std::size_t>(tid) * plan.acc_doubles;
  // Own block.
  std::int64_t n = 0;
  const std::int64_t own1 = std::min(nkv, (a + 1) * bs);
  for (std::int64_t r = a * bs; r < own1; ++r, ++n) {
    const T* k = pr.k_row<T>(b, h, keys[r]);
    const T* v = pr.v_row<T>(b, h, keys[r]);
    for (std::int64_t e = 0; e < d; ++e) kc[e * ldk + n] = detail::to_float(k[e]);
    for (std::int64_t e = 0; e < dv; ++e) vc[n * dv + e] = detail::to_float(v[e]);
  }
  // Sorted rows: weights of the blocks that have a row t.
  const std::int64_t last_len = nkv - (nb - 1) * bs;
  const std::int64_t rows = std::min(bs, nkv);
  for (std::int64_t t = 0; t < rows; ++t) {
    const std::int64_t nblk = t < last_len ? nb : nb - 1;
    double den = 0.0;
    for (std::int64_t col = 0; col < nblk; ++col) den += P[col];
    if (!(den > 0.0)) continue;
    const double inv = 1.0 / den;
    std::fill_n(dacc, d, 0.0);
    for (std::int64_t col = 0; col < nblk; ++col) {
      const double w = P[col];
      if (w == 0.0) continue;
      const T* k = pr.k_row<T>(b, h, keys[col * bs + t]);
      for (std::int64_t e = 0; e < d; ++e)
        dacc[e] += w * static_cast<double>(detail::to_float(k[e]));
    }
    for (std::int64_t e = 0; e < d; ++e) kc[e * ldk + n] = static_cast<float>(dacc[e] * inv);
    std::fill_n(dacc, dv, 0.0);
    for (std::int64_t col = 0; col < nblk; ++col) {
      const double w = P[col];
      if (w == 0.0) continue;
      const T* v = pr.v_row<T>(b, h, keys[col * bs + t]);
      for (std::int64_t e = 0; e < dv; ++e)
        dacc[e] += w * static_cast<double>(detail::to_float(v[e]));
    }
    for (std::int64_t e = 0; e < dv; ++e) vc[n * dv + e] = static_cast<float>(dacc[e] * inv);
    ++n;
  }
  // The block's queries: one softmax over the n keys.
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t i = queries[r];
    const T* q = pr.q_row<T>(b, h, i);
    for (std::int64_t e = 0; e < d; ++e) qf[e] = detail::to_float(q[e]);
    std::fill_n(s, n, 0.0f);
    for (std::int64_t e = 0; e < d; ++e) {
      const float qe = qf[e];
      const float* k = kc + e * ldk;
      for (std::int64_t j = 0; j < n; ++j) s[j] += qe * k[j];
    }
    float mx = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < n; ++j) {
      s[j] *= pr.scale;
      mx = std::max(mx, s[j]);
    }
    float sum = 0.0f;
    std::fill_n(acc, dv, 0.0f);
    for (std::int64_t j = 0; j < n; ++j) {
      const float w = std::exp(s[j] - mx);
      sum += w;
      const float* v = vc + j * dv;
      for (std::int64_t e = 0; e < dv; ++e) acc[e] += w * v[e];
    }
    float* o = pr.o_row(b, h, i);
    const float inv = 1.0f / sum;
    for (std::int64_t e = 0; e < dv; ++e) o[e] = acc[e] * inv;
    if (pr.p->lse != nullptr) pr.p->lse[bh * pr.Nq + i] = mx + std::log(sum);
  }
  plan.scores[task] += n * (r1 - r0);
}

template <class T>
void RunT(const detail::SinkhornArgs& a) {
  const detail::Problem& pr = *a.pr;
  detail::Timer timer;
  detail::parallel_for_tid(pr.B * pr.H, pr.threads, [&](std::int64_t bh, int tid) {
    BlockLogits<T>(pr, *a.config, *a.lists, *a.plan, bh, tid);
  });
  a.info->sort.seconds = timer.lap();
  detail::parallel_for_tid(pr.B * pr.H * a.plan->NB, pr.threads, [&](std::int64_t task, int tid) {
    AttendBlock<T>(pr, *a.lists, *a.plan, task, tid);
  });
  a.info->attention.seconds = timer.lap();
}

}  // namespace sinkhorn

void SinkhornRun(const detail::SinkhornArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { sinkhorn::RunT<decltype(tag)>(a); });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <sstream>
#include <string>

namespace smyrf::detail {
HWY_EXPORT(SinkhornRun);

namespace {

constexpr ConfigFail config_fail{"SinkhornConfig"};
std::string float_str(float x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

}  // namespace

void Method<SinkhornConfig>::check(const SinkhornConfig& c, const Problem& pr) {
  if (c.block_size < 1) config_fail("block_size", std::to_string(c.block_size), "must be >= 1");
  if (c.iterations < 0 || c.iterations > 1000)
    config_fail("iterations", std::to_string(c.iterations), "must be in [0, 1000]");
  if (!std::isfinite(c.temperature) || !(c.temperature > 0.0f))
    config_fail("temperature", float_str(c.temperature), "must be finite and > 0");
  // The sort matrices: B * H * nb^2 doubles, nb = ceil(nk / block_size) (exact in double here).
  const double nb = static_cast<double>(sinkhorn_blocks(pr.Nk, c.block_size));
  const double sort_bytes = 8.0 * static_cast<double>(pr.B * pr.H) * nb * nb;
  if (sort_bytes > 0x1p50)
    config_fail("block_size", std::to_string(c.block_size),
         "too small for nk = " + std::to_string(pr.Nk) + ": the sort matrices (B * H * nb^2 doubles, nb = " +
             float_str(static_cast<float>(nb)) + " blocks) would need " + float_str(static_cast<float>(sort_bytes)) +
             " bytes");
  if (c.sort_net != nullptr) {
    const std::int64_t n = pr.H * pr.d * sinkhorn_blocks(pr.Nk, c.block_size);
    for (std::int64_t i = 0; i < n; ++i)
      if (!std::isfinite(c.sort_net[i]))
        config_fail("sort_net[" + std::to_string(i) + "]", float_str(c.sort_net[i]),
             "must be finite ([heads, d, ceil(nk / block_size)] floats, contiguous)");
  }
}

RunInfo sinkhorn_forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace) {
  Timer timer;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  SinkhornPlan plan{};
  plan.bs = config.block_size;
  plan.bs_eff = std::min<std::int64_t>(config.block_size, pr.Nk);
  plan.NB = sinkhorn_blocks(pr.Nk, config.block_size);
  plan.pass1_doubles = static_cast<std::size_t>(2 * plan.NB * d);
  plan.pass2_floats =
      static_cast<std::size_t>(2 * plan.bs_eff * (d + dv) + d + 2 * plan.bs_eff + dv);
  plan.acc_doubles = static_cast<std::size_t>(std::max(d, dv));
  const std::size_t T = static_cast<std::size_t>(pr.threads);

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t p_slot = arena.add<double>(static_cast<std::size_t>(BH * plan.NB * plan.NB));
  const std::size_t p1_slot = arena.add<double>(plan.pass1_doubles * T);
  const std::size_t p2_slot = arena.add<float>(plan.pass2_floats * T);
  const std::size_t acc_slot = arena.add<double>(plan.acc_doubles * T);
  const std::size_t scores_slot = arena.add<std::int64_t>(static_cast<std::size_t>(BH * plan.NB));
  const TokenLists lists = scratch.bind();
  plan.P = arena.at<double>(p_slot);
  plan.pass1 = arena.at<double>(p1_slot);
  plan.pass2 = arena.at<float>(p2_slot);
  plan.acc = arena.at<double>(acc_slot);
  plan.scores = arena.at<std::int64_t>(scores_slot);
  zero_unattended_rows(pr, lists);

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  const SinkhornArgs args{&pr, &config, &lists, &plan, &info};
  HWY_DYNAMIC_DISPATCH(SinkhornRun)(args);
  for (std::int64_t t = 0; t < BH * plan.NB; ++t)
    info.attention_scores += static_cast<std::size_t>(plan.scores[t]);
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
