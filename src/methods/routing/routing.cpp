// Routing attention forward (definition: smyrf.h, RoutingConfig).
//
// 1. Routing stage (RoutingRoute, per target): each token's inverse norm; the unit centroids
//    (given, normalised, or spherical k-means per (batch, head)); every active query and
//    visible key assigned to its most similar centroid; a stable radix sort of queries and of
//    keys by centroid (tokens enter in position order, so the order is (centroid, position)).
//    Similarities are fma chains in index order computed for 8 centroids at a time in the
//    lanes of a double vector: each lane is exactly the scalar chain of the definition, so the
//    cluster ids are bit-identical to the oracle's on every target with a fused multiply-add
//    (targets without one take the scalar chains with std::fma).
// 2. Attention (RoutingAttend, per target): query chunk c attends to key chunk c through the
//    shared key-set engine (AttendGroup), writing O and lse directly (one round); causal
//    queries that see no key of their chunk then attend to their own position's key.
//
// Parallel: norms and assignments over (batch, head, block of tokens); centroid updates over
// (batch, head, group of centroids); sorting over (batch, head);
// attention over (batch, head, run of chunks). Every task writes its own outputs and every sum
// has a fixed order, so results do not depend on the thread count.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/routing/routing.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/phases.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "common/timer.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/keyset-inl.h"
#include "kernels/group_train-inl.h"
#include "kernels/radix_sort.h"
#include "kernels/tile_matmul-inl.h"
#include "methods/routing/routing.h"
#include "methods/smyrf/clustering.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace routing {

using detail::kRoutingTokenBlock;

using DD = hn::CappedTag<double, 8>;  // at most 8 lanes: Kp is a multiple of 8
using VD = hn::Vec<DD>;

// The input row of token t of (b, h) (queries first, then keys).
template <class T>
HWY_INLINE const T* Row(const detail::Problem& pr, const detail::TokenLists& lists,
                        std::int64_t b, std::int64_t h, std::int64_t t) {
  const std::int64_t nq = lists.q_count[b];
  return t < nq ? pr.q_row<T>(b, h, lists.queries(b, pr.Nq)[t])
                : pr.k_row<T>(b, h, lists.keys(b, pr.Nk)[t - nq]);
}

// u[t * ld + j] = x_j * inv_t (the tokens' unit vectors, each a double product).
template <class T>
HWY_INLINE void UnitRows(const T* const rows[4], const double inv[4], std::size_t d,
                         double* u, std::size_t ld) {
  for (std::size_t t = 0; t < 4; ++t)
    for (std::size_t j = 0; j < d; ++j) u[t * ld + j] = detail::to_double(rows[t][j]) * inv[t];
}

// Similarities of 4 tokens (unit vectors u, row stride ld) to the K centroids
// (sims[t * Kp + c]): sims[t * Kp + c] = fma(u_{d-1}, mu_c[d-1], ... fma(u_0, mu_c[0], 0)), the
// centroids in the lanes (tiles of 4 tokens x 2, then 1 vectors of centroids).
HWY_INLINE void Sims(const double* u, std::size_t ld, std::size_t d, const double* cent,
                     std::size_t K, std::size_t Kp, double* sims) {
  const tile::Strided<double> x{u, static_cast<std::int64_t>(ld), 1};
  const tile::RowMajor<double> mu{cent, static_cast<std::int64_t>(Kp)};
  const std::int64_t n = static_cast<std::int64_t>(d);
#if HWY_NATIVE_FMA
  (void)K;
  const std::int64_t lds = static_cast<std::int64_t>(Kp);
  const DD dd;
  const std::size_t L = hn::Lanes(dd);
  std::size_t g = 0;
  for (; g + 2 * L <= Kp; g += 2 * L)
    tile::Tile<4, 2>(dd, x, mu, n, static_cast<std::int64_t>(g), sims, lds);
  for (; g < Kp; g += L) tile::Tile<4, 1>(dd, x, mu, n, static_cast<std::int64_t>(g), sims, lds);
#else
  // No fused multiply-add in this target's vectors: the scalar chains (std::fma is exact).
  for (std::size_t t = 0; t < 4; ++t)
    for (std::size_t c = 0; c < K; ++c)
      sims[t * Kp + c] = tile::Element<double>(x, mu, static_cast<std::int64_t>(t),
                                               static_cast<std::int64_t>(c), n);
#endif
}

