// The entry point: check once at the edge, then dispatch to one method.
#include <type_traits>
#include <vector>

#include "api/validate.h"
#include "common/timer.h"
#include "hwy/targets.h"
#include "methods/dense/dense.h"
#include "methods/smyrf/smyrf.h"
#include "reference/dense_reference.h"
#include "smyrf/smyrf.h"

namespace smyrf {

AttentionParams AttentionParams::contiguous(std::int64_t batch, std::int64_t heads,
                                            std::int64_t nq, std::int64_t nk, std::int64_t d,
                                            std::int64_t dv, const float* q, const float* k,
                                            const float* v, float* o) {
  AttentionParams p;
  p.batch = batch;
  p.heads = heads;
  p.nq = nq;
  p.nk = nk;
  p.d = d;
  p.dv = dv;
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = o;
  p.q_row_stride = d;
  p.q_head_stride = nq * d;
  p.q_batch_stride = heads * nq * d;
  p.k_row_stride = d;
  p.k_head_stride = nk * d;
  p.k_batch_stride = heads * nk * d;
  p.v_row_stride = dv;
  p.v_head_stride = nk * dv;
  p.v_batch_stride = heads * nk * dv;
  p.o_row_stride = dv;
  p.o_head_stride = nq * dv;
  p.o_batch_stride = heads * nq * dv;
  return p;
}

AttentionParams& AttentionParams::with_masks(const std::uint8_t* key_mask_bn,
                                             const std::uint8_t* query_mask_bn) {
  key_mask = key_mask_bn;
  key_mask_batch_stride = key_mask_bn != nullptr ? nk : 0;
  query_mask = query_mask_bn;
  query_mask_batch_stride = query_mask_bn != nullptr ? nq : 0;
  return *this;
}

const char* method_name(const MethodConfig& config) {
  return std::visit(
      [](const auto& c) -> const char* {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, ReferenceConfig>) return "reference";
        if constexpr (std::is_same_v<T, DenseConfig>) return "dense";
        return "smyrf";
      },
      config);
}

RunInfo attention(const AttentionParams& params, const MethodConfig& config,
                  Workspace* workspace) {
  detail::Timer timer;
  const detail::Problem pr = detail::validate_params(params);
  if (const auto* s = std::get_if<SmyrfConfig>(&config)) detail::validate_config(*s);
  if (params.check_finite) detail::check_inputs_finite(pr);
  RunInfo info = std::visit(
      [&](const auto& c) -> RunInfo {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, ReferenceConfig>) return detail::reference_forward(pr);
        if constexpr (std::is_same_v<T, DenseConfig>) return detail::dense_forward(pr, workspace);
        if constexpr (std::is_same_v<T, SmyrfConfig>)
          return detail::smyrf_forward(pr, c, workspace);
      },
      config);
  info.seconds_total = timer.seconds();
  return info;
}

std::string simd_target() {
  // Highway orders targets best first (lowest bit).
  const std::vector<std::int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

}  // namespace smyrf
