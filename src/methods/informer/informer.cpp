// Informer ProbSparse attention: the definition and the fast path are described in informer.h.
// Three passes: (1) the sample scores and M of every active query, per (b, h, query block);
// (2) per (b, h): the selection of the exact queries and the lazy means in one pass over the
// positions (double running sums); (3) the exact queries, per (b, h, group of query tiles), on
// the shared key-set kernel (AttendGroup) against every visible key (causal: CausalMask).
// Training reruns passes 1 and 2 for the selection (a constant of the gradient), runs the exact
// queries on the group engine (group_train-inl.h) and the lazy means' gradient to V by one
// running sum per (b, h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/informer/informer.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "common/timer.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/keyset-inl.h"
#include "kernels/group_train-inl.h"
#include "methods/informer/informer.h"
#include "methods/informer/registration.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace informer {

// Pass 1: M of the active queries of block `blk` of (b, h); the fma chains of four samples run
// interleaved (each chain's bits are those of informer_score).
template <class T>
void MeasureT(const detail::InformerArgs& a) {
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const std::int64_t d = pr.d;
  const std::uint64_t seed = pr.p->seed;
  const double scale = static_cast<double>(pr.scale);
  detail::parallel_for(pr.B * pr.H * a.blocks, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / a.blocks, blk = task % a.blocks;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nq = lists.q_count[b], nkv = lists.k_count[b];
    const std::int64_t r0 = blk * detail::kInformerQueryBlock;
    const std::int64_t r1 = std::min(nq, r0 + detail::kInformerQueryBlock);
    a.scores[task] = 0;
    if (r0 >= r1 || nkv == 0) return;
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::int64_t U = detail::informer_samples(*a.config, nkv);
    std::int64_t scores = 0;
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t i = queries[r];
      const std::int64_t c =
          pr.p->causal ? detail::informer_seen(keys, nkv, pr.key_position(i)) : nkv;
      if (c == 0) continue;
      const T* q = pr.q_row<T>(b, h, i);
      double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
      for (std::int64_t t0 = 0; t0 < U; t0 += 4) {
        const std::int64_t n = std::min<std::int64_t>(4, U - t0);
        const T* k[4];
        for (std::int64_t t = 0; t < 4; ++t)
          k[t] = pr.k_row<T>(
              b, h, keys[spec::informer_sample_index(seed, i, t0 + std::min(t, n - 1), c)]);
        double x0 = 0.0, x1 = 0.0, x2 = 0.0, x3 = 0.0;
        for (std::int64_t e = 0; e < d; ++e) {
          const double qe = static_cast<double>(detail::to_float(q[e]));
          x0 = std::fma(qe, static_cast<double>(detail::to_float(k[0][e])), x0);
          x1 = std::fma(qe, static_cast<double>(detail::to_float(k[1][e])), x1);
          x2 = std::fma(qe, static_cast<double>(detail::to_float(k[2][e])), x2);
          x3 = std::fma(qe, static_cast<double>(detail::to_float(k[3][e])), x3);
        }
        const double s[4] = {std::fma(scale, x0, 0.0), std::fma(scale, x1, 0.0),
                             std::fma(scale, x2, 0.0), std::fma(scale, x3, 0.0)};
        for (std::int64_t t = 0; t < n; ++t) {
          mx = std::max(mx, s[t]);
          sum += s[t];
        }
      }
      a.m[bh * pr.Nq + i] = mx - sum / static_cast<double>(U);
      scores += U;
    }
    a.scores[task] = scores;
  });
}

// Pass 3: the exact queries of (b, h), one group of query tiles per task.
template <class T>
void ExactT(const detail::InformerArgs& a) {
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const detail::RoundScratch layout = detail::RoundScratch::make(
      a.key_cap, static_cast<std::size_t>(pr.d), static_cast<std::size_t>(pr.dv));
  const std::int64_t G = static_cast<std::int64_t>(detail::kDenseQueryTile);
  detail::parallel_for_tid(pr.B * pr.H * a.groups, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / a.groups, g = task % a.groups;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    a.scores[task] = 0;
    const std::int64_t n = a.n_selected[bh];
    const std::int64_t s0 = g * G, s1 = std::min(n, s0 + G);
    if (s0 >= s1) return;
    const std::int32_t* qpos = a.selected + bh * pr.Nq + s0;
    const std::int32_t* kpos = lists.keys(b, pr.Nk);
    const std::size_t nk = static_cast<std::size_t>(lists.k_count[b]);
    float* scratch = a.scratch + static_cast<std::size_t>(tid) * a.scratch_floats;
    const GroupOutput out{nullptr, true, pr.p->lse};
    const std::size_t mq = static_cast<std::size_t>(s1 - s0);
    std::size_t visible;
    if (pr.p->causal)
      visible = AttendGroup<T>(pr, b, h, qpos, mq, kpos, nk, CausalMask{pr.Nk - pr.Nq}, out, layout,
                               scratch);
    else
      visible = AttendGroup<T>(pr, b, h, qpos, mq, kpos, nk, NoMask{}, out, layout, scratch);
    a.scores[task] = static_cast<std::int64_t>(visible);
  });
}

}  // namespace informer

void InformerTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<detail::CausalPairs>& set,
                         float* pk, float* pv, float* scratch, std::size_t per_thread) {
  RunTrainGroups(a, set, pk, pv, scratch, per_thread);
}

void InformerMeasure(const detail::InformerArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { informer::MeasureT<decltype(tag)>(a); });
}
void InformerExact(const detail::InformerArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { informer::ExactT<decltype(tag)>(a); });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <sstream>
#include <string>
#include <vector>

namespace smyrf::detail {
HWY_EXPORT(InformerMeasure);
HWY_EXPORT(InformerExact);
HWY_EXPORT(InformerTrainGroups);

namespace {

constexpr ConfigFail config_fail{"InformerConfig"};

// Pass 2 for (b, h): selection, then the lazy means by one walk over the positions.
// With `means` false only the selection (exact flags) is made.
template <class T>
void select_and_mean(const InformerArgs& a, std::int64_t bh, double* sum, bool means) {
  const Problem& pr = *a.pr;
  const TokenLists& lists = *a.lists;
  const std::int64_t b = bh / pr.H, h = bh % pr.H, dv = pr.dv;
  const std::int64_t nq = lists.q_count[b], nkv = lists.k_count[b];
  const std::int32_t* queries = lists.queries(b, pr.Nq);
  const std::int32_t* keys = lists.keys(b, pr.Nk);
  std::int32_t* sel = a.selected + bh * pr.Nq;
  std::uint8_t* exact = a.exact + bh * pr.Nq;
  std::int64_t n = 0;
  // Eligible queries (active, seeing a key), then the top u by (M desc, position asc).
  for (std::int64_t r = 0; r < nq; ++r) {
    const std::int64_t i = queries[r];
    exact[i] = 0;
    const std::int64_t c = pr.p->causal ? informer_seen(keys, nkv, pr.key_position(i)) : nkv;
    if (c > 0) sel[n++] = static_cast<std::int32_t>(i);
  }
  const double* m = a.m + bh * pr.Nq;
  const std::int64_t u = std::min(informer_top(*a.config, nq), n);
  auto key = [&](std::int32_t i) {  // NaN (non-finite inputs without checks) ranks last
    const double x = m[i];
    return std::isnan(x) ? -std::numeric_limits<double>::infinity() : x;
  };
  std::partial_sort(sel, sel + u, sel + n, [&](std::int32_t x, std::int32_t y) {
    const double kx = key(x), ky = key(y);
    return kx > ky || (kx == ky && x < y);
  });
  std::sort(sel, sel + u);
  for (std::int64_t t = 0; t < u; ++t) exact[sel[t]] = 1;
  a.n_selected[bh] = static_cast<std::int32_t>(u);
  if (!means) return;
  // Lazy queries: the mean of V over the keys they see.
  std::fill_n(sum, dv, 0.0);
  std::int64_t kp = 0;
  auto add_until = [&](std::int64_t last) {
    for (; kp < nkv && keys[kp] <= last; ++kp) {
      const T* v = pr.v_row<T>(b, h, keys[kp]);
      for (std::int64_t x = 0; x < dv; ++x) sum[x] += static_cast<double>(to_float(v[x]));
    }
  };
  if (!pr.p->causal) add_until(pr.Nk);
  for (std::int64_t r = 0; r < nq; ++r) {
    const std::int64_t i = queries[r];
    if (pr.p->causal) add_until(pr.key_position(i));
    if (exact[i]) continue;
    float* o = pr.o_row(b, h, i);
    float* lse = pr.p->lse != nullptr ? pr.p->lse + bh * pr.Nq + i : nullptr;
    if (kp == 0) {
      std::fill_n(o, dv, 0.0f);
      if (lse) *lse = -std::numeric_limits<float>::infinity();
      continue;
    }
    const double inv = 1.0 / static_cast<double>(kp);
    for (std::int64_t x = 0; x < dv; ++x) o[x] = static_cast<float>(sum[x] * inv);
    if (lse) *lse = static_cast<float>(std::log(static_cast<double>(kp)));
  }
}

}  // namespace

void Method<InformerConfig>::check(const InformerConfig& c, const Problem&) {
  if (!std::isfinite(c.factor) || !(c.factor > 0.0f)) {
    std::ostringstream s;
    s << c.factor;
    config_fail("factor", s.str(), "must be finite and > 0");
  }
  if (c.top_queries < 0)
    config_fail("top_queries", std::to_string(c.top_queries),
         "must be >= 0 (0 = min(n_q, ceil(factor ln n_q)))");
  if (c.sample_keys < 0)
    config_fail("sample_keys", std::to_string(c.sample_keys),
         "must be >= 0 (0 = min(n_k, ceil(factor ln n_k)))");
}

namespace {

// The forward; with `exact_out` only passes 1 and 2's selection run (nothing is written to O or
// lse) and exact_out gets the exact-query flags [BH * Nq].
RunInfo informer_run(const Problem& pr, const InformerConfig& config, Workspace* workspace,
                     std::vector<std::uint8_t>* exact_out) {
  Timer timer;
  const std::int64_t BH = pr.B * pr.H;
  const std::int64_t blocks = (pr.Nq + kInformerQueryBlock - 1) / kInformerQueryBlock;
  const std::int64_t G = static_cast<std::int64_t>(kDenseQueryTile);
  // Groups per (b, h): enough for the largest u any batch element can have.
  const std::int64_t u_max = informer_top(config, pr.Nq);
  const std::int64_t groups = std::max<std::int64_t>((u_max + G - 1) / G, 1);
  const std::size_t key_cap = static_cast<std::size_t>(std::min<std::int64_t>(pr.Nk, 4096));
  const RoundScratch layout =
      RoundScratch::make(key_cap, static_cast<std::size_t>(pr.d), static_cast<std::size_t>(pr.dv));
  const std::size_t per_task = static_cast<std::size_t>(std::max(blocks, groups));

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t m_slot = arena.add<double>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t sel_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t nsel_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH));
  const std::size_t exact_slot = arena.add<std::uint8_t>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t sums_slot = arena.add<double>(static_cast<std::size_t>(pr.threads * pr.dv));
  const std::size_t scratch_slot =
      arena.add<float>(layout.total() * static_cast<std::size_t>(pr.threads));
  const std::size_t scores_slot = arena.add<std::int64_t>(static_cast<std::size_t>(BH) * per_task);
  const TokenLists lists = scratch.bind();
  const bool select_only = exact_out != nullptr;
  if (!select_only) zero_unattended_rows(pr, lists);

