#include "methods/smyrf/clustering.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "methods/smyrf/registration.h"
#include "common/call_scratch.h"
#include "common/parallel.h"
#include "spec/draws.h"
#include "common/timer.h"
#include "kernels/radix_sort.h"

namespace smyrf::detail {

int transform_extra_dims(const SmyrfConfig& config) {
  switch (config.transform) {
    case Transform::xbox_plus: return 2;
    case Transform::xbox:
    case Transform::h2_alsh: return 1;
    case Transform::l2_alsh: return config.alsh_m;
  }
  return 0;
}

void make_directions(const SmyrfConfig& config, std::uint64_t seed, std::int64_t head,
                     std::int64_t d, std::size_t lanes, double* a, double* offsets) {
  const std::int64_t dims = d + transform_extra_dims(config);
  std::fill_n(a, static_cast<std::size_t>(dims) * lanes, 0.0);
  for (int r = 0; r < config.n_hashes; ++r) {
    for (std::int64_t j = 0; j < dims; ++j)
      a[static_cast<std::size_t>(j) * lanes + static_cast<std::size_t>(r)] =
          spec::smyrf_direction(seed, head, r, j);
    offsets[r] = spec::smyrf_offset(seed, head, r, config.r);
  }
}

TokenTransform transform_token(const SmyrfConfig& config, bool is_query, double n2,
                               const NormStats& stats) {
  TokenTransform t;
  switch (config.transform) {
    case Transform::xbox_plus: {
      const double m2 = stats.max_q2 + stats.max_k2;
      const double e = std::sqrt(std::max(0.0, m2 - n2));
      t.ext[0] = is_query ? 0.0 : e;
      t.ext[1] = is_query ? e : 0.0;
      t.extra = 2;
      break;
    }
    case Transform::xbox:
    case Transform::h2_alsh: {
      if (is_query) {
        if (config.transform == Transform::h2_alsh)
          t.alpha = n2 > 0.0 ? std::sqrt(stats.max_k2) / std::sqrt(n2) : 0.0;
        t.ext[0] = 0.0;
      } else {
        t.ext[0] = std::sqrt(std::max(0.0, stats.max_k2 - n2));
      }
      t.extra = 1;
      break;
    }
    case Transform::l2_alsh: {
      t.extra = config.alsh_m;
      if (is_query) {
        t.alpha = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
        for (int e = 0; e < t.extra; ++e) t.ext[e] = 0.5;
      } else {
        t.alpha = stats.max_k2 > 0.0 ? static_cast<double>(config.alsh_u) / std::sqrt(stats.max_k2)
                                     : 0.0;
        t.ext[0] = t.alpha * t.alpha * n2;
        for (int e = 1; e < t.extra; ++e) t.ext[e] = t.ext[e - 1] * t.ext[e - 1];
      }
      break;
    }
  }
  return t;
}

float hash_value(const SmyrfConfig& config, bool is_query, double dot, double n2,
                 const NormStats& stats, const double* a_ext, std::size_t a_ext_stride,
                 double offset) {
  return hash_from(config, transform_token(config, is_query, n2, stats), dot, a_ext, a_ext_stride,
                   offset);
}

std::int64_t cluster_count(std::int64_t n_q, std::int64_t n_k, const SmyrfConfig& config) {
  const std::int64_t cq = (n_q + config.q_cluster_size - 1) / config.q_cluster_size;
  const std::int64_t ck = (n_k + config.k_cluster_size - 1) / config.k_cluster_size;
  return std::max<std::int64_t>({cq, ck, 1});
}

HashingSlots plan_hashing(Arena& arena, const Problem& pr, const SmyrfConfig& config) {
  const std::size_t lanes = projection_lanes(config.n_hashes, transform_extra_dims(config));
  const std::size_t R = static_cast<std::size_t>(config.n_hashes);
  const std::size_t dims = static_cast<std::size_t>(pr.d + transform_extra_dims(config));
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  const std::size_t Nq = static_cast<std::size_t>(pr.Nq), Nk = static_cast<std::size_t>(pr.Nk);
  HashingSlots s;
  s.directions = arena.add<double>(static_cast<std::size_t>(pr.H) * dims * lanes);
  s.offsets = arena.add<double>(static_cast<std::size_t>(pr.H) * R);
  s.q_proj = arena.add<double>(BH * Nq * lanes);
  s.k_proj = arena.add<double>(BH * Nk * lanes);
  s.stats = arena.add<NormStats>(BH);
  s.sort_tmp = arena.add<KeyIndex>(2 * static_cast<std::size_t>(pr.threads) * std::max(Nq, Nk));
  s.q_sorted = arena.add<std::int32_t>(BH * R * Nq);
  s.k_sorted = arena.add<std::int32_t>(BH * R * Nk);
  s.n_clusters = arena.add<std::int64_t>(static_cast<std::size_t>(pr.B));
  return s;
}

SortedTokens hash_and_sort(const Problem& pr, const SmyrfConfig& config, const TokenLists& lists,
                           const Arena& arena, const HashingSlots& slots, RunInfo& info) {
  Timer timer;
  const int R = config.n_hashes;
  const int E = transform_extra_dims(config);
  const std::size_t lanes = projection_lanes(R, E);
  const std::size_t d = static_cast<std::size_t>(pr.d);
  const std::size_t dims = d + static_cast<std::size_t>(transform_extra_dims(config));
  const std::int64_t BH = pr.B * pr.H;
  auto* dirs = arena.at<double>(slots.directions);
  auto* offsets = arena.at<double>(slots.offsets);
  auto* q_proj = arena.at<double>(slots.q_proj);
  auto* k_proj = arena.at<double>(slots.k_proj);
  auto* stats = arena.at<NormStats>(slots.stats);
  auto* sort_tmp = arena.at<KeyIndex>(slots.sort_tmp);

  SortedTokens out;
  out.rounds = R;
  out.q_sorted = arena.at<std::int32_t>(slots.q_sorted);
  out.k_sorted = arena.at<std::int32_t>(slots.k_sorted);
  out.n_clusters = arena.at<std::int64_t>(slots.n_clusters);
  for (std::int64_t b = 0; b < pr.B; ++b)
    out.n_clusters[b] = cluster_count(lists.q_count[b], lists.k_count[b], config);

  for (std::int64_t h = 0; h < pr.H; ++h)
    make_directions(config, pr.p->seed, h, pr.d, lanes,
                    dirs + static_cast<std::size_t>(h) * dims * lanes,
                    offsets + static_cast<std::size_t>(h) * static_cast<std::size_t>(R));

  // 1. Projections and squared norms: tasks of up to kBlock tokens, queries then keys.
  constexpr std::int64_t kBlock = 1024;
  const std::int64_t q_blocks = (pr.Nq + kBlock - 1) / kBlock;
  const std::int64_t k_blocks = (pr.Nk + kBlock - 1) / kBlock;
  parallel_for(BH * (q_blocks + k_blocks), pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / (q_blocks + k_blocks);
    std::int64_t blk = task % (q_blocks + k_blocks);
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const bool is_query = blk < q_blocks;
    if (!is_query) blk -= q_blocks;
    const std::int64_t N = is_query ? pr.Nq : pr.Nk;
    const std::int64_t count = is_query ? lists.q_count[b] : lists.k_count[b];
    const std::int64_t i0 = blk * kBlock;
    if (i0 >= count) return;
    const std::int64_t n = std::min(kBlock, count - i0);
    const std::int32_t* idx = (is_query ? lists.queries(b, N) : lists.keys(b, N)) + i0;
    const void* base = is_query ? pr.q_addr(b, h, 0) : pr.k_addr(b, h, 0);
    const std::int64_t stride = is_query ? pr.p->q_row_stride : pr.p->k_row_stride;
    double* proj = (is_query ? q_proj : k_proj) +
                   (static_cast<std::size_t>(bh) * static_cast<std::size_t>(N) +
                    static_cast<std::size_t>(i0)) * lanes;
    project_rows(pr.dtype, base, stride, idx, static_cast<std::size_t>(n), d,
                 dirs + static_cast<std::size_t>(h) * dims * lanes, lanes, R, proj);
  });

