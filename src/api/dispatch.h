// The edge's generic pieces, shared by the entry points (attention.cpp) and the inspection
// entries (inspect.cpp).
#pragma once

#include <string>

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// How errors name the method of `config` ("linear attention", "SmyrfConfig.keys = centroid").
std::string subject(const MethodConfig& config);
// Every check of a forward call: params, the method's config, and the capability refusals.
Problem check_call(const AttentionParams& params, const MethodConfig& config);
// After the checks: the non-finite scan (params.check_finite) and lse = -inf.
void prepare_call(const Problem& pr, const MethodConfig& config);

}  // namespace smyrf::detail
