// Exact attention: one task per (batch, head, tile of active queries); each task streams over
// tiles of packed keys with an online softmax, so extra memory is O(N) (the packed K^T and V)
// plus one score tile per thread.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/dense/dense.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstdint>

#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/parallel.h"
#include "common/problem.h"
#include "common/timer.h"
#include "hwy/highway.h"
#include "kernels/bf16_dot-inl.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace dense {

// kt_all: [B*H][d][ldk], vp_all: [B*H][Nk][ldv]; scratch: per thread, `per_thread` floats.
// T: the input element type.
template <class T>
void AttendT(const detail::Problem& pr, const detail::TokenLists& lists, float* kt_all,
             float* vp_all, float* scratch, std::size_t per_thread, RunInfo* info) {
  using detail::kDenseKeyTile;
  using detail::kDenseQueryTile;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t ldk = detail::pad_floats(static_cast<std::size_t>(pr.Nk));
  const std::size_t ldv = detail::pad_floats(dv);
  const std::int64_t BH = pr.B * pr.H;

  // bf16 inputs on a CPU with AVX512_BF16: keys packed as bf16 pairs (in the same buffer, which
  // has room for d floats per key) and scores by pair dot products.
  const bool pairs = UseBf16Dot<T>();
  detail::Timer timer;
  // Pack every (b, h): K^T of the visible keys and their V rows.
  detail::parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::size_t n = static_cast<std::size_t>(lists.k_count[b]);
    PackKeysForScores<T>(pairs, [&](std::size_t j) { return pr.k_row<T>(b, h, keys[j]); }, n, d,
                         kt_all + static_cast<std::size_t>(bh) * d * ldk, ldk);
    PackValues([&](std::size_t j) { return pr.v_row<T>(b, h, keys[j]); }, n, dv,
               vp_all + static_cast<std::size_t>(bh) * static_cast<std::size_t>(pr.Nk) * ldv,
               ldv);
  });

  info->gather.seconds = timer.lap();
  const std::int64_t tiles_per_bh =
      (pr.Nq + static_cast<std::int64_t>(kDenseQueryTile) - 1) / kDenseQueryTile;
  detail::parallel_for_tid(BH * tiles_per_bh, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / tiles_per_bh, tile = task % tiles_per_bh;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t q0 = tile * static_cast<std::int64_t>(kDenseQueryTile);
    const std::int64_t nkeys = lists.k_count[b];
    if (q0 >= lists.q_count[b] || nkeys == 0) return;
    const std::size_t m =
        static_cast<std::size_t>(std::min<std::int64_t>(kDenseQueryTile, lists.q_count[b] - q0));
    const std::int32_t* qidx = lists.queries(b, pr.Nq) + q0;

    float* s = scratch + static_cast<std::size_t>(tid) * per_thread;
    float* acc = s + kDenseQueryTile * kDenseKeyTile;
    float* row_max = acc + kDenseQueryTile * ldv;
    float* row_sum = row_max + kDenseQueryTile;
    float* q_buffer = row_sum + kDenseQueryTile;
    QueryTile tile_q;
    PrepareQueries<T>(pairs, [&](std::size_t r) { return pr.q_row<T>(b, h, qidx[r]); }, m, d,
                      q_buffer, detail::pad_floats(d), &tile_q);
    const float* kt = kt_all + static_cast<std::size_t>(bh) * d * ldk;
    const float* vp = vp_all + static_cast<std::size_t>(bh) * static_cast<std::size_t>(pr.Nk) * ldv;
    ResetTileState(m, ldv, row_max, row_sum, acc);
    // Causal: row r sees the first seen[r] visible keys (those at positions <= its own + Nk - Nq);
    // key tiles past the last row's limit are skipped, the others cut per row.
    std::size_t seen[kDenseQueryTile];
    std::int64_t key_end = nkeys;
    if (pr.p->causal) {
      const std::int32_t* keys = lists.keys(b, pr.Nk);
      for (std::size_t r = 0; r < m; ++r)
        seen[r] = static_cast<std::size_t>(
            std::upper_bound(keys, keys + nkeys, qidx[r] + (pr.Nk - pr.Nq)) - keys);
      key_end = static_cast<std::int64_t>(seen[m - 1]);
    }
    for (std::int64_t j0 = 0; j0 < key_end; j0 += static_cast<std::int64_t>(kDenseKeyTile)) {
      const std::size_t n =
          static_cast<std::size_t>(std::min<std::int64_t>(kDenseKeyTile, nkeys - j0));
      TileScores(pairs, tile_q, m, d, kt, ldk, static_cast<std::size_t>(j0), n, pr.scale, s,
                 kDenseKeyTile);
      if (pr.p->key_bias != nullptr) {
        float bias[kDenseKeyTile];
        const std::int32_t* keys = lists.keys(b, pr.Nk) + j0;
        for (std::size_t c = 0; c < n; ++c) bias[c] = pr.key_bias(b, h, keys[c]);
        AddKeyBiasColumns(s, kDenseKeyTile, m, n, bias);
      }
      if (pr.p->causal && seen[0] < static_cast<std::size_t>(j0) + n) {
        std::size_t visible[kDenseQueryTile];
        for (std::size_t r = 0; r < m; ++r)
          visible[r] = std::min(n, seen[r] - std::min(seen[r], static_cast<std::size_t>(j0)));
        MaskColumnsFrom(s, kDenseKeyTile, m, n, visible);
      }
      SoftmaxUpdate(s, kDenseKeyTile, m, n, row_max, row_sum, acc, ldv);
      PVAccumulate(s, kDenseKeyTile, m, n, vp + static_cast<std::size_t>(j0) * ldv, ldv, acc, ldv);
    }
    // The row's logsumexp (when asked for) overwrites row_max, which FinalizeRows reads first.
    float* lse = pr.p->lse;
    FinalizeRows(m, row_max, row_sum, row_sum, lse != nullptr ? row_max : nullptr);
    for (std::size_t r = 0; r < m; ++r) ScaleRowTo(acc + r * ldv, row_sum[r], pr.o_row(b, h, qidx[r]), dv);
    if (lse != nullptr)
      for (std::size_t r = 0; r < m; ++r) lse[bh * pr.Nq + qidx[r]] = row_max[r];
  });
  info->attention.seconds = timer.lap();
}

}  // namespace dense

