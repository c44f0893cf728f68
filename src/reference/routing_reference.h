// Naive double-precision oracle of routing attention, written from the definition in smyrf.h
// (RoutingConfig): its own unit vectors, spherical k-means (every iteration, no shortcut),
// routing, std::stable_sort, chunking and a softmax per query over its key set, in plain
// loops.
#pragma once

#include <cstdint>
#include <vector>

#include "methods/routing/routing.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// The routing stage's results, in the layout of routing_routes (methods/routing/routing.h).
RoutingRoutes routing_reference_routes(const AttentionParams& params, const RoutingConfig& config);

// The keys each query attends to: per (b, h, i) in order, ascending positions (empty for a
// masked query or one that sees nothing).
std::vector<std::vector<std::int32_t>> routing_reference_key_sets(const AttentionParams& params,
                                                                  const RoutingConfig& config);

// Writes routing attention into params.o (and params.lse when non-null), computed in double
// and rounded once.
void routing_reference_attention(const AttentionParams& params, const RoutingConfig& config);

}  // namespace smyrf::detail
