// Exact attention, flash-attention style: internals (contract: smyrf/methods/dense.h).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo dense_forward(const Problem& pr, Workspace* workspace);

}  // namespace smyrf::detail
