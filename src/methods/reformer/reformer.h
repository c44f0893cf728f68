// Reformer LSH attention: internals. The exact definition (rotations, bucket rule, chunks, self
// exclusion) is the public contract in smyrf/methods/reformer.h.
#pragma once

#include <cstdint>
#include <vector>

#include "spec/results.h"
#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo reformer_forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace);

ReformerBuckets reformer_buckets(const Problem& pr, const ReformerConfig& config);

}  // namespace smyrf::detail
