// Attention of a gathered group of queries to a gathered set of keys, on the shared tile
// kernels, with the result written to O or merged into it by logsumexp (one more round).
// The engine of every method that chooses keys per group of queries: SMYRF's clusters,
// Reformer's chunks, routing clusters, the sparse patterns' query blocks.
//
// Include after attention_tile-inl.h and bf16_dot-inl.h, from a file that uses
// hwy/foreach_target.h.

#if defined(SMYRF_KERNELS_KEYSET_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMYRF_KERNELS_KEYSET_INL_H_
#undef SMYRF_KERNELS_KEYSET_INL_H_
#else
#define SMYRF_KERNELS_KEYSET_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "common/problem.h"
#include "common/rounds.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {

// Merge weights of one more round for m rows, vectorised over rows. For each row, with running
// max mx and weight sum of the rounds so far and this round's lse:
//   m' = max(mx, lse), a = sum e^(mx - m'), w = e^(lse - m'), sum' = a + w,
//   O <- O a / sum' + o w / sum'.
// On return keep[r] = a / sum' and take[r] = inv[r] * w / sum' (the tile row is unnormalised).
// A round without visible keys for the row (lse = -inf) leaves it unchanged; rows that have
// seen nothing in any round keep {-inf, 0} and get keep = take = 0 (their O stays 0).
HWY_INLINE void MergeWeights(std::size_t m, const float* lse, const float* inv, float* mx,
                             float* sum, float* keep, float* take) {
  const DF df;
  const std::size_t L = hn::Lanes(df);
  const VF ninf = hn::Set(df, -std::numeric_limits<float>::infinity());
  for (std::size_t r = 0; r < m; r += L) {
    const VF old_max = hn::Load(df, mx + r), l = hn::Load(df, lse + r);
    const VF new_max = hn::Max(old_max, l);
    const auto nothing = hn::Eq(new_max, ninf);
    const VF a = hn::IfThenZeroElse(
        nothing, hn::Mul(hn::Load(df, sum + r), hn::Exp(df, hn::Sub(old_max, new_max))));
    const VF w = hn::IfThenZeroElse(nothing, hn::Exp(df, hn::Sub(l, new_max)));
    const VF s = hn::Add(a, w);
    const VF inv_s = hn::IfThenElseZero(hn::Gt(s, hn::Zero(df)), hn::Div(hn::Set(df, 1.0f), s));
    hn::Store(new_max, df, mx + r);
    hn::Store(s, df, sum + r);
    hn::Store(hn::Mul(a, inv_s), df, keep + r);
    hn::Store(hn::Mul(hn::Mul(w, inv_s), hn::Load(df, inv + r)), df, take + r);
  }
}

// orow <- orow * keep + arow * take over n columns.
HWY_INLINE void BlendRow(float* orow, const float* arow, std::size_t n, float keep, float take) {
  const DF df;
  const std::size_t L = hn::Lanes(df);
  const VF vk = hn::Set(df, keep), vt = hn::Set(df, take);
  std::size_t c = 0;
  for (; c + L <= n; c += L)
    hn::StoreU(hn::MulAdd(hn::LoadU(df, orow + c), vk, hn::Mul(hn::Load(df, arow + c), vt)), df,
               orow + c);
  for (; c < n; ++c) orow[c] = orow[c] * keep + arow[c] * take;
}

// Prefetches the Q and O rows of the queries at q_order[q_begin, q_end) and the K and V rows of
// the keys at k_order[k_begin, k_end) of (b, h): the next group's rows, which sit at scattered
// positions the hardware prefetcher cannot predict, while this group is computed.
HWY_INLINE void PrefetchGroupRows(const detail::Problem& pr, std::int64_t b, std::int64_t h,
                                  const std::int32_t* q_order, std::int64_t q_begin,
                                  std::int64_t q_end, const std::int32_t* k_order,
                                  std::int64_t k_begin, std::int64_t k_end) {
  auto lines = [](const void* p, std::int64_t bytes) {
    const char* c = static_cast<const char*>(p);
    for (std::int64_t x = 0; x < bytes; x += 64) hwy::Prefetch(c + x);
  };
  const std::int64_t e = static_cast<std::int64_t>(pr.elem_bytes());
  for (std::int64_t t = q_begin; t < q_end; ++t) {
    lines(pr.q_addr(b, h, q_order[t]), pr.d * e);
    lines(pr.o_row(b, h, q_order[t]), pr.dv * static_cast<std::int64_t>(sizeof(float)));
  }
  for (std::int64_t t = k_begin; t < k_end; ++t) {
    lines(pr.k_addr(b, h, k_order[t]), pr.d * e);
    lines(pr.v_addr(b, h, k_order[t]), pr.dv * e);
  }
}

