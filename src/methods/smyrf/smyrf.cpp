// SMYRF forward: hash and sort (clustering.cpp), then for each round attention inside every
// (batch, head, cluster) with the shared tile kernels, merged into O on the fly.
//
// Merging (Daras et al. 2020, eq. 6; as in Reformer): with o_r, lse_r a query's output and
// logsumexp in round r, O = sum_r softmax_r(lse_r) o_r. Rounds run one after another and each
// query keeps a running (max lse, sum of weights), so O itself is the only per-round state:
// no n_hashes x Nq x dv buffer. Within a round every query is in exactly one cluster, so the
// tasks of a round write disjoint rows.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/smyrf/smyrf.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/phases.h"
#include "common/problem.h"
#include "hwy/highway.h"
#include "hwy/cache_control.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/attention_tile-inl.h"
#include "kernels/keyset-inl.h"
#include "kernels/group_train-inl.h"
#include "methods/smyrf/clustering.h"
#include "methods/smyrf/forward.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace lsh {

// SMYRF's phase timers as hooks of the group engine: the time since the last event goes to
// gather (prefetch and packing), attention (scores, softmax, P.V) or merge (writing or blending
// O rows).
struct PhaseHooks {
  detail::PhaseTicks* ticks;
  mutable std::uint64_t last;
  void lap(std::uint64_t detail::PhaseTicks::*phase) const {
    const std::uint64_t now = detail::ticks();
    ticks->*phase += now - last;
    last = now;
  }
  void packed() const { lap(&detail::PhaseTicks::gather); }
  void attended(std::size_t) const { lap(&detail::PhaseTicks::attention); }
  void merged(std::size_t) const { lap(&detail::PhaseTicks::merge); }
};

// One round: query cluster c attends to key cluster c on the shared group engine (causal: with
// the causal mask), written into O (round 0) or merged into it by logsumexp.
template <class T>
void AttendRoundT(const detail::RoundArgs& args) {
  const detail::Problem& pr = *args.pr;
  const detail::TokenLists& lists = *args.lists;
  const detail::SortedTokens& sorted = *args.sorted;
  const int round = args.round;
  const std::int64_t max_clusters = args.max_clusters;
  const std::int64_t clusters_per_task = args.clusters_per_task;
  const int R = sorted.rounds;
  const GroupOutput out{args.merge, round == 0, nullptr};

  // Tasks are runs of clusters_per_task consecutive clusters: fewer scheduling events, and while
  // one cluster is computed the rows of the next are prefetched (they are gathered from
  // random positions, which the hardware prefetcher cannot predict).
  const std::int64_t chunks = (max_clusters + clusters_per_task - 1) / clusters_per_task;
  detail::parallel_for_tid(pr.B * pr.H * chunks, pr.threads, [&](std::int64_t task, int tid) {
    args.scores_per_task[task] = 0;
    const std::int64_t bh = task / chunks, chunk = task % chunks;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t C = sorted.n_clusters[b];
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    // With one cluster every round sees the same sets: round 0 is the whole answer.
    if (nk == 0 || (C == 1 && round > 0)) return;
    const std::int32_t* q_order = sorted.q_sorted + (bh * R + round) * pr.Nq;
    const std::int32_t* k_order = sorted.k_sorted + (bh * R + round) * pr.Nk;
    const std::int64_t c_begin = chunk * clusters_per_task;
    const std::int64_t c_end = std::min(C, c_begin + clusters_per_task);
    float* scratch = args.scratch + static_cast<std::size_t>(tid) * args.layout.total();
    std::int64_t scores = 0;
    for (std::int64_t c = c_begin; c < c_end; ++c) {
      const detail::IndexRange qr = detail::query_cluster(c, nq, C);
      if (qr.end <= qr.begin) continue;
      const detail::IndexRange kr = detail::key_cluster(c, nk, C);
      const PhaseHooks hooks{&args.phase_ticks[tid], detail::ticks()};
      if (c + 1 < c_end) {
        const detail::IndexRange nq_r = detail::query_cluster(c + 1, nq, C);
        const detail::IndexRange nk_r = detail::key_cluster(c + 1, nk, C);
        PrefetchGroupRows(pr, b, h, q_order, nq_r.begin, nq_r.end, k_order, nk_r.begin, nk_r.end);
      }
      const std::int32_t* qidx = q_order + qr.begin;
      const std::int32_t* kidx = k_order + kr.begin;
      const std::size_t mq = static_cast<std::size_t>(qr.end - qr.begin);
      const std::size_t n_keys = static_cast<std::size_t>(kr.end - kr.begin);
      scores += static_cast<std::int64_t>(
          pr.p->causal
              ? AttendGroup<T>(pr, b, h, qidx, mq, kidx, n_keys, CausalMask{pr.Nk - pr.Nq}, out, args.layout,
                               scratch, hooks)
              : AttendGroup<T>(pr, b, h, qidx, mq, kidx, n_keys, NoMask{}, out, args.layout, scratch, hooks));
    }
    args.scores_per_task[task] = scores;
  });
}

