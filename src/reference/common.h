// What the oracle entry points share: the one validation of params and config, the empty
// Output they fill, and the softmax over explicit key multisets (with dropout).
#pragma once

#include <vector>

#include "common/problem.h"
#include "reference/reference.h"
#include "reference/train_reference.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Validates params and config as attention() does (throws smyrf::Error naming the parameter
// and value) and returns the problem the oracle reads. The one place where the oracles check
// their arguments.
Problem reference_problem(const AttentionParams& params, const MethodConfig& config);

// An Output of pr's sizes: o = 0 [B, H, Nq, dv], lse = -inf [B, H, Nq], no diagnostics.
reference::Output reference_output(const Problem& pr);

// Softmax attention of every active query over its (round, key) multiset in `sets`, in double,
// with params.dropout's factors on the weights (lse without them).
reference::Output sets_attention(const Problem& pr, const KeySets& sets);
// The gradients of sets_attention's output for dL/dO = grad_o ([B, H, Nq, dv] contiguous).
reference::Gradients sets_attention_backward(const Problem& pr, const KeySets& sets,
                                             const std::vector<double>& grad_o);

}  // namespace smyrf::detail