  // 2. Largest squared norms per (b, h).
  parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H;
    NormStats st;
    const double* qp = q_proj + static_cast<std::size_t>(bh * pr.Nq) * lanes;
    for (std::int32_t i = 0; i < lists.q_count[b]; ++i)
      st.max_q2 = std::max(st.max_q2, qp[static_cast<std::size_t>(i) * lanes + R]);
    const double* kp = k_proj + static_cast<std::size_t>(bh * pr.Nk) * lanes;
    for (std::int32_t j = 0; j < lists.k_count[b]; ++j)
      st.max_k2 = std::max(st.max_k2, kp[static_cast<std::size_t>(j) * lanes + R]);
    stats[bh] = st;
  });

  // 3. Each token's transform (alpha and appended coordinates) into lanes R+1 .. R+1+E.
  parallel_for(BH * (q_blocks + k_blocks), pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / (q_blocks + k_blocks);
    std::int64_t blk = task % (q_blocks + k_blocks);
    const std::int64_t b = bh / pr.H;
    const bool is_query = blk < q_blocks;
    if (!is_query) blk -= q_blocks;
    const std::int64_t N = is_query ? pr.Nq : pr.Nk;
    const std::int64_t count = is_query ? lists.q_count[b] : lists.k_count[b];
    double* proj = (is_query ? q_proj : k_proj) + static_cast<std::size_t>(bh * N) * lanes;
    for (std::int64_t i = blk * kBlock; i < std::min(count, (blk + 1) * kBlock); ++i) {
      double* pi = proj + static_cast<std::size_t>(i) * lanes;
      const TokenTransform t = transform_token(config, is_query, pi[R], stats[bh]);
      pi[R + 1] = t.alpha;
      for (int e = 0; e < E; ++e) pi[R + 2 + e] = t.ext[e];
    }
  });
  info.transform.seconds += timer.lap();
  for (std::int64_t b = 0; b < pr.B; ++b)  // read the active rows, write their projections
    info.transform.bytes += static_cast<double>(pr.H) *
                            static_cast<double>(lists.q_count[b] + lists.k_count[b]) *
                            (static_cast<double>(pr.d * static_cast<std::int64_t>(pr.elem_bytes())) +
                             static_cast<double>(lanes) * sizeof(double));

  std::vector<double> sort_bytes(static_cast<std::size_t>(BH * R), 0.0);
  // 4. Per (b, h, round): hash values, sort by (hash, position) with a stable radix sort of
  //    the active tokens (listed in ascending position).
  const double qsign = pr.scale < 0.0f ? -1.0 : 1.0;
  parallel_for_tid(BH * R, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / R;
    const int r = static_cast<int>(task % R);
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const double* a = dirs + static_cast<std::size_t>(h) * dims * lanes;
    const double* a_ext = a + d * lanes + static_cast<std::size_t>(r);
    const double offset = offsets[static_cast<std::size_t>(h * R + r)];
    const std::size_t nmax = static_cast<std::size_t>(std::max(pr.Nq, pr.Nk));
    KeyIndex* tmp = sort_tmp + 2 * static_cast<std::size_t>(tid) * nmax;
    for (int side = 0; side < 2; ++side) {
      const bool is_query = side == 0;
      const std::int64_t N = is_query ? pr.Nq : pr.Nk;
      const std::int32_t n = is_query ? lists.q_count[b] : lists.k_count[b];
      const std::int32_t* idx = is_query ? lists.queries(b, N) : lists.keys(b, N);
      const double* proj = (is_query ? q_proj : k_proj) + static_cast<std::size_t>(bh * N) * lanes;
      TokenTransform t;
      t.extra = E;
      for (std::int32_t i = 0; i < n; ++i) {
        const double* pi = proj + static_cast<std::size_t>(i) * lanes;
        const double dot = is_query ? qsign * pi[r] : pi[r];
        t.alpha = pi[R + 1];
        for (int e = 0; e < E; ++e) t.ext[e] = pi[R + 2 + e];
        tmp[i] = {order_key(hash_from(config, t, dot, a_ext, lanes, offset)), idx[i]};
      }
      const int passes = radix_sort(tmp, tmp + nmax, static_cast<std::size_t>(n));
      sort_bytes[static_cast<std::size_t>(task)] += static_cast<double>(n) * (8.0 * (3 + E) + 4.0 + 16.0 * passes);
      std::int32_t* dst = (is_query ? out.q_sorted : out.k_sorted) +
                          static_cast<std::size_t>((bh * R + r) * N);
      for (std::int32_t i = 0; i < n; ++i) dst[i] = tmp[i].index;
    }
  });
  info.sort.seconds += timer.lap();
  // Per round and token: its projection and transform lanes read, the index written, and each
  // radix pass reads and writes one 8-byte (key, index) pair.
  for (const double bytes : sort_bytes) info.sort.bytes += bytes;
  return out;
}

