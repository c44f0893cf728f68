// Reformer forward (definition: smyrf.h, ReformerConfig).
//
//   1. shared_qk: the keys k_j = q_j / |q_j| into a scratch tensor (and, for bf16 inputs, Q and
//      V converted to f32 beside it, since the engine reads Q, K and V with one element type);
//      attention then runs on a derived Problem whose K points there.
//   2. Rotations R_r of every (head, round) (rng.h; stream layout in smyrf.h).
//   3. Per (batch, head, round), one task: buckets of the hashed tokens (double fma chains,
//      vectorised over the rotation's columns: each lane is the scalar chain of the definition,
//      bit for bit, on targets with a fused multiply-add; the others use std::fma), then a
//      stable radix sort of the active queries and of the visible keys by (bucket, position).
//   4. Rounds one after another; in a round, tasks of consecutive chunks of one (batch, head):
//      query chunk c attends through AttendGroup to the union of key chunks c and c - 1 (a
//      contiguous slice of the sorted keys, except for chunk 0's wrap, gathered into a small
//      per-thread list). With shared_qk a per-group pass decides for each query whether its own
//      key may stay (no other key of the set survives causality), which the mask functor reads.
//      Rounds are merged into O by logsumexp (MergeState per query, in the arena).
//   5. lse = max + log(sum) of the merge states (times n_hashes when C == 1: one round computed
//      for identical rounds).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/reformer/reformer.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/phases.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/keyset-inl.h"
#include "kernels/group_train-inl.h"
#include "kernels/tile_matmul-inl.h"
#include "methods/reformer/reformer.h"
#include "methods/smyrf/clustering.h"