// s_j = fma(x_j, inv, s_j) for j < d: a member's contribution to its centroid's sum, fused
// explicitly (never a separately rounded x_j * inv, which compilers may or may not contract).
template <class T>
HWY_INLINE void Accumulate(const T* row, double inv, std::size_t d, double* s) {
  std::size_t j = 0;
#if HWY_NATIVE_FMA
  const DD dd;
  const std::size_t L = hn::Lanes(dd);
  const VD vi = hn::Set(dd, inv);
  for (; j + L <= d; j += L)
    hn::StoreU(hn::MulAdd(LoadAs(dd, row + j), vi, hn::LoadU(dd, s + j)), dd, s + j);
#endif
  for (; j < d; ++j) s[j] = std::fma(detail::to_double(row[j]), inv, s[j]);
}

// The definition's unit-vector rule: inv = 1 / sqrt(n2) with n2 the fma chain of x_j * x_j,
// 0 when n2 is not > 0.
HWY_INLINE double InvNorm(double n2) { return n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0; }

template <class T>
void RouteT(const detail::RoutingRouteArgs& a) {
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const std::int64_t BH = pr.B * pr.H;
  const std::size_t d = static_cast<std::size_t>(pr.d);
  const std::size_t K = static_cast<std::size_t>(a.K), Kp = a.Kp;
  const std::int64_t NT = pr.Nq + pr.Nk;  // token slots per (b, h)
  const std::int64_t blocks = (NT + kRoutingTokenBlock - 1) / kRoutingTokenBlock;
  auto count = [&](std::int64_t b) -> std::int64_t { return lists.q_count[b] + lists.k_count[b]; };
  auto cent_of = [&](std::int64_t bh) {
    const std::int64_t slot = a.given != nullptr ? bh % pr.H : bh;
    return a.cent + static_cast<std::size_t>(slot) * d * Kp;
  };
  detail::Timer timer;

  // Inverse norm of one row (the definition's fma chain).
  auto inv_norm = [&](const auto* row) {
    double n2 = 0.0;
    for (std::size_t j = 0; j < d; ++j) {
      const double x = detail::to_double(row[j]);
      n2 = std::fma(x, x, n2);
    }
    return InvNorm(n2);
  };

  // 1. Initial centroids (serial: K rows per (b, h)).
  for (std::int64_t bh = 0; bh < BH; ++bh) a.active[bh] = count(bh / pr.H) > 0 ? 1 : 0;
  if (a.given != nullptr) {
    for (std::int64_t h = 0; h < pr.H; ++h) {
      double* cent = a.cent + static_cast<std::size_t>(h) * d * Kp;
      std::fill_n(cent, d * Kp, 0.0);
      for (std::size_t c = 0; c < K; ++c) {
        const float* row = a.given + (static_cast<std::size_t>(h) * K + c) * d;
        const double inv = inv_norm(row);
        for (std::size_t j = 0; j < d; ++j) {
          const double x = row[j];
          cent[j * Kp + c] = x * inv;
        }
      }
    }
  } else {
    for (std::int64_t bh = 0; bh < BH; ++bh) {
      const std::int64_t b = bh / pr.H, h = bh % pr.H;
      double* cent = cent_of(bh);
      std::fill_n(cent, d * Kp, 0.0);
      const std::int64_t n = count(b);
      for (std::size_t c = 0; c < K && n > 0; ++c) {
        const std::int64_t t = static_cast<std::int64_t>(c) * n / static_cast<std::int64_t>(K);
        const T* row = Row<T>(pr, lists, b, h, t);
        const double inv = inv_norm(row);
        for (std::size_t j = 0; j < d; ++j) cent[j * Kp + c] = detail::to_double(row[j]) * inv;
      }
    }
  }

  // 2. Assignment passes (k-means iterations, then the final routing); pass 0 also computes
  //    every token's inverse norm. Between passes, the centroid update.
  const int passes = a.given != nullptr ? 1 : a.iterations + 1;
  // Centroids per update task: enough tasks for every thread, each centroid in one task.
  const std::int64_t groups =
      std::min<std::int64_t>(a.K, std::max<std::int64_t>(1, 2 * pr.threads / std::max<std::int64_t>(BH, 1)));
  const std::int64_t per_group = (a.K + groups - 1) / groups;
  for (int pass = 0; pass < passes; ++pass) {
    detail::parallel_for_tid(BH * blocks, pr.threads, [&](std::int64_t task, int tid) {
      const std::int64_t bh = task / blocks, blk = task % blocks;
      a.changed[task] = 0;
      if (!a.active[bh]) return;
      const std::int64_t b = bh / pr.H, h = bh % pr.H;
      const std::int64_t t0 = blk * kRoutingTokenBlock, t1 = std::min(count(b), t0 + kRoutingTokenBlock);
      const double* cent = cent_of(bh);
      double* inv_all = a.inv + bh * NT;
      std::int32_t* assign = a.assign + bh * NT;
      double* sims = a.sims + static_cast<std::size_t>(tid) * detail::routing_sims_doubles(Kp, d);
      double* u = sims + 4 * Kp;
      const std::size_t ld = detail::routing_pad8(d);
      if (pass == 0)
        for (std::int64_t t = t0; t < t1; ++t) inv_all[t] = inv_norm(Row<T>(pr, lists, b, h, t));
      bool changed = pass == 0;
      for (std::int64_t t = t0; t < t1; t += 4) {
        const std::int64_t nt = std::min<std::int64_t>(4, t1 - t);
        const T* rows[4];
        double inv[4];
        for (std::int64_t s = 0; s < 4; ++s) {
          const std::int64_t ts = t + std::min(s, nt - 1);
          rows[s] = Row<T>(pr, lists, b, h, ts);
          inv[s] = inv_all[ts];
        }
        UnitRows(rows, inv, d, u, ld);
        Sims(u, ld, d, cent, K, Kp, sims);
        for (std::int64_t s = 0; s < nt; ++s) {
          const double* row = sims + static_cast<std::size_t>(s) * Kp;
          std::int32_t best = 0;
          double best_sim = row[0];
          for (std::size_t c = 1; c < K; ++c)
            if (row[c] > best_sim) {
              best_sim = row[c];
              best = static_cast<std::int32_t>(c);
            }
          if (pass > 0 && assign[t + s] != best) changed = true;
          assign[t + s] = best;
        }
      }
      a.changed[task] = changed ? 1 : 0;
    });
    // Converged (no assignment changed): the update would give the same centroids, so these
    // assignments are final.
    for (std::int64_t bh = 0; bh < BH; ++bh) {
      if (!a.active[bh]) continue;
      bool any = false;
      for (std::int64_t blk = 0; blk < blocks; ++blk) any = any || a.changed[bh * blocks + blk] != 0;
      if (!any) a.active[bh] = 0;
    }
    if (pass + 1 == passes) break;

    // Update, per (b, h, group of centroids): member sums in list order (fma chains), then the
    // unit vector of each non-empty, non-zero sum.
    detail::parallel_for(BH * groups, pr.threads, [&](std::int64_t task) {
      const std::int64_t bh = task / groups, g = task % groups;
      if (!a.active[bh]) return;
      const std::int32_t c0 = static_cast<std::int32_t>(g * per_group);
      const std::int32_t c1 = static_cast<std::int32_t>(std::min<std::int64_t>(a.K, (g + 1) * per_group));
      if (c0 >= c1) return;
      const std::int64_t b = bh / pr.H, h = bh % pr.H;
      double* sums = a.sums + static_cast<std::size_t>(bh) * K * d;
      std::fill(sums + static_cast<std::size_t>(c0) * d, sums + static_cast<std::size_t>(c1) * d, 0.0);
      // Which centroids of the group have members.
      std::uint8_t* member = a.member + static_cast<std::size_t>(bh) * K;
      std::fill(member + c0, member + c1, std::uint8_t{0});
      const double* inv = a.inv + bh * NT;
      const std::int32_t* assign = a.assign + bh * NT;
      const std::int64_t n = count(b);
      for (std::int64_t t = 0; t < n; ++t) {
        const std::int32_t c = assign[t];
        if (c < c0 || c >= c1) continue;
        member[c] = 1;
        Accumulate(Row<T>(pr, lists, b, h, t), inv[t], d,
                   sums + static_cast<std::size_t>(c) * d);
      }
      double* cent = cent_of(bh);
      for (std::int32_t c = c0; c < c1; ++c) {
        if (!member[c]) continue;
        const double* sc = sums + static_cast<std::size_t>(c) * d;
        double n2 = 0.0;
        for (std::size_t j = 0; j < d; ++j) n2 = std::fma(sc[j], sc[j], n2);
        if (!(n2 > 0.0)) continue;
        const double inv_c = 1.0 / std::sqrt(n2);
        for (std::size_t j = 0; j < d; ++j) cent[j * Kp + static_cast<std::size_t>(c)] = sc[j] * inv_c;
      }
    });
  }
  a.info->transform.seconds += timer.lap();

  // 4. Stable sort of queries and of keys by centroid (input in position order).
  const std::size_t nmax = static_cast<std::size_t>(std::max(pr.Nq, pr.Nk));
  detail::parallel_for_tid(BH * 2, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / 2;
    const bool queries = task % 2 == 0;
    const std::int64_t b = bh / pr.H;
    const std::int32_t nq = lists.q_count[b];
    const std::int32_t n = queries ? nq : lists.k_count[b];
    const std::int32_t* pos = queries ? lists.queries(b, pr.Nq) : lists.keys(b, pr.Nk);
    const std::int32_t* assign = a.assign + bh * NT + (queries ? 0 : nq);
    auto* tmp = static_cast<detail::KeyIndex*>(a.sort_tmp) + 2 * static_cast<std::size_t>(tid) * nmax;
    for (std::int32_t i = 0; i < n; ++i)
      tmp[i] = {static_cast<std::uint32_t>(assign[i]), pos[i]};
    detail::radix_sort(tmp, tmp + nmax, static_cast<std::size_t>(n));
    std::int32_t* dst = queries ? a.q_sorted + bh * pr.Nq : a.k_sorted + bh * pr.Nk;
    for (std::int32_t i = 0; i < n; ++i) dst[i] = tmp[i].index;
  });
  a.info->sort.seconds += timer.lap();
}