// Where one group's rows go. Single round (merge == nullptr): O rows written normalised and,
// when lse != nullptr, lse[bh * Nq + position]. Several rounds: round 0 writes O and starts
// each row's MergeState; later rounds blend into O (merge holds [B * H * Nq] states).
struct GroupOutput {
  detail::MergeState* merge = nullptr;
  bool first_round = true;
  float* lse = nullptr;
};

// The masks a group may need, applied to each score tile after the scores: a callable
//   mask(const std::int32_t* qpos, std::size_t m, const std::int32_t* kpos, std::size_t n,
//        float* s, std::size_t lds)
// that sets the scores of invisible (query, key) pairs to -inf.
struct NoMask {
  void operator()(const std::int32_t*, std::size_t, const std::int32_t*, std::size_t, float*,
                  std::size_t) const {}
};
constexpr bool kIsNoMask(const NoMask*) { return true; }
template <class M>
constexpr bool kIsNoMask(const M*) { return false; }

// Causal visibility: key position <= query position + offset (offset = Nk - Nq).
struct CausalMask {
  std::int64_t offset = 0;
  void operator()(const std::int32_t* qpos, std::size_t m, const std::int32_t* kpos, std::size_t n,
                  float* s, std::size_t lds) const {
    const float ninf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < m; ++r) {
      const std::int64_t limit = qpos[r] + offset;
      float* srow = s + r * lds;
      for (std::size_t c = 0; c < n; ++c)
        if (kpos[c] > limit) srow[c] = ninf;
    }
  }
};

// Phase hooks of a group (SMYRF's phase timers): packed() after the keys and values are packed,
// attended(m) after a query tile's scores, softmax and P.V, merged(m) after its rows are written
// or merged into O.
struct NoHooks {
  void packed() const {}
  void attended(std::size_t) const {}
  void merged(std::size_t) const {}
};

// Counts the scores of a tile that are not -inf (the pairs a mask left visible).
HWY_INLINE std::size_t CountVisible(const float* s, std::size_t lds, std::size_t m, std::size_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::size_t count = 0;
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = 0; c < n; ++c) count += s[r * lds + c] != ninf ? 1 : 0;
  return count;
}

