// The training kernels of every key-set method: the backward (and the dropout forward) of a
// group — a list of queries against a list of keys, with an optional mask functor of the
// forward's AttendGroup (keyset-inl.h) that removes (query, key) pairs of a tile — on the
// shared tile kernels, 48 queries x 256 keys at a time (the formulas: methods/train/train.h).
//
// TrainGroup processes one group and hands each key's dK and dV rows to a sink (the gradient
// rows themselves when the groups of a launch have disjoint keys, SMYRF's rounds; a per-group
// partial row otherwise, added in group order afterwards by add_key_partials). RunTrainGroups
// runs a TrainGroups set: launch by launch (queries disjoint within one), groups in parallel.
//
// Include after attention_tile-inl.h and keyset-inl.h, from a file that uses
// hwy/foreach_target.h.

#if defined(SMYRF_KERNELS_GROUP_TRAIN_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_KERNELS_GROUP_TRAIN_INL_H_
#undef SMYRF_KERNELS_GROUP_TRAIN_INL_H_
#else
#define SMYRF_KERNELS_GROUP_TRAIN_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "common/parallel.h"
#include "hwy/highway.h"
#include "methods/train/train.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {

// A tile of `rows` x PadToLanes(cols) scores, stored row-major (stride lds), whose queries are
// its rows (kQueryColumns = false: s[r][c], query r) or its columns (true: the transposed
// tiles of the dense backward, s[r][c] with query c). per_query[i] is a value of query i.
template <bool kQueryColumns>
HWY_INLINE VF QueryValue(DF df, const float* per_query, std::size_t r, std::size_t c) {
  return kQueryColumns ? hn::Load(df, per_query + c) : hn::Set(df, per_query[r]);
}

// s <- exp(s - lse[query]): the softmax weights (padded -inf columns become 0).
template <bool kQueryColumns = false>
HWY_INLINE void Probabilities(float* s, std::size_t lds, std::size_t rows, std::size_t cols,
                              const float* lse) {
  const DF df;
  const std::size_t L = hn::Lanes(df), cpad = PadToLanes(cols);
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = s + r * lds;
    for (std::size_t c = 0; c < cpad; c += L)
      hn::Store(hn::Exp(df, hn::Sub(hn::Load(df, row + c), QueryValue<kQueryColumns>(df, lse, r, c))), df, row + c);
  }
}

// dp <- scale * p * (dp - delta[query]): the score gradient dS.
template <bool kQueryColumns = false>
HWY_INLINE void ScoreGradient(const float* p, float* dp, std::size_t lds, std::size_t rows,
                              std::size_t cols, const float* delta, float scale) {
  const DF df;
  const std::size_t L = hn::Lanes(df), cpad = PadToLanes(cols);
  const VF vs = hn::Set(df, scale);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* prow = p + r * lds;
    float* drow = dp + r * lds;
    for (std::size_t c = 0; c < cpad; c += L)
      hn::Store(hn::Mul(hn::Mul(hn::Load(df, prow + c), vs),
                        hn::Sub(hn::Load(df, drow + c), QueryValue<kQueryColumns>(df, delta, r, c))),
                df, drow + c);
  }
}

// tr[c * ldt + r] = a[r * lda + c] for r < m, c < n.
HWY_INLINE void Transpose(const float* a, std::size_t lda, std::size_t m, std::size_t n, float* tr,
                          std::size_t ldt) {
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = 0; c < n; ++c) tr[c * ldt + r] = a[r * lda + c];
}

// row[c] += acc[c] for c < n.
HWY_INLINE void AddRow(const float* HWY_RESTRICT acc, float* HWY_RESTRICT row, std::size_t n) {
  for (std::size_t c = 0; c < n; ++c) row[c] += acc[c];
}

// The logsumexp a query's weights are taken against: a query that sees no key at all
// (lse = -inf) gets +inf, so that its weights exp(s - lse) are 0 rather than NaN.
HWY_INLINE float WeightLse(float lse) {
  return lse == -std::numeric_limits<float>::infinity() ? std::numeric_limits<float>::infinity() : lse;
}

