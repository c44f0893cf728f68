// Reformer LSH attention (see smyrf.h, ReformerConfig).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo reformer_forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