// Argument structs shared by the per-target code and the dispatcher (defined once).
#ifndef SMYRF_METHODS_REFORMER_ARGS_
#define SMYRF_METHODS_REFORMER_ARGS_
namespace smyrf::detail {

// Buckets of n rows base + idx[i] * row_stride (element type dtype) in one round:
// bucket_by_pos[idx[i]] = h(row). rot: [d][ldr] doubles, columns >= half are 0 (ldr a multiple
// of 8). proj: 4 * ldr doubles of scratch.
struct ReformerHashArgs {
  DType dtype;
  const void* base;
  std::int64_t row_stride;
  const std::int32_t* idx;
  std::size_t n, d;
  const double* rot;
  std::size_t ldr, half;
  std::int32_t* bucket_by_pos;
  double* proj;
};

enum class ReformerMask : int { none = 0, causal = 1, self = 2 };

struct ReformerRoundArgs {
  const Problem* pr;  // the problem attention reads (derived with shared_qk)
  const TokenLists* lists;
  const std::int32_t* q_sorted;  // [(bh * R + r) * Nq + t]
  const std::int32_t* k_sorted;  // [(bh * R + r) * Nk + t]
  const std::int64_t* n_chunks;  // [B]
  int rounds, round;
  ReformerMask mask;
  MergeState* merge;  // [B * H * Nq], nullptr with one round
  float* scratch;     // layout.total() floats per thread
  RoundScratch layout;
  std::int32_t* key_buf;  // key_buf_len per thread
  std::size_t key_buf_len;
  std::uint8_t* allow_self;  // Nq per thread (shared_qk)
  std::uint8_t* mark;        // Nk per thread, all zero between groups (shared_qk)
  std::int64_t max_chunks, chunks_per_task;
  std::int64_t* scores_per_task;
  PhaseTicks* phase_ticks;  // per thread
};

}  // namespace smyrf::detail
#endif  // SMYRF_METHODS_REFORMER_ARGS_

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace reformer {

// Index of the first maximum of [y_0..y_{n-1}, -y_0..-y_{n-1}] (strictly larger replaces).
HWY_INLINE std::int32_t Argmax(const double* y, std::size_t n) {
  double best = y[0];
  std::int32_t arg = 0;
  for (std::size_t c = 1; c < n; ++c)
    if (y[c] > best) {
      best = y[c];
      arg = static_cast<std::int32_t>(c);
    }
  for (std::size_t c = 0; c < n; ++c)
    if (-y[c] > best) {
      best = -y[c];
      arg = static_cast<std::int32_t>(n + c);
    }
  return arg;
}

template <class T>
void HashRowsT(const detail::ReformerHashArgs& a) {
  const T* base = static_cast<const T*>(a.base);
  const std::size_t d = a.d, ldr = a.ldr, half = a.half;
  for (std::size_t i0 = 0; i0 < a.n; i0 += 4) {
    const std::size_t ntok = std::min<std::size_t>(4, a.n - i0);
    const T* rows[4];
    for (std::size_t t = 0; t < 4; ++t)
      rows[t] = base + static_cast<std::int64_t>(a.idx[i0 + std::min(t, ntok - 1)]) * a.row_stride;
    // Projections y_c = fma chain over j in order of x[j] * R[j][c]: tiles of the 4 tokens x
    // G column vectors (4 x G independent chains hide the fma latency), or the scalar chains
    // where the target's vectors have no fused multiply-add.
    const tile::RowPtrs<T> x{rows};
    const tile::RowMajor<double> rot{a.rot, static_cast<std::int64_t>(ldr)};
    const std::int64_t nd = static_cast<std::int64_t>(d);
#if HWY_NATIVE_FMA
    // Up to 4 (AVX-512: 32 registers) or 2 column vectors at a time.
    const std::int64_t ld = static_cast<std::int64_t>(ldr);
    const hn::ScalableTag<double> dd;
    const std::size_t L = hn::Lanes(dd);
#if HWY_TARGET <= HWY_AVX3
    constexpr std::size_t kMaxG = 4;
#else
    constexpr std::size_t kMaxG = 2;
#endif
    for (std::size_t g0 = 0; g0 < half; g0 += kMaxG * L) {
      const std::size_t G = std::min(kMaxG, (half - g0 + L - 1) / L);
      const std::int64_t c0 = static_cast<std::int64_t>(g0);
      if (G >= kMaxG) {
        tile::Tile<4, kMaxG>(dd, x, rot, nd, c0, a.proj, ld);
      } else if (G == 1) {
        tile::Tile<4, 1>(dd, x, rot, nd, c0, a.proj, ld);
      } else if (G == 2) {
        tile::Tile<4, 2>(dd, x, rot, nd, c0, a.proj, ld);
      } else {
        tile::Tile<4, 3>(dd, x, rot, nd, c0, a.proj, ld);
      }
    }
#else
    for (std::size_t t = 0; t < ntok; ++t)
      for (std::size_t c = 0; c < half; ++c)
        a.proj[t * ldr + c] = tile::Element<double>(x, rot, static_cast<std::int64_t>(t),
                                                    static_cast<std::int64_t>(c), nd);
#endif
    for (std::size_t t = 0; t < ntok; ++t)
      a.bucket_by_pos[a.idx[i0 + t]] = Argmax(a.proj + t * ldr, half);
  }
}

void HashRows(const detail::ReformerHashArgs& a) {
  detail::with_input_type(a.dtype, [&](auto tag) { HashRowsT<decltype(tag)>(a); });
}

template <class T, detail::ReformerMask kMask>
void RoundT(const detail::ReformerRoundArgs& a) {
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const std::int64_t tasks_per_bh = (a.max_chunks + a.chunks_per_task - 1) / a.chunks_per_task;
  const GroupOutput out{a.merge, a.round == 0, a.merge == nullptr ? pr.p->lse : nullptr};
  const std::int64_t offset = pr.Nk - pr.Nq;
  detail::parallel_for_tid(pr.B * pr.H * tasks_per_bh, pr.threads, [&](std::int64_t task, int tid) {
    a.scores_per_task[task] = 0;
    const std::int64_t bh = task / tasks_per_bh, run = task % tasks_per_bh;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t C = a.n_chunks[b];
    // With one chunk every round has the same sets: round 0 is the whole answer.
    if (C == 0 || (C == 1 && a.round > 0)) return;
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    const std::int32_t* q_order = a.q_sorted + (bh * a.rounds + a.round) * pr.Nq;
    const std::int32_t* k_order = a.k_sorted + (bh * a.rounds + a.round) * pr.Nk;
    const std::int64_t c_begin = run * a.chunks_per_task;
    const std::int64_t c_end = std::min(C, c_begin + a.chunks_per_task);
    float* s = a.scratch + static_cast<std::size_t>(tid) * a.layout.total();
    std::int32_t* kbuf = a.key_buf + static_cast<std::size_t>(tid) * a.key_buf_len;
    std::uint8_t* allow = nullptr;
    std::uint8_t* mark = nullptr;
    if constexpr (kMask == detail::ReformerMask::self) {
      allow = a.allow_self + static_cast<std::size_t>(tid) * static_cast<std::size_t>(pr.Nq);
      mark = a.mark + static_cast<std::size_t>(tid) * static_cast<std::size_t>(pr.Nk);
    }
    detail::PhaseTicks& ticks = a.phase_ticks[tid];
    std::size_t scores = 0;
    for (std::int64_t c = c_begin; c < c_end; ++c) {
      const std::uint64_t t_gather = detail::ticks();
      const detail::IndexRange qr = detail::query_cluster(c, nq, C);
      if (qr.end <= qr.begin) continue;
      if (c + 1 < c_end) {
        // Group c + 1's queries and key chunk c + 1 (chunk c, its look-back, is in cache).
        const detail::IndexRange nq_r = detail::query_cluster(c + 1, nq, C);
        const detail::IndexRange nk_r = detail::key_cluster(c + 1, nk, C);
        PrefetchGroupRows(pr, b, h, q_order, nq_r.begin, nq_r.end, k_order, nk_r.begin, nk_r.end);
      }
      // The set: key chunks c - 1 and c (sorted order: the earlier chunk first).
      const std::int32_t* keys = k_order;
      std::size_t n_keys = static_cast<std::size_t>(nk);
      if (C > 1 && c >= 1) {
        const std::int64_t lo = detail::key_cluster(c - 1, nk, C).begin;
        const std::int64_t hi = detail::key_cluster(c, nk, C).end;
        keys = k_order + lo;
        n_keys = static_cast<std::size_t>(hi - lo);
      } else if (C > 1) {  // chunk 0: the last chunk, then chunk 0
        const detail::IndexRange last = detail::key_cluster(C - 1, nk, C);
        const detail::IndexRange first = detail::key_cluster(0, nk, C);
        if (last.begin > first.end) {  // disjoint: gather
          std::size_t n = 0;
          for (std::int64_t t = last.begin; t < nk; ++t) kbuf[n++] = k_order[t];
          for (std::int64_t t = 0; t < first.end; ++t) kbuf[n++] = k_order[t];
          keys = kbuf;
          n_keys = n;
        }  // else the two chunks cover every key: the whole sorted list
      }
      const std::int32_t* qidx = q_order + qr.begin;
      const std::size_t mq = static_cast<std::size_t>(qr.end - qr.begin);
      if constexpr (kMask == detail::ReformerMask::self) {
        // Whether each query keeps its own key: only if no other key of the set survives
        // causality (with shared_qk, Nq == Nk and positions coincide).
        std::int32_t kmin = std::numeric_limits<std::int32_t>::max();
        for (std::size_t t = 0; t < n_keys; ++t) {
          mark[keys[t]] = 1;
          kmin = std::min(kmin, keys[t]);
        }
        const bool causal = pr.p->causal;
        for (std::size_t t = 0; t < mq; ++t) {
          const std::int32_t i = qidx[t];
          const bool others = causal ? kmin < i : n_keys > static_cast<std::size_t>(mark[i]);
          allow[i] = others ? 0 : 1;
        }
        for (std::size_t t = 0; t < n_keys; ++t) mark[keys[t]] = 0;
      }
      const std::uint64_t t_attention = detail::ticks();
      ticks.gather += t_attention - t_gather;
      if constexpr (kMask == detail::ReformerMask::self) {
        scores += AttendGroup<T>(pr, b, h, qidx, mq, keys, n_keys,
                                 detail::ReformerTrainMask{allow, offset, pr.p->causal}, out, a.layout, s);
      } else if constexpr (kMask == detail::ReformerMask::causal) {
        scores += AttendGroup<T>(pr, b, h, qidx, mq, keys, n_keys, CausalMask{offset}, out,
                                 a.layout, s);
      } else {
        scores += AttendGroup<T>(pr, b, h, qidx, mq, keys, n_keys, NoMask{}, out, a.layout, s);
      }
      ticks.attention += detail::ticks() - t_attention;
    }
    a.scores_per_task[task] = static_cast<std::int64_t>(scores);
  });
}

void Round(const detail::ReformerRoundArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (a.mask) {
      case detail::ReformerMask::self: RoundT<T, detail::ReformerMask::self>(a); break;
      case detail::ReformerMask::causal: RoundT<T, detail::ReformerMask::causal>(a); break;
      default: RoundT<T, detail::ReformerMask::none>(a); break;
    }
  });
}

}  // namespace reformer

