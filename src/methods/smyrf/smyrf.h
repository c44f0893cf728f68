// SMYRF forward (see smyrf.h, SmyrfConfig; clustering.h for the exact hash definition).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// A query's running merge over the rounds so far: the largest logsumexp and the sum of the
// rounds' weights relative to it. One cache line each: queries of a round are scattered over
// the sequence, so two threads would otherwise keep writing to the same lines (false sharing
// doubled the merge time at 2 threads).
struct alignas(64) MergeState {
  float max;
  float sum;
};

RunInfo smyrf_forward(const Problem& pr, const SmyrfConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
