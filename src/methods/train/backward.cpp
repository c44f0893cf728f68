// The training kernels of train.h. SMYRF's backward and every dropout forward go through one
// routine that processes a group (a list of queries against a list of keys) tile by tile —
// 48 queries x 256 keys — and accumulates what the mode asks for; the dense backward has its
// own single-pass kernel over inputs packed once per head (DenseBackwardImpl).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/train/backward.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstdint>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "hwy/highway.h"
#include "kernels/attention_tile-inl.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/keyset-inl.h"
#include "kernels/group_train-inl.h"
#include "methods/train/train.h"


HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {

// SMYRF's rounds: the groups of a launch have disjoint keys, so dK and dV go to the gradient
// rows directly.
void RunGroupsImpl(const detail::TrainArgs& a, const detail::Group* groups, std::int64_t n_groups,
                   float* scratch, std::size_t per_thread, int threads) {
  const detail::Problem& pr = *a.pr;
  const AttentionParams& p = *pr.p;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  detail::parallel_for_tid(n_groups, threads, [&](std::int64_t task, int tid) {
    const detail::Group& gr = groups[task];
    auto sink = [&](std::size_t j, const float* dk, const float* dvr) {
      const std::int64_t pos = gr.keys[j];
      AddRow(dk, a.grads->grad_k + gr.b * p.k_batch_stride + gr.h * p.k_head_stride + pos * p.k_row_stride, d);
      AddRow(dvr, a.grads->grad_v + gr.b * p.v_batch_stride + gr.h * p.v_head_stride + pos * p.v_row_stride, dv);
    };
    TrainGroup(a, gr, NoMask{}, sink, scratch + static_cast<std::size_t>(tid) * per_thread);
  });
}


// ---------------------------------------------------------------------------------------
// Dense backward. Everything is packed once per (b, h) — K^T, V^T, K and V rows of the
// visible keys; Q^T, dO^T, Q and dO rows of the active queries — then one pass: for a tile of
// 256 keys and a tile of 48 queries, S^T = K Q^T and dP^T = V dO^T come out transposed, so
// dV += P^T dO and dK += dS^T Q need no transposition and dQ += dS K reads dS^T transposed
// (PVAccumulate<true>). Tasks are (b, h, group of key tiles, split of the query tiles): a task
// owns a dQ partial sum of its queries and its keys' dK and dV rows (with S > 1 splits, a
// partial sum of them); the G dQ partial sums are added in group order afterwards, the S dK and
// dV ones in split order. G and S depend on the shape only (not on the thread count), so the
// bits do not either.
struct DensePacked {
  const float *kt, *vt, *kp, *vp, *qt, *dot, *qp, *dop;
};

void DenseBackwardImpl(const detail::TrainArgs& a, const detail::TokenLists& lists, float* packed,
                       std::size_t per_bh, float* dq_parts, std::int64_t key_groups, std::int64_t splits,
                       float* kv_parts, float* scratch, std::size_t per_thread) {
  using detail::kTrainKeyTile;
  using detail::kTrainQueryTile;
  const detail::Problem& pr = *a.pr;
  const AttentionParams& p = *pr.p;
  const GradientParams& g = *a.grads;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t ldd = detail::pad_floats(d), ldv = detail::pad_floats(dv);
  const std::size_t ldq = detail::pad_floats(static_cast<std::size_t>(pr.Nq));
  const std::size_t ldk = detail::pad_floats(static_cast<std::size_t>(pr.Nk));
  const std::size_t Nq = static_cast<std::size_t>(pr.Nq), Nk = static_cast<std::size_t>(pr.Nk);
  const std::size_t M = kTrainQueryTile, N = kTrainKeyTile;
  const std::int64_t BH = pr.B * pr.H;
  auto view = [&](std::int64_t bh) {
    float* base = packed + static_cast<std::size_t>(bh) * per_bh;
    DensePacked v;
    v.kt = base;
    v.vt = v.kt + d * ldk;
    v.kp = v.vt + dv * ldk;
    v.vp = v.kp + Nk * ldd;
    v.qt = v.vp + Nk * ldv;
    v.dot = v.qt + d * ldq;
    v.qp = v.dot + dv * ldq;
    v.dop = v.qp + Nq * ldd;
    return v;
  };
  auto grad_o_row = [&](std::int64_t b, std::int64_t h, std::int64_t i) {
    return g.grad_o + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
  };
  // The eight packings of each (b, h) are separate tasks (parallel even when B * H = 1).
  detail::parallel_for(BH * 8, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / 8, b = bh / pr.H, h = bh % pr.H;
    const std::size_t nq = static_cast<std::size_t>(lists.q_count[b]), nk = static_cast<std::size_t>(lists.k_count[b]);
    if (nq == 0 || nk == 0) return;
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    const DensePacked v = view(bh);
    auto k_row = [&](std::size_t j) { return pr.k_row<float>(b, h, keys[j]); };
    auto v_row = [&](std::size_t j) { return pr.v_row<float>(b, h, keys[j]); };
    auto q_row = [&](std::size_t i) { return pr.q_row<float>(b, h, queries[i]); };
    auto do_row = [&](std::size_t i) { return grad_o_row(b, h, queries[i]); };
    switch (task % 8) {
      case 0: PackKeysTransposed(k_row, nk, d, const_cast<float*>(v.kt), ldk); break;
      case 1: PackKeysTransposed(v_row, nk, dv, const_cast<float*>(v.vt), ldk); break;
      case 2: PackValues(k_row, nk, d, const_cast<float*>(v.kp), ldd); break;
      case 3: PackValues(v_row, nk, dv, const_cast<float*>(v.vp), ldv); break;
      case 4: PackKeysTransposed(q_row, nq, d, const_cast<float*>(v.qt), ldq); break;
      case 5: PackKeysTransposed(do_row, nq, dv, const_cast<float*>(v.dot), ldq); break;
      case 6: PackValues(q_row, nq, d, const_cast<float*>(v.qp), ldd); break;
      default: PackValues(do_row, nq, dv, const_cast<float*>(v.dop), ldv); break;
    }
  });

  // Per-thread scratch: two N x M transposed tiles (+ one for dropped weights), dK and dV
  // accumulators, per-column lse and delta.
  auto carve = [&](int tid) { return scratch + static_cast<std::size_t>(tid) * per_thread; };

  // One pass: task (bh, g) runs key tiles [g T / G, (g + 1) T / G) of the T tiles against every
  // query tile; it owns its keys' dK and dV rows and its own dQ partial sum.
  const std::int64_t key_tiles = (pr.Nk + static_cast<std::int64_t>(N) - 1) / static_cast<std::int64_t>(N);
  const std::int64_t G = key_groups, S = splits;
  const std::size_t ldkv = ldd + ldv;  // a row of kv_parts: dK then dV
  detail::parallel_for_tid(BH * G * S, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / (G * S), group = task / S % G, split = task % S;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::size_t nq = static_cast<std::size_t>(lists.q_count[b]), nk = static_cast<std::size_t>(lists.k_count[b]);
    // This split's query tiles, as query rows [q_begin, q_end).
    const std::int64_t q_tiles = static_cast<std::int64_t>((nq + M - 1) / M);
    const std::size_t q_begin = static_cast<std::size_t>(split * q_tiles / S) * M;
    const std::size_t q_end = std::min(nq, static_cast<std::size_t>((split + 1) * q_tiles / S) * M);
    float* dq_part = dq_parts + (static_cast<std::size_t>(bh) * static_cast<std::size_t>(G) + static_cast<std::size_t>(group)) * Nq * ldd;
    if (q_end > q_begin) std::fill(dq_part + q_begin * ldd, dq_part + q_end * ldd, 0.0f);
    float* kv_part = S > 1 ? kv_parts + static_cast<std::size_t>(bh * S + split) * Nk * ldkv : nullptr;
    if (nq == 0) return;
    const DensePacked v = view(bh);
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    float* st = carve(tid);
    float* dpt = st + N * M;
    float* pdt = dpt + N * M;
    float* dk = pdt + N * M;
    float* dvacc = dk + N * ldd;
    float* lse = dvacc + N * ldv;
    float* delta = lse + M;
    const float* krows[kTrainKeyTile];
    const float* vrows[kTrainKeyTile];
    for (std::int64_t tile = group * key_tiles / G; tile < (group + 1) * key_tiles / G; ++tile) {
      const std::size_t k0 = static_cast<std::size_t>(tile) * N;
      if (k0 >= nk) break;
      const std::size_t n = std::min(N, nk - k0);
      const std::int32_t* keys = lists.keys(b, pr.Nk) + k0;
      std::fill_n(dk, n * ldd, 0.0f);
      std::fill_n(dvacc, n * ldv, 0.0f);
      float bias[kTrainKeyTile];
      for (std::size_t j = 0; j < n; ++j) {
        krows[j] = v.kp + (k0 + j) * ldd;
        vrows[j] = v.vp + (k0 + j) * ldv;
        bias[j] = pr.key_bias(b, h, keys[j]);
      }
      const std::int64_t offset = pr.Nk - pr.Nq;
      for (std::size_t q0 = q_begin; q0 < q_end; q0 += M) {
        const std::size_t m = std::min(M, nq - q0);
        // Causal: query tiles that end before this key tile's first key see none of it.
        if (p.causal && queries[q0 + m - 1] + offset < keys[0]) continue;
        for (std::size_t c = 0; c < M; ++c) {
          lse[c] = c < m ? a.lse[bh * pr.Nq + queries[q0 + c]] : 0.0f;
          delta[c] = c < m ? a.delta[bh * pr.Nq + queries[q0 + c]] : 0.0f;
        }
        ScoreTile(krows, n, d, v.qt + q0, ldq, m, pr.scale, st, M);
        if (p.key_bias != nullptr) AddKeyBiasRows(st, M, n, m, bias);
        Probabilities<true>(st, M, n, m, lse);
        // Causal, on tiles that cross the diagonal: pairs (key r, query c) with the key after the
        // query get P = 0 (written after exp, which may have overflowed for a query whose lse is
        // -inf because it sees no key at all).
        if (p.causal && keys[n - 1] > queries[q0] + offset)
          for (std::size_t r = 0; r < n; ++r)
            for (std::size_t c = 0; c < m; ++c)
              if (keys[r] > queries[q0 + c] + offset) st[r * M + c] = 0.0f;
        ScoreTile(vrows, n, dv, v.dot + q0, ldq, m, 1.0f, dpt, M);
        const float* kept = st;
        if (a.dropout.active()) {
          for (std::size_t c = 0; c < m; ++c) {
            const std::uint64_t stream = a.dropout.row(b, h, 0, queries[q0 + c]);
            for (std::size_t r = 0; r < n; ++r) {
              const float f = a.dropout.factor(stream, keys[r]);
              pdt[r * M + c] = st[r * M + c] * f;
              dpt[r * M + c] *= f;
            }
          }
          kept = pdt;
        }
        PVAccumulate(kept, M, n, m, v.dop + q0 * ldv, ldv, dvacc, ldv);        // dV += P^T dO
        ScoreGradient<true>(st, dpt, M, n, m, delta, pr.scale);                   // dS^T
        PVAccumulate(dpt, M, n, m, v.qp + q0 * ldd, ldd, dk, ldd);            // dK += dS^T Q
        PVAccumulate<true>(dpt, M, m, n, v.kp + k0 * ldd, ldd, dq_part + q0 * ldd, ldd);  // dQ += dS K
      }
      for (std::size_t j = 0; j < n; ++j) {
        if (kv_part != nullptr) {
          std::copy_n(dk + j * ldd, d, kv_part + (k0 + j) * ldkv);
          std::copy_n(dvacc + j * ldv, dv, kv_part + (k0 + j) * ldkv + ldd);
          continue;
        }
        const std::int64_t pos = keys[j];
        std::copy_n(dk + j * ldd, d, g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + pos * p.k_row_stride);
        std::copy_n(dvacc + j * ldv, dv, g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + pos * p.v_row_stride);
      }
    }
  });

  // Partial sums added in order: out = part 0 + part 1 + ... (parts `stride` floats apart).
  auto sum_parts = [](const float* part0, std::size_t stride, std::int64_t parts, std::size_t width, float* out) {
    std::copy_n(part0, width, out);
    for (std::int64_t sp = 1; sp < parts; ++sp) AddRow(part0 + static_cast<std::size_t>(sp) * stride, out, width);
  };
  // fn(b, h, bh, rows [r0, r1)) over tiles of M rows of the first count (the other count > 0).
  auto row_tiles = [&](std::int64_t n, const std::int32_t* count, const std::int32_t* other, auto fn) {
    const std::int64_t tiles = (n + static_cast<std::int64_t>(M) - 1) / static_cast<std::int64_t>(M);
    detail::parallel_for(BH * tiles, pr.threads, [&](std::int64_t task) {
      const std::int64_t bh = task / tiles, b = bh / pr.H, h = bh % pr.H;
      const std::size_t r0 = static_cast<std::size_t>(task % tiles) * M, rows = static_cast<std::size_t>(count[b]);
      if (r0 < rows && other[b] > 0) fn(b, h, bh, r0, std::min(rows, r0 + M));
    });
  };
  // dK, dV: the S partial sums added in split order.
  if (S > 1)
    row_tiles(pr.Nk, lists.k_count, lists.q_count, [&](std::int64_t b, std::int64_t h, std::int64_t bh, std::size_t r0, std::size_t r1) {
      const std::int32_t* keys = lists.keys(b, pr.Nk);
      const float* parts = kv_parts + static_cast<std::size_t>(bh * S) * Nk * ldkv;
      for (std::size_t j = r0; j < r1; ++j) {
        sum_parts(parts + j * ldkv, Nk * ldkv, S, d, g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + keys[j] * p.k_row_stride);
        sum_parts(parts + j * ldkv + ldd, Nk * ldkv, S, dv, g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + keys[j] * p.v_row_stride);
      }
    });
  // dQ: the G partial sums added in group order.
  row_tiles(pr.Nq, lists.q_count, lists.k_count, [&](std::int64_t b, std::int64_t h, std::int64_t bh, std::size_t r0, std::size_t r1) {
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    const float* parts = dq_parts + static_cast<std::size_t>(bh) * static_cast<std::size_t>(G) * Nq * ldd;
    for (std::size_t i = r0; i < r1; ++i)
      sum_parts(parts + i * ldd, Nq * ldd, G, d, g.grad_q + b * p.q_batch_stride + h * p.q_head_stride + queries[i] * p.q_row_stride);
  });
}

