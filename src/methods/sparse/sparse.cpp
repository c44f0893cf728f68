// Sparse attention forward: fixed patterns (smyrf.h, SparseConfig) as block-sparse attention on
// the shared tiles. Per (batch, head, group of at most kDenseQueryTile queries): the union of
// the keys the group's queries see, gathered once, attended by AttendGroup with a SparseMask
// that cuts it per query (sparse.h). No N x N mask: the memory is O(N) (token lists, groups,
// one key list and one tile scratch per thread).
//
// Groups, per pattern (p = query position in key coordinates; queries in position order unless
// said otherwise; every group is cut at kDenseQueryTile queries):
//   local       consecutive queries; union of the windows [p - w, p + w]; mask: keep the window.
//   dilated     queries of one residue class p mod dilation (which share the keys of that
//               class); union of the windows in the class; mask: keep |p - j| <= w dilation.
//   strided     two disjoint parts merged by logsumexp: the local window as `local`, then the
//               keys j = p (mod stride) in groups of one residue class; mask: drop the window.
//   fixed       queries of one block (they all see the same keys: the block and the summary
//               positions of every block); no mask.
//   longformer  global queries (0 <= p < global_tokens) see every key, in groups of their own;
//               the others: keys [0, global_tokens) and the windows; mask: keep the window or
//               the global prefix.
//   bigbird     queries of one query block (same keys: window, global and random blocks; the
//               global query blocks together see every key); no mask.
//   axial_rows  queries of one row; keys: the row; no mask.
//   axial_columns queries of one column; keys: the column; no mask.
//   criss_cross two parts: the row as axial_rows, then the column as axial_columns with the
//               query's own position dropped (it is in its row).
// With params.causal the union stops at the group's last position and the mask also cuts
// j > p. Complexity: O(N * union size per group * (d + dv)) for the attention, O(union) per
// group to build the lists (bigbird: plus O(random_blocks^2) per query block for the draws).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/sparse/sparse.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstdint>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/phases.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/keyset-inl.h"
#include "kernels/group_train-inl.h"
#include "methods/sparse/sparse.h"

#ifndef SMYRF_METHODS_SPARSE_ROUND_ARGS_
#define SMYRF_METHODS_SPARSE_ROUND_ARGS_
namespace smyrf::detail {

// One thread's counts, alone on a cache line.
struct alignas(64) SparseCounters {
  std::int64_t scores = 0;   // (query, key) pairs attended
  std::int64_t keys = 0;     // keys packed (summed over groups)
  std::int64_t queries = 0;  // query rows attended (summed over groups)
};

// What one round's parallel section needs.
struct SparseRoundArgs {
  const Problem* pr;
  const SparseConfig* config;
  const TokenLists* lists;
  int round, rounds;
  const std::int32_t* order;     // [B * Nq]
  const std::int32_t* starts;    // [B * (Nq + 1)]
  const std::int64_t* n_groups;  // [B]
  std::int64_t max_groups;
  MergeState* merge;  // [B * H * Nq] when rounds > 1
  RoundScratch layout;
  float* scratch;  // layout.total() per thread
  std::int32_t* key_buffers;
  std::size_t key_stride;
  std::int64_t* block_buffers;
  std::size_t block_stride;
  SparseCounters* counters;
  PhaseTicks* ticks;
};

}  // namespace smyrf::detail
#endif  // SMYRF_METHODS_SPARSE_ROUND_ARGS_

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace sparse {

template <class T>
void AttendRoundT(const detail::SparseRoundArgs& a) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t G = a.max_groups;
  detail::parallel_for_tid(pr.B * pr.H * G, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / G, g = task % G;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    if (g >= a.n_groups[b] || a.lists->k_count[b] == 0) return;
    const std::int32_t* starts = a.starts + b * (pr.Nq + 1);
    const std::int32_t* q = a.order + b * pr.Nq + starts[g];
    const std::size_t m = static_cast<std::size_t>(starts[g + 1] - starts[g]);
    detail::PhaseTicks& ticks = a.ticks[tid];
    const std::uint64_t t0 = detail::ticks();
    const detail::SparseGroupKeys keys = detail::sparse_group_keys(
        pr, *a.config, *a.lists, a.round, b, h, q, m,
        a.key_buffers + static_cast<std::size_t>(tid) * a.key_stride,
        a.block_buffers + static_cast<std::size_t>(tid) * a.block_stride);
    const std::uint64_t t1 = detail::ticks();
    ticks.gather += t1 - t0;
    // A later part without keys changes nothing (the first part wrote every row).
    if (a.round > 0 && keys.count == 0) return;
    float* scratch = a.scratch + static_cast<std::size_t>(tid) * a.layout.total();
    const GroupOutput out = a.rounds == 1 ? GroupOutput{nullptr, true, pr.p->lse}
                                          : GroupOutput{a.merge, a.round == 0, nullptr};
    const std::size_t visible =
        keys.mask.trivial()
            ? AttendGroup<T>(pr, b, h, q, m, keys.keys, keys.count, NoMask{}, out, a.layout, scratch)
            : AttendGroup<T>(pr, b, h, q, m, keys.keys, keys.count, keys.mask, out, a.layout,
                             scratch);
    ticks.attention += detail::ticks() - t1;
    detail::SparseCounters& c = a.counters[tid];
    c.scores += static_cast<std::int64_t>(visible);
    c.keys += static_cast<std::int64_t>(keys.count);
    c.queries += static_cast<std::int64_t>(m);
  });
}

}  // namespace sparse

