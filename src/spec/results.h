// The layouts of the methods' integer results (clusters, buckets, routes, key sets): what the
// fast path's inspection hooks (src/api/inspect.h) return and what the oracles
// (src/reference/reference.h) compute on their own, compared exactly by the tests. One
// definition, so the two sides cannot disagree on a layout.
#pragma once

#include <cstdint>
#include <vector>

namespace smyrf::detail {

// SMYRF (lsh): each round's active queries and visible keys in (hash, position) order.
// q_sorted[((b * H + h) * rounds + r) * Nq + t]: the t-th active query of (b, h) in round r's
// order (positions); the first q_count[b] entries are used, the rest -1. Keys the same with Nk.
struct ClusterLists {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0;
  int rounds = 0;
  std::vector<std::int32_t> q_sorted, k_sorted;
  std::vector<std::int32_t> q_count, k_count;   // [B]
  std::vector<std::int64_t> n_clusters;         // [B]: C of SmyrfConfig's cluster rule
};

// Reformer: buckets and (bucket, position) orders of every round. Layouts:
// index ((b * H + h) * rounds + r) * N + t, N = Nq for queries, Nk for keys.
struct ReformerBuckets {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0;
  int rounds = 0;
  // Bucket of query i / key j in round r; -1 for a masked query / key (not hashed as one).
  // With shared_qk, k_bucket of a visible key is the bucket of its q row.
  std::vector<std::int32_t> q_bucket, k_bucket;
  // Active queries / visible keys in (bucket, position) order; the first q_count[b] /
  // k_count[b] entries are used, the rest are -1.
  std::vector<std::int32_t> q_sorted, k_sorted;
  std::vector<std::int32_t> q_count, k_count;  // [B]
  std::vector<std::int64_t> n_chunks;          // [B]: C (0 when n_q or n_k is 0)
};

// The integer results of one call, for tests and tools.
struct ClusteredInspection {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0;
  std::int64_t max_clusters = 0;  // min(n_clusters, Nq): the per-(b, h) stride of top_keys
  // [(b * H + h) * Nq + i]: query i's hash code (bit t = hyperplane t); 0 for a masked query.
  std::vector<std::uint64_t> codes;
  // [(b * H + h) * Nq + i]: query i's cluster in [0, C); -1 for a masked query.
  std::vector<std::int32_t> cluster;
  // [b]: C = min(n_clusters, active queries of batch element b).
  std::vector<std::int32_t> n_clusters;
  // [(b * H + h) * max_clusters + c]: T_c in ascending positions (improved clustered only);
  // empty for topk == 0, for a cluster without members and for a batch element without
  // visible keys.
  std::vector<std::vector<std::int32_t>> top_keys;
};

// Routing: the integer (and centroid) results of the routing stage.
struct RoutingRoutes {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0, K = 0, d = 0;
  std::vector<std::int32_t> q_cluster;  // [B*H*Nq]: centroid of each active query, -1 if masked
  std::vector<std::int32_t> k_cluster;  // [B*H*Nk]: centroid of each visible key, -1 if masked
  // [B*H*K*d]: the unit centroids the tokens were routed to (fitted: after the last
  // iteration; given: the normalised rows of config.centroids; zeros for a fitted (b, h)
  // without any active query or visible key).
  std::vector<double> centroids;
  std::vector<std::int64_t> n_chunks;  // [B]: C of each batch element
  // Per (b, h) in order, then chunk c < n_chunks[b]: the query and key positions of the chunk
  // in (centroid, position) order (keys empty when the batch element has no visible key).
  std::vector<std::vector<std::int32_t>> chunk_queries, chunk_keys;
};

}  // namespace smyrf::detail
