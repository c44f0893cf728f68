// Routing attention (see smyrf.h, RoutingConfig).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo routing_forward(const Problem& pr, const RoutingConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
