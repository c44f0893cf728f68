// Naive double-precision oracle of Informer ProbSparse attention, written from the definition in
// methods/informer/informer.h: per (b, h) the samples, the measurement, a full sort of the
// eligible queries, exact softmax rows and uniform means, in plain loops. Shares with the fast
// path the definition pieces of informer.h (U, u, the sample index and the fma-chain score).
#pragma once

#include <cstdint>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Writes informer attention into params.o (and params.lse when non-null), computed in double
// and rounded once. Validates params and config like the API.
void informer_reference_attention(const AttentionParams& params, const InformerConfig& config);

// The exact (selected) queries of each (b, h), ascending positions.
std::vector<std::vector<std::int32_t>> informer_reference_selected(const AttentionParams& params,
                                                                   const InformerConfig& config);

}  // namespace smyrf::detail
