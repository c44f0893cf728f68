// Checks at the API edge. Each failure throws smyrf::Error naming the parameter and value.
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Checks params (sizes, pointers, strides, overlaps, flags); throws smyrf::Error naming the
// first bad parameter.
void check_params(const AttentionParams& params);
// check_params, then the problem the methods run on.
Problem validate_params(const AttentionParams& params);
// The backward pass's extra requirements (f32, no broadcast, gradient buffers that overlap
// nothing).
void validate_gradients(const AttentionParams& params, const GradientParams& grads);

}  // namespace smyrf::detail
