// Naive double-precision oracle of clustered attention, written from the definition in smyrf.h
// (ClusteredConfig): scalar fma chains for the hash bits, Lloyd's k-means run for every
// iteration (no early stop), centroids and softmaxes in double with every weight materialised.
#pragma once

#include "methods/clustered/clustered.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Codes, cluster ids and key sets T_c of the definition, in the layout of clustered_inspect.
ClusteredInspection clustered_reference_clusters(const AttentionParams& params,
                                                 const ClusteredConfig& config);

// Writes the output into params.o, and params.lse when it is set (computed in double, rounded
// once to f32). Masked queries and queries without visible keys get O = 0 and lse = -inf.
void clustered_reference_attention(const AttentionParams& params, const ClusteredConfig& config);

}  // namespace smyrf::detail