// One group (see the file comment). `scratch` is one thread's TrainScratch::make(a).total
// floats. sink(j, dk_row, dv_row) receives the dK and dV rows (dk d floats, dv dv floats) of
// the group's key j once, after all of the group's queries (kGroupGradKV only).
template <class Mask, class Sink>
HWY_INLINE void TrainGroup(const detail::TrainArgs& a, const detail::Group& gr, const Mask& mask,
                           const Sink& sink, float* scratch) {
  using detail::kTrainKeyTile;
  using detail::kTrainQueryTile;
  const detail::Problem& pr = *a.pr;
  const AttentionParams& p = *pr.p;
  const detail::TrainScratch L = detail::TrainScratch::make(a);
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t M = kTrainQueryTile, N = kTrainKeyTile;
  const bool want_out = (a.mode & detail::kGroupOut) != 0;
  const bool want_dq = (a.mode & detail::kGroupGradQ) != 0;
  const bool want_dkv = (a.mode & detail::kGroupGradKV) != 0;
  const GradientParams* g = a.grads;
  auto grad_o_row = [&](std::int64_t b, std::int64_t h, std::int64_t i) {
    return g->grad_o + b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
  };
  if (gr.n_queries == 0 || gr.n_keys == 0) return;
  float* base = scratch;
  float *kt = base + L.kt, *vt = base + L.vt, *kp = base + L.kp, *vp = base + L.vp;
  float *s = base + L.s, *dp = base + L.dp, *tr = base + L.tr, *qp = base + L.qp;
  float *dop = base + L.dop, *dk = base + L.dk, *dvacc = base + L.dv, *dq = base + L.dq;
  float *out = base + L.out, *lse = base + L.lse, *delta = base + L.delta;
  const std::int64_t b = gr.b, h = gr.h, bh = b * pr.H + h;
  const std::size_t mq = static_cast<std::size_t>(gr.n_queries);
  if (want_dq) std::fill_n(dq, mq * L.ldd, 0.0f);
  if (want_out) std::fill_n(out, mq * L.ldv, 0.0f);
  const float* q_rows[kTrainQueryTile];
  const float* do_rows[kTrainQueryTile];

  for (std::size_t k0 = 0; k0 < static_cast<std::size_t>(gr.n_keys); k0 += N) {
    const std::size_t n = std::min(N, static_cast<std::size_t>(gr.n_keys) - k0);
    const std::int32_t* kidx = gr.keys + k0;
    const std::size_t ldk = PadToLanes(n);  // K^T and V^T row stride: small clusters pack small
    auto key_row = [&](std::size_t j) { return pr.k_row<float>(b, h, kidx[j]); };
    auto value_row = [&](std::size_t j) { return pr.v_row<float>(b, h, kidx[j]); };
    PackKeysTransposed(key_row, n, d, kt, ldk);
    if (want_out) PackValues(value_row, n, dv, vp, L.ldv);
    if (want_dq || want_dkv) PackKeysTransposed(value_row, n, dv, vt, ldk);
    if (want_dq) PackValues(key_row, n, d, kp, L.ldd);
    if (want_dkv) {
      std::fill_n(dk, n * L.ldd, 0.0f);
      std::fill_n(dvacc, n * L.ldv, 0.0f);
    }
    float bias[kTrainKeyTile];  // params.key_bias of the tile's keys
    if (p.key_bias != nullptr)
      for (std::size_t j = 0; j < n; ++j) bias[j] = pr.key_bias(b, h, kidx[j]);

    for (std::size_t q0 = 0; q0 < mq; q0 += M) {
      const std::size_t m = std::min(M, mq - q0);
      const std::int32_t* qidx = gr.queries + q0;
      for (std::size_t r = 0; r < m; ++r) {
        q_rows[r] = pr.q_row<float>(b, h, qidx[r]);
        lse[r] = WeightLse(a.lse[bh * pr.Nq + qidx[r]]);
      }
      ScoreTile(q_rows, m, d, kt, ldk, n, pr.scale, s, N);
      if (p.key_bias != nullptr) AddKeyBiasColumns(s, N, m, n, bias);
      if constexpr (!kIsNoMask(static_cast<const Mask*>(nullptr))) mask(qidx, m, kidx, n, s, N);
      Probabilities(s, N, m, n, lse);
      if (want_out) {
        if (a.dropout.active()) {
          for (std::size_t r = 0; r < m; ++r) {
            const std::uint64_t stream = a.dropout.row(b, h, gr.round, qidx[r]);
            for (std::size_t c = 0; c < n; ++c) s[r * N + c] *= a.dropout.factor(stream, kidx[c]);
          }
        }
        PVAccumulate(s, N, m, n, vp, L.ldv, out + q0 * L.ldv, L.ldv);
        continue;
      }
      for (std::size_t r = 0; r < m; ++r) {
        do_rows[r] = grad_o_row(b, h, qidx[r]);
        delta[r] = a.delta[bh * pr.Nq + qidx[r]];
      }
      ScoreTile(do_rows, m, dv, vt, ldk, n, 1.0f, dp, N);
      // Dropout: the kept weights P F go to tr (transposed, for dV); dP <- F dP.
      if (a.dropout.active()) {
        for (std::size_t r = 0; r < m; ++r) {
          const std::uint64_t stream = a.dropout.row(b, h, gr.round, qidx[r]);
          for (std::size_t c = 0; c < n; ++c) {
            const float f = a.dropout.factor(stream, kidx[c]);
            dp[r * N + c] *= f;
            tr[c * M + r] = s[r * N + c] * f;
          }
        }
      } else if (want_dkv) {
        Transpose(s, N, m, n, tr, M);
      }
      if (want_dkv) {
        PackValues([&](std::size_t r) { return do_rows[r]; }, m, dv, dop, L.ldv);
        PVAccumulate(tr, M, n, m, dop, L.ldv, dvacc, L.ldv);
      }
      ScoreGradient(s, dp, N, m, n, delta, pr.scale);
      if (want_dq) PVAccumulate(dp, N, m, n, kp, L.ldd, dq + q0 * L.ldd, L.ldd);
      if (want_dkv) {
        Transpose(dp, N, m, n, tr, M);
        PackValues([&](std::size_t r) { return q_rows[r]; }, m, d, qp, L.ldd);
        PVAccumulate(tr, M, n, m, qp, L.ldd, dk, L.ldd);
      }
    }
    if (want_dkv)
      for (std::size_t j = 0; j < n; ++j) sink(k0 + j, dk + j * L.ldd, dvacc + j * L.ldv);
  }
  if (want_dq)
    for (std::size_t i = 0; i < mq; ++i)
      AddRow(dq + i * L.ldd,
             g->grad_q + b * p.q_batch_stride + h * p.q_head_stride + gr.queries[i] * p.q_row_stride, d);
  if (want_out)
    for (std::size_t i = 0; i < mq; ++i) AddRow(out + i * L.ldv, pr.o_row(b, h, gr.queries[i]), dv);
}