void ReformerHashRows(const detail::ReformerHashArgs& a) { reformer::HashRows(a); }
void ReformerRound(const detail::ReformerRoundArgs& a) { reformer::Round(a); }
void ReformerTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<detail::ReformerTrainMask>& set,
                         float* pk, float* pv, float* scratch, std::size_t per_thread) {
  RunTrainGroups(a, set, pk, pv, scratch, per_thread);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "common/finite.h"
#include "methods/reformer/registration.h"
#include "common/timer.h"
#include "spec/draws.h"
#include "kernels/radix_sort.h"

namespace smyrf::detail {
HWY_EXPORT(ReformerHashRows);
HWY_EXPORT(ReformerRound);
HWY_EXPORT(ReformerTrainGroups);

namespace {

// Columns of a rotation, padded to whole AVX-512 double vectors.
std::size_t rotation_ld(const ReformerConfig& config) {
  return (static_cast<std::size_t>(config.n_buckets / 2) + 7) / 8 * 8;
}

std::int64_t chunk_count(std::int64_t n_q, std::int64_t n_k, const ReformerConfig& config) {
  if (n_q == 0 || n_k == 0) return 0;
  const std::int64_t n = std::max(n_q, n_k);
  return std::max<std::int64_t>(1, (n + config.chunk_size - 1) / config.chunk_size);
}

struct HashSlots {
  std::size_t rot, q_bucket, k_bucket, hashed, hashed_count, proj, sort_tmp, q_sorted, k_sorted,
      n_chunks;
};

HashSlots plan_hashing(Arena& arena, const Problem& pr, const ReformerConfig& config) {
  const std::size_t R = static_cast<std::size_t>(config.n_hashes);
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  const std::size_t Nq = static_cast<std::size_t>(pr.Nq), Nk = static_cast<std::size_t>(pr.Nk);
  const std::size_t ldr = rotation_ld(config);
  const std::size_t T = static_cast<std::size_t>(pr.threads);
  HashSlots s;
  s.rot = arena.add<double>(static_cast<std::size_t>(pr.H) * R * static_cast<std::size_t>(pr.d) * ldr);
  s.q_bucket = arena.add<std::int32_t>(BH * R * Nq);
  s.k_bucket = config.shared_qk ? s.q_bucket : arena.add<std::int32_t>(BH * R * Nk);
  // shared_qk: the tokens hashed (active query or visible key), per batch element.
  s.hashed = arena.add<std::int32_t>(config.shared_qk ? static_cast<std::size_t>(pr.B) * Nq : 0);
  s.hashed_count = arena.add<std::int32_t>(static_cast<std::size_t>(pr.B));
  s.proj = arena.add<double>(T * 4 * ldr);
  s.sort_tmp = arena.add<KeyIndex>(T * 2 * std::max(Nq, Nk));
  s.q_sorted = arena.add<std::int32_t>(BH * R * Nq);
  s.k_sorted = arena.add<std::int32_t>(BH * R * Nk);
  s.n_chunks = arena.add<std::int64_t>(static_cast<std::size_t>(pr.B));
  return s;
}

struct Hashed {
  const std::int32_t* q_bucket;
  const std::int32_t* k_bucket;
  const std::int32_t* q_sorted;
  const std::int32_t* k_sorted;
  const std::int64_t* n_chunks;
};

// Rotations, buckets and the sorted lists of every (batch, head, round).
Hashed hash_and_sort(const Problem& pr, const ReformerConfig& config, const TokenLists& lists,
                     const Arena& arena, const HashSlots& slots) {
  const int R = config.n_hashes;
  const std::size_t half = static_cast<std::size_t>(config.n_buckets / 2);
  const std::size_t ldr = rotation_ld(config);
  const std::size_t d = static_cast<std::size_t>(pr.d);
  auto* rot = arena.at<double>(slots.rot);
  auto* q_bucket = arena.at<std::int32_t>(slots.q_bucket);
  auto* k_bucket = arena.at<std::int32_t>(slots.k_bucket);
  auto* q_sorted = arena.at<std::int32_t>(slots.q_sorted);
  auto* k_sorted = arena.at<std::int32_t>(slots.k_sorted);
  auto* n_chunks = arena.at<std::int64_t>(slots.n_chunks);
  auto* proj = arena.at<double>(slots.proj);
  auto* sort_tmp = arena.at<KeyIndex>(slots.sort_tmp);
  auto* hashed = arena.at<std::int32_t>(slots.hashed);
  auto* hashed_count = arena.at<std::int32_t>(slots.hashed_count);

  for (std::int64_t b = 0; b < pr.B; ++b)
    n_chunks[b] = chunk_count(lists.q_count[b], lists.k_count[b], config);
  if (config.shared_qk)
    for (std::int64_t b = 0; b < pr.B; ++b) {
      std::int32_t n = 0;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i) || pr.key_visible(b, i))
          hashed[b * pr.Nq + n++] = static_cast<std::int32_t>(i);
      hashed_count[b] = n;
    }

  // R_r[t][c] = N(0, 1) draw number t * half + c of stream (head, round); padding columns 0.
  parallel_for(pr.H * R, pr.threads, [&](std::int64_t task) {
    const std::int64_t h = task / R;
    const int r = static_cast<int>(task % R);
    double* m = rot + static_cast<std::size_t>(task) * d * ldr;
    for (std::size_t t = 0; t < d; ++t)
      for (std::size_t c = 0; c < ldr; ++c)
        m[t * ldr + c] = c < half ? spec::reformer_rotation(pr.p->seed, h, r, half, t, c) : 0.0;
  });

  const std::size_t nmax = static_cast<std::size_t>(std::max(pr.Nq, pr.Nk));
  parallel_for_tid(pr.B * pr.H * R, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / R;
    const int r = static_cast<int>(task % R);
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const double* m = rot + static_cast<std::size_t>(h * R + r) * d * ldr;
    double* pbuf = proj + static_cast<std::size_t>(tid) * 4 * ldr;
    std::int32_t* qb = q_bucket + (bh * R + r) * pr.Nq;
    std::int32_t* kb = k_bucket + (bh * R + r) * pr.Nk;
    if (config.shared_qk) {
      HWY_DYNAMIC_DISPATCH(ReformerHashRows)(
          ReformerHashArgs{pr.dtype, pr.q_addr(b, h, 0), pr.p->q_row_stride, hashed + b * pr.Nq,
                           static_cast<std::size_t>(hashed_count[b]), d, m, ldr, half, qb, pbuf});
    } else {
      HWY_DYNAMIC_DISPATCH(ReformerHashRows)(
          ReformerHashArgs{pr.dtype, pr.q_addr(b, h, 0), pr.p->q_row_stride, lists.queries(b, pr.Nq),
                           static_cast<std::size_t>(lists.q_count[b]), d, m, ldr, half, qb, pbuf});
      HWY_DYNAMIC_DISPATCH(ReformerHashRows)(
          ReformerHashArgs{pr.dtype, pr.k_addr(b, h, 0), pr.p->k_row_stride, lists.keys(b, pr.Nk),
                           static_cast<std::size_t>(lists.k_count[b]), d, m, ldr, half, kb, pbuf});
    }
    // Stable sort of the tokens, listed by ascending position, by bucket.
    KeyIndex* tmp = sort_tmp + 2 * static_cast<std::size_t>(tid) * nmax;
    for (int side = 0; side < 2; ++side) {
      const bool is_query = side == 0;
      const std::int64_t N = is_query ? pr.Nq : pr.Nk;
      const std::int32_t n = is_query ? lists.q_count[b] : lists.k_count[b];
      const std::int32_t* idx = is_query ? lists.queries(b, N) : lists.keys(b, N);
      const std::int32_t* bucket = is_query ? qb : kb;
      for (std::int32_t t = 0; t < n; ++t)
        tmp[t] = {static_cast<std::uint32_t>(bucket[idx[t]]), idx[t]};
      radix_sort(tmp, tmp + nmax, static_cast<std::size_t>(n));
      std::int32_t* dst = (is_query ? q_sorted : k_sorted) + (bh * R + r) * N;
      for (std::int32_t t = 0; t < n; ++t) dst[t] = tmp[t].index;
    }
  });
  return {q_bucket, k_bucket, q_sorted, k_sorted, n_chunks};
}

