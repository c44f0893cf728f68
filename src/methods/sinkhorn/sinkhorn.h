// Sinkhorn sorting attention: internals. The exact definition (blocks, block logits, Sinkhorn
// in log space, sorted blocks, precision, cost) is the public contract in
// smyrf/methods/sinkhorn.h.
#pragma once

#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo sinkhorn_forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace);

// nb for n_k visible keys.
inline std::int64_t sinkhorn_blocks(std::int64_t n_k, std::int64_t block_size) {
  return (n_k + block_size - 1) / block_size;
}

// ---- Internals shared by the per-target code and the driver (sinkhorn.cpp). ----

struct SinkhornPlan {
  std::int64_t bs;      // block_size
  std::int64_t bs_eff;  // min(block_size, Nk): the longest block
  std::int64_t NB;      // ceil(Nk / block_size): blocks without masks
  double* P;            // [BH][NB][NB]: exp(L_ab - max_c L_ac)
  double* pass1;        // per thread: 2 NB d doubles (block sums, query means)
  std::size_t pass1_doubles;
  float* pass2;  // per thread
  std::size_t pass2_floats;
  double* acc;  // per thread: max(d, dv) doubles
  std::size_t acc_doubles;
  std::int64_t* scores;  // [BH * NB]
};

// Runs both passes (per-target code): block logits and Sinkhorn per (b, h), then the query
// blocks.
struct SinkhornArgs {
  const Problem* pr;
  const SinkhornConfig* config;
  const TokenLists* lists;
  const SinkhornPlan* plan;
  RunInfo* info;  // sort (pass 1) and attention (pass 2) seconds
};

}  // namespace smyrf::detail
