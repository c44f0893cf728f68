// Reformer LSH attention: internals. The exact definition (rotations, bucket rule, chunks, self
// exclusion) is the public contract in smyrf/methods/reformer.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "spec/results.h"
#include "common/problem.h"
#include "methods/train/train.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo reformer_forward(const Problem& pr, const ReformerConfig& config, Workspace* workspace);

ReformerBuckets reformer_buckets(const Problem& pr, const ReformerConfig& config);

// The masks of one group (the forward's with shared_qk, and training's): causality (key j only if
// j <= i + offset) and, with shared_qk, the self exclusion: query i's own position is removed
// unless allow[i] (no other key of its set survives), allow indexed by position for the
// group's (b, h, round).
struct ReformerTrainMask {
  const std::uint8_t* allow = nullptr;  // nullptr: no self rule
  std::int64_t offset = 0;
  bool causal = false;
  void operator()(const std::int32_t* qpos, std::size_t m, const std::int32_t* kpos, std::size_t n,
                  float* s, std::size_t lds) const {
    const float ninf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < m; ++r) {
      const std::int32_t self = qpos[r];
      const std::int64_t limit = causal ? self + offset : std::numeric_limits<std::int64_t>::max();
      const bool allow_self = allow == nullptr || allow[self] != 0;
      float* srow = s + r * lds;
      for (std::size_t c = 0; c < n; ++c)
        if (kpos[c] > limit || (kpos[c] == self && !allow_self)) srow[c] = ninf;
    }
  }
};

// The forward's groups of every round (with C == 1, the one set of every round, once per
// round: the multiset of (round, key) pairs the lse is over), owning the self-exclusion flags.
struct ReformerTrain {
  std::vector<std::uint8_t> allow;  // [(b * H + h) * rounds + r) * Nq + i], shared_qk only
  TrainGroups<ReformerTrainMask> set;
};
ReformerTrain reformer_train_groups(const Problem& pr, const ReformerConfig& config);

// shared_qk: the keys k_j = q_j / |q_j| of the visible keys, contiguous [B, H, Nk, d] (zero rows
// elsewhere), in double then rounded (the forward's), and the chain of their gradient into dQ:
// dq_j += (dk_j - k_j (k_j . dk_j)) / |q_j| (nothing for q_j = 0).
std::vector<float> reformer_shared_keys(const Problem& pr);

}  // namespace smyrf::detail