  InformerArgs a{&pr,
                 &lists,
                 &config,
                 blocks,
                 groups,
                 arena.at<double>(m_slot),
                 arena.at<std::int32_t>(sel_slot),
                 arena.at<std::int32_t>(nsel_slot),
                 arena.at<std::uint8_t>(exact_slot),
                 arena.at<double>(sums_slot),
                 arena.at<float>(scratch_slot),
                 layout.total(),
                 key_cap,
                 arena.at<std::int64_t>(scores_slot)};
  RunInfo info;
  info.workspace_bytes = arena.bytes();
  auto add_scores = [&](std::int64_t tasks) {
    for (std::int64_t t = 0; t < tasks; ++t)
      info.attention_scores += static_cast<std::size_t>(a.scores[t]);
  };
  HWY_DYNAMIC_DISPATCH(InformerMeasure)(a);
  add_scores(BH * blocks);
  info.transform.seconds = timer.lap();
  with_input_type(pr.dtype, [&](auto tag) {
    parallel_for_tid(BH, pr.threads, [&](std::int64_t bh, int tid) {
      select_and_mean<decltype(tag)>(a, bh, a.sums + static_cast<std::size_t>(tid * pr.dv), !select_only);
    });
  });
  info.sort.seconds = timer.lap();
  if (select_only) {
    exact_out->assign(static_cast<std::size_t>(BH * pr.Nq), 0);
    for (std::int64_t bh = 0; bh < BH; ++bh)
      for (std::int32_t t = 0; t < a.n_selected[bh]; ++t)
        (*exact_out)[static_cast<std::size_t>(bh * pr.Nq + a.selected[bh * pr.Nq + t])] = 1;
    return info;
  }
  HWY_DYNAMIC_DISPATCH(InformerExact)(a);
  add_scores(BH * groups);
  info.attention.seconds = timer.lap();
  return info;
}

}  // namespace

RunInfo informer_forward(const Problem& pr, const InformerConfig& config, Workspace* workspace) {
  return informer_run(pr, config, workspace, nullptr);
}

std::vector<std::uint8_t> informer_exact_queries(const Problem& pr, const InformerConfig& config) {
  std::vector<std::uint8_t> exact;
  informer_run(pr, config, nullptr, &exact);
  return exact;
}

