// Reformer LSH attention: internals. The exact definition (rotations, bucket rule, chunks, self
// exclusion) is the public contract in smyrf/methods/reformer.h.
#pragma once

#include <cstdint>
#include <vector>

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo reformer_forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace);

// Inspection for tests and tools: validates params and config, then hashes and sorts exactly
// as reformer_forward does (nothing is written to params.o) and returns copies. Layouts:
// index ((b * H + h) * rounds + r) * N + t, N = Nq for queries, Nk for keys.
struct ReformerBuckets {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0;
  int rounds = 0;
  // Bucket of query i / key j in round r; -1 for a masked query / key (not hashed as one).
  // With shared_qk, k_bucket of a visible key is the bucket of its q row.
  std::vector<std::int32_t> q_bucket, k_bucket;
  // Active queries / visible keys in (bucket, position) order; the first q_count[b] /
  // k_count[b] entries are used, the rest are -1.
  std::vector<std::int32_t> q_sorted, k_sorted;
  std::vector<std::int32_t> q_count, k_count;  // [B]
  std::vector<std::int64_t> n_chunks;          // [B]: C (0 when n_q or n_k is 0)
};
ReformerBuckets reformer_buckets(const Problem& pr, const ReformerConfig& config);

}  // namespace smyrf::detail