void Method<SmyrfConfig>::check(const SmyrfConfig& c, const Problem&) {
  if (c.keys != KeySelection::lsh && c.keys != KeySelection::centroid)
    fail("SmyrfConfig.keys", str(std::int64_t{static_cast<int>(c.keys)}), "is not a KeySelection value");
  if (c.keys == KeySelection::centroid && c.n_hashes != 1)
    fail("SmyrfConfig.n_hashes", str(std::int64_t{c.n_hashes}), "must be 1 with keys = centroid (one round)");
  if (c.n_hashes < 1 || c.n_hashes > 1024)
    fail("SmyrfConfig.n_hashes", str(std::int64_t{c.n_hashes}), "must be in [1, 1024]");
  if (c.q_cluster_size < 1)
    fail("SmyrfConfig.q_cluster_size", str(std::int64_t{c.q_cluster_size}), "must be >= 1");
  if (c.k_cluster_size < 1)
    fail("SmyrfConfig.k_cluster_size", str(std::int64_t{c.k_cluster_size}), "must be >= 1");
  if (!(std::isfinite(c.r) && c.r >= 0.0f))
    fail("SmyrfConfig.r", str(static_cast<double>(c.r)),
         "must be finite and >= 0 (0 = order by the projection)");
  const auto t = static_cast<int>(c.transform);
  if (t < 0 || t > static_cast<int>(Transform::l2_alsh))
    fail("SmyrfConfig.transform", str(std::int64_t{t}), "is not a Transform value");
  if (c.transform == Transform::l2_alsh) {
    if (c.alsh_m < 1 || c.alsh_m > 8)
      fail("SmyrfConfig.alsh_m", str(std::int64_t{c.alsh_m}), "must be in [1, 8]");
    if (!(c.alsh_u > 0.0f && c.alsh_u < 1.0f))
      fail("SmyrfConfig.alsh_u", str(static_cast<double>(c.alsh_u)), "must be in (0, 1)");
  }
}