template <class T, class Mask>
HWY_INLINE std::size_t AttendChunk(const detail::Problem& pr, std::int64_t b, std::int64_t h,
                                   const std::int32_t* qidx, std::size_t mq,
                                   const std::int32_t* kidx, std::size_t nk,
                                   const Mask& mask, const detail::RoundScratch& layout,
                                   float* scratch) {
  return AttendGroup<T>(pr, b, h, qidx, mq, kidx, nk, mask, GroupOutput{nullptr, true, pr.p->lse},
                        layout, scratch);
}

template <class T>
void AttendT(const detail::RoutingAttendArgs& a) {
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const bool causal = pr.p->causal;
  detail::parallel_for_tid(pr.B * pr.H * a.tasks_per_bh, pr.threads, [&](std::int64_t task, int tid) {
    a.scores_per_task[task] = 0;
    const std::int64_t bh = task / a.tasks_per_bh, run = task % a.tasks_per_bh;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    if (nq == 0 || nk == 0) return;
    const std::int64_t C = detail::routing_chunk_count(nq, nk, a.window);
    const std::int64_t c0 = run * a.chunks_per_task, c1 = std::min(C, c0 + a.chunks_per_task);
    if (c0 >= c1) return;
    const std::int32_t* q_order = a.q_sorted + bh * pr.Nq;
    const std::int32_t* k_order = a.k_sorted + bh * pr.Nk;
    float* scratch = a.scratch + static_cast<std::size_t>(tid) * a.layout.total();
    const std::uint64_t t_start = detail::ticks();
    std::int64_t scores = 0;
    for (std::int64_t c = c0; c < c1; ++c) {
      const detail::IndexRange qr = detail::query_cluster(c, nq, C);
      if (qr.end <= qr.begin) continue;
      const detail::IndexRange kr = detail::key_cluster(c, nk, C);
      const std::int32_t* qidx = q_order + qr.begin;
      const std::int32_t* kidx = k_order + kr.begin;
      const std::size_t mq = static_cast<std::size_t>(qr.end - qr.begin);
      const std::size_t mk = static_cast<std::size_t>(kr.end - kr.begin);
      if (!causal) {
        scores += static_cast<std::int64_t>(
            AttendChunk<T>(pr, b, h, qidx, mq, kidx, mk, NoMask{}, a.layout, scratch));
        continue;
      }
      scores += static_cast<std::int64_t>(AttendChunk<T>(
          pr, b, h, qidx, mq, kidx, mk, CausalMask{pr.Nk - pr.Nq}, a.layout, scratch));
      // Queries before every key of the chunk: their own position's key, if visible.
      const std::int32_t kmin = *std::min_element(kidx, kidx + mk);
      for (std::size_t i = 0; i < mq; ++i) {
        const std::int64_t p = pr.key_position(qidx[i]);
        if (p >= kmin) continue;
        if (p < 0 || !pr.key_visible(b, p)) continue;  // O = 0, lse = -inf (written above)
        const std::int32_t own = static_cast<std::int32_t>(p);
        scores += static_cast<std::int64_t>(
            AttendChunk<T>(pr, b, h, qidx + i, 1, &own, 1, NoMask{}, a.layout, scratch));
      }
    }
    a.phase_ticks[tid].attention += detail::ticks() - t_start;
    a.scores_per_task[task] = scores;
  });
}

}  // namespace routing