// shared_qk: the tensors attention reads. K: the normalised q rows of the visible keys; with
// bf16 inputs also Q (active queries) and V (visible keys) as f32.
struct SharedSlots {
  std::size_t k, q, v;
};

SharedSlots plan_shared(Arena& arena, const Problem& pr) {
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  const bool bf16 = pr.dtype == DType::bf16;
  return {arena.add<float>(BH * static_cast<std::size_t>(pr.Nk * pr.d)),
          arena.add<float>(bf16 ? BH * static_cast<std::size_t>(pr.Nq * pr.d) : 0),
          arena.add<float>(bf16 ? BH * static_cast<std::size_t>(pr.Nk * pr.dv) : 0)};
}

template <class T>
void fill_shared(const Problem& pr, const TokenLists& lists, float* kn, float* qf, float* vf) {
  const std::int64_t d = pr.d, dv = pr.dv;
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    for (std::int32_t t = 0; t < lists.k_count[b]; ++t) {
      const std::int32_t j = lists.keys(b, pr.Nk)[t];
      const T* x = pr.q_row<T>(b, h, j);
      double n2 = 0.0;
      for (std::int64_t c = 0; c < d; ++c) {
        const double xc = to_float(x[c]);
        n2 = std::fma(xc, xc, n2);
      }
      const double norm = std::sqrt(n2);
      float* out = kn + (bh * pr.Nk + j) * d;
      for (std::int64_t c = 0; c < d; ++c)
        out[c] = n2 > 0.0 ? static_cast<float>(static_cast<double>(to_float(x[c])) / norm) : 0.0f;
      if (vf != nullptr) {
        const T* v = pr.v_row<T>(b, h, j);
        float* vo = vf + (bh * pr.Nk + j) * dv;
        for (std::int64_t c = 0; c < dv; ++c) vo[c] = to_float(v[c]);
      }
    }
    if (qf != nullptr)
      for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
        const std::int32_t i = lists.queries(b, pr.Nq)[t];
        const T* x = pr.q_row<T>(b, h, i);
        float* qo = qf + (bh * pr.Nq + i) * d;
        for (std::int64_t c = 0; c < d; ++c) qo[c] = to_float(x[c]);
      }
  });
}

}  // namespace

