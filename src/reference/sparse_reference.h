// Naive double-precision oracle of sparse attention, written from the definition in smyrf.h
// (SparseConfig): for each query, a plain predicate over every key j = 0..Nk-1, then softmax in
// double. It shares nothing with the fast path's groups, key lists or masks; only BigBird's
// random blocks come from the one shared definition (bigbird_random_blocks in sparse.h).
#pragma once

#include <cstdint>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Whether the pattern lets query i see key j (before masks and params.causal), for a problem
// of nq queries and nk keys, in head `head` with `seed`.
bool sparse_reference_pattern(const SparseConfig& config, std::uint64_t seed, std::int64_t head,
                              std::int64_t nq, std::int64_t nk, std::int64_t i, std::int64_t j);

// The ascending keys query i of (b, h) attends to: the pattern, the key mask and params.causal;
// empty for a masked query.
std::vector<std::int32_t> sparse_reference_keys(const AttentionParams& params,
                                                const SparseConfig& config, std::int64_t b,
                                                std::int64_t h, std::int64_t i);

// O [B, H, Nq, dv] and lse [B, H, Nq] in double (contiguous). Masked queries and queries whose
// key set is empty get O = 0 and lse = -inf. Reads params' inputs (f32 or bf16, any strides).
struct SparseReferenceOutput {
  std::vector<double> o;
  std::vector<double> lse;
};
SparseReferenceOutput sparse_reference(const AttentionParams& params, const SparseConfig& config);

}  // namespace smyrf::detail