namespace {

// The exact queries of each (b, h) against every visible key (causal: the causal cut), one
// group per (b, h), one launch.
TrainGroups<CausalPairs> informer_train_groups(const Problem& pr, const std::vector<std::uint8_t>& exact) {
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();
  const CausalPairs mask{pr.p->causal, pr.Nk - pr.Nq};
  TrainGroups<CausalPairs> set;
  std::vector<std::int32_t> queries;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      queries.clear();
      for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
        const std::int32_t i = lists.queries(b, pr.Nq)[t];
        if (exact[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)]) queries.push_back(i);
      }
      set.add(b, h, 0, queries.data(), queries.size(), lists.keys(b, pr.Nk),
              static_cast<std::size_t>(lists.k_count[b]), mask);
    }
  set.finish();
  return set;
}

// 1 for each active query that is not exact.
std::vector<std::uint8_t> lazy_queries(const Problem& pr, std::vector<std::uint8_t> exact) {
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        std::uint8_t& x = exact[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)];
        x = pr.query_active(b, i) && x == 0 ? 1 : 0;
      }
  return exact;
}

void run_informer_groups(const TrainArgs& a, const TrainGroups<CausalPairs>& set, float* pk, float* pv,
                         float* scratch, std::size_t per_thread) {
  HWY_DYNAMIC_DISPATCH(InformerTrainGroups)(a, set, pk, pv, scratch, per_thread);
}

// The lazy queries' gradient, to V only: dV_j += dO_i / c_i for every lazy query i that sees
// key j. Per (b, h), one walk over the keys in descending position with a running sum in double
// of dO_i / c_i over the lazy queries that see the key (non-causal: all of them), so the cost
// is O((n_q + n_k) dv) and the bits do not depend on the thread count.
void lazy_value_gradients(const Problem& pr, const GradientParams& g, const std::vector<std::uint8_t>& exact) {
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();
  const AttentionParams& p = *pr.p;
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H, dv = pr.dv;
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    if (nk == 0) return;
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    std::vector<double> acc(static_cast<std::size_t>(dv), 0.0);
    std::int64_t r = nq - 1;
    for (std::int64_t kp = nk - 1; kp >= 0; --kp) {
      for (; r >= 0 && (!p.causal || pr.key_position(queries[r]) >= keys[kp]); --r) {
        const std::int32_t i = queries[r];
        if (exact[static_cast<std::size_t>(bh * pr.Nq + i)]) continue;
        const std::int64_t c = p.causal ? informer_seen(keys, nk, pr.key_position(i)) : nk;
        const float* go = g.grad_o + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
        for (std::int64_t x = 0; x < dv; ++x)
          acc[static_cast<std::size_t>(x)] += static_cast<double>(go[x]) / static_cast<double>(c);
      }
      float* gv = g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + keys[kp] * p.v_row_stride;
      for (std::int64_t x = 0; x < dv; ++x) gv[x] += static_cast<float>(acc[static_cast<std::size_t>(x)]);
    }
  });
}

}  // namespace

RunInfo Method<InformerConfig>::forward(const Problem& pr, const InformerConfig& config, Workspace* workspace) {
  RunInfo info = informer_forward(pr, config, workspace);
  if (pr.p->dropout > 0.0f)
    groups_dropout_forward(pr, pr.p->lse, informer_train_groups(pr, informer_exact_queries(pr, config)),
                           workspace, run_informer_groups);
  return info;
}

RunInfo Method<InformerConfig>::backward(const Problem& pr, const GradientParams& grads,
                                         const InformerConfig& config, Workspace* workspace) {
  const std::vector<std::uint8_t> exact = informer_exact_queries(pr, config);
  RunInfo info = groups_backward(pr, grads, informer_train_groups(pr, exact), workspace, run_informer_groups);
  lazy_value_gradients(pr, grads, exact);
  return info;
}

KeyPairs Method<InformerConfig>::key_pairs(const Problem& pr, const InformerConfig& config) {
  const std::vector<std::uint8_t> exact = informer_exact_queries(pr, config);
  KeyPairs pairs = group_pairs(pr, informer_train_groups(pr, exact));
  const std::vector<std::uint8_t> lazy = lazy_queries(pr, exact);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::size_t at = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        if (!lazy[at]) continue;
        for (std::int64_t j = 0; j < pr.Nk; ++j)
          if (pr.sees(b, i, j)) pairs[at].emplace_back(0, static_cast<std::int32_t>(j));
      }
  return pairs;
}

std::vector<std::uint8_t> Method<InformerConfig>::uniform_queries(const Problem& pr, const InformerConfig& config) {
  return lazy_queries(pr, informer_exact_queries(pr, config));
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
