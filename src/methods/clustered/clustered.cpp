// Clustered and improved clustered attention forward (Vyas, Katharopoulos & Fleuret, NeurIPS
// 2020; exact definition in smyrf.h, ClusteredConfig). Phases, each parallel over (b, h) and
// pieces of it, every piece writing its own outputs (same bits whatever the thread count):
//   1. hash: the hash_bits-bit code of every active query (double fma chains; the lanes of a
//      double vector are the hyperplanes).
//   2. k-means in Hamming space, each (b, h) in one task, or (one long head) step by step
//      over chunks of queries; a (b, h) whose assignment did not change is at a fixed point
//      and stops (further rounds would repeat it).
//   3. grouping: each cluster's members in ascending positions (a counting sort).
//   4. centroid pass: K^T and V of the visible keys packed once per (b, h) (as dense does);
//      then per task a tile of up to 48 live centroids: centroid queries (mean in double,
//      rounded to f32), their f32 scores against every visible key (the shared tile kernel,
//      kept as rows of Nk floats: O(N) per thread), the top-k selection (a streaming
//      threshold scan), softmax weights, and r_c = sum of A_c(j) v_j over the keys outside T_c
//      (all keys when plain).
//   5. members: plain: the centroid's row is copied to every member; improved: the members
//      attend to T_c through AttendGroup, then O_i = m_c o_i + r_c.
// The centroid rows use the tile kernels directly rather than AttendGroup: the engine reads
// queries with the inputs' element type (bf16 centroids would be rounded) and does not expose
// the score rows that the top-k selection needs.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/clustered/clustered.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>

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
#include "kernels/tile_matmul-inl.h"
#include "methods/clustered/clustered.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace clustered {

// Codes of the active queries of rank [t0, t1) of (b, h): bit t = [fma chain over j of
// q[j] * w_t[j] > 0]. Four queries at a time (four independent chains per lane group).
template <class T>
void HashQueriesT(const detail::ClusteredArgs& a, std::int64_t b, std::int64_t h, std::int64_t t0,
                  std::int64_t t1) {
  const detail::Problem& pr = *a.pr;
  const std::size_t d = static_cast<std::size_t>(pr.d), ldw = a.ldw;
  const double* w = a.w + static_cast<std::size_t>(h) * d * ldw;
  const std::int32_t* queries = a.lists->queries(b, pr.Nq);
  std::uint64_t* codes = a.codes + (b * pr.H + h) * pr.Nq;
  const int bits = a.bits;
  HWY_ALIGN double dots[4][64];
  for (std::int64_t i0 = t0; i0 < t1; i0 += 4) {
    const std::size_t ntok = static_cast<std::size_t>(std::min<std::int64_t>(4, t1 - i0));
    const T* rows[4];
    for (std::size_t u = 0; u < 4; ++u)
      rows[u] = pr.q_row<T>(b, h, queries[i0 + static_cast<std::int64_t>(u < ntok ? u : 0)]);
    const tile::RowPtrs<T> q{rows};
    const tile::RowMajor<double> planes{w, static_cast<std::int64_t>(ldw)};
#if HWY_NATIVE_FMA
    const hn::ScalableTag<double> dd;
    const std::size_t L = hn::Lanes(dd);
    for (std::size_t g = 0; g * L < static_cast<std::size_t>(bits); ++g)
      tile::Tile<4, 1>(dd, q, planes, static_cast<std::int64_t>(d),
                       static_cast<std::int64_t>(g * L), &dots[0][0], 64);
#else
    // No fused multiply-add in this target's vectors: the correctly rounded scalar fma.
    for (std::size_t u = 0; u < ntok; ++u)
      for (int t = 0; t < bits; ++t)
        dots[u][t] = tile::Element<double>(q, planes, static_cast<std::int64_t>(u), t,
                                           static_cast<std::int64_t>(d));
#endif
    for (std::size_t u = 0; u < ntok; ++u) {
      std::uint64_t code = 0;
      for (int t = 0; t < bits; ++t)
        code |= static_cast<std::uint64_t>(dots[u][t] > 0.0 ? 1 : 0) << t;
      codes[i0 + static_cast<std::int64_t>(u)] = code;
    }
  }
}

void Hash(const detail::ClusteredArgs& a) {
  const detail::Problem& pr = *a.pr;
  constexpr std::int64_t kChunk = 256;
  const std::int64_t chunks = (pr.Nq + kChunk - 1) / kChunk;
  detail::parallel_for(pr.B * pr.H * chunks, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / chunks, chunk = task % chunks;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nq = a.lists->q_count[b];
    const std::int64_t t0 = chunk * kChunk, t1 = std::min(nq, t0 + kChunk);
    if (t0 >= t1) return;
    detail::with_input_type(pr.dtype, [&](auto tag) { HashQueriesT<decltype(tag)>(a, b, h, t0, t1); });
  });
}

