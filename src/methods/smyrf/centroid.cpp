// SMYRF with centroid key selection (SmyrfConfig::keys = KeySelection::centroid): queries in
// clusters of consecutive active positions; each cluster attends, exactly, to the keys with
// the largest inner product with its mean query. One task per (batch, head, query cluster);
// every task writes its own O rows, so no merge is needed.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/smyrf/centroid.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "hwy/highway.h"
#include "kernels/bf16_dot-inl.h"
#include "methods/smyrf/forward.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace centroid {

template <class T>
void AttendT(const detail::CentroidArgs& a) {
  using detail::kDenseKeyTile;
  using detail::kDenseQueryTile;
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const detail::RoundScratch& layout = a.layout;
  const std::size_t ldk = layout.ldk, ldv = layout.ldv;
  const std::int64_t qc = a.q_cluster, groups = a.max_groups;

  detail::parallel_for_tid(pr.B * pr.H * groups, pr.threads, [&](std::int64_t task, int tid) {
    a.scores_per_task[task] = 0;
    const std::int64_t bh = task / groups, g = task % groups;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    const std::int64_t g0 = g * qc, g1 = std::min(nq, g0 + qc);
    if (nk == 0 || g0 >= nq) return;
    const std::int32_t* queries = lists.queries(b, pr.Nq) + g0;
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::size_t m_all = static_cast<std::size_t>(g1 - g0);

    // The cluster's mean query, and its inner product with every visible key (double).
    detail::CentroidScratch& cs = a.per_thread[tid];
    std::fill(cs.centroid.begin(), cs.centroid.end(), 0.0);
    for (std::size_t i = 0; i < m_all; ++i) {
      const T* q = pr.q_row<T>(b, h, queries[i]);
      for (std::size_t c = 0; c < d; ++c) cs.centroid[c] += static_cast<double>(detail::to_float(q[c]));
    }
    for (std::int64_t j = 0; j < nk; ++j) {
      const T* k = pr.k_row<T>(b, h, keys[j]);
      double s = 0;
      for (std::size_t c = 0; c < d; ++c) s += cs.centroid[c] * static_cast<double>(detail::to_float(k[c]));
      cs.score[static_cast<std::size_t>(j)] = pr.scale < 0 ? -s : s;
    }
    // Top n_sel by (score descending, position ascending), then in position order.
    const std::int64_t n_sel = std::min<std::int64_t>(a.k_cluster, nk);
    std::int32_t* idx = cs.order.data();
    std::iota(idx, idx + nk, 0);
    auto better = [&](std::int32_t x, std::int32_t y) {
      const double sx = cs.score[static_cast<std::size_t>(x)], sy = cs.score[static_cast<std::size_t>(y)];
      return sx > sy || (sx == sy && x < y);
    };
    if (n_sel < nk) std::nth_element(idx, idx + n_sel, idx + nk, better);
    std::sort(idx, idx + n_sel);
    for (std::int64_t t = 0; t < n_sel; ++t) idx[t] = keys[idx[t]];
    if (a.capture) {
      std::int32_t* out = a.capture + task * a.k_cluster;
      std::copy(idx, idx + n_sel, out);
      std::fill(out + n_sel, out + a.k_cluster, -1);
    }
    if (a.select_only) return;

    float* s = a.scratch + static_cast<std::size_t>(tid) * layout.total();
    float* acc = s + layout.s_floats();
    float* row_max = acc + layout.acc_floats();
    float* row_sum = row_max + detail::pad_floats(kDenseQueryTile);
    float* inv = row_sum + detail::pad_floats(kDenseQueryTile);
    float* lse = inv + detail::pad_floats(kDenseQueryTile);
    float* q_buffer = row_max + layout.state_floats();
    float* kt = q_buffer + layout.q_floats();
    float* vp = kt + layout.kt_floats();
    const std::size_t n_keys = static_cast<std::size_t>(n_sel);
    PackKeysForScores<T>(false, [&](std::size_t j) { return pr.k_row<T>(b, h, idx[j]); }, n_keys, d, kt, ldk);
    PackValues([&](std::size_t j) { return pr.v_row<T>(b, h, idx[j]); }, n_keys, dv, vp, ldv);
    for (std::size_t q0 = 0; q0 < m_all; q0 += kDenseQueryTile) {
      const std::size_t m = std::min(kDenseQueryTile, m_all - q0);
      QueryTile tile_q;
      PrepareQueries<T>(false, [&](std::size_t i) { return pr.q_row<T>(b, h, queries[q0 + i]); }, m, d,
                        q_buffer, detail::pad_floats(d), &tile_q);
      ResetTileState(m, ldv, row_max, row_sum, acc);
      for (std::size_t j0 = 0; j0 < n_keys; j0 += kDenseKeyTile) {
        const std::size_t n = std::min(kDenseKeyTile, n_keys - j0);
        TileScores(false, tile_q, m, d, kt, ldk, j0, n, pr.scale, s, kDenseKeyTile);
        SoftmaxUpdate(s, kDenseKeyTile, m, n, row_max, row_sum, acc, ldv);
        PVAccumulate(s, kDenseKeyTile, m, n, vp + j0 * ldv, ldv, acc, ldv);
      }
      FinalizeRows(m, row_max, row_sum, inv, lse);
      for (std::size_t i = 0; i < m; ++i) ScaleRowTo(acc + i * ldv, inv[i], pr.o_row(b, h, queries[q0 + i]), dv);
      if (pr.p->lse != nullptr)
        for (std::size_t i = 0; i < m; ++i) pr.p->lse[(b * pr.H + h) * pr.Nq + queries[q0 + i]] = lse[i];
    }
    // Scores: the centroid's against every visible key, then the cluster's queries against
    // the selected keys.
    a.scores_per_task[task] = nk + static_cast<std::int64_t>(m_all) * n_sel;
  });
}

}  // namespace centroid