// Causal SMYRF: a query that saw no key in any round (merge state still {-inf, 0}) attends to
// the up to `window` nearest visible keys at positions <= its own (SmyrfConfig's fallback).
template <class T>
void CausalFallbackT(const detail::Problem& pr, const detail::TokenLists& lists,
                     const detail::MergeState* merge, float* scratch,
                     const detail::RoundScratch& layout, std::size_t window) {
  detail::parallel_for_tid(pr.B * pr.H, pr.threads, [&](std::int64_t bh, int tid) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::int32_t nk = lists.k_count[b];
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    float* s = scratch + static_cast<std::size_t>(tid) * layout.total();
    for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
      const std::int32_t i = queries[t];
      if (merge[static_cast<std::size_t>(bh * pr.Nq + i)].sum > 0.0f) continue;
      const std::size_t end = static_cast<std::size_t>(
          std::upper_bound(keys, keys + nk, pr.key_position(i)) - keys);
      const std::size_t begin = end - std::min(end, window);
      AttendGroup<T>(pr, b, h, &i, 1, keys + begin, end - begin, NoMask{},
                     GroupOutput{nullptr, true, pr.p->lse}, layout, s);
    }
  });
}

}  // namespace lsh

void SmyrfCausalFallback(const detail::Problem& pr, const detail::TokenLists& lists,
                         const detail::MergeState* merge, float* scratch,
                         const detail::RoundScratch& layout, std::size_t window) {
  detail::with_input_type(pr.dtype, [&](auto tag) {
    lsh::CausalFallbackT<decltype(tag)>(pr, lists, merge, scratch, layout, window);
  });
}

void SmyrfTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<detail::CausalPairs>& set,
                      float* pk, float* pv, float* scratch, std::size_t per_thread) {
  RunTrainGroups(a, set, pk, pv, scratch, per_thread);
}