// Dense dropout forward: K^T and V packed once per head, then one task per tile of 48 queries:
// O = sum over key tiles of (exp(S - lse) F) V, F the dropout factors.
void DenseDropoutImpl(const detail::TrainArgs& a, const detail::TokenLists& lists, float* packed,
                      std::size_t per_bh, float* scratch, std::size_t per_thread) {
  using detail::kTrainKeyTile;
  using detail::kTrainQueryTile;
  const detail::Problem& pr = *a.pr;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t ldv = detail::pad_floats(dv);
  const std::size_t ldk = detail::pad_floats(static_cast<std::size_t>(pr.Nk));
  const std::size_t M = kTrainQueryTile, N = kTrainKeyTile;
  const std::int64_t BH = pr.B * pr.H;
  detail::parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::size_t nk = static_cast<std::size_t>(lists.k_count[b]);
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    float* kt = packed + static_cast<std::size_t>(bh) * per_bh;
    PackKeysTransposed([&](std::size_t j) { return pr.k_row<float>(b, h, keys[j]); }, nk, d, kt, ldk);
    PackValues([&](std::size_t j) { return pr.v_row<float>(b, h, keys[j]); }, nk, dv, kt + d * ldk, ldv);
  });
  const std::int64_t query_tiles = (pr.Nq + static_cast<std::int64_t>(M) - 1) / static_cast<std::int64_t>(M);
  detail::parallel_for_tid(BH * query_tiles, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / query_tiles, b = bh / pr.H, h = bh % pr.H;
    const std::size_t q0 = static_cast<std::size_t>(task % query_tiles) * M;
    const std::size_t nq = static_cast<std::size_t>(lists.q_count[b]), nk = static_cast<std::size_t>(lists.k_count[b]);
    if (nk == 0 || q0 >= nq) return;
    const std::size_t m = std::min(M, nq - q0);
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::int32_t* queries = lists.queries(b, pr.Nq) + q0;
    const float* kt = packed + static_cast<std::size_t>(bh) * per_bh;
    const float* vp = kt + d * ldk;
    float* s = scratch + static_cast<std::size_t>(tid) * per_thread;
    float* acc = s + M * N;
    float* lse = acc + M * ldv;
    const float* qrows[kTrainQueryTile];
    for (std::size_t r = 0; r < m; ++r) {
      qrows[r] = pr.q_row<float>(b, h, queries[r]);
      lse[r] = a.lse[bh * pr.Nq + queries[r]];
    }
    std::fill_n(acc, m * ldv, 0.0f);
    for (std::size_t k0 = 0; k0 < nk; k0 += N) {
      const std::size_t n = std::min(N, nk - k0);
      ScoreTile(qrows, m, d, kt + k0, ldk, n, pr.scale, s, N);
      if (pr.p->key_bias != nullptr) {
        float bias[kTrainKeyTile];
        for (std::size_t c = 0; c < n; ++c) bias[c] = pr.key_bias(b, h, keys[k0 + c]);
        AddKeyBiasColumns(s, N, m, n, bias);
      }
      Probabilities(s, N, m, n, lse);
      for (std::size_t r = 0; r < m; ++r) {
        const std::uint64_t stream = a.dropout.row(b, h, 0, queries[r]);
        for (std::size_t c = 0; c < n; ++c) s[r * N + c] *= a.dropout.factor(stream, keys[k0 + c]);
      }
      PVAccumulate(s, N, m, n, vp + k0 * ldv, ldv, acc, ldv);
    }
    for (std::size_t r = 0; r < m; ++r) std::copy_n(acc + r * ldv, dv, pr.o_row(b, h, queries[r]));
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <cmath>
#include <limits>
#include <vector>

#include "common/timer.h"
#include "methods/smyrf/clustering.h"

namespace smyrf::detail {
HWY_EXPORT(RunGroupsImpl);
HWY_EXPORT(DenseBackwardImpl);
HWY_EXPORT(DenseDropoutImpl);

std::size_t train_scratch_floats(const TrainArgs& args) { return TrainScratch::make(args).total; }

void run_groups(const TrainArgs& args, const Group* groups, std::int64_t n_groups, float* scratch,
                std::size_t per_thread, int threads) {
  HWY_DYNAMIC_DISPATCH(RunGroupsImpl)(args, groups, n_groups, scratch, per_thread, threads);
}

namespace {

// SMYRF: the groups of each round, in launches (the groups of one launch write disjoint rows;
// launches run in order). Dense: the lists of active queries and visible keys.
struct GroupPlan {
  std::vector<std::vector<Group>> launches;    // SMYRF: per round, parallel then serial
  std::vector<int> launch_threads;
  std::int64_t max_group_queries = 0;
  bool dense = false;
  ClusterLists clusters;     // SMYRF: owns the sorted positions the groups point into
  std::vector<std::int32_t> q_lists, k_lists;  // dense: active queries / visible keys
  std::vector<std::int32_t> q_count, k_count;
};

void make_plan(const Problem& pr, const MethodConfig& config, GroupPlan& plan) {
  const auto* s = std::get_if<SmyrfConfig>(&config);
  plan.dense = s == nullptr || (s->q_cluster_size >= pr.Nq && s->k_cluster_size >= pr.Nk);
  if (plan.dense) {
    // Lists of active queries and visible keys.
    plan.q_lists.resize(static_cast<std::size_t>(pr.B * pr.Nq));
    plan.k_lists.resize(static_cast<std::size_t>(pr.B * pr.Nk));
    plan.q_count.assign(static_cast<std::size_t>(pr.B), 0);
    plan.k_count.assign(static_cast<std::size_t>(pr.B), 0);
    for (std::int64_t b = 0; b < pr.B; ++b) {
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i)) plan.q_lists[static_cast<std::size_t>(b * pr.Nq + plan.q_count[static_cast<std::size_t>(b)]++)] = static_cast<std::int32_t>(i);
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (pr.key_visible(b, j)) plan.k_lists[static_cast<std::size_t>(b * pr.Nk + plan.k_count[static_cast<std::size_t>(b)]++)] = static_cast<std::int32_t>(j);
    }
    return;
  }
  // KeySelection::centroid trains on its own groups (smyrf_centroid_train_groups).
  if (s->keys != KeySelection::lsh)
    throw Error("smyrf: internal: the SMYRF group plan is for keys = lsh");
  plan.clusters = compute_clusters(pr, *s);
  const ClusterLists& c = plan.clusters;
  const int R = c.rounds;
  for (int r = 0; r < R; ++r) {
    // Per round: one parallel launch of every cluster of batch elements whose key clusters are
    // disjoint, then one serial launch of those where a key serves several clusters (n_k < C).
    std::vector<Group> parallel, serial;
    for (std::int64_t b = 0; b < pr.B; ++b) {
      const std::int64_t C = c.n_clusters[static_cast<std::size_t>(b)];
      const std::int64_t nq = c.q_count[static_cast<std::size_t>(b)];
      const std::int64_t nk = c.k_count[static_cast<std::size_t>(b)];
      if (nk == 0 || nq == 0 || (C == 1 && r > 0)) continue;
      for (std::int64_t h = 0; h < pr.H; ++h) {
        const std::int64_t bh = b * pr.H + h;
        const std::int32_t* qs = c.q_sorted.data() + (bh * R + r) * pr.Nq;
        const std::int32_t* ks = c.k_sorted.data() + (bh * R + r) * pr.Nk;
        for (std::int64_t cl = 0; cl < C; ++cl) {
          const IndexRange qr = query_cluster(cl, nq, C);
          const IndexRange kr = key_cluster(cl, nk, C);
          if (qr.end <= qr.begin) continue;
          (nk < C ? serial : parallel)
              .push_back({b, h, r, qs + qr.begin, qr.end - qr.begin, ks + kr.begin, kr.end - kr.begin});
          plan.max_group_queries = std::max(plan.max_group_queries, qr.end - qr.begin);
        }
      }
    }
    plan.launches.push_back(std::move(parallel));
    plan.launch_threads.push_back(pr.threads);
    plan.launches.push_back(std::move(serial));
    plan.launch_threads.push_back(1);
  }
}

// Runs the plan's launches with one mode; scratch sized for it.
void run_plan(const TrainArgs& args, const std::vector<std::vector<Group>>& launches,
              const std::vector<int>& threads, Workspace* workspace, RunInfo* info) {
  const std::size_t per_thread = train_scratch_floats(args);
  const int max_threads = args.pr->threads;
  CallScratch scratch(*args.pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const std::size_t scratch_slot = arena.add<float>(per_thread * static_cast<std::size_t>(max_threads));
  scratch.bind();
  if (info != nullptr) info->workspace_bytes = std::max(info->workspace_bytes, arena.bytes());
  for (std::size_t l = 0; l < launches.size(); ++l)
    run_groups(args, launches[l].data(), static_cast<std::int64_t>(launches[l].size()),
               arena.at<float>(scratch_slot), per_thread, threads.empty() ? max_threads : threads[l]);
}

void dense_backward(const TrainArgs& args, const GroupPlan& plan, Workspace* workspace, RunInfo* info) {
  const Problem& pr = *args.pr;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t ldd = pad_floats(d), ldv = pad_floats(dv);
  const std::size_t ldq = pad_floats(static_cast<std::size_t>(pr.Nq));
  const std::size_t ldk = pad_floats(static_cast<std::size_t>(pr.Nk));
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  const std::size_t per_bh = (d + dv) * (ldk + ldq) + static_cast<std::size_t>(pr.Nk + pr.Nq) * (ldd + ldv);
  const std::size_t per_thread =
      3 * kTrainKeyTile * kTrainQueryTile + kTrainKeyTile * (ldd + ldv) + 2 * kTrainQueryTile;
  // Key-tile groups per head: enough tasks for a few threads when B*H is small, one group (no
  // extra dQ copies) when B*H >= 8.
  const std::int64_t key_tiles =
      (pr.Nk + static_cast<std::int64_t>(kTrainKeyTile) - 1) / static_cast<std::int64_t>(kTrainKeyTile);
  const std::int64_t groups = std::clamp<std::int64_t>(8 / static_cast<std::int64_t>(BH), 1, key_tiles);
  // Splits of the query tiles when the key tiles alone give fewer than 8 tasks (few keys: the
  // compressed methods' sub-problems), each with its own partial dK and dV.
  const std::int64_t query_tiles =
      (pr.Nq + static_cast<std::int64_t>(kTrainQueryTile) - 1) / static_cast<std::int64_t>(kTrainQueryTile);
  const std::int64_t splits =
      std::clamp<std::int64_t>(8 / (static_cast<std::int64_t>(BH) * groups), 1, std::max<std::int64_t>(query_tiles, 1));
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const std::size_t packed_slot = arena.add<float>(per_bh * BH);
  const std::size_t dq_slot =
      arena.add<float>(BH * static_cast<std::size_t>(groups) * static_cast<std::size_t>(pr.Nq) * ldd);
  const std::size_t kv_slot =
      arena.add<float>(splits > 1 ? BH * static_cast<std::size_t>(splits) * static_cast<std::size_t>(pr.Nk) * (ldd + ldv) : 0);
  const std::size_t scratch_slot = arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  scratch.bind();
  info->workspace_bytes = arena.bytes();
  const TokenLists lists{plan.q_lists.data(), plan.k_lists.data(), plan.q_count.data(), plan.k_count.data()};
  HWY_DYNAMIC_DISPATCH(DenseBackwardImpl)(args, lists, arena.at<float>(packed_slot), per_bh,
                                          arena.at<float>(dq_slot), groups, splits, arena.at<float>(kv_slot),
                                          arena.at<float>(scratch_slot), per_thread);
}

}  // namespace

void zero_attended_rows(const Problem& pr, const float* lse) {
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (std::isfinite(lse[(b * pr.H + h) * pr.Nq + i])) std::fill_n(pr.o_row(b, h, i), pr.dv, 0.0f);
}

void zero_gradients(const Problem& pr, const GradientParams& g) {
  const AttentionParams& p = *pr.p;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        std::fill_n(g.grad_q + b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride, pr.d, 0.0f);
      for (std::int64_t j = 0; j < pr.Nk; ++j) {
        std::fill_n(g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride, pr.d, 0.0f);
        std::fill_n(g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + j * p.v_row_stride, pr.dv, 0.0f);
      }
    }
}

