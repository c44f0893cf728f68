// Clustered and improved clustered attention (see smyrf.h, ClusteredConfig).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo clustered_forward(const Problem& pr, const ClusteredConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
