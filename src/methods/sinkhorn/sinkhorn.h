// Sinkhorn sorting attention: internals. The exact definition (blocks, block logits, Sinkhorn
// in log space, sorted blocks, precision, cost) is the public contract in
// smyrf/methods/sinkhorn.h.
#pragma once

#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

RunInfo sinkhorn_forward(const Problem& pr, const SinkhornConfig& config, Workspace* workspace);
RunInfo sinkhorn_backward(const Problem& pr, const GradientParams& grads, const SinkhornConfig& config,
                          Workspace* workspace);
// The double-precision definition and its gradient (sinkhorn_f64.cpp).
void sinkhorn_forward_f64(const Problem& pr, const DoubleTensors& in, const SinkhornConfig& config, double* o,
                          double* lse);
void sinkhorn_backward_f64(const Problem& pr, const DoubleTensors& in, const SinkhornConfig& config,
                           const double* grad_o, double* grad_q, double* grad_k, double* grad_v);

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
  double* pass1;        // per thread (per (b, h) with `keep`): 2 NB d doubles (block sums, query means)
  std::size_t pass1_doubles;
  // The backward's records of pass 1 (nullptr in the forward): per (b, h) the final L before
  // the exponential [BH][NB][NB] and every normalisation's logsumexps [BH][2 iterations][NB]
  // (rows of iteration it at 2 it, its columns at 2 it + 1); with them pass1 is per (b, h).
  double* L = nullptr;
  double* lse_log = nullptr;
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

// The backward (f32 inputs and gradients): the plan of pass 1 with its records, then per
// (b, h, query block) the rows' gradients, per (b, h, key block) the keys' and dL's columns,
// per (b, h) the Sinkhorn backward and the block logits' chain.
struct SinkhornBackwardArgs {
  const Problem* pr;
  const SinkhornConfig* config;
  const TokenLists* lists;
  const SinkhornPlan* plan;
  const GradientParams* g;
  const float* delta;  // [B, H, Nq]: D_i = dO_i . O_i
  float* gk_rows;      // [BH * NB][2 bs_eff][d]: the block's rows' dK (own rows, then sorted rows)
  float* gv_rows;      // [BH * NB][2 bs_eff][dv]
  double* cdot;        // [BH * NB][bs_eff]: dK~_t . K~_t + dV~_t . V~_t per sorted row
  double* dL;          // [BH][NB][NB]
  double* gw;          // [BH][d][NB]: each (b, h)'s share of the sort net's gradient, or nullptr
};

}  // namespace smyrf::detail
