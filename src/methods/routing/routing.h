// Routing attention: internals. The exact definition (unit vectors, similarity fma chains,
// spherical k-means, routing, chunks, causal fallback) is the public contract in
// smyrf/methods/routing.h.
#pragma once

#include <cstdint>
#include <vector>

#include "spec/results.h"
#include "common/phases.h"
#include "common/problem.h"
#include "common/rounds.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo routing_forward(const Problem& pr, const RoutingConfig& config, Workspace* workspace);

// Throws smyrf::Error naming RoutingConfig.centroids when given centroids hold a non-finite
// value (config.centroids == nullptr: nothing to check).
void validate_routing_centroids(const Problem& pr, const RoutingConfig& config);


// Runs the fast path's routing stage on a checked problem (the same code as
// routing_forward) and returns its results. Does not write params.o.
RoutingRoutes routing_routes(const Problem& pr, const RoutingConfig& config);

// The online k-means step of smyrf/methods/routing.h (routing_update_centroids) on a checked
// problem with given centroids and decay in [0, 1].
void routing_update_centroids(const Problem& pr, const RoutingConfig& config, double decay, float* out);

// ---- Internals shared by the per-target code and the driver (routing.cpp). ----

// Tokens per task of the norm and assignment passes.
constexpr std::int64_t kRoutingTokenBlock = 512;

inline std::size_t routing_pad8(std::size_t n) { return (n + 7) / 8 * 8; }
// Per-thread scratch of the assignment pass: 4 tokens' similarities (4 * Kp) and unit vectors.
inline std::size_t routing_sims_doubles(std::size_t Kp, std::size_t d) {
  return 4 * Kp + 4 * routing_pad8(d);
}

// C = max(ceil(n_q / window), ceil(n_k / window), 1).
inline std::int64_t routing_chunk_count(std::int64_t n_q, std::int64_t n_k, std::int64_t window) {
  const std::int64_t cq = (n_q + window - 1) / window, ck = (n_k + window - 1) / window;
  const std::int64_t c = cq > ck ? cq : ck;
  return c > 1 ? c : 1;
}

// Tokens of (b, h) are numbered t = 0 .. n_q + n_k - 1: the active queries in position order,
// then the visible keys in position order (the k-means list); per-token buffers hold Nq + Nk
// entries per (b, h).
struct RoutingRouteArgs {
  const Problem* pr;
  const TokenLists* lists;
  int K;                   // n_clusters
  int iterations;          // k-means iterations (fitted centroids only)
  std::size_t Kp;          // K rounded up to a multiple of 8 (the lanes of a centroid row)
  const float* given;      // config.centroids, or nullptr: fitted
  double* inv;             // [BH * (Nq + Nk)]: 1 / |x| per token (0 for a zero row)
  std::int32_t* assign;    // [BH * (Nq + Nk)]: centroid per token
  double* cent;            // [(given ? H : BH) * d * Kp]: unit centroids, transposed (j * Kp + c)
  double* sums;            // [BH * K * d]: member sums (fitted only)
  std::uint8_t* changed;   // [BH * blocks]: an assignment of the block changed in this pass
  std::uint8_t* active;    // [BH]: k-means of (b, h) not converged yet
  std::uint8_t* member;    // [BH * K]: the centroid has members (fitted only)
  double* sims;            // [threads * routing_sims_doubles(Kp, d)]
  void* sort_tmp;          // [threads * 2 * max(Nq, Nk)] KeyIndex
  std::int32_t* q_sorted;  // [BH * Nq]: active queries by (centroid, position)
  std::int32_t* k_sorted;  // [BH * Nk]: visible keys by (centroid, position)
  RunInfo* info;           // transform (norms, k-means, routing) and sort times
};

struct RoutingAttendArgs {
  const Problem* pr;
  const TokenLists* lists;
  const std::int32_t* q_sorted;
  const std::int32_t* k_sorted;
  std::int64_t window;
  std::int64_t chunks_per_task;
  std::int64_t tasks_per_bh;
  RoundScratch layout;
  float* scratch;                 // layout.total() floats per thread
  std::int64_t* scores_per_task;  // out
  PhaseTicks* phase_ticks;        // per thread: attention (AttendGroup) ticks
};

}  // namespace smyrf::detail