std::vector<float> gradient_delta(const Problem& pr, const GradientParams& g) {
  const AttentionParams& p = *pr.p;
  std::vector<float> delta(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  constexpr std::int64_t kRows = 512;  // rows per task
  const std::int64_t chunks = (pr.Nq + kRows - 1) / kRows;
  parallel_for(pr.B * pr.H * chunks, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / chunks, b = bh / pr.H, h = bh % pr.H, i0 = (task % chunks) * kRows;
    for (std::int64_t i = i0; i < std::min(pr.Nq, i0 + kRows); ++i) {
      const std::int64_t off = b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
      double acc = 0;
      for (std::int64_t c = 0; c < pr.dv; ++c)
        acc += static_cast<double>(g.grad_o[off + c]) * static_cast<double>(g.o[off + c]);
      delta[static_cast<std::size_t>(bh * pr.Nq + i)] = static_cast<float>(acc);
    }
  });
  return delta;
}

void add_key_partials(const Problem& pr, const GradientParams& g, const std::vector<Group>& groups,
                      const std::vector<std::size_t>& partial_row, const float* pk, const float* pv) {
  const AttentionParams& p = *pr.p;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  // Counting sort of the partial rows by (b, h, key), stable in group order.
  const std::size_t slots = static_cast<std::size_t>(pr.B * pr.H * pr.Nk);
  std::vector<std::size_t> start(slots + 1, 0);
  for (const Group& gr : groups)
    for (std::int64_t j = 0; j < gr.n_keys; ++j)
      ++start[static_cast<std::size_t>((gr.b * pr.H + gr.h) * pr.Nk + gr.keys[j]) + 1];
  for (std::size_t s = 0; s < slots; ++s) start[s + 1] += start[s];
  std::vector<std::size_t> rows(start[slots]), fill(start.begin(), start.end() - 1);
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const Group& gr = groups[gi];
    for (std::int64_t j = 0; j < gr.n_keys; ++j)
      rows[fill[static_cast<std::size_t>((gr.b * pr.H + gr.h) * pr.Nk + gr.keys[j])]++] =
          partial_row[gi] + static_cast<std::size_t>(j);
  }
  constexpr std::int64_t kChunk = 256;
  const std::int64_t tasks = (static_cast<std::int64_t>(slots) + kChunk - 1) / kChunk;
  parallel_for(tasks, pr.threads, [&](std::int64_t t) {
    for (std::int64_t s = t * kChunk; s < std::min<std::int64_t>((t + 1) * kChunk, static_cast<std::int64_t>(slots)); ++s) {
      const std::int64_t bh = s / pr.Nk, j = s % pr.Nk, b = bh / pr.H, h = bh % pr.H;
      float* gk = g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride;
      float* gv = g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + j * p.v_row_stride;
      for (std::size_t e = start[static_cast<std::size_t>(s)]; e < start[static_cast<std::size_t>(s) + 1]; ++e) {
        const float* rk = pk + rows[e] * d;
        const float* rv = pv + rows[e] * dv;
        for (std::size_t c = 0; c < d; ++c) gk[c] += rk[c];
        for (std::size_t c = 0; c < dv; ++c) gv[c] += rv[c];
      }
    }
  });
}