void DenseAttend(const detail::Problem& pr, const detail::TokenLists& lists, float* kt_all,
                 float* vp_all, float* scratch, std::size_t per_thread, RunInfo* info) {
  detail::with_input_type(pr.dtype, [&](auto tag) {
    dense::AttendT<decltype(tag)>(pr, lists, kt_all, vp_all, scratch, per_thread, info);
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <cmath>

#include "methods/dense/dense.h"

namespace smyrf::detail {
HWY_EXPORT(DenseAttend);

RunInfo dense_forward(const Problem& pr, Workspace* workspace) {
  Timer timer;
  const std::size_t d = static_cast<std::size_t>(pr.d);
  const std::size_t ldk = pad_floats(static_cast<std::size_t>(pr.Nk));
  const std::size_t ldv = pad_floats(static_cast<std::size_t>(pr.dv));
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  // Score tile, accumulators, row max and sum, converted query rows (non-f32 inputs).
  const std::size_t per_thread = kDenseQueryTile * kDenseKeyTile + kDenseQueryTile * ldv +
                                 2 * pad_floats(kDenseQueryTile) + kDenseQueryTile * pad_floats(d);

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t kt_slot = arena.add<float>(BH * d * ldk);
  const std::size_t vp_slot = arena.add<float>(BH * static_cast<std::size_t>(pr.Nk) * ldv);
  const std::size_t scratch_slot =
      arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  const TokenLists lists = scratch.bind();

  RunInfo info;
  zero_unattended_rows(pr, lists);
  HWY_DYNAMIC_DISPATCH(DenseAttend)(pr, lists, arena.at<float>(kt_slot), arena.at<float>(vp_slot),
                                    arena.at<float>(scratch_slot), per_thread, &info);
  info.workspace_bytes = arena.bytes();
  // Bytes: packing reads and writes every visible key's K and V row once; each query tile then
  // reads all packed keys, its Q rows, and writes its O rows.
  const double f = sizeof(float);
  for (std::int64_t b = 0; b < pr.B; ++b) {
    const double nq = lists.q_count[b], nk = lists.k_count[b];
    const double tiles = std::ceil(nq / static_cast<double>(kDenseQueryTile));
    std::size_t pairs = static_cast<std::size_t>(nq * nk);
    if (pr.p->causal) {  // each query's visible keys at positions <= its own
      pairs = 0;
      const std::int32_t* keys = lists.keys(b, pr.Nk);
      const std::int32_t* queries = lists.queries(b, pr.Nq);
      for (std::int32_t t = 0; t < lists.q_count[b]; ++t)
        pairs += static_cast<std::size_t>(
            std::upper_bound(keys, keys + lists.k_count[b], pr.key_position(queries[t])) - keys);
    }
    info.attention_scores += pairs * static_cast<std::size_t>(pr.H);
    const double e = static_cast<double>(pr.elem_bytes());  // input element
    info.gather.bytes += static_cast<double>(pr.H) * nk * static_cast<double>(pr.d + pr.dv) * (e + f);
    info.attention.bytes += static_cast<double>(pr.H) * (tiles * nk * static_cast<double>(pr.d + pr.dv) * f +
                                                         nq * (static_cast<double>(pr.d) * e + static_cast<double>(pr.dv) * f));
  }
  info.seconds_total = timer.seconds();
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
