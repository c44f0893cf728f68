// SMYRF forward (see smyrf.h, SmyrfConfig; clustering.h for the exact hash definition).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo smyrf_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