RunInfo reformer_forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace) {
  Timer total;
  const int R = config.n_hashes;
  const std::int64_t chunk = config.chunk_size;
  const std::size_t BHN = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  const std::size_t key_cap = static_cast<std::size_t>(std::max<std::int64_t>(1, std::min(2 * chunk, pr.Nk)));
  const RoundScratch layout = RoundScratch::make(key_cap, static_cast<std::size_t>(pr.d),
                                                 static_cast<std::size_t>(pr.dv));
  const std::int64_t max_chunks = std::max<std::int64_t>(1, chunk_count(pr.Nq, pr.Nk, config));
  // Up to 8 chunks per task, but at least 4 tasks per thread per round.
  const std::int64_t chunks_per_task = std::clamp<std::int64_t>(
      pr.B * pr.H * max_chunks / (4 * static_cast<std::int64_t>(pr.threads)), 1, 8);
  const std::int64_t tasks = pr.B * pr.H * ((max_chunks + chunks_per_task - 1) / chunks_per_task);
  const std::size_t T = static_cast<std::size_t>(pr.threads);

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const HashSlots hash_slots = plan_hashing(arena, pr, config);
  const SharedSlots shared_slots = config.shared_qk ? plan_shared(arena, pr) : SharedSlots{0, 0, 0};
  const std::size_t merge_slot = arena.add<MergeState>(R > 1 ? BHN : 0);
  const std::size_t scratch_slot = arena.add<float>(layout.total() * T);
  const std::size_t key_buf_slot = arena.add<std::int32_t>(key_cap * T);
  const std::size_t allow_slot =
      arena.add<std::uint8_t>(config.shared_qk ? T * static_cast<std::size_t>(pr.Nq) : 0);
  const std::size_t mark_slot =
      arena.add<std::uint8_t>(config.shared_qk ? T * static_cast<std::size_t>(pr.Nk) : 0);
  const std::size_t scores_slot = arena.add<std::int64_t>(static_cast<std::size_t>(tasks));
  const std::size_t ticks_slot = arena.add<PhaseTicks>(T);
  const TokenLists lists = scratch.bind();

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  zero_unattended_rows(pr, lists);
  if (float* lse = pr.p->lse) std::fill_n(lse, BHN, -std::numeric_limits<float>::infinity());

  // 1. shared_qk: the derived problem attention runs on.
  Timer timer;
  AttentionParams derived = *pr.p;
  Problem apr = pr;
  if (config.shared_qk) {
    float* kn = arena.at<float>(shared_slots.k);
    const bool bf16 = pr.dtype == DType::bf16;
    float* qf = bf16 ? arena.at<float>(shared_slots.q) : nullptr;
    float* vf = bf16 ? arena.at<float>(shared_slots.v) : nullptr;
    with_input_type(pr.dtype, [&](auto tag) { fill_shared<decltype(tag)>(pr, lists, kn, qf, vf); });
    derived.k = kn;
    derived.k_row_stride = pr.d;
    derived.k_head_stride = pr.Nk * pr.d;
    derived.k_batch_stride = pr.H * pr.Nk * pr.d;
    if (bf16) {
      derived.dtype = DType::f32;
      derived.q = qf;
      derived.q_row_stride = pr.d;
      derived.q_head_stride = pr.Nq * pr.d;
      derived.q_batch_stride = pr.H * pr.Nq * pr.d;
      derived.v = vf;
      derived.v_row_stride = pr.dv;
      derived.v_head_stride = pr.Nk * pr.dv;
      derived.v_batch_stride = pr.H * pr.Nk * pr.dv;
    }
    apr.p = &derived;
    apr.dtype = derived.dtype;
    std::memset(arena.at<std::uint8_t>(mark_slot), 0, T * static_cast<std::size_t>(pr.Nk));
  }
  info.transform.seconds += timer.lap();

  // 2-3. Rotations, buckets, sorted lists.
  const Hashed hashed = hash_and_sort(pr, config, lists, arena, hash_slots);
  info.sort.seconds += timer.lap();

  // 4. Rounds.
  Timer attn;
  auto* scores = arena.at<std::int64_t>(scores_slot);
  auto* phase_ticks = arena.at<PhaseTicks>(ticks_slot);
  std::fill_n(phase_ticks, pr.threads, PhaseTicks{});
  MergeState* merge = R > 1 ? arena.at<MergeState>(merge_slot) : nullptr;
  const ReformerMask mask = config.shared_qk ? ReformerMask::self
                            : pr.p->causal   ? ReformerMask::causal
                                             : ReformerMask::none;
  for (int r = 0; r < R; ++r) {
    const ReformerRoundArgs args{&apr,
                                 &lists,
                                 hashed.q_sorted,
                                 hashed.k_sorted,
                                 hashed.n_chunks,
                                 R,
                                 r,
                                 mask,
                                 merge,
                                 arena.at<float>(scratch_slot),
                                 layout,
                                 arena.at<std::int32_t>(key_buf_slot),
                                 key_cap,
                                 arena.at<std::uint8_t>(allow_slot),
                                 arena.at<std::uint8_t>(mark_slot),
                                 max_chunks,
                                 chunks_per_task,
                                 scores,
                                 phase_ticks};
    HWY_DYNAMIC_DISPATCH(ReformerRound)(args);
    for (std::int64_t t = 0; t < tasks; ++t) info.attention_scores += static_cast<std::size_t>(scores[t]);
  }
  split_wall_time(phase_ticks, pr.threads, attn.seconds(), info);

  // 5. Each query's logsumexp over the multiset of (round, key).
  timer.lap();
  if (float* lse = pr.p->lse; lse != nullptr && merge != nullptr) {
    for (std::int64_t b = 0; b < pr.B; ++b) {
      const std::int64_t C = hashed.n_chunks[b];
      if (C == 0) continue;
      const float copies = C == 1 ? static_cast<float>(R) : 1.0f;
      const std::int32_t* queries = lists.queries(b, pr.Nq);
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
          const std::size_t row = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + queries[t]);
          lse[row] = merge[row].sum > 0.0f ? merge[row].max + std::log(merge[row].sum * copies)
                                           : -std::numeric_limits<float>::infinity();
        }
    }
  }
  info.merge.seconds += timer.lap();
  info.seconds_total = total.seconds();
  return info;
}