void SmyrfAttendRound(const detail::RoundArgs& args) {
  detail::with_input_type(args.pr->dtype,
                          [&](auto tag) { lsh::AttendRoundT<decltype(tag)>(args); });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "methods/smyrf/registration.h"
#include "common/timer.h"
#include "methods/dense/dense.h"
#include "methods/smyrf/forward.h"

namespace smyrf::detail {
HWY_EXPORT(SmyrfAttendRound);
HWY_EXPORT(SmyrfCausalFallback);
HWY_EXPORT(SmyrfTrainGroups);

// Bytes model of the clustered rounds (see common/phases.h): per round and head, the gather
// reads and writes the keys' K and V rows, the attention reads Q rows and the packed tiles,
// the merge writes O (round 0) or reads and writes it.
void add_round_bytes(const Problem& pr, const SmyrfConfig& config, const TokenLists& lists,
                     const SortedTokens& sorted, RunInfo& info) {
  const double f = sizeof(float);
  for (std::int64_t b = 0; b < pr.B; ++b) {
    const double nq = lists.q_count[b], nk = lists.k_count[b];
    const double C = static_cast<double>(sorted.n_clusters[b]);
    if (nk == 0) continue;
    const double rounds = sorted.n_clusters[b] == 1 ? 1.0 : config.n_hashes;
    const double keys = std::max(nk, C);  // keys packed per round, over all clusters
    const double heads = static_cast<double>(pr.H);
    const double e = static_cast<double>(pr.elem_bytes());  // input element
    info.gather.bytes += rounds * heads * keys * static_cast<double>(pr.d + pr.dv) * (e + f);
    info.attention.bytes += rounds * heads * (nq * static_cast<double>(pr.d) * e + keys * static_cast<double>(pr.d + pr.dv) * f);
    info.merge.bytes += heads * nq * static_cast<double>(pr.dv) * f * (1 + 2 * (rounds - 1));
  }
}

RunInfo smyrf_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace) {
  // Clusters at least as large as the sequences: one cluster, exactly dense attention.
  if (config.q_cluster_size >= pr.Nq && config.k_cluster_size >= pr.Nk)
    return dense_forward(pr, workspace);
  if (config.keys == KeySelection::centroid) return smyrf_centroid_forward(pr, config, workspace);

  Timer total;
  const RoundScratch layout = RoundScratch::make(
      static_cast<std::size_t>(std::min<std::int64_t>(config.k_cluster_size, pr.Nk)),
      static_cast<std::size_t>(pr.d), static_cast<std::size_t>(pr.dv));
  const std::size_t per_thread = layout.total();
  const std::int64_t max_clusters =
      cluster_count(pr.Nq, pr.Nk, config);  // masks only lower the count
  // Up to 8 clusters per task (fewer scheduling events, room to prefetch the next cluster),
  // but at least 4 tasks per thread per round so that short sequences still use every core.
  const std::int64_t clusters_per_task = std::clamp<std::int64_t>(
      pr.B * pr.H * max_clusters / (4 * static_cast<std::int64_t>(pr.threads)), 1, 8);
  const std::int64_t tasks =
      pr.B * pr.H * ((max_clusters + clusters_per_task - 1) / clusters_per_task);

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const HashingSlots hash_slots = plan_hashing(arena, pr, config);
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  const std::size_t merge_slot = arena.add<MergeState>(BHN);
  const std::size_t scratch_slot = arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  const std::size_t scores_slot = arena.add<std::int64_t>(static_cast<std::size_t>(tasks));
  const std::size_t ticks_slot = arena.add<PhaseTicks>(static_cast<std::size_t>(pr.threads));
  const TokenLists lists = scratch.bind();

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  zero_unattended_rows(pr, lists);
  const SortedTokens sorted = hash_and_sort(pr, config, lists, arena, hash_slots, info);

  Timer attn;
  auto* scores = arena.at<std::int64_t>(scores_slot);
  auto* phase_ticks = arena.at<PhaseTicks>(ticks_slot);
  std::fill_n(phase_ticks, pr.threads, PhaseTicks{});
  for (int r = 0; r < config.n_hashes; ++r) {
    const RoundArgs args{&pr, &lists, &sorted, r, arena.at<MergeState>(merge_slot),
                         arena.at<float>(scratch_slot), layout, max_clusters,
                         clusters_per_task, scores, phase_ticks};
    HWY_DYNAMIC_DISPATCH(SmyrfAttendRound)(args);
    for (std::int64_t t = 0; t < tasks; ++t)
      info.attention_scores += static_cast<std::size_t>(scores[t]);
  }
  // Each query's logsumexp over all rounds: the merge state's max + log(sum of weights).
  if (float* lse = pr.p->lse) {
    const MergeState* merge = arena.at<MergeState>(merge_slot);
    for (std::int64_t b = 0; b < pr.B; ++b) {
      if (lists.k_count[b] == 0) continue;
      const std::int32_t* queries = lists.queries(b, pr.Nq);
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
          const std::size_t row = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + queries[t]);
          lse[row] = merge[row].max + std::log(merge[row].sum);
        }
    }
  }
  if (pr.p->causal)
    HWY_DYNAMIC_DISPATCH(SmyrfCausalFallback)(pr, lists, arena.at<MergeState>(merge_slot),
                                              arena.at<float>(scratch_slot), layout,
                                              layout.key_cap);
  split_wall_time(phase_ticks, pr.threads, attn.seconds(), info);
  add_round_bytes(pr, config, lists, sorted, info);
  info.seconds_total = total.seconds();
  return info;
}

