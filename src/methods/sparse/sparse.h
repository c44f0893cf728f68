// Fixed sparsity patterns as block-sparse attention (see smyrf.h, SparseConfig).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo sparse_forward(const Problem& pr, const SparseConfig& config, Workspace* workspace);

}  // namespace smyrf::detail