// Queries at positions qpos[0, mq) of (b, h) attend to the keys at positions kpos[0, nk) (any
// order; every key listed must be visible under the key mask), subject to `mask`, with
// params.key_bias added to the scores when given. nk may
// exceed layout.key_cap: the keys are then packed key_cap at a time for each query tile.
// `scratch` is one thread's layout.total() floats. Returns the (query, key) pairs attended
// (scores not masked out).
template <class T, class Mask, class Hooks = NoHooks>
std::size_t AttendGroup(const detail::Problem& pr, std::int64_t b, std::int64_t h,
                        const std::int32_t* qpos, std::size_t mq, const std::int32_t* kpos,
                        std::size_t nk, const Mask& mask, const GroupOutput& out,
                        const detail::RoundScratch& layout, float* scratch,
                        const Hooks& hooks = Hooks{}) {
  using detail::kDenseKeyTile;
  using detail::kDenseQueryTile;
  const bool pairs = false;  // bf16 inputs are converted while packing (as SMYRF's clusters)
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t ldk = layout.ldk, ldv = layout.ldv;
  float* s = scratch;
  float* acc = s + layout.s_floats();
  float* row_max = acc + layout.acc_floats();
  const std::size_t pq = detail::pad_floats(kDenseQueryTile);
  float* row_sum = row_max + pq;
  float* inv = row_sum + pq;
  float* lse = inv + pq;
  float* mx = lse + pq;
  float* sm = mx + pq;
  float* keep = sm + pq;
  float* take = keep + pq;
  float* q_buffer = row_max + layout.state_floats();
  float* kt = q_buffer + layout.q_floats();
  float* vp = kt + layout.kt_floats();
  const std::size_t cap = std::max<std::size_t>(layout.key_cap, 1);
  const bool one_pack = nk <= cap;
  auto pack = [&](std::size_t k0, std::size_t n) {
    PackKeysForScores<T>(pairs, [&](std::size_t j) { return pr.k_row<T>(b, h, kpos[k0 + j]); }, n,
                         d, kt, ldk);
    PackValues([&](std::size_t j) { return pr.v_row<T>(b, h, kpos[k0 + j]); }, n, dv, vp, ldv);
  };
  if (one_pack && nk > 0) pack(0, nk);
  hooks.packed();
  std::size_t visible = 0;
  const std::int64_t bh = b * pr.H + h;
  for (std::size_t q0 = 0; q0 < mq; q0 += kDenseQueryTile) {
    const std::size_t m = std::min(kDenseQueryTile, mq - q0);
    const std::int32_t* rows = qpos + q0;
    QueryTile tile_q;
    PrepareQueries<T>(pairs, [&](std::size_t i) { return pr.q_row<T>(b, h, rows[i]); }, m, d,
                      q_buffer, detail::pad_floats(d), &tile_q);
    ResetTileState(m, ldv, row_max, row_sum, acc);
    for (std::size_t k0 = 0; k0 < nk; k0 += cap) {
      const std::size_t kn = std::min(cap, nk - k0);
      if (!one_pack) pack(k0, kn);
      for (std::size_t j0 = 0; j0 < kn; j0 += kDenseKeyTile) {
        const std::size_t n = std::min(kDenseKeyTile, kn - j0);
        TileScores(pairs, tile_q, m, d, kt, ldk, j0, n, pr.scale, s, kDenseKeyTile);
        if (pr.p->key_bias != nullptr) {
          float bias[kDenseKeyTile];
          for (std::size_t c = 0; c < n; ++c) bias[c] = pr.key_bias(b, h, kpos[k0 + j0 + c]);
          AddKeyBiasColumns(s, kDenseKeyTile, m, n, bias);
        }
        if constexpr (!kIsNoMask(static_cast<const Mask*>(nullptr))) {
          mask(rows, m, kpos + k0 + j0, n, s, kDenseKeyTile);
          visible += CountVisible(s, kDenseKeyTile, m, n);
        } else {
          visible += m * n;
        }
        SoftmaxUpdate(s, kDenseKeyTile, m, n, row_max, row_sum, acc, ldv);
        PVAccumulate(s, kDenseKeyTile, m, n, vp + j0 * ldv, ldv, acc, ldv);
      }
    }
    FinalizeRows(m, row_max, row_sum, inv, lse);
    hooks.attended(m);
    if (out.merge == nullptr || out.first_round) {
      for (std::size_t i = 0; i < m; ++i) {
        ScaleRowTo(acc + i * ldv, inv[i], pr.o_row(b, h, rows[i]), dv);
        const std::size_t row = static_cast<std::size_t>(bh * pr.Nq + rows[i]);
        if (out.merge != nullptr) out.merge[row] = {lse[i], inv[i] > 0.0f ? 1.0f : 0.0f};
        if (out.lse != nullptr) out.lse[row] = lse[i];
      }
    } else {
      for (std::size_t i = 0; i < m; ++i) {
        const detail::MergeState& state = out.merge[static_cast<std::size_t>(bh * pr.Nq + rows[i])];
        mx[i] = state.max;
        sm[i] = state.sum;
      }
      MergeWeights(m, lse, inv, mx, sm, keep, take);
      for (std::size_t i = 0; i < m; ++i) {
        BlendRow(pr.o_row(b, h, rows[i]), acc + i * ldv, dv, keep[i], take[i]);
        out.merge[static_cast<std::size_t>(bh * pr.Nq + rows[i])] = {mx[i], sm[i]};
      }
    }
    hooks.merged(m);
  }
  return visible;
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#endif  // SMYRF_KERNELS_KEYSET_INL_H_
