// Naive double-precision oracle of reformer attention, written from the definition in smyrf.h
// (ReformerConfig), independently of the fast path: plain loops, its own hashing, std::sort
// based ordering, its own chunking, an explicit multiset of (round, key) per query.
#pragma once

#include <cstdint>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::detail {

struct ReformerOracle {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0;
  int rounds = 0;
  // Same layouts and conventions as ReformerBuckets (methods/reformer/reformer.h):
  // [((b * H + h) * rounds + r) * N + t], -1 for masked tokens and unused tails.
  std::vector<std::int32_t> q_bucket, k_bucket, q_sorted, k_sorted;
  std::vector<std::int32_t> q_count, k_count;  // [B]
  std::vector<std::int64_t> n_chunks;          // [B]
  // Keys query i attends to in round r (after masks, causality, self rule):
  // [((b * H + h) * rounds + r) * Nq + i]; 0 for masked queries.
  std::vector<std::int64_t> set_size;
  std::vector<double> o;    // [B, H, Nq, dv]
  std::vector<double> lse;  // [B, H, Nq]; -inf for masked queries and empty multisets
};

// Reads params (any strides, f32 or bf16, masks, causal, scale, seed); ignores params.o/lse.
// Does not validate: call it with parameters attention() accepts.
ReformerOracle reformer_reference(const AttentionParams& params, const ReformerConfig& config);

}  // namespace smyrf::detail
