// The inspection entries: the integer results of a method's fast path (clusters, buckets,
// routes, key sets) on the same checks as attention(), for tests and tools. Each takes the
// call's AttentionParams and config, checks them once at this edge and runs the method's hook
// on the checked problem.
#pragma once

#include <cstdint>
#include <vector>

#include "methods/clustered/clustered.h"
#include "methods/reformer/reformer.h"
#include "methods/routing/routing.h"
#include "methods/smyrf/clustering.h"
#include "methods/smyrf/forward.h"
#include "methods/sparse/sparse.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// SMYRF (KeySelection::lsh): the sorted queries and keys of every round (no attention).
ClusterLists compute_clusters(const AttentionParams& params, const SmyrfConfig& config);
// SMYRF (KeySelection::centroid): runs the forward (writing params.o) and returns the keys of
// each query cluster, per (b, h) then cluster, ascending positions.
std::vector<std::vector<std::int32_t>> centroid_keys(const AttentionParams& params, const SmyrfConfig& config);
// Reformer: buckets and sorted chunks of every round (no attention).
ReformerBuckets reformer_buckets(const AttentionParams& params, const ReformerConfig& config);
// Clustered: runs the forward (writing params.o, params.lse) and returns codes, clusters and
// top keys.
ClusteredInspection clustered_inspect(const AttentionParams& params, const ClusteredConfig& config,
                                      KMeansSchedule schedule = KMeansSchedule::automatic);
// Routing: the routing stage (no attention).
RoutingRoutes routing_routes(const AttentionParams& params, const RoutingConfig& config);
// Sparse: the keys each query of (b, h) attends to, from the fast path's groups (no attention).
std::vector<std::vector<std::int32_t>> sparse_visible_keys(const AttentionParams& params,
                                                           const SparseConfig& config, std::int64_t b,
                                                           std::int64_t h);
std::vector<std::int32_t> sparse_visible_keys(const AttentionParams& params, const SparseConfig& config,
                                              std::int64_t b, std::int64_t h, std::int64_t i);

}  // namespace smyrf::detail