ClusterLists compute_clusters(const Problem& pr, const SmyrfConfig& config) {
  CallScratch scratch(pr, nullptr);
  Arena& arena = scratch.arena();
  const HashingSlots slots = plan_hashing(arena, pr, config);
  const TokenLists lists = scratch.bind();
  RunInfo info;
  const SortedTokens sorted = hash_and_sort(pr, config, lists, arena, slots, info);

  ClusterLists c;
  c.B = pr.B;
  c.H = pr.H;
  c.Nq = pr.Nq;
  c.Nk = pr.Nk;
  c.rounds = sorted.rounds;
  const std::size_t nq = static_cast<std::size_t>(pr.B * pr.H * sorted.rounds * pr.Nq);
  const std::size_t nk = static_cast<std::size_t>(pr.B * pr.H * sorted.rounds * pr.Nk);
  c.q_sorted.assign(sorted.q_sorted, sorted.q_sorted + nq);
  c.k_sorted.assign(sorted.k_sorted, sorted.k_sorted + nk);
  c.q_count.assign(lists.q_count, lists.q_count + pr.B);
  c.k_count.assign(lists.k_count, lists.k_count + pr.B);
  c.n_clusters.assign(sorted.n_clusters, sorted.n_clusters + pr.B);
  // Unused tails (masked tokens) hold no defined value; make the copies deterministic.
  for (std::int64_t bhr = 0; bhr < pr.B * pr.H * sorted.rounds; ++bhr) {
    const std::int64_t b = bhr / (pr.H * sorted.rounds);
    std::fill(c.q_sorted.begin() + bhr * pr.Nq + lists.q_count[b],
              c.q_sorted.begin() + (bhr + 1) * pr.Nq, -1);
    std::fill(c.k_sorted.begin() + bhr * pr.Nk + lists.k_count[b],
              c.k_sorted.begin() + (bhr + 1) * pr.Nk, -1);
  }
  return c;
}

}  // namespace smyrf::detail