// Runs a TrainGroups set (train.h) with the mode of `a`: launches in order, the groups of one
// launch in parallel on pr.threads threads; dK and dV go to the set's partial rows (pk, pv:
// set.partial_rows rows of d and dv floats), added into the gradients by add_key_partials.
template <class Mask>
void RunTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<Mask>& set, float* pk,
                    float* pv, float* scratch, std::size_t per_thread) {
  const std::size_t d = static_cast<std::size_t>(a.pr->d), dv = static_cast<std::size_t>(a.pr->dv);
  std::size_t begin = 0;
  for (const std::size_t end : set.launch_ends) {
    detail::parallel_for_tid(static_cast<std::int64_t>(end - begin), a.pr->threads, [&](std::int64_t t, int tid) {
      const std::size_t gi = begin + static_cast<std::size_t>(t);
      const std::size_t row0 = set.partial_row[gi];
      auto sink = [&](std::size_t j, const float* dk, const float* dvr) {
        std::copy_n(dk, d, pk + (row0 + j) * d);
        std::copy_n(dvr, dv, pv + (row0 + j) * dv);
      };
      TrainGroup(a, set.groups[gi], set.masks[gi], sink, scratch + static_cast<std::size_t>(tid) * per_thread);
    });
    begin = end;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // SMYRF_KERNELS_GROUP_TRAIN_INL_H_
