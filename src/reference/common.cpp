#include "reference/common.h"

#include <limits>
#include <string>
#include <type_traits>
#include <variant>

#include "api/validate.h"
#include "methods/compressed/compressed.h"
#include "methods/informer/informer.h"
#include "methods/linear/linear.h"
#include "methods/sinkhorn/sinkhorn.h"
#include "methods/synthesizer/synthesizer.h"

namespace smyrf::detail {

Problem reference_problem(const AttentionParams& params, const MethodConfig& config) {
  const Problem pr = validate_params(params);
  std::visit(
      [&](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, SmyrfConfig> || std::is_same_v<T, ClusteredConfig> ||
                      std::is_same_v<T, RoutingConfig> || std::is_same_v<T, SparseConfig>)
          validate_config(c);
        else if constexpr (!std::is_same_v<T, ReferenceConfig> && !std::is_same_v<T, DenseConfig>)
          validate_config(c, pr);
      },
      config);
  const auto* smyrf = std::get_if<SmyrfConfig>(&config);
  const bool centroid = smyrf != nullptr && smyrf->keys == KeySelection::centroid;
  const std::string name =
      centroid ? "SmyrfConfig.keys = centroid" : std::string(method_name(config)) + " attention";
  if (params.causal && (centroid || std::holds_alternative<ClusteredConfig>(config)))
    throw Error("smyrf: params.causal = true: " + name + " has no causal form");
  if (params.dropout > 0.0f && params.causal && !std::holds_alternative<ReferenceConfig>(config))
    throw Error("smyrf: params.dropout = " + std::to_string(params.dropout) +
                " with params.causal = true: only the reference method has causal dropout");
  const bool trainable = std::holds_alternative<ReferenceConfig>(config) ||
                         std::holds_alternative<DenseConfig>(config) ||
                         (smyrf != nullptr && !centroid);
  if (params.dropout > 0.0f && !trainable)
    throw Error("smyrf: params.dropout = " + std::to_string(params.dropout) + ": " + name +
                " has no dropout");
  return pr;
}

reference::Output reference_output(const Problem& pr) {
  reference::Output out;
  out.B = pr.B;
  out.H = pr.H;
  out.Nq = pr.Nq;
  out.dv = pr.dv;
  out.o.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.dv), 0.0);
  out.lse.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nq),
                 -std::numeric_limits<double>::infinity());
  return out;
}

}  // namespace smyrf::detail

namespace smyrf::reference {

std::vector<float> Output::o_f32() const { return {o.begin(), o.end()}; }
std::vector<float> Output::lse_f32() const { return {lse.begin(), lse.end()}; }

}  // namespace smyrf::reference
