// Naive double-precision oracle of feature-map ("linear") attention, written from the
// definitions in methods/linear/linear.h: features per row, the kernel a_ij = phi_q . phi_k
// summed directly over each query's visible keys (causal: j <= p), the gated RFA recurrence
// step by step, efficient attention as rho_q^T (rho_k^T V). Shares only the random-feature draw
// (methods/linear/random_features.h, part of the definition) with the fast path.
#pragma once

#include <cstdint>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::detail {

struct LinearReference {
  std::vector<double> o;  // [B, H, Nq, dv]
  // [B, H, Nq]: sum_j |a_ij| / |sum_j a_ij| (1 for nonnegative features; 0 where the query sees
  // no key or the normaliser is exactly 0, which give O = 0). Gated: the same with the gated
  // weights a_ij prod_{t > j} g_t (1 - g_j).
  std::vector<double> cond;
  // [B, H, Nq], non-causal only (0 elsewhere): sum_r |phi_q(q_i)_r| sum_j |phi_k(k_j)_r| over
  // the visible keys, divided by |sum_j a_ij| (by 1 for efficient attention): the magnitude
  // that bounds the rounding of the fast path's float value products.
  std::vector<double> cond_abs;
  std::vector<std::uint8_t> saw;  // [B, H, Nq]: active and sees at least one key
};

// Reads params' inputs (any strides, f32 or bf16) and masks; writes nothing.
LinearReference linear_reference(const AttentionParams& params, const LinearConfig& config);

}  // namespace smyrf::detail
