// Naive double-precision oracle of synthesizer attention, written from the definition in
// methods/synthesizer/synthesizer.h: the logits of each (b, h, i) in double (the net in plain
// loops, or R), a softmax over the visible keys and the weighted sum of V rows, in plain loops.
// Shares with the fast path only the seeded default draws (part of the definition).
#pragma once

#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Writes synthesizer attention into params.o (and params.lse when non-null), computed in
// double and rounded once. Validates params and config like the API.
void synthesizer_reference_attention(const AttentionParams& params,
                                     const SynthesizerConfig& config);

}  // namespace smyrf::detail