// Assignment of the active queries of rank [t0, t1) of bh to the nearest centroid in Hamming
// distance (first minimum). Returns whether any assignment moved.
HWY_INLINE bool AssignRange(const detail::ClusteredArgs& a, std::int64_t bh, std::int64_t t0,
                            std::int64_t t1) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t C = a.n_clusters[bh / pr.H];
  const std::uint64_t* cent = a.centroid_codes + bh * a.max_clusters;
  const std::uint64_t* codes = a.codes + bh * pr.Nq;
  std::int32_t* assign = a.assign + bh * pr.Nq;
  bool moved = false;
  for (std::int64_t t = t0; t < t1; ++t) {
    const std::uint64_t x = codes[t];
    // (distance, index) in one integer: the minimum is the nearest centroid, ties to the
    // lowest index, without unpredictable branches; whole vectors of centroids at a time.
    std::uint64_t best_key = ~std::uint64_t{0};
    std::int64_t c = 0;
#if HWY_TARGET != HWY_SCALAR
    const hn::ScalableTag<std::uint64_t> du;
    const hn::Repartition<std::uint8_t, decltype(du)> d8;
    const std::int64_t L = static_cast<std::int64_t>(hn::Lanes(du));
    if (C >= L) {
      const auto vx = hn::Set(du, x);
      auto index = hn::Iota(du, 0);
      const auto step = hn::Set(du, static_cast<std::uint64_t>(L));
      auto best = hn::Set(du, ~std::uint64_t{0});
      for (; c + L <= C; c += L) {
        const auto diff = hn::BitCast(d8, hn::Xor(vx, hn::LoadU(du, cent + c)));
        const auto dist = hn::SumsOf8(hn::PopulationCount(diff));
        best = hn::Min(best, hn::Or(hn::ShiftLeft<32>(dist), index));
        index = hn::Add(index, step);
      }
      best_key = hn::GetLane(hn::MinOfLanes(du, best));
    }
#endif
    for (; c < C; ++c) {
      const std::uint64_t key =
          (static_cast<std::uint64_t>(__builtin_popcountll(x ^ cent[c])) << 32) | static_cast<std::uint64_t>(c);
      best_key = key < best_key ? key : best_key;
    }
    const std::int32_t best = static_cast<std::int32_t>(best_key & 0xFFFFFFFFu);
    if (assign[t] != best) {
      assign[t] = best;
      moved = true;
    }
  }
  return moved;
}

// One assignment step of every running (b, h), parallel over chunks of queries;
// changed[task] tells whether any assignment of the chunk moved.
void Assign(const detail::ClusteredArgs& a) {
  const detail::Problem& pr = *a.pr;
  const std::int64_t chunk = a.assign_chunk;
  const std::int64_t chunks = (pr.Nq + chunk - 1) / chunk;
  detail::parallel_for(pr.B * pr.H * chunks, pr.threads, [&](std::int64_t task) {
    a.changed[task] = 0;
    const std::int64_t bh = task / chunks, c0 = task % chunks;
    if (!a.active_bh[bh]) return;
    const std::int64_t nq = a.lists->q_count[bh / pr.H];
    const std::int64_t t0 = c0 * chunk, t1 = std::min(nq, t0 + chunk);
    a.changed[task] = t0 < t1 && AssignRange(a, bh, t0, t1) ? 1 : 0;
  });
}

// The whole k-means of each (b, h) in one task (one parallel region for all iterations: for
// many heads, or small problems where a region costs more than the work).
void KMeansPerHead(const detail::ClusteredArgs& a, int iterations, std::int32_t* counts) {
  const detail::Problem& pr = *a.pr;
  detail::parallel_for_tid(pr.B * pr.H, pr.threads, [&](std::int64_t bh, int tid) {
    const std::int64_t nq = a.lists->q_count[bh / pr.H];
    if (nq == 0) return;
    std::int32_t* my_counts = counts + static_cast<std::size_t>(tid) * static_cast<std::size_t>(a.max_clusters) * 65;
    AssignRange(a, bh, 0, nq);
    for (int it = 0; it < iterations; ++it) {
      detail::clustered_update_centroids(a, bh, my_counts);
      if (!AssignRange(a, bh, 0, nq)) break;  // a fixed point: later rounds repeat it
    }
  });
}

// K^T and V of the visible keys of every (b, h), packed once (as the dense method does): two
// tasks per (b, h), so that one long head still keeps two threads busy.
template <class T>
void PackAllT(const detail::ClusteredArgs& a) {
  const detail::Problem& pr = *a.pr;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  detail::parallel_for(2 * pr.B * pr.H, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / 2, b = bh / pr.H, h = bh % pr.H;
    const std::size_t nk = static_cast<std::size_t>(a.lists->k_count[b]);
    if (nk == 0) return;
    const std::int32_t* keys = a.lists->keys(b, pr.Nk);
    if (task % 2 == 0) {
      PackKeysForScores<T>(false, [&](std::size_t j) { return pr.k_row<T>(b, h, keys[j]); }, nk, d,
                           a.kt_all + static_cast<std::size_t>(bh) * d * a.ldn, a.ldn);
    } else {
      PackValues([&](std::size_t j) { return pr.v_row<T>(b, h, keys[j]); }, nk, dv,
                 a.vp_all + static_cast<std::size_t>(bh * pr.Nk) * a.ldv, a.ldv);
    }
  });
}