void Method<ReformerConfig>::check(const ReformerConfig& c, const Problem& pr) {
  if (c.n_hashes < 1 || c.n_hashes > 1024)
    fail("ReformerConfig.n_hashes", str(std::int64_t{c.n_hashes}), "must be in [1, 1024]");
  if (c.n_buckets < 2 || c.n_buckets % 2 != 0)
    fail("ReformerConfig.n_buckets", str(std::int64_t{c.n_buckets}), "must be even and >= 2");
  if (c.n_buckets > 65536)
    fail("ReformerConfig.n_buckets", str(std::int64_t{c.n_buckets}), "must be <= 65536");
  at_least("ReformerConfig.chunk_size", c.chunk_size, 1);
  if (c.shared_qk && pr.Nq != pr.Nk)
    fail("ReformerConfig.shared_qk", "true",
         "needs nq == nk (keys are the normalised queries), got nq = " + str(pr.Nq) +
             ", nk = " + str(pr.Nk));
}

void Method<ReformerConfig>::check_finite(const Problem& pr, const ReformerConfig& config) {
  if (!config.shared_qk) return check_inputs_finite(pr);
  AttentionParams keys_from_q = *pr.p;
  keys_from_q.k = keys_from_q.q;
  keys_from_q.k_batch_stride = keys_from_q.q_batch_stride;
  keys_from_q.k_head_stride = keys_from_q.q_head_stride;
  keys_from_q.k_row_stride = keys_from_q.q_row_stride;
  try {
    check_inputs_finite(checked_problem(keys_from_q));
  } catch (const Error& e) {
    std::string what = e.what();
    if (const std::size_t at = what.find("params.k["); at != std::string::npos) {
      what.replace(at, 9, "params.q[");
      what += " (the row of a key: ReformerConfig.shared_qk builds keys from Q)";
    }
    throw Error(what);
  }
}