void RoutingRoute(const detail::RoutingRouteArgs& args) {
  detail::with_input_type(args.pr->dtype, [&](auto tag) { routing::RouteT<decltype(tag)>(args); });
}

void RoutingAttend(const detail::RoutingAttendArgs& args) {
  detail::with_input_type(args.pr->dtype, [&](auto tag) { routing::AttendT<decltype(tag)>(args); });
}

void RoutingTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<detail::CausalPairs>& set,
                        float* pk, float* pv, float* scratch, std::size_t per_thread) {
  RunTrainGroups(a, set, pk, pv, scratch, per_thread);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <string>

#include "methods/routing/registration.h"
#include "methods/dense/dense.h"

namespace smyrf::detail {
HWY_EXPORT(RoutingRoute);
HWY_EXPORT(RoutingAttend);
HWY_EXPORT(RoutingTrainGroups);

namespace {

std::size_t padded_clusters(int K) { return (static_cast<std::size_t>(K) + 7) / 8 * 8; }

struct RouteSlots {
  std::size_t inv, assign, cent, sums, changed, active, member, sims, sort_tmp, q_sorted, k_sorted;
};

RouteSlots plan_route(Arena& arena, const Problem& pr, const RoutingConfig& config) {
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  const std::size_t NT = static_cast<std::size_t>(pr.Nq + pr.Nk);
  const std::size_t K = static_cast<std::size_t>(config.n_clusters), Kp = padded_clusters(config.n_clusters);
  const std::size_t d = static_cast<std::size_t>(pr.d);
  const bool given = config.centroids != nullptr;
  const std::size_t block = static_cast<std::size_t>(kRoutingTokenBlock);
  const std::size_t blocks = (NT + block - 1) / block;
  const std::size_t threads = static_cast<std::size_t>(pr.threads);
  RouteSlots s;
  s.inv = arena.add<double>(BH * NT);
  s.assign = arena.add<std::int32_t>(BH * NT);
  s.cent = arena.add<double>((given ? static_cast<std::size_t>(pr.H) : BH) * d * Kp);
  s.sums = arena.add<double>(given ? 0 : BH * K * d);
  s.changed = arena.add<std::uint8_t>(BH * blocks);
  s.active = arena.add<std::uint8_t>(BH);
  s.member = arena.add<std::uint8_t>(given ? 0 : BH * K);
  s.sims = arena.add<double>(threads * routing_sims_doubles(Kp, d));
  s.sort_tmp = arena.add<KeyIndex>(2 * threads * static_cast<std::size_t>(std::max(pr.Nq, pr.Nk)));
  s.q_sorted = arena.add<std::int32_t>(BH * static_cast<std::size_t>(pr.Nq));
  s.k_sorted = arena.add<std::int32_t>(BH * static_cast<std::size_t>(pr.Nk));
  return s;
}

RoutingRouteArgs bind_route(const Arena& arena, const RouteSlots& s, const Problem& pr,
                            const TokenLists& lists, const RoutingConfig& config, RunInfo* info) {
  return {&pr,
          &lists,
          config.n_clusters,
          config.iterations,
          padded_clusters(config.n_clusters),
          config.centroids,
          arena.at<double>(s.inv),
          arena.at<std::int32_t>(s.assign),
          arena.at<double>(s.cent),
          arena.at<double>(s.sums),
          arena.at<std::uint8_t>(s.changed),
          arena.at<std::uint8_t>(s.active),
          arena.at<std::uint8_t>(s.member),
          arena.at<double>(s.sims),
          arena.at<KeyIndex>(s.sort_tmp),
          arena.at<std::int32_t>(s.q_sorted),
          arena.at<std::int32_t>(s.k_sorted),
          info};
}

// Bytes model (common/phases.h): the routing reads every active row once per pass (norms,
// each assignment, each member sum); attention reads each chunk's Q rows and its K and V rows
// and writes O.
void add_bytes(const Problem& pr, const RoutingConfig& config, const TokenLists& lists,
               RunInfo& info) {
  const double e = static_cast<double>(pr.elem_bytes()), f = sizeof(float);
  const double passes = config.centroids != nullptr ? 2.0 : 2.0 * config.iterations + 2.0;
  for (std::int64_t b = 0; b < pr.B; ++b) {
    const double nq = lists.q_count[b], nk = lists.k_count[b];
    const double heads = static_cast<double>(pr.H);
    info.transform.bytes += heads * passes * (nq + nk) * static_cast<double>(pr.d) * e;
    info.sort.bytes += heads * (nq + nk) * 24.0;
    if (nk == 0) continue;
    info.attention.bytes += heads * (nq * (static_cast<double>(pr.d) * e + static_cast<double>(pr.dv) * f) +
                                     std::max(nk, nq) * static_cast<double>(pr.d + pr.dv) * e);
  }
}

// Threads for a stage of about `flops` operations: one below ~2^18 (a parallel region costs
// more than it saves there). Results never depend on the thread count.
Problem with_threads_for(const Problem& pr, double flops) {
  Problem p = pr;
  if (flops < static_cast<double>(1 << 18)) p.threads = 1;
  return p;
}

double route_flops(const Problem& pr, const RoutingConfig& config) {
  return static_cast<double>(pr.B * pr.H) * static_cast<double>(pr.Nq + pr.Nk) *
         static_cast<double>(config.n_clusters) * static_cast<double>(pr.d);
}

}  // namespace

void validate_routing_centroids(const Problem& pr, const RoutingConfig& config) {
  if (config.centroids == nullptr) return;
  const std::int64_t K = config.n_clusters;
  for (std::int64_t h = 0; h < pr.H; ++h)
    for (std::int64_t c = 0; c < K; ++c)
      for (std::int64_t j = 0; j < pr.d; ++j) {
        const float x = config.centroids[(h * K + c) * pr.d + j];
        if (!std::isfinite(x))
          throw Error("smyrf: RoutingConfig.centroids[" + std::to_string(h) + ", " +
                      std::to_string(c) + ", " + std::to_string(j) + "] = " + std::to_string(x) +
                      ": must be finite ([heads, n_clusters, d] floats, contiguous)");
      }
}

void Method<RoutingConfig>::check(const RoutingConfig& c, const Problem& pr) {
  at_least("RoutingConfig.n_clusters", c.n_clusters, 1);
  if (c.n_clusters > 65536)
    fail("RoutingConfig.n_clusters", str(std::int64_t{c.n_clusters}), "must be <= 65536");
  at_least("RoutingConfig.window", c.window, 1);
  at_least("RoutingConfig.iterations", c.iterations, 0);
  validate_routing_centroids(pr, c);
}

RunInfo routing_forward(const Problem& pr, const RoutingConfig& config, Workspace* workspace) {
  // One chunk whatever the routing: every query attends to every visible key (causal: to those
  // at positions <= its own, so the fallback never applies), exactly the dense result.
  if (config.window >= pr.Nq && config.window >= pr.Nk) return dense_forward(pr, workspace);

  Timer total;
  const std::int64_t window = config.window;
  const RoundScratch layout =
      RoundScratch::make(static_cast<std::size_t>(std::min<std::int64_t>(window, pr.Nk)),
                         static_cast<std::size_t>(pr.d), static_cast<std::size_t>(pr.dv));
  const std::int64_t max_chunks = routing_chunk_count(pr.Nq, pr.Nk, window);  // masks only lower it
  const std::int64_t chunks_per_task = std::clamp<std::int64_t>(
      pr.B * pr.H * max_chunks / (4 * static_cast<std::int64_t>(pr.threads)), 1, 8);
  const std::int64_t tasks_per_bh = (max_chunks + chunks_per_task - 1) / chunks_per_task;
  const std::int64_t tasks = pr.B * pr.H * tasks_per_bh;

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const RouteSlots route_slots = plan_route(arena, pr, config);
  const std::size_t scratch_slot =
      arena.add<float>(layout.total() * static_cast<std::size_t>(pr.threads));
  const std::size_t scores_slot = arena.add<std::int64_t>(static_cast<std::size_t>(tasks));
  const std::size_t ticks_slot = arena.add<PhaseTicks>(static_cast<std::size_t>(pr.threads));
  const TokenLists lists = scratch.bind();

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  const Problem route_pr = with_threads_for(pr, route_flops(pr, config));
  const Problem attend_pr = with_threads_for(
      pr, static_cast<double>(pr.B * pr.H) * static_cast<double>(pr.Nq) *
              static_cast<double>(std::min<std::int64_t>(window, pr.Nk)) * static_cast<double>(pr.d + pr.dv));
  zero_unattended_rows(attend_pr, lists);
  const RoutingRouteArgs route = bind_route(arena, route_slots, route_pr, lists, config, &info);
  HWY_DYNAMIC_DISPATCH(RoutingRoute)(route);

  Timer attn;
  auto* phase_ticks = arena.at<PhaseTicks>(ticks_slot);
  std::fill_n(phase_ticks, pr.threads, PhaseTicks{});
  const RoutingAttendArgs args{&attend_pr,           &lists,          route.q_sorted,
                               route.k_sorted, window,         chunks_per_task,
                               tasks_per_bh,   layout,         arena.at<float>(scratch_slot),
                               arena.at<std::int64_t>(scores_slot), phase_ticks};
  HWY_DYNAMIC_DISPATCH(RoutingAttend)(args);
  split_wall_time(phase_ticks, pr.threads, attn.seconds(), info);
  for (std::int64_t t = 0; t < tasks; ++t)
    info.attention_scores += static_cast<std::size_t>(args.scores_per_task[t]);
  add_bytes(pr, config, lists, info);
  info.seconds_total = total.seconds();
  return info;
}

RoutingRoutes routing_routes(const Problem& pr, const RoutingConfig& config) {
  CallScratch scratch(pr, nullptr);
  Arena& arena = scratch.arena();
  const RouteSlots route_slots = plan_route(arena, pr, config);
  const TokenLists lists = scratch.bind();
  RunInfo info;
  const Problem route_pr = with_threads_for(pr, route_flops(pr, config));
  const RoutingRouteArgs route = bind_route(arena, route_slots, route_pr, lists, config, &info);
  HWY_DYNAMIC_DISPATCH(RoutingRoute)(route);

  RoutingRoutes r;
  r.B = pr.B;
  r.H = pr.H;
  r.Nq = pr.Nq;
  r.Nk = pr.Nk;
  r.K = config.n_clusters;
  r.d = pr.d;
  const std::int64_t NT = pr.Nq + pr.Nk;
  const std::size_t K = static_cast<std::size_t>(r.K), Kp = route.Kp, d = static_cast<std::size_t>(pr.d);
  r.q_cluster.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), -1);
  r.k_cluster.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nk), -1);
  r.centroids.assign(static_cast<std::size_t>(pr.B * pr.H) * K * d, 0.0);
  for (std::int64_t b = 0; b < pr.B; ++b) {
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    r.n_chunks.push_back(routing_chunk_count(nq, nk, config.window));
  }
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nq = lists.q_count[b], nk = lists.k_count[b];
    const std::int32_t* assign = route.assign + bh * NT;
    for (std::int64_t t = 0; t < nq; ++t)
      r.q_cluster[static_cast<std::size_t>(bh * pr.Nq + lists.queries(b, pr.Nq)[t])] = assign[t];
    for (std::int64_t t = 0; t < nk; ++t)
      r.k_cluster[static_cast<std::size_t>(bh * pr.Nk + lists.keys(b, pr.Nk)[t])] = assign[nq + t];
    if (config.centroids != nullptr || nq + nk > 0) {
      const double* cent = route.cent + static_cast<std::size_t>(config.centroids ? h : bh) * d * Kp;
      for (std::size_t c = 0; c < K; ++c)
        for (std::size_t j = 0; j < d; ++j)
          r.centroids[(static_cast<std::size_t>(bh) * K + c) * d + j] = cent[j * Kp + c];
    }
    const std::int64_t C = r.n_chunks[static_cast<std::size_t>(b)];
    const std::int32_t* qs = route.q_sorted + bh * pr.Nq;
    const std::int32_t* ks = route.k_sorted + bh * pr.Nk;
    for (std::int64_t c = 0; c < C; ++c) {
      const IndexRange qr = query_cluster(c, nq, C);
      r.chunk_queries.emplace_back(qs + qr.begin, qs + qr.end);
      if (nk == 0) {
        r.chunk_keys.emplace_back();
      } else {
        const IndexRange kr = key_cluster(c, nk, C);
        r.chunk_keys.emplace_back(ks + kr.begin, ks + kr.end);
      }
    }
  }
  return r;
}