void Pack(const detail::ClusteredArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { PackAllT<decltype(tag)>(a); });
}

struct Candidate {
  float score;
  std::int32_t index;
};

// The sel best of s[0, n) by (score descending, index ascending), written to out in ascending
// index order. A streaming selection: candidates go to buf (2 sel slots); when it is full, the
// sel best are kept and the sel-th best score becomes the bar that a later (higher-index) key
// must beat strictly. The scan compares whole vectors against the bar, so it costs about n / L
// vector compares once the bar is set. NaN scores (only from non-finite inputs with
// check_finite off) rank as -inf, so the order stays strict and weak.
HWY_INLINE void TopKIndices(const float* s, std::size_t n, std::size_t sel, Candidate* buf,
                            std::int32_t* out) {
  const float ninf = -std::numeric_limits<float>::infinity();
  auto better = [](const Candidate& x, const Candidate& y) {
    return x.score > y.score || (x.score == y.score && x.index < y.index);
  };
  std::size_t count = 0;
  bool have_bar = false;
  float bar = ninf;
  auto consider = [&](std::size_t j) {
    const float v = s[j];
    if (have_bar && !(v > bar)) return;
    buf[count++] = {std::isnan(v) ? ninf : v, static_cast<std::int32_t>(j)};
    if (count == 2 * sel) {
      std::nth_element(buf, buf + (sel - 1), buf + count, better);
      count = sel;
      bar = buf[sel - 1].score;
      have_bar = true;
    }
  };
  const DF df;
  const std::size_t L = hn::Lanes(df);
  std::size_t j0 = 0;
  for (; j0 + L <= n; j0 += L) {
    if (have_bar && hn::AllFalse(df, hn::Gt(hn::LoadU(df, s + j0), hn::Set(df, bar)))) continue;
    for (std::size_t l = 0; l < L; ++l) consider(j0 + l);
  }
  for (; j0 < n; ++j0) consider(j0);
  if (count > sel) std::nth_element(buf, buf + (sel - 1), buf + count, better);
  for (std::size_t t = 0; t < sel; ++t) out[t] = buf[t].index;
  std::sort(out, out + sel);
}

