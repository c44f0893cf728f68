// Checks at the API edge. Each failure throws smyrf::Error naming the parameter and value.
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Validates params and returns the problem the methods run on.
Problem validate_params(const AttentionParams& params);
void validate_config(const SmyrfConfig& config);
void validate_config(const ReformerConfig& config, const Problem& pr);
void validate_config(const ClusteredConfig& config);
void validate_config(const RoutingConfig& config);
void validate_config(const SparseConfig& config);
// The backward pass's extra requirements (f32, no broadcast, gradient buffers that overlap
// nothing).
void validate_gradients(const AttentionParams& params, const GradientParams& grads);
// Throws if an unmasked row of Q, K or V holds a NaN or an infinity.
void check_inputs_finite(const Problem& pr);

}  // namespace smyrf::detail