void dropout_forward(const Problem& pr, const MethodConfig& config, const float* lse,
                     Workspace* workspace) {
  GroupPlan plan;
  make_plan(pr, config, plan);
  zero_attended_rows(pr, lse);
  TrainArgs args;
  args.pr = &pr;
  args.lse = lse;
  args.dropout = spec::Dropout(pr.p->dropout, pr.p->seed);
  args.mode = kGroupOut;
  args.max_group_queries = plan.max_group_queries;
  if (!plan.dense) {
    run_plan(args, plan.launches, plan.launch_threads, workspace, nullptr);
    return;
  }
  const std::size_t ldk = pad_floats(static_cast<std::size_t>(pr.Nk));
  const std::size_t per_bh = static_cast<std::size_t>(pr.d) * ldk +
                             static_cast<std::size_t>(pr.Nk) * pad_floats(static_cast<std::size_t>(pr.dv));
  const std::size_t per_thread = kTrainQueryTile * kTrainKeyTile +
                                 kTrainQueryTile * pad_floats(static_cast<std::size_t>(pr.dv)) + kTrainQueryTile;
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const std::size_t packed_slot = arena.add<float>(per_bh * static_cast<std::size_t>(pr.B * pr.H));
  const std::size_t scratch_slot = arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  scratch.bind();
  const TokenLists lists{plan.q_lists.data(), plan.k_lists.data(), plan.q_count.data(), plan.k_count.data()};
  HWY_DYNAMIC_DISPATCH(DenseDropoutImpl)(args, lists, arena.at<float>(packed_slot), per_bh,
                                         arena.at<float>(scratch_slot), per_thread);
}

RunInfo train_backward(const Problem& pr, const GradientParams& g, const MethodConfig& config,
                       Workspace* workspace) {
  Timer timer;
  const AttentionParams& p = *pr.p;
  zero_gradients(pr, g);
  const std::vector<float> delta = gradient_delta(pr, g);
  GroupPlan plan;
  make_plan(pr, config, plan);
  TrainArgs args;
  args.pr = &pr;
  args.lse = g.lse;
  args.delta = delta.data();
  args.grads = &g;
  args.dropout = spec::Dropout(p.dropout, p.seed);
  args.max_group_queries = plan.max_group_queries;
  RunInfo info;
  if (plan.dense) {
    dense_backward(args, plan, workspace, &info);
  } else {
    args.mode = kGroupGradQ | kGroupGradKV;
    run_plan(args, plan.launches, plan.launch_threads, workspace, &info);
  }
  info.seconds_total = info.attention.seconds = timer.seconds();
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