// The centroid pass (file comment, step 4) for the live clusters of a task.
template <class T>
void CentroidPassT(const detail::ClusteredArgs& a) {
  using detail::kDenseKeyTile;
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::size_t ldv = a.ldv, ldn = a.ldn, ldq = a.ldq;
  const std::int64_t rows_per_task = a.rows_per_task;
  const std::int64_t tiles = (a.max_clusters + rows_per_task - 1) / rows_per_task;
  const std::size_t per_thread = a.centroid_floats();
  const float ninf = -std::numeric_limits<float>::infinity();
  detail::parallel_for_tid(pr.B * pr.H * tiles, pr.threads, [&](std::int64_t task, int tid) {
    a.scores_per_task[task] = 0;
    const std::int64_t bh = task / tiles, tile = task % tiles;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nk = lists.k_count[b];
    const std::int64_t u0 = tile * rows_per_task;
    const std::int64_t u1 = std::min<std::int64_t>(a.n_live[bh], u0 + rows_per_task);
    if (nk == 0 || u0 >= u1) return;
    const std::size_t m = static_cast<std::size_t>(u1 - u0);
    const std::size_t n_keys = static_cast<std::size_t>(nk);
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const float* kt = a.kt_all + static_cast<std::size_t>(bh) * d * ldn;
    const float* vp = a.vp_all + static_cast<std::size_t>(bh * pr.Nk) * ldv;
    detail::PhaseTicks& ticks = a.phase_ticks[tid];

    float* S = a.centroid_scratch + static_cast<std::size_t>(tid) * per_thread;
    float* acc = S + static_cast<std::size_t>(rows_per_task) * ldn;
    float* qbar = acc + static_cast<std::size_t>(rows_per_task) * ldv;
    double* mean = reinterpret_cast<double*>(qbar + static_cast<std::size_t>(rows_per_task) * ldq);
    std::int32_t* sel_ints = a.selection + static_cast<std::size_t>(tid) * a.selection_ints();
    std::int32_t* chosen = sel_ints;  // top_stride ints, then the candidates
    auto* candidates = reinterpret_cast<Candidate*>(sel_ints + a.top_stride + (a.top_stride & 1));

    // Centroid queries: the mean of the members (ascending positions) in double, to f32.
    const std::uint64_t t_start = detail::ticks();
    const std::int32_t* member = a.member + bh * pr.Nq;
    const std::int32_t* start = a.start + bh * (a.max_clusters + 1);
    for (std::size_t r = 0; r < m; ++r) {
      const std::int32_t c = a.live[bh * a.max_clusters + u0 + static_cast<std::int64_t>(r)];
      std::fill_n(mean, d, 0.0);
      for (std::int32_t t = start[c]; t < start[c + 1]; ++t) {
        const T* q = pr.q_row<T>(b, h, member[t]);
        for (std::size_t j = 0; j < d; ++j) mean[j] += detail::to_double(q[j]);
      }
      const double n = static_cast<double>(start[c + 1] - start[c]);
      for (std::size_t j = 0; j < d; ++j) qbar[r * ldq + j] = static_cast<float>(mean[j] / n);
    }
    QueryTile tile_q;
    PrepareQueries<float>(false, [&](std::size_t i) { return qbar + i * ldq; }, m, d, nullptr, ldq,
                          &tile_q);
    const std::uint64_t t_scores = detail::ticks();
    ticks.gather += t_scores - t_start;

    // Scores of the centroids against every visible key (ascending positions).
    for (std::size_t k0 = 0; k0 < n_keys; k0 += kDenseKeyTile) {
      const std::size_t kn = std::min(kDenseKeyTile, n_keys - k0);
      TileScores(false, tile_q, m, d, kt, ldn, k0, kn, pr.scale, S + k0, ldn);
    }

    // Per row: selection, weights e_j = exp(s_j - max) with T_c's zeroed, the sums.
    const DF df;
    const std::size_t L = hn::Lanes(df);
    const std::size_t npad = PadToLanes(n_keys);
    const std::size_t sel = a.topk > 0 ? std::min<std::size_t>(static_cast<std::size_t>(a.topk), n_keys) : 0;
    HWY_ALIGN float inv_row[detail::kDenseQueryTile];
    for (std::size_t r = 0; r < m; ++r) {
      float* s = S + r * ldn;
      const std::size_t slot = static_cast<std::size_t>(bh * a.max_clusters + u0 + static_cast<std::int64_t>(r));
      if (sel > 0) {
        if (sel < n_keys) {
          TopKIndices(s, n_keys, sel, candidates, chosen);
        } else {
          std::iota(chosen, chosen + sel, 0);
        }
        std::int32_t* top = a.top + slot * static_cast<std::size_t>(a.top_stride);
        for (std::size_t t = 0; t < sel; ++t) top[t] = keys[chosen[t]];
      }
      VF vmax = hn::Set(df, ninf);
      for (std::size_t c = 0; c < npad; c += L) vmax = hn::Max(vmax, hn::Load(df, s + c));
      const float row_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
      const VF vm = hn::Set(df, row_max);
      for (std::size_t c = 0; c < npad; c += L)
        hn::Store(hn::Exp(df, hn::Sub(hn::Load(df, s + c), vm)), df, s + c);
      double w_in = 0.0;
      for (std::size_t t = 0; t < sel; ++t) {
        w_in += s[chosen[t]];
        s[chosen[t]] = 0.0f;
      }
      double part[4] = {0.0, 0.0, 0.0, 0.0};
      std::size_t j = 0;
      for (; j + 4 <= n_keys; j += 4)
        for (std::size_t p = 0; p < 4; ++p) part[p] += s[j + p];
      for (; j < n_keys; ++j) part[0] += s[j];
      const double w_out = (part[0] + part[1]) + (part[2] + part[3]);
      const double z = w_in + w_out;
      // With T_c = every visible key, w_out = 0 and m_c = 1 exactly.
      a.mass[slot] = static_cast<float>(w_in / z);
      a.lse_c[slot] = static_cast<float>(static_cast<double>(row_max) + std::log(z));
      inv_row[r] = static_cast<float>(1.0 / z);
    }

    // r_c = sum over the keys outside T_c of e_j v_j / z.
    std::fill_n(acc, m * ldv, 0.0f);
    if (sel < n_keys)
      for (std::size_t k0 = 0; k0 < n_keys; k0 += kDenseKeyTile) {
        const std::size_t kn = std::min(kDenseKeyTile, n_keys - k0);
        PVAccumulate(S + k0, ldn, m, kn, vp + k0 * ldv, ldv, acc, ldv);
      }
    for (std::size_t r = 0; r < m; ++r) {
      const std::size_t slot = static_cast<std::size_t>(bh * a.max_clusters + u0 + static_cast<std::int64_t>(r));
      ScaleRowTo(acc + r * ldv, inv_row[r], a.resid + slot * ldv, dv);
      std::fill(a.resid + slot * ldv + dv, a.resid + (slot + 1) * ldv, 0.0f);
    }
    ticks.attention += detail::ticks() - t_scores;
    a.scores_per_task[task] = static_cast<std::int64_t>(m) * nk;
  });
}

void CentroidPass(const detail::ClusteredArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { CentroidPassT<decltype(tag)>(a); });
}

