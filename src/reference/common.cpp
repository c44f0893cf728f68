#include "reference/common.h"

#include <limits>

#include "api/dispatch.h"

namespace smyrf::detail {

// The oracles accept exactly the calls attention() accepts: the edge's own checks (params, the
// method's config, the refusals from its capabilities).
Problem reference_problem(const AttentionParams& params, const MethodConfig& config) {
  return check_call(params, config);
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
