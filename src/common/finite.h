// The scan of params.check_finite (smyrf.h, AttentionParams): every unmasked row of Q, K and V
// a method reads is finite and inside the float range the methods compute in.
#pragma once

#include "common/problem.h"

namespace smyrf::detail {

// Throws smyrf::Error naming the tensor, the row and the value of the first bad element (the
// lowest row block, so the message does not depend on the thread count), or params.scale.
void check_inputs_finite(const Problem& pr);

}  // namespace smyrf::detail