// The member pass (file comment, step 5), one task per (b, h, live cluster).
template <class T>
void MemberPassT(const detail::ClusteredArgs& a) {
  const detail::Problem& pr = *a.pr;
  const detail::TokenLists& lists = *a.lists;
  const std::size_t dv = static_cast<std::size_t>(pr.dv);
  float* lse_out = pr.p->lse;
  detail::parallel_for_tid(pr.B * pr.H * a.max_clusters, pr.threads, [&](std::int64_t task, int tid) {
    a.scores_per_task[task] = 0;
    const std::int64_t bh = task / a.max_clusters, u = task % a.max_clusters;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t nk = lists.k_count[b];
    if (nk == 0 || u >= a.n_live[bh]) return;
    const std::size_t slot = static_cast<std::size_t>(bh * a.max_clusters + u);
    const std::int32_t c = a.live[slot];
    const std::int32_t* start = a.start + bh * (a.max_clusters + 1);
    const std::int32_t* members = a.member + bh * pr.Nq + start[c];
    const std::size_t nm = static_cast<std::size_t>(start[c + 1] - start[c]);
    const float* r_c = a.resid + slot * a.ldv;
    detail::PhaseTicks& ticks = a.phase_ticks[tid];
    if (a.topk == 0) {
      const std::uint64_t t0 = detail::ticks();
      const float lse = a.lse_c[slot];
      for (std::size_t i = 0; i < nm; ++i) {
        std::copy_n(r_c, dv, pr.o_row(b, h, members[i]));
        if (lse_out != nullptr) lse_out[bh * pr.Nq + members[i]] = lse;
      }
      ticks.merge += detail::ticks() - t0;
      return;
    }
    const std::uint64_t t0 = detail::ticks();
    const std::size_t sel = static_cast<std::size_t>(std::min<std::int64_t>(a.topk, nk));
    const std::int32_t* top = a.top + slot * static_cast<std::size_t>(a.top_stride);
    float* scratch = a.member_scratch + static_cast<std::size_t>(tid) * a.layout.total();
    a.scores_per_task[task] = static_cast<std::int64_t>(
        AttendGroup<T>(pr, b, h, members, nm, top, sel, NoMask{}, GroupOutput{nullptr, true, lse_out},
                       a.layout, scratch));
    const std::uint64_t t1 = detail::ticks();
    ticks.attention += t1 - t0;
    const float mass = a.mass[slot];
    const double log_mass = std::log(static_cast<double>(mass));
    for (std::size_t i = 0; i < nm; ++i) {
      BlendRow(pr.o_row(b, h, members[i]), r_c, dv, mass, 1.0f);
      if (lse_out != nullptr) {
        float& l = lse_out[bh * pr.Nq + members[i]];
        l = static_cast<float>(static_cast<double>(l) - log_mass);
      }
    }
    ticks.merge += detail::ticks() - t1;
  });
}

void MemberPass(const detail::ClusteredArgs& a) {
  detail::with_input_type(a.pr->dtype, [&](auto tag) { MemberPassT<decltype(tag)>(a); });
}

}  // namespace clustered