void routing_update_centroids(const Problem& pr, const RoutingConfig& config, double decay, float* out) {
  const RoutingRoutes routes = routing_routes(pr, config);
  const std::int64_t B = pr.B, H = pr.H, K = config.n_clusters, d = pr.d;
  // Each head's sums and counts, batch elements then queries then keys in order (the unit
  // vector rule of the definition: the fma chain of the squared norm, one rounded inverse).
  std::vector<double> sums(static_cast<std::size_t>(H * K * d), 0.0), counts(static_cast<std::size_t>(H * K), 0.0);
  with_input_type(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_for(H, pr.threads, [&](std::int64_t h) {
      auto add = [&](const T* row, std::int32_t c) {
        double n2 = 0.0;
        for (std::int64_t j = 0; j < d; ++j) n2 = std::fma(to_double(row[j]), to_double(row[j]), n2);
        const double inv = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
        double* s = sums.data() + (h * K + c) * d;
        for (std::int64_t j = 0; j < d; ++j) s[j] += to_double(row[j]) * inv;
        counts[static_cast<std::size_t>(h * K + c)] += 1.0;
      };
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t bh = b * H + h;
        for (std::int64_t i = 0; i < pr.Nq; ++i) {
          const std::int32_t c = routes.q_cluster[static_cast<std::size_t>(bh * pr.Nq + i)];
          if (c >= 0) add(pr.q_row<T>(b, h, i), c);
        }
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          const std::int32_t c = routes.k_cluster[static_cast<std::size_t>(bh * pr.Nk + j)];
          if (c >= 0) add(pr.k_row<T>(b, h, j), c);
        }
      }
    });
  });
  // The moving average of the unit centroid (routes.centroids: the given rows normalised, the
  // same for every batch element) and the members' mean, normalised.
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t c = 0; c < K; ++c) {
      const double n = counts[static_cast<std::size_t>(h * K + c)];
      float* o = out + (h * K + c) * d;
      if (n == 0.0) {
        if (o != config.centroids + (h * K + c) * d) std::copy_n(config.centroids + (h * K + c) * d, d, o);
        continue;
      }
      const double* mu = routes.centroids.data() + (h * K + c) * d;  // batch element 0 of head h
      const double* s = sums.data() + (h * K + c) * d;
      std::vector<double> x(static_cast<std::size_t>(d));
      double n2 = 0.0;
      for (std::int64_t j = 0; j < d; ++j) {
        x[static_cast<std::size_t>(j)] = decay * mu[j] + (1.0 - decay) * (s[j] / n);
        n2 = std::fma(x[static_cast<std::size_t>(j)], x[static_cast<std::size_t>(j)], n2);
      }
      const double inv = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
      for (std::int64_t j = 0; j < d; ++j) o[j] = static_cast<float>(x[static_cast<std::size_t>(j)] * inv);
    }
}

