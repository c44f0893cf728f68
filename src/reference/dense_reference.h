// Naive attention accumulated in double: the oracle every test compares against. Written to
// be obviously correct, never optimised.
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo reference_forward(const Problem& pr);

}  // namespace smyrf::detail
