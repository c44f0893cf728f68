// Naive double-precision oracle of Sinkhorn sorting attention, written from the definition in
// methods/sinkhorn/sinkhorn.h: blocks, block logits, Sinkhorn normalisation in log space, the
// sorted blocks and one softmax per query, in plain loops.
#pragma once

#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Writes sinkhorn attention into params.o (and params.lse when non-null), computed in double
// and rounded once. Validates params and config like the API.
void sinkhorn_reference_attention(const AttentionParams& params, const SinkhornConfig& config);

}  // namespace smyrf::detail