void ClusteredHash(const detail::ClusteredArgs& a) { clustered::Hash(a); }
void ClusteredAssign(const detail::ClusteredArgs& a) { clustered::Assign(a); }
void ClusteredKMeansPerHead(const detail::ClusteredArgs& a, int iterations, std::int32_t* counts) {
  clustered::KMeansPerHead(a, iterations, counts);
}
void ClusteredPack(const detail::ClusteredArgs& a) { clustered::Pack(a); }
void ClusteredCentroidPass(const detail::ClusteredArgs& a) { clustered::CentroidPass(a); }
void ClusteredMemberPass(const detail::ClusteredArgs& a) { clustered::MemberPass(a); }
void ClusteredTrainGroups(const detail::TrainArgs& a, const detail::TrainGroups<detail::CausalPairs>& set,
                          float* pk, float* pv, float* scratch, std::size_t per_thread) {
  RunTrainGroups(a, set, pk, pv, scratch, per_thread);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "methods/clustered/registration.h"
#include "common/timer.h"
#include "spec/draws.h"

namespace smyrf::detail {
HWY_EXPORT(ClusteredHash);
HWY_EXPORT(ClusteredAssign);
HWY_EXPORT(ClusteredKMeansPerHead);
HWY_EXPORT(ClusteredPack);
HWY_EXPORT(ClusteredCentroidPass);
HWY_EXPORT(ClusteredMemberPass);
HWY_EXPORT(ClusteredTrainGroups);

void run_clustered_groups(const TrainArgs& a, const TrainGroups<CausalPairs>& set, float* pk, float* pv,
                          float* scratch, std::size_t per_thread) {
  HWY_DYNAMIC_DISPATCH(ClusteredTrainGroups)(a, set, pk, pv, scratch, per_thread);
}

// Majority vote (ties to 0) of each non-empty cluster of bh; empty clusters keep their code.
void clustered_update_centroids(const ClusteredArgs& a, std::int64_t bh, std::int32_t* counts) {
  const Problem& pr = *a.pr;
  const std::int64_t nq = a.lists->q_count[bh / pr.H], C = a.n_clusters[bh / pr.H];
  const std::uint64_t* codes = a.codes + bh * pr.Nq;
  const std::int32_t* assign = a.assign + bh * pr.Nq;
  std::fill_n(counts, C * 65, 0);
  for (std::int64_t t = 0; t < nq; ++t) {
    std::int32_t* cc = counts + assign[t] * 65;
    ++cc[64];
    for (std::uint64_t x = codes[t]; x != 0; x &= x - 1) ++cc[__builtin_ctzll(x)];
  }
  std::uint64_t* cb = a.centroid_codes_rw + bh * a.max_clusters;
  for (std::int64_t c = 0; c < C; ++c) {
    const std::int32_t* cc = counts + c * 65;
    if (cc[64] == 0) continue;
    std::uint64_t code = 0;
    for (int t = 0; t < a.bits; ++t)
      if (2 * cc[t] > cc[64]) code |= std::uint64_t{1} << t;
    cb[c] = code;
  }
}

namespace {

// With structure_only (and a capture), the member pass is skipped: nothing is written to O or
// lse.
RunInfo clustered_run(const Problem& pr, const ClusteredConfig& config, Workspace* workspace,
                      ClusteredInspection* capture, KMeansSchedule schedule, bool structure_only = false) {
  Timer total;
  const std::int64_t BH = pr.B * pr.H;
  const std::int64_t Cmax = std::min<std::int64_t>(config.n_clusters, pr.Nq);
  const std::int64_t top_stride = config.topk > 0 ? std::min<std::int64_t>(config.topk, pr.Nk) : 0;
  const std::size_t d = static_cast<std::size_t>(pr.d);
  const std::size_t threads = static_cast<std::size_t>(pr.threads);

  ClusteredArgs a;
  a.pr = &pr;
  a.bits = config.hash_bits;
  a.topk = config.topk;
  a.max_clusters = Cmax;
  a.top_stride = top_stride;
  a.ldw = 64;
  a.ldq = pad_floats(d);
  a.ldv = pad_floats(static_cast<std::size_t>(pr.dv));
  a.ldn = pad_floats(static_cast<std::size_t>(pr.Nk));
  a.assign_chunk = 512;
  // Tiles of live centroids: about 16 tasks over the whole problem (independent of the thread
  // count), whole AVX-512 register blocks of 6 rows, at most one query tile.
  a.rows_per_task = std::clamp<std::int64_t>((BH * Cmax + 15) / 16, 1, 48);
  a.rows_per_task = std::min<std::int64_t>(48, (a.rows_per_task + 5) / 6 * 6);
  a.layout = RoundScratch::make(static_cast<std::size_t>(std::max<std::int64_t>(top_stride, 1)), d,
                                static_cast<std::size_t>(pr.dv));
  const std::int64_t assign_tasks = BH * ((pr.Nq + a.assign_chunk - 1) / a.assign_chunk);
  const std::int64_t centroid_tasks = BH * ((Cmax + a.rows_per_task - 1) / a.rows_per_task);
  const std::int64_t member_tasks = BH * Cmax;
  const std::size_t centroid_per_thread = a.centroid_floats();

  CallScratch scratch(pr, workspace);
  Arena& arena = scratch.arena();
  const std::size_t w_slot = arena.add<double>(static_cast<std::size_t>(pr.H) * d * a.ldw);
  const std::size_t codes_slot = arena.add<std::uint64_t>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t assign_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t cent_slot = arena.add<std::uint64_t>(static_cast<std::size_t>(BH * Cmax));
  const std::size_t nclus_slot = arena.add<std::int32_t>(static_cast<std::size_t>(pr.B));
  const std::size_t active_slot = arena.add<std::uint8_t>(static_cast<std::size_t>(BH));
  const std::size_t changed_slot = arena.add<std::uint8_t>(static_cast<std::size_t>(assign_tasks));
  const std::size_t counts_slot = arena.add<std::int32_t>(threads * static_cast<std::size_t>(Cmax) * 65);
  const std::size_t member_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t start_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH * (Cmax + 1)));
  const std::size_t live_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH * Cmax));
  const std::size_t nlive_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH));
  const std::size_t resid_slot = arena.add<float>(static_cast<std::size_t>(BH * Cmax) * a.ldv);
  const std::size_t lse_slot = arena.add<float>(static_cast<std::size_t>(BH * Cmax));
  const std::size_t mass_slot = arena.add<float>(static_cast<std::size_t>(BH * Cmax));
  const std::size_t top_slot = arena.add<std::int32_t>(static_cast<std::size_t>(BH * Cmax * top_stride));
  const std::size_t cscratch_slot = arena.add<float>(threads * centroid_per_thread);
  const std::size_t selection_slot = arena.add<std::int32_t>(threads * a.selection_ints());
  const std::size_t kt_slot = arena.add<float>(static_cast<std::size_t>(BH) * d * a.ldn);
  const std::size_t vp_slot = arena.add<float>(static_cast<std::size_t>(BH * pr.Nk) * a.ldv);
  const std::size_t mscratch_slot =
      arena.add<float>(config.topk > 0 ? threads * a.layout.total() : 0);
  const std::size_t scores_slot =
      arena.add<std::int64_t>(static_cast<std::size_t>(std::max(centroid_tasks, member_tasks)));
  const std::size_t ticks_slot = arena.add<PhaseTicks>(threads);
  const TokenLists lists = scratch.bind();
  a.lists = &lists;

  RunInfo info;
  info.workspace_bytes = arena.bytes();
  if (!structure_only) zero_unattended_rows(pr, lists);

  // 1. Hyperplanes and codes.
  Timer phase;
  double* w = arena.at<double>(w_slot);
  std::fill_n(w, static_cast<std::size_t>(pr.H) * d * a.ldw, 0.0);
  for (std::int64_t h = 0; h < pr.H; ++h)
    for (int t = 0; t < a.bits; ++t)
      for (std::size_t j = 0; j < d; ++j)
        w[(static_cast<std::size_t>(h) * d + j) * a.ldw + static_cast<std::size_t>(t)] =
            spec::clustered_hyperplane(pr.p->seed, h, t, j, d);
  a.w = w;
  a.codes = arena.at<std::uint64_t>(codes_slot);
  HWY_DYNAMIC_DISPATCH(ClusteredHash)(a);
  info.transform.seconds = phase.lap();
  info.transform.bytes = static_cast<double>(BH * pr.Nq) * static_cast<double>(d * pr.elem_bytes() + 8);

  // 2. k-means: initial centroids at ranks floor(c n_q / C), then assign, (update, assign)*.
  std::int32_t* nclus = arena.at<std::int32_t>(nclus_slot);
  for (std::int64_t b = 0; b < pr.B; ++b)
    nclus[b] = static_cast<std::int32_t>(std::min<std::int64_t>(config.n_clusters, lists.q_count[b]));
  std::uint64_t* cent = arena.at<std::uint64_t>(cent_slot);
  std::uint8_t* active = arena.at<std::uint8_t>(active_slot);
  std::int32_t* assign = arena.at<std::int32_t>(assign_slot);
  std::fill_n(assign, BH * pr.Nq, -1);
  for (std::int64_t bh = 0; bh < BH; ++bh) {
    const std::int64_t b = bh / pr.H, nq = lists.q_count[b], C = nclus[b];
    active[bh] = nq > 0 ? 1 : 0;
    for (std::int64_t c = 0; c < C; ++c)
      cent[bh * Cmax + c] = a.codes[bh * pr.Nq + c * nq / C];
  }
  a.assign = assign;
  a.centroid_codes = cent;
  a.centroid_codes_rw = cent;
  a.n_clusters = nclus;
  a.active_bh = active;
  a.changed = arena.at<std::uint8_t>(changed_slot);
  const std::int64_t chunks = (pr.Nq + a.assign_chunk - 1) / a.assign_chunk;
  std::int32_t* counts = arena.at<std::int32_t>(counts_slot);
  // Iteration by iteration, each step parallel over chunks of queries, when a few (b, h) hold
  // many queries; else each (b, h) runs its whole k-means in one task. (Two parallel regions
  // per iteration cost more than they gain below ~64K queries, and much more when the cores
  // are shared with other processes.)
  const bool per_head =
      schedule == KMeansSchedule::automatic
          ? BH >= 2 * static_cast<std::int64_t>(pr.threads) || BH * pr.Nq <= 65536
          : schedule == KMeansSchedule::per_head;
  if (per_head) {
    HWY_DYNAMIC_DISPATCH(ClusteredKMeansPerHead)(a, config.iterations, counts);
  } else {
    HWY_DYNAMIC_DISPATCH(ClusteredAssign)(a);
    for (int it = 0; it < config.iterations; ++it) {
      bool any = false;
      for (std::int64_t bh = 0; bh < BH; ++bh) any = any || active[bh];
      if (!any) break;
      parallel_for_tid(BH, pr.threads, [&](std::int64_t bh, int tid) {
        if (active[bh])
          clustered_update_centroids(a, bh, counts + static_cast<std::size_t>(tid) * static_cast<std::size_t>(Cmax) * 65);
      });
      HWY_DYNAMIC_DISPATCH(ClusteredAssign)(a);
      // A (b, h) whose assignment did not move is at a fixed point: stop it.
      for (std::int64_t bh = 0; bh < BH; ++bh) {
        if (!active[bh]) continue;
        bool moved = false;
        for (std::int64_t c = 0; c < chunks; ++c) moved = moved || a.changed[bh * chunks + c];
        active[bh] = moved ? 1 : 0;
      }
    }
  }

  // 3. Members of each cluster in ascending positions, and the live clusters.
  std::int32_t* member = arena.at<std::int32_t>(member_slot);
  std::int32_t* start = arena.at<std::int32_t>(start_slot);
  std::int32_t* live = arena.at<std::int32_t>(live_slot);
  std::int32_t* n_live = arena.at<std::int32_t>(nlive_slot);
  parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, nq = lists.q_count[b], C = nclus[b];
    std::int32_t* st = start + bh * (Cmax + 1);
    const std::int32_t* as = assign + bh * pr.Nq;
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    std::fill_n(st, C + 1, 0);
    for (std::int64_t t = 0; t < nq; ++t) ++st[as[t] + 1];
    std::int32_t n = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      if (st[c + 1] > 0) live[bh * Cmax + n++] = static_cast<std::int32_t>(c);
      st[c + 1] += st[c];
    }
    n_live[bh] = n;
    // Stable placement: walk the ranks in order, st[c] serving as cluster c's cursor (it ends
    // at the next cluster's start), then shift the starts back.
    std::int32_t* mem = member + bh * pr.Nq;
    for (std::int64_t t = 0; t < nq; ++t) mem[st[as[t]]++] = queries[t];
    for (std::int64_t c = C; c > 0; --c) st[c] = st[c - 1];
    st[0] = 0;
  });
  a.member = member;
  a.start = start;
  a.live = live;
  a.n_live = n_live;
  info.sort.seconds = phase.lap();
  info.sort.bytes = static_cast<double>(BH * pr.Nq) * 16.0 * (config.iterations + 1);

  // 4. Centroid pass, 5. members.
  a.resid = arena.at<float>(resid_slot);
  a.lse_c = arena.at<float>(lse_slot);
  a.mass = arena.at<float>(mass_slot);
  a.top = arena.at<std::int32_t>(top_slot);
  a.centroid_scratch = arena.at<float>(cscratch_slot);
  a.selection = arena.at<std::int32_t>(selection_slot);
  a.kt_all = arena.at<float>(kt_slot);
  a.vp_all = arena.at<float>(vp_slot);
  a.member_scratch = arena.at<float>(mscratch_slot);
  a.scores_per_task = arena.at<std::int64_t>(scores_slot);
  a.phase_ticks = arena.at<PhaseTicks>(ticks_slot);
  std::fill_n(a.phase_ticks, pr.threads, PhaseTicks{});
  HWY_DYNAMIC_DISPATCH(ClusteredPack)(a);
  info.gather.seconds += phase.lap();
  HWY_DYNAMIC_DISPATCH(ClusteredCentroidPass)(a);
  for (std::int64_t t = 0; t < centroid_tasks; ++t)
    info.attention_scores += static_cast<std::size_t>(a.scores_per_task[t]);
  if (!structure_only) HWY_DYNAMIC_DISPATCH(ClusteredMemberPass)(a);
  if (config.topk > 0 && !structure_only)
    for (std::int64_t t = 0; t < member_tasks; ++t)
      info.attention_scores += static_cast<std::size_t>(a.scores_per_task[t]);
  split_wall_time(a.phase_ticks, pr.threads, phase.lap(), info);
  const double f = sizeof(float), e = static_cast<double>(pr.elem_bytes());
  for (std::int64_t b = 0; b < pr.B; ++b) {
    const double nk = lists.k_count[b], nq = lists.q_count[b];
    if (nk == 0) continue;
    double live_sum = 0;
    for (std::int64_t h = 0; h < pr.H; ++h) live_sum += n_live[b * pr.H + h];
    const double heads = static_cast<double>(pr.H);
    info.gather.bytes += heads * nq * static_cast<double>(d) * e +
                         heads * nk * static_cast<double>(pr.d + pr.dv) * (e + f);
    info.attention.bytes += live_sum * nk * f * 3;
    info.merge.bytes += heads * nq * static_cast<double>(pr.dv) * f * (config.topk > 0 ? 3 : 1);
  }

  if (capture != nullptr) {
    ClusteredInspection& cap = *capture;
    cap.B = pr.B;
    cap.H = pr.H;
    cap.Nq = pr.Nq;
    cap.Nk = pr.Nk;
    cap.max_clusters = Cmax;
    cap.codes.assign(static_cast<std::size_t>(BH * pr.Nq), 0);
    cap.cluster.assign(static_cast<std::size_t>(BH * pr.Nq), -1);
    cap.n_clusters.assign(nclus, nclus + pr.B);
    cap.top_keys.assign(static_cast<std::size_t>(BH * Cmax), {});
    for (std::int64_t bh = 0; bh < BH; ++bh) {
      const std::int64_t b = bh / pr.H;
      const std::int32_t* queries = lists.queries(b, pr.Nq);
      for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
        const std::size_t at = static_cast<std::size_t>(bh * pr.Nq + queries[t]);
        cap.codes[at] = a.codes[bh * pr.Nq + t];
        cap.cluster[at] = assign[bh * pr.Nq + t];
      }
      if (top_stride == 0 || lists.k_count[b] == 0) continue;
      const std::int64_t sel = std::min<std::int64_t>(config.topk, lists.k_count[b]);
      for (std::int32_t u = 0; u < n_live[bh]; ++u) {
        const std::int32_t* top = a.top + (bh * Cmax + u) * top_stride;
        cap.top_keys[static_cast<std::size_t>(bh * Cmax + live[bh * Cmax + u])].assign(top, top + sel);
      }
    }
  }
  info.seconds_total = total.seconds();
  return info;
}

}  // namespace

void Method<ClusteredConfig>::check(const ClusteredConfig& c, const Problem&) {
  at_least("ClusteredConfig.n_clusters", c.n_clusters, 1);
  if (c.hash_bits < 1 || c.hash_bits > 64)
    fail("ClusteredConfig.hash_bits", str(std::int64_t{c.hash_bits}), "must be in [1, 64]");
  at_least("ClusteredConfig.iterations", c.iterations, 0);
  at_least("ClusteredConfig.topk", c.topk, 0);
}

RunInfo clustered_forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace) {
  return clustered_run(pr, config, workspace, nullptr, KMeansSchedule::automatic);
}

ClusteredInspection clustered_inspect(const Problem& pr, const ClusteredConfig& config,
                                      KMeansSchedule schedule) {
  ClusteredInspection out;
  clustered_run(pr, config, nullptr, &out, schedule);
  return out;
}

ClusteredInspection clustered_structure(const Problem& pr, const ClusteredConfig& config) {
  ClusteredInspection out;
  clustered_run(pr, config, nullptr, &out, KMeansSchedule::automatic, true);
  return out;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
