// The oracles of exact attention (reference and dense) and the softmax over explicit key
// multisets they share with SMYRF's training oracle: train_reference.h's double forward and
// backward on the problem's inputs converted to double.
#include <string>

#include "reference/common.h"
#include "reference/reference.h"
#include "reference/train_reference.h"

namespace smyrf::detail {

reference::Output sets_attention(const Problem& pr, const KeySets& sets) {
  const DoubleCopy in(pr);
  reference::Output out = reference_output(pr);
  sets_forward(in.view(pr), sets, out.o.data(), out.lse.data());
  return out;
}

reference::Gradients sets_attention_backward(const Problem& pr, const KeySets& sets,
                                             const std::vector<double>& grad_o) {
  if (grad_o.size() != static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.dv))
    throw Error("smyrf: grad_o holds " + std::to_string(grad_o.size()) +
                " values: must hold B * H * Nq * dv");
  const DoubleCopy in(pr);
  reference::Output fwd = reference_output(pr);
  sets_forward(in.view(pr), sets, fwd.o.data(), fwd.lse.data());
  reference::Gradients g;
  g.q.resize(in.q.size());
  g.k.resize(in.k.size());
  g.v.resize(in.v.size());
  sets_backward(in.view(pr), sets, fwd.o.data(), fwd.lse.data(), grad_o.data(), g.q.data(),
                g.k.data(), g.v.data());
  return g;
}

}  // namespace smyrf::detail

namespace smyrf::reference {

Output attention(const AttentionParams& params, const ReferenceConfig& config) {
  const detail::Problem pr = detail::reference_problem(params, config);
  return detail::sets_attention(pr, detail::KeySets(pr));
}

Output attention(const AttentionParams& params, const DenseConfig& config) {
  const detail::Problem pr = detail::reference_problem(params, config);
  return detail::sets_attention(pr, detail::KeySets(pr));
}

Gradients attention_backward(const AttentionParams& params, const std::vector<double>& grad_o,
                             const ReferenceConfig& config) {
  const detail::Problem pr = detail::reference_problem(params, config);
  return detail::sets_attention_backward(pr, detail::KeySets(pr), grad_o);
}

Gradients attention_backward(const AttentionParams& params, const std::vector<double>& grad_o,
                             const DenseConfig& config) {
  const detail::Problem pr = detail::reference_problem(params, config);
  return detail::sets_attention_backward(pr, detail::KeySets(pr), grad_o);
}

}  // namespace smyrf::reference