void SparseAttendRound(const detail::SparseRoundArgs& args) {
  detail::with_input_type(args.pr->dtype,
                          [&](auto tag) { sparse::AttendRoundT<decltype(tag)>(args); });
}

void SparseTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<detail::SparseMask>& set,
                       float* pk, float* pv, float* scratch, std::size_t per_thread) {
  RunTrainGroups(a, set, pk, pv, scratch, per_thread);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "methods/sparse/registration.h"
#include "common/timer.h"

namespace smyrf::detail {
HWY_EXPORT(SparseAttendRound);
HWY_EXPORT(SparseTrainGroups);

namespace {

constexpr std::int64_t kQueryTile = static_cast<std::int64_t>(kDenseQueryTile);
// Keys packed at a time. Groups hold at most one query tile, so a longer list is streamed at no
// extra packing cost; 1024 keys keep the packed K^T and V of a thread within L2 at d = 64.
constexpr std::int64_t kMaxKeyCap = 1024;

// Rounds whose groups are residue classes of the query index (queries i = i0 (mod M), which is
// p = i0 + Nk - Nq (mod M)); 0: groups in position order.
std::int64_t residue_modulus(const SparseConfig& c, int round) {
  switch (c.pattern) {
    case SparsePattern::dilated: return c.dilation;
    case SparsePattern::strided: return round == 1 ? c.stride : 0;
    case SparsePattern::axial_columns: return c.width;
    case SparsePattern::criss_cross: return round == 1 ? c.width : 0;
    default: return 0;
  }
}

// Position-order rounds: groups never mix two classes of query positions.
std::int64_t position_class(const SparseConfig& c, std::int64_t p) {
  switch (c.pattern) {
    case SparsePattern::fixed: return floor_div(p, c.stride);
    case SparsePattern::longformer: return (p >= 0 && p < c.global_tokens) ? 1 : 0;
    case SparsePattern::bigbird: {
      const std::int64_t qb = floor_div(p, c.block_size);
      return (qb >= 0 && qb < c.global_blocks) ? std::numeric_limits<std::int64_t>::min() : qb;
    }
    case SparsePattern::axial_rows:
    case SparsePattern::criss_cross: return floor_div(p, c.width);
    default: return 0;
  }
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

int sparse_rounds(const SparseConfig& config) {
  return (config.pattern == SparsePattern::strided || config.pattern == SparsePattern::criss_cross)
             ? 2
             : 1;
}

std::size_t sparse_key_cap(const Problem& pr, const SparseConfig& c) {
  const std::int64_t w = c.window, Nk = pr.Nk;
  std::int64_t bound = Nk;
  switch (c.pattern) {
    case SparsePattern::local:
    case SparsePattern::dilated: bound = kQueryTile + 2 * w; break;
    case SparsePattern::strided: bound = std::max(kQueryTile + 2 * w, ceil_div(Nk, c.stride)); break;
    case SparsePattern::fixed:
      bound = c.stride + std::int64_t{c.summary} * ceil_div(Nk, c.stride);
      break;
    case SparsePattern::longformer: bound = kQueryTile + 2 * w + c.global_tokens; break;
    case SparsePattern::bigbird: {
      const std::int64_t nb = ceil_div(Nk, c.block_size);
      const std::int64_t blocks = std::min<std::int64_t>(
          nb, 3 + std::int64_t{c.global_blocks} + std::int64_t{c.random_blocks});
      bound = blocks * c.block_size;
      break;
    }
    case SparsePattern::axial_rows: bound = c.width; break;
    case SparsePattern::axial_columns: bound = ceil_div(Nk, c.width); break;
    case SparsePattern::criss_cross: bound = std::max<std::int64_t>(c.width, ceil_div(Nk, c.width)); break;
  }
  return static_cast<std::size_t>(std::clamp<std::int64_t>(std::min(bound, Nk), 1, kMaxKeyCap));
}

std::size_t sparse_block_scratch(const Problem& pr, const SparseConfig& c) {
  if (c.pattern != SparsePattern::bigbird) return 1;
  const std::int64_t nb = ceil_div(pr.Nk, c.block_size);
  // Block list (global + window + random <= 2 nb + 3), then the draws' work space.
  return static_cast<std::size_t>(2 * nb + 3) + spec::bigbird_work_size(nb);
}

std::int64_t sparse_make_groups(const Problem& pr, const SparseConfig& config, int round,
                                std::int64_t b, std::int32_t* order, std::int32_t* starts) {
  std::int64_t n = 0, groups = 0, size = 0, cls = 0;
  auto add = [&](std::int64_t i, std::int64_t k) {
    if (size == 0 || size == kQueryTile || k != cls) {
      starts[groups++] = static_cast<std::int32_t>(n);
      size = 0;
      cls = k;
    }
    order[n++] = static_cast<std::int32_t>(i);
    ++size;
  };
  const std::int64_t M = residue_modulus(config, round);
  if (M > 0) {
    for (std::int64_t i0 = 0; i0 < std::min(M, pr.Nq); ++i0)
      for (std::int64_t i = i0; i < pr.Nq; i += M)
        if (pr.query_active(b, i)) add(i, i0);
  } else {
    for (std::int64_t i = 0; i < pr.Nq; ++i)
      if (pr.query_active(b, i)) add(i, position_class(config, pr.key_position(i)));
  }
  starts[groups] = static_cast<std::int32_t>(n);
  return groups;
}

SparseGroupKeys sparse_group_keys(const Problem& pr, const SparseConfig& c, const TokenLists& lists,
                                  int round, std::int64_t b, std::int64_t h, const std::int32_t* q,
                                  std::size_t m, std::int32_t* key_buffer, std::int64_t* blocks) {
  SparseGroupKeys res;
  const std::int64_t off = pr.Nk - pr.Nq;
  res.mask.offset = off;
  res.mask.causal = pr.p->causal;
  res.keys = key_buffer;
  if (m == 0) return res;
  // Queries of a group are in ascending position: the last one sees the furthest (causal).
  const std::int64_t p_first = q[0] + off, p_last = q[m - 1] + off;
  const std::int64_t cap = pr.p->causal ? std::min(pr.Nk - 1, p_last) : pr.Nk - 1;
  std::size_t count = 0;
  // First element >= from of the progression lo + k step.
  auto align_up = [](std::int64_t lo, std::int64_t from, std::int64_t step) {
    return lo >= from ? lo : lo + ceil_div(from - lo, step) * step;
  };
  // The visible keys lo, lo + step, ... <= hi within [0, cap], ascending.
  auto emit = [&](std::int64_t lo, std::int64_t hi, std::int64_t step) {
    hi = std::min(hi, cap);
    for (std::int64_t j = align_up(lo, 0, step); j <= hi; j += step)
      if (pr.key_visible(b, j)) key_buffer[count++] = static_cast<std::int32_t>(j);
  };
  // Every visible key <= cap, straight from the token list.
  auto all_keys = [&] {
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    res.keys = keys;
    count = static_cast<std::size_t>(std::upper_bound(keys, keys + lists.k_count[b], cap) - keys);
  };
  // The union of the windows [p - a, p + a] (restricted to p's residue mod step; the group's
  // queries share it), keys >= from only.
  auto windows = [&](std::int64_t a, std::int64_t step, std::int64_t from) {
    std::int64_t lo = 0, hi = -1;
    bool open = false;
    auto flush = [&] { emit(align_up(lo, from, step), hi, step); };
    for (std::size_t r = 0; r < m; ++r) {
      const std::int64_t p = q[r] + off;
      if (open && p - a <= hi + step) {
        hi = std::max(hi, p + a);
        continue;
      }
      if (open) flush();
      lo = p - a;
      hi = p + a;
      open = true;
    }
    if (open) flush();
  };
  const std::int64_t w = c.window;
  switch (c.pattern) {
    case SparsePattern::local:
      windows(w, 1, 0);
      res.mask.radius = w;
      break;
    case SparsePattern::dilated:
      windows(w * c.dilation, c.dilation, 0);
      res.mask.radius = w * c.dilation;
      break;
    case SparsePattern::strided:
      if (round == 0) {
        windows(w, 1, 0);
      } else {
        emit(floor_mod(p_first, c.stride), cap, c.stride);
        res.mask.exclude = true;
      }
      res.mask.radius = w;
      break;
    case SparsePattern::fixed: {
      const std::int64_t s = c.stride, qb = floor_div(p_first, s);
      for (std::int64_t start = 0; start <= cap; start += s)
        emit(start / s == qb ? start : start + s - c.summary, start + s - 1, 1);
      break;
    }
    case SparsePattern::longformer:
      if (p_first >= 0 && p_first < c.global_tokens) {
        all_keys();
      } else {
        emit(0, std::int64_t{c.global_tokens} - 1, 1);
        windows(w, 1, c.global_tokens);
        res.mask.radius = w;
        res.mask.shared_below = c.global_tokens;
      }
      break;
    case SparsePattern::bigbird: {
      const std::int64_t bs = c.block_size, nb = ceil_div(pr.Nk, bs);
      const std::int64_t qb = floor_div(p_first, bs);
      if (qb >= 0 && qb < c.global_blocks) {
        all_keys();
        break;
      }
      std::int64_t n = 0;
      for (std::int64_t kb = 0; kb < std::min<std::int64_t>(c.global_blocks, nb); ++kb) blocks[n++] = kb;
      for (std::int64_t kb = std::max<std::int64_t>(qb - 1, 0); kb <= std::min(qb + 1, nb - 1); ++kb)
        blocks[n++] = kb;
      n += spec::bigbird_random_blocks(pr.p->seed, h, qb, nb, c.global_blocks, c.random_blocks,
                                 blocks + n, blocks + 2 * nb + 3);
      std::sort(blocks, blocks + n);
      n = std::unique(blocks, blocks + n) - blocks;
      for (std::int64_t t = 0; t < n && blocks[t] * bs <= cap; ++t)
        emit(blocks[t] * bs, blocks[t] * bs + bs - 1, 1);
      break;
    }
    case SparsePattern::axial_rows: {
      const std::int64_t row = floor_div(p_first, c.width);
      emit(row * c.width, row * c.width + c.width - 1, 1);
      break;
    }
    case SparsePattern::axial_columns:
      emit(floor_mod(p_first, c.width), cap, c.width);
      break;
    case SparsePattern::criss_cross:
      if (round == 0) {
        const std::int64_t row = floor_div(p_first, c.width);
        emit(row * c.width, row * c.width + c.width - 1, 1);
      } else {
        emit(floor_mod(p_first, c.width), cap, c.width);
        res.mask.radius = 0;  // the query's own position belongs to its row
        res.mask.exclude = true;
      }
      break;
  }
  res.count = count;
  return res;
}

RunInfo sparse_forward(const Problem& pr, const SparseConfig& config, Workspace* workspace) {
  Timer total;
  const int rounds = sparse_rounds(config);
  const RoundScratch layout = RoundScratch::make(sparse_key_cap(pr, config),
                                                 static_cast<std::size_t>(pr.d),
                                                 static_cast<std::size_t>(pr.dv));
  const std::size_t T = static_cast<std::size_t>(pr.threads);
  const std::size_t B = static_cast<std::size_t>(pr.B), Nq = static_cast<std::size_t>(pr.Nq);
  const std::size_t key_stride = pad_floats(static_cast<std::size_t>(pr.Nk));  // 64-byte rows
  const std::size_t block_stride = (sparse_block_scratch(pr, config) + 7) / 8 * 8;

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  std::size_t order_slot[2], starts_slot[2], groups_slot[2];
  for (int r = 0; r < rounds; ++r) {
    order_slot[r] = arena.add<std::int32_t>(B * Nq);
    starts_slot[r] = arena.add<std::int32_t>(B * (Nq + 1));
    groups_slot[r] = arena.add<std::int64_t>(B);
  }
  const std::size_t merge_slot =
      rounds > 1 ? arena.add<MergeState>(B * static_cast<std::size_t>(pr.H) * Nq) : 0;
  const std::size_t scratch_slot = arena.add<float>(layout.total() * T);
  const std::size_t keys_slot = arena.add<std::int32_t>(key_stride * T);
  const std::size_t blocks_slot = arena.add<std::int64_t>(block_stride * T);
  const std::size_t counters_slot = arena.add<SparseCounters>(T);
  const std::size_t ticks_slot = arena.add<PhaseTicks>(T);
  const TokenLists lists = scratch.bind();

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  zero_unattended_rows(pr, lists);

  // Groups of every round and batch element (the same for every head).
  Timer timer;
  std::int64_t max_groups[2] = {0, 0};
  for (int r = 0; r < rounds; ++r)
    for (std::int64_t b = 0; b < pr.B; ++b) {
      std::int64_t* n_groups = arena.at<std::int64_t>(groups_slot[r]);
      n_groups[b] = sparse_make_groups(pr, config, r, b,
                                       arena.at<std::int32_t>(order_slot[r]) + b * pr.Nq,
                                       arena.at<std::int32_t>(starts_slot[r]) + b * (pr.Nq + 1));
      max_groups[r] = std::max(max_groups[r], n_groups[b]);
    }
  info.sort.seconds = timer.lap();

  auto* counters = arena.at<SparseCounters>(counters_slot);
  auto* phase_ticks = arena.at<PhaseTicks>(ticks_slot);
  std::fill_n(counters, T, SparseCounters{});
  std::fill_n(phase_ticks, T, PhaseTicks{});
  MergeState* merge = rounds > 1 ? arena.at<MergeState>(merge_slot) : nullptr;
  for (int r = 0; r < rounds; ++r) {
    const SparseRoundArgs args{&pr,
                               &config,
                               &lists,
                               r,
                               rounds,
                               arena.at<std::int32_t>(order_slot[r]),
                               arena.at<std::int32_t>(starts_slot[r]),
                               arena.at<std::int64_t>(groups_slot[r]),
                               max_groups[r],
                               merge,
                               layout,
                               arena.at<float>(scratch_slot),
                               arena.at<std::int32_t>(keys_slot),
                               key_stride,
                               arena.at<std::int64_t>(blocks_slot),
                               block_stride,
                               counters,
                               phase_ticks};
    HWY_DYNAMIC_DISPATCH(SparseAttendRound)(args);
  }
  split_wall_time(phase_ticks, pr.threads, timer.lap(), info);

  // Two parts: each query's logsumexp over both, from the merge state.
  if (float* lse = pr.p->lse; lse != nullptr && merge != nullptr) {
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
  info.merge.seconds += timer.lap();

  // Counts and the bytes model (common/phases.h): the gather reads each group's K and V rows
  // and writes them packed; the attention reads the packed keys and the Q rows and writes O
  // (with two parts, the second part reads and writes O again).
  std::int64_t keys = 0, queries = 0;
  for (std::size_t t = 0; t < T; ++t) {
    info.attention_scores += static_cast<std::size_t>(counters[t].scores);
    keys += counters[t].keys;
    queries += counters[t].queries;
  }
  const double f = sizeof(float), e = static_cast<double>(pr.elem_bytes());
  const double kd = static_cast<double>(keys) * static_cast<double>(pr.d + pr.dv);
  info.gather.bytes = kd * (e + f);
  info.attention.bytes = kd * f + static_cast<double>(queries) * (static_cast<double>(pr.d) * e +
                                                                  static_cast<double>(pr.dv) * f);
  info.seconds_total = total.seconds();
  return info;
}

TrainGroups<SparseMask> sparse_train_groups(const Problem& pr, const SparseConfig& config) {
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();
  TrainGroups<SparseMask> set;
  std::vector<std::int32_t> order(static_cast<std::size_t>(pr.Nq));
  std::vector<std::int32_t> starts(static_cast<std::size_t>(pr.Nq + 1));
  std::vector<std::int32_t> key_buffer(static_cast<std::size_t>(pr.Nk));
  std::vector<std::int64_t> blocks(sparse_block_scratch(pr, config));
  for (int r = 0; r < sparse_rounds(config); ++r) {
    for (std::int64_t b = 0; b < pr.B; ++b) {
      if (lists.k_count[b] == 0) continue;
      const std::int64_t G = sparse_make_groups(pr, config, r, b, order.data(), starts.data());
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int64_t g = 0; g < G; ++g) {
          const std::int32_t* qg = order.data() + starts[static_cast<std::size_t>(g)];
          const std::size_t mg = static_cast<std::size_t>(starts[static_cast<std::size_t>(g) + 1] -
                                                          starts[static_cast<std::size_t>(g)]);
          const SparseGroupKeys keys = sparse_group_keys(pr, config, lists, r, b, h, qg, mg,
                                                         key_buffer.data(), blocks.data());
          set.add(b, h, r, qg, mg, keys.keys, keys.count, keys.mask);
        }
    }
    set.end_launch();  // a query is in one group of a part
  }
  set.finish();
  return set;
}

namespace {
void run_sparse_groups(const TrainArgs& a, const TrainGroups<SparseMask>& set, float* pk, float* pv,
                       float* scratch, std::size_t per_thread) {
  HWY_DYNAMIC_DISPATCH(SparseTrainGroups)(a, set, pk, pv, scratch, per_thread);
}
}  // namespace

RunInfo Method<SparseConfig>::forward(const Problem& pr, const SparseConfig& config, Workspace* workspace) {
  RunInfo info = sparse_forward(pr, config, workspace);
  if (pr.p->dropout > 0.0f)
    groups_dropout_forward(pr, pr.p->lse, sparse_train_groups(pr, config), workspace, run_sparse_groups);
  return info;
}

RunInfo Method<SparseConfig>::backward(const Problem& pr, const GradientParams& grads,
                                       const SparseConfig& config, Workspace* workspace) {
  return groups_backward(pr, grads, sparse_train_groups(pr, config), workspace, run_sparse_groups);
}

KeyPairs Method<SparseConfig>::key_pairs(const Problem& pr, const SparseConfig& config) {
  return group_pairs(pr, sparse_train_groups(pr, config));
}

void Method<SparseConfig>::check(const SparseConfig& c, const Problem&) {
  const auto kind = static_cast<int>(c.pattern);
  if (kind < 0 || kind > static_cast<int>(SparsePattern::criss_cross))
    fail("SparseConfig.pattern", str(std::int64_t{kind}), "is not a SparsePattern value");
  at_least("SparseConfig.window", c.window, 0);
  at_least("SparseConfig.dilation", c.dilation, 1);
  at_least("SparseConfig.stride", c.stride, 1);
  if (c.pattern == SparsePattern::fixed && (c.summary < 1 || c.summary > c.stride))
    fail("SparseConfig.summary", str(std::int64_t{c.summary}),
         "must be in [1, stride = " + str(std::int64_t{c.stride}) + "] for the fixed pattern");
  at_least("SparseConfig.global_tokens", c.global_tokens, 0);
  at_least("SparseConfig.block_size", c.block_size, 1);
  at_least("SparseConfig.global_blocks", c.global_blocks, 0);
  at_least("SparseConfig.random_blocks", c.random_blocks, 0);
  at_least("SparseConfig.width", c.width, 1);
}

std::vector<std::vector<std::int32_t>> sparse_visible_keys(const Problem& pr,
                                                           const SparseConfig& config,
                                                           std::int64_t b, std::int64_t h) {
  if (b < 0 || b >= pr.B)
    throw Error("smyrf: b = " + std::to_string(b) + ": must be in [0, params.batch = " +
                std::to_string(pr.B) + ")");
  if (h < 0 || h >= pr.H)
    throw Error("smyrf: h = " + std::to_string(h) + ": must be in [0, params.heads = " +
                std::to_string(pr.H) + ")");
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();

  std::vector<std::vector<std::int32_t>> seen(static_cast<std::size_t>(pr.Nq));
  if (lists.k_count[b] == 0) return seen;
  const std::size_t cap = sparse_key_cap(pr, config);
  std::vector<std::int32_t> order(static_cast<std::size_t>(pr.Nq));
  std::vector<std::int32_t> starts(static_cast<std::size_t>(pr.Nq + 1));
  std::vector<std::int32_t> key_buffer(static_cast<std::size_t>(pr.Nk));
  std::vector<std::int64_t> blocks(sparse_block_scratch(pr, config));
  std::vector<float> s(kDenseQueryTile * kDenseKeyTile);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < sparse_rounds(config); ++r) {
    const std::int64_t G = sparse_make_groups(pr, config, r, b, order.data(), starts.data());
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int32_t* qg = order.data() + starts[static_cast<std::size_t>(g)];
      const std::size_t mg =
          static_cast<std::size_t>(starts[static_cast<std::size_t>(g) + 1] - starts[static_cast<std::size_t>(g)]);
      const SparseGroupKeys keys = sparse_group_keys(pr, config, lists, r, b, h, qg, mg,
                                                     key_buffer.data(), blocks.data());
      if (r > 0 && keys.count == 0) continue;
      // The tiles of AttendGroup: query tiles, key chunks of `cap`, key tiles.
      for (std::size_t q0 = 0; q0 < mg; q0 += kDenseQueryTile) {
        const std::size_t m = std::min(kDenseQueryTile, mg - q0);
        for (std::size_t k0 = 0; k0 < keys.count; k0 += cap) {
          const std::size_t kn = std::min(cap, keys.count - k0);
          for (std::size_t j0 = 0; j0 < kn; j0 += kDenseKeyTile) {
            const std::size_t n = std::min(kDenseKeyTile, kn - j0);
            const std::int32_t* kpos = keys.keys + k0 + j0;
            std::fill(s.begin(), s.end(), 0.0f);
            if (!keys.mask.trivial()) keys.mask(qg + q0, m, kpos, n, s.data(), kDenseKeyTile);
            for (std::size_t row = 0; row < m; ++row)
              for (std::size_t col = 0; col < n; ++col)
                if (s[row * kDenseKeyTile + col] != ninf)
                  seen[static_cast<std::size_t>(qg[q0 + row])].push_back(kpos[col]);
          }
        }
      }
    }
  }
  for (auto& list : seen) std::sort(list.begin(), list.end());
  return seen;
}

std::vector<std::int32_t> sparse_visible_keys(const Problem& pr,
                                              const SparseConfig& config, std::int64_t b,
                                              std::int64_t h, std::int64_t i) {
  if (i < 0 || i >= pr.Nq)
    throw Error("smyrf: i = " + std::to_string(i) + ": must be in [0, params.nq = " +
                std::to_string(pr.Nq) + ")");
  return sparse_visible_keys(pr, config, b, h)[static_cast<std::size_t>(i)];
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