ReformerTrain reformer_train_groups(const Problem& pr, const ReformerConfig& config) {
  const ReformerBuckets bk = reformer_buckets(pr, config);
  const std::int64_t R = config.n_hashes, offset = pr.Nk - pr.Nq;
  ReformerTrain out;
  if (config.shared_qk) out.allow.assign(static_cast<std::size_t>(pr.B * pr.H * R * pr.Nq), 0);
  std::vector<std::int32_t> keys;
  std::vector<std::uint8_t> mark(static_cast<std::size_t>(pr.Nk), 0);
  for (std::int64_t r = 0; r < R; ++r) {
    for (std::int64_t b = 0; b < pr.B; ++b) {
      const std::int64_t C = bk.n_chunks[static_cast<std::size_t>(b)];
      if (C == 0) continue;
      const std::int64_t nq = bk.q_count[static_cast<std::size_t>(b)], nk = bk.k_count[static_cast<std::size_t>(b)];
      for (std::int64_t h = 0; h < pr.H; ++h) {
        const std::int64_t bhr = (b * pr.H + h) * R + r;
        // With one chunk every round has the same set (the forward computes round 0 once).
        const std::int64_t sr = C == 1 ? (b * pr.H + h) * R : bhr;
        const std::int32_t* q_order = bk.q_sorted.data() + sr * pr.Nq;
        const std::int32_t* k_order = bk.k_sorted.data() + sr * pr.Nk;
        std::uint8_t* allow = config.shared_qk ? out.allow.data() + bhr * pr.Nq : nullptr;
        for (std::int64_t c = 0; c < C; ++c) {
          const IndexRange qr = query_cluster(c, nq, C);
          if (qr.end <= qr.begin) continue;
          // The set: key chunks c - 1 and c, as the forward's RoundT takes them.
          keys.clear();
          if (C > 1 && c >= 1) {
            keys.assign(k_order + key_cluster(c - 1, nk, C).begin, k_order + key_cluster(c, nk, C).end);
          } else if (C > 1) {
            const IndexRange last = key_cluster(C - 1, nk, C), first = key_cluster(0, nk, C);
            if (last.begin > first.end) {
              keys.assign(k_order + last.begin, k_order + nk);
              keys.insert(keys.end(), k_order, k_order + first.end);
            } else {
              keys.assign(k_order, k_order + nk);
            }
          } else {
            keys.assign(k_order, k_order + nk);
          }
          const std::int32_t* qidx = q_order + qr.begin;
          const std::size_t mq = static_cast<std::size_t>(qr.end - qr.begin);
          if (allow != nullptr) {
            std::int32_t kmin = std::numeric_limits<std::int32_t>::max();
            for (std::int32_t j : keys) {
              mark[static_cast<std::size_t>(j)] = 1;
              kmin = std::min(kmin, j);
            }
            for (std::size_t t = 0; t < mq; ++t) {
              const std::int32_t i = qidx[t];
              const bool others = pr.p->causal ? kmin < i : keys.size() > mark[static_cast<std::size_t>(i)];
              allow[i] = others ? 0 : 1;
            }
            for (std::int32_t j : keys) mark[static_cast<std::size_t>(j)] = 0;
          }
          out.set.add(b, h, static_cast<int>(r), qidx, mq, keys.data(), keys.size(),
                      ReformerTrainMask{allow, offset, pr.p->causal});
        }
      }
    }
    out.set.end_launch();
  }
  out.set.finish();
  return out;
}

std::vector<float> reformer_shared_keys(const Problem& pr) {
  std::vector<float> kn(static_cast<std::size_t>(pr.B * pr.H * pr.Nk * pr.d), 0.0f);
  CallScratch scratch(pr, nullptr);
  const TokenLists lists = scratch.bind();
  fill_shared<float>(pr, lists, kn.data(), nullptr, nullptr);
  return kn;
}

namespace {

void run_reformer_groups(const TrainArgs& a, const TrainGroups<ReformerTrainMask>& set, float* pk, float* pv,
                         float* scratch, std::size_t per_thread) {
  HWY_DYNAMIC_DISPATCH(ReformerTrainGroups)(a, set, pk, pv, scratch, per_thread);
}

// The problem attention reads: with shared_qk, K replaced by the normalised query rows.
struct ReformerInputs {
  std::vector<float> kn;
  AttentionParams params;
  Problem pr;
  ReformerInputs(const Problem& base, const ReformerConfig& config) : params(*base.p), pr(base) {
    if (!config.shared_qk) return;
    kn = reformer_shared_keys(base);
    params.k = kn.data();
    params.k_row_stride = base.d;
    params.k_head_stride = base.Nk * base.d;
    params.k_batch_stride = base.H * base.Nk * base.d;
    pr.p = &params;
  }
};

}  // namespace

