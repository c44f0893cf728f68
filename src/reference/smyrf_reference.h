// Scalar SMYRF oracle for the tests: the definition of clustering.h and smyrf.h written out
// plainly — scalar fma chains for the hash, a stable sort, explicit cluster assignment,
// attention and round merging in double with every round's output materialised.
#pragma once

#include <cstdint>
#include <vector>

#include "methods/smyrf/clustering.h"
#include "smyrf/smyrf.h"

namespace smyrf::reference {

// Same layout as detail::compute_clusters (unused tail entries are -1).
detail::ClusterLists smyrf_clusters(const AttentionParams& params, const SmyrfConfig& config);

// KeySelection::centroid: the keys each query cluster attends to, per (b, h) in order then per
// cluster, ascending positions.
std::vector<std::vector<std::int32_t>> centroid_selections(const AttentionParams& params,
                                                           const SmyrfConfig& config);

// Writes SMYRF's output into params.o (computed in double, rounded once); either key selection.
void smyrf_attention(const AttentionParams& params, const SmyrfConfig& config);

}  // namespace smyrf::reference