// The forward's chunks (queries of chunk c attend to key chunk c; causal queries that see no key
// of their chunk attend to their own position's key instead, a second launch), centroids and
// assignments held constant.
TrainGroups<CausalPairs> routing_train_groups(const Problem& pr, const RoutingConfig& config) {
  const RoutingRoutes routes = routing_routes(pr, config);
  const bool causal = pr.p->causal;
  const CausalPairs mask{causal, pr.Nk - pr.Nq};
  TrainGroups<CausalPairs> set;
  std::vector<std::int32_t> fallback;  // (b, h, position) triples
  std::size_t at = 0;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t c = 0; c < routes.n_chunks[static_cast<std::size_t>(b)]; ++c, ++at) {
        const std::vector<std::int32_t>& q = routes.chunk_queries[at];
        const std::vector<std::int32_t>& k = routes.chunk_keys[at];
        if (q.empty() || k.empty()) continue;
        set.add(b, h, 0, q.data(), q.size(), k.data(), k.size(), mask);
        if (!causal) continue;
        const std::int32_t kmin = *std::min_element(k.begin(), k.end());
        for (std::int32_t i : q) {
          const std::int64_t p = pr.key_position(i);
          if (p >= kmin || p < 0 || !pr.key_visible(b, p)) continue;
          fallback.insert(fallback.end(), {static_cast<std::int32_t>(b), static_cast<std::int32_t>(h), i});
        }
      }
  set.end_launch();
  for (std::size_t t = 0; t < fallback.size(); t += 3) {
    const std::int32_t i = fallback[t + 2];
    const std::int32_t own = static_cast<std::int32_t>(pr.key_position(i));
    set.add(fallback[t], fallback[t + 1], 0, &i, 1, &own, 1, CausalPairs{});
  }
  set.finish();
  return set;
}

namespace {
void run_routing_groups(const TrainArgs& a, const TrainGroups<CausalPairs>& set, float* pk, float* pv,
                        float* scratch, std::size_t per_thread) {
  HWY_DYNAMIC_DISPATCH(RoutingTrainGroups)(a, set, pk, pv, scratch, per_thread);
}
}  // namespace

RunInfo Method<RoutingConfig>::forward(const Problem& pr, const RoutingConfig& config, Workspace* workspace) {
  RunInfo info = routing_forward(pr, config, workspace);
  if (pr.p->dropout > 0.0f)
    groups_dropout_forward(pr, pr.p->lse, routing_train_groups(pr, config), workspace, run_routing_groups);
  return info;
}

RunInfo Method<RoutingConfig>::backward(const Problem& pr, const GradientParams& grads,
                                        const RoutingConfig& config, Workspace* workspace) {
  return groups_backward(pr, grads, routing_train_groups(pr, config), workspace, run_routing_groups);
}

KeyPairs Method<RoutingConfig>::key_pairs(const Problem& pr, const RoutingConfig& config) {
  return group_pairs(pr, routing_train_groups(pr, config));
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