RunInfo Method<ReformerConfig>::forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace) {
  RunInfo info = reformer_forward(pr, config, workspace);
  if (pr.p->dropout > 0.0f) {
    const ReformerInputs in(pr, config);
    groups_dropout_forward(in.pr, pr.p->lse, reformer_train_groups(pr, config).set, workspace, run_reformer_groups);
  }
  return info;
}

RunInfo Method<ReformerConfig>::backward(const Problem& pr, const GradientParams& grads,
                                         const ReformerConfig& config, Workspace* workspace) {
  const ReformerTrain train = reformer_train_groups(pr, config);
  if (!config.shared_qk) return groups_backward(pr, grads, train.set, workspace, run_reformer_groups);
  // shared_qk: the backward on the derived problem, dK into a buffer, then chained into dQ.
  const ReformerInputs in(pr, config);
  std::vector<float> dkn(in.kn.size());
  GradientParams derived = grads;
  derived.grad_k = dkn.data();
  RunInfo info = groups_backward(in.pr, derived, train.set, workspace, run_reformer_groups);
  const AttentionParams& p = *pr.p;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        std::fill_n(grads.grad_k + b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride, pr.d, 0.0f);
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    for (std::int64_t j = 0; j < pr.Nk; ++j) {
      if (!pr.key_visible(b, j)) continue;
      const float* x = pr.q_row<float>(b, h, j);
      const float* k = in.kn.data() + (bh * pr.Nk + j) * pr.d;
      const float* dk = dkn.data() + (bh * pr.Nk + j) * pr.d;
      double n2 = 0.0, kd = 0.0;
      for (std::int64_t c = 0; c < pr.d; ++c) {
        n2 = std::fma(static_cast<double>(x[c]), static_cast<double>(x[c]), n2);
        kd += static_cast<double>(k[c]) * static_cast<double>(dk[c]);
      }
      if (!(n2 > 0.0)) continue;
      const double inv = 1.0 / std::sqrt(n2);
      float* dq = grads.grad_q + b * p.q_batch_stride + h * p.q_head_stride + j * p.q_row_stride;
      for (std::int64_t c = 0; c < pr.d; ++c)
        dq[c] = static_cast<float>(static_cast<double>(dq[c]) +
                                   (static_cast<double>(dk[c]) - static_cast<double>(k[c]) * kd) * inv);
    }
  });
  return info;
}

KeyPairs Method<ReformerConfig>::key_pairs(const Problem& pr, const ReformerConfig& config) {
  return group_pairs(pr, reformer_train_groups(pr, config).set);
}

ReformerBuckets reformer_buckets(const Problem& pr, const ReformerConfig& config) {
  CallScratch scratch(pr, nullptr);
  Arena& arena = scratch.arena();
  const HashSlots slots = plan_hashing(arena, pr, config);
  const TokenLists lists = scratch.bind();
  const Hashed hashed = hash_and_sort(pr, config, lists, arena, slots);

  ReformerBuckets out;
  out.B = pr.B;
  out.H = pr.H;
  out.Nq = pr.Nq;
  out.Nk = pr.Nk;
  out.rounds = config.n_hashes;
  const std::int64_t R = config.n_hashes;
  out.q_bucket.assign(static_cast<std::size_t>(pr.B * pr.H * R * pr.Nq), -1);
  out.k_bucket.assign(static_cast<std::size_t>(pr.B * pr.H * R * pr.Nk), -1);
  out.q_sorted = out.q_bucket;
  out.k_sorted = out.k_bucket;
  for (std::int64_t bhr = 0; bhr < pr.B * pr.H * R; ++bhr) {
    const std::int64_t b = bhr / (pr.H * R);
    for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
      const std::int32_t i = lists.queries(b, pr.Nq)[t];
      out.q_bucket[static_cast<std::size_t>(bhr * pr.Nq + i)] = hashed.q_bucket[bhr * pr.Nq + i];
      out.q_sorted[static_cast<std::size_t>(bhr * pr.Nq + t)] = hashed.q_sorted[bhr * pr.Nq + t];
    }
    for (std::int32_t t = 0; t < lists.k_count[b]; ++t) {
      const std::int32_t j = lists.keys(b, pr.Nk)[t];
      out.k_bucket[static_cast<std::size_t>(bhr * pr.Nk + j)] = hashed.k_bucket[bhr * pr.Nk + j];
      out.k_sorted[static_cast<std::size_t>(bhr * pr.Nk + t)] = hashed.k_sorted[bhr * pr.Nk + t];
    }
  }
  out.q_count.assign(lists.q_count, lists.q_count + pr.B);
  out.k_count.assign(lists.k_count, lists.k_count + pr.B);
  out.n_chunks.assign(hashed.n_chunks, hashed.n_chunks + pr.B);
  return out;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