void CentroidAttend(const detail::CentroidArgs& args) {
  detail::with_input_type(args.pr->dtype,
                          [&](auto tag) { centroid::AttendT<decltype(tag)>(args); });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "methods/smyrf/registration.h"
#include "common/timer.h"

namespace smyrf::detail {
HWY_EXPORT(CentroidAttend);

RunInfo smyrf_centroid_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace,
                               std::vector<std::int32_t>* capture, bool select_only) {
  Timer total;
  const RoundScratch layout = RoundScratch::make(
      static_cast<std::size_t>(std::min<std::int64_t>(config.k_cluster_size, pr.Nk)),
      static_cast<std::size_t>(pr.d), static_cast<std::size_t>(pr.dv));
  const std::int64_t qc = config.q_cluster_size;
  const std::int64_t groups = (pr.Nq + qc - 1) / qc;
  const std::size_t tasks = static_cast<std::size_t>(pr.B * pr.H * groups);

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t scratch_slot = arena.add<float>(layout.total() * static_cast<std::size_t>(pr.threads));
  const std::size_t scores_slot = arena.add<std::int64_t>(tasks);
  const TokenLists lists = scratch.bind();
  if (!select_only) zero_unattended_rows(pr, lists);

  std::vector<CentroidScratch> per_thread(static_cast<std::size_t>(pr.threads));
  for (CentroidScratch& c : per_thread) {
    c.centroid.resize(static_cast<std::size_t>(pr.d));
    c.score.resize(static_cast<std::size_t>(pr.Nk));
    c.order.resize(static_cast<std::size_t>(pr.Nk));
  }
  RunInfo info;
  info.workspace_bytes = arena.bytes() + static_cast<std::size_t>(pr.threads) *
                                             (static_cast<std::size_t>(pr.d) * sizeof(double) +
                                              static_cast<std::size_t>(pr.Nk) * (sizeof(double) + sizeof(std::int32_t)));
  if (capture) capture->assign(tasks * static_cast<std::size_t>(config.k_cluster_size), -2);
  const CentroidArgs args{&pr, &lists, arena.at<float>(scratch_slot), layout, qc, config.k_cluster_size,
                          groups, arena.at<std::int64_t>(scores_slot), per_thread.data(),
                          capture ? capture->data() : nullptr, select_only};
  Timer attn;
  HWY_DYNAMIC_DISPATCH(CentroidAttend)(args);
  info.attention.seconds = attn.seconds();
  for (std::size_t t = 0; t < tasks; ++t) info.attention_scores += static_cast<std::size_t>(args.scores_per_task[t]);
  info.seconds_total = total.seconds();
  return info;
}

std::vector<std::vector<std::int32_t>> centroid_keys(const Problem& pr, const SmyrfConfig& config) {
  std::vector<std::int32_t> capture;
  smyrf_centroid_forward(pr, config, nullptr, &capture);
  std::vector<std::vector<std::int32_t>> out;
  const std::size_t k = static_cast<std::size_t>(config.k_cluster_size);
  for (std::size_t t = 0; t * k < capture.size(); ++t) {
    if (capture[t * k] == -2) continue;  // a task without queries or keys
    std::vector<std::int32_t> sel;
    for (std::size_t u = 0; u < k && capture[t * k + u] >= 0; ++u) sel.push_back(capture[t * k + u]);
    out.push_back(sel);
  }
  return out;
}

TrainGroups<CausalPairs> smyrf_centroid_train_groups(const Problem& pr, const SmyrfConfig& config) {
  std::vector<std::int32_t> capture;
  smyrf_centroid_forward(pr, config, nullptr, &capture, true);
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();
  const std::int64_t qc = config.q_cluster_size, kc = config.k_cluster_size;
  const std::int64_t groups = (pr.Nq + qc - 1) / qc;
  TrainGroups<CausalPairs> set;
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H, nq = lists.q_count[b];
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int32_t* sel = capture.data() + (bh * groups + g) * kc;
      if (sel[0] < 0) continue;  // no queries or no keys: the forward left the task untouched
      const std::int64_t g0 = g * qc, m = std::min(nq, g0 + qc) - g0;
      const std::int64_t n = std::find(sel, sel + kc, -1) - sel;
      set.add(b, h, 0, lists.queries(b, pr.Nq) + g0, static_cast<std::size_t>(m), sel,
              static_cast<std::size_t>(n), CausalPairs{});
    }
  }
  set.finish();
  return set;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