TrainGroups<CausalPairs> smyrf_causal_train_groups(const Problem& pr, const SmyrfConfig& config) {
  const ClusterLists c = compute_clusters(pr, config);
  const std::int64_t R = c.rounds, offset = pr.Nk - pr.Nq;
  TrainGroups<CausalPairs> set;
  // Whether each query sees a key in some round (else the fallback window).
  std::vector<std::uint8_t> sees(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), 0);
  for (std::int64_t r = 0; r < R; ++r) {
    for (std::int64_t b = 0; b < pr.B; ++b) {
      const std::int64_t C = c.n_clusters[static_cast<std::size_t>(b)];
      const std::int64_t nq = c.q_count[static_cast<std::size_t>(b)], nk = c.k_count[static_cast<std::size_t>(b)];
      if (nk == 0 || nq == 0 || (C == 1 && r > 0)) continue;
      for (std::int64_t h = 0; h < pr.H; ++h) {
        const std::int64_t bh = b * pr.H + h;
        const std::int32_t* qs = c.q_sorted.data() + (bh * R + r) * pr.Nq;
        const std::int32_t* ks = c.k_sorted.data() + (bh * R + r) * pr.Nk;
        for (std::int64_t cl = 0; cl < C; ++cl) {
          const IndexRange qr = query_cluster(cl, nq, C), kr = key_cluster(cl, nk, C);
          if (qr.end <= qr.begin || kr.end <= kr.begin) continue;
          const std::int32_t kmin = *std::min_element(ks + kr.begin, ks + kr.end);
          for (std::int64_t t = qr.begin; t < qr.end; ++t)
            if (kmin <= qs[t] + offset) sees[static_cast<std::size_t>(bh * pr.Nq + qs[t])] = 1;
          set.add(b, h, static_cast<int>(r), qs + qr.begin, static_cast<std::size_t>(qr.end - qr.begin),
                  ks + kr.begin, static_cast<std::size_t>(kr.end - kr.begin), CausalPairs{true, offset});
        }
      }
    }
    set.end_launch();
  }
  // The fallback: the up to min(k_cluster_size, Nk) nearest visible keys at positions <= its own.
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();
  const std::size_t window = static_cast<std::size_t>(std::min<std::int64_t>(config.k_cluster_size, pr.Nk));
  for (std::int64_t b = 0; b < pr.B; ++b) {
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::int32_t nk = lists.k_count[b];
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
        const std::int32_t i = lists.queries(b, pr.Nq)[t];
        if (sees[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)]) continue;
        const std::size_t end = static_cast<std::size_t>(std::upper_bound(keys, keys + nk, pr.key_position(i)) - keys);
        const std::size_t begin = end - std::min(end, window);
        set.add(b, h, 0, &i, 1, keys + begin, end - begin, CausalPairs{});
      }
  }
  set.finish();
  return set;
}

void run_smyrf_groups(const TrainArgs& a, const TrainGroups<CausalPairs>& set, float* pk, float* pv,
                      float* scratch, std::size_t per_thread) {
  HWY_DYNAMIC_DISPATCH(SmyrfTrainGroups)(a, set, pk, pv, scratch, per_thread);
}

RunInfo Method<SmyrfConfig>::forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace) {
  RunInfo info = smyrf_forward(pr, config, workspace);
  if (pr.p->dropout > 0.0f) {
    if (config.keys == KeySelection::centroid && !whole_clusters(pr, config))
      groups_dropout_forward(pr, pr.p->lse, smyrf_centroid_train_groups(pr, config), workspace, run_smyrf_groups);
    else if (pr.p->causal && !whole_clusters(pr, config))
      groups_dropout_forward(pr, pr.p->lse, smyrf_causal_train_groups(pr, config), workspace, run_smyrf_groups);
    else
      dropout_forward(pr, config, pr.p->lse, workspace);
  }
  return info;
}

RunInfo Method<SmyrfConfig>::backward(const Problem& pr, const GradientParams& grads, const SmyrfConfig& config,
                                      Workspace* workspace) {
  if (config.keys == KeySelection::centroid && !whole_clusters(pr, config))
    return groups_backward(pr, grads, smyrf_centroid_train_groups(pr, config), workspace, run_smyrf_groups);
  if (pr.p->causal && !whole_clusters(pr, config))
    return groups_backward(pr, grads, smyrf_causal_train_groups(pr, config), workspace, run_smyrf_groups);
  return train_backward(pr, grads, config, workspace);
}

KeyPairs Method<SmyrfConfig>::centroid_key_pairs(const Problem& pr, const SmyrfConfig& config) {
  return group_pairs(pr, smyrf_centroid_train_groups(pr, config));
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
