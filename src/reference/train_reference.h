// Training in double precision: forward (with dropout and logsumexp) and backward of attention
// over explicit key sets, written plainly. The implementation behind attention_f64 /
// attention_backward_f64, the reference method's training path, and (reference/reference.h)
// the oracles' softmax over key multisets with dropout.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/problem.h"
#include "reference/reference.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// The (round, key) pairs each active query attends to. A key paired with a query in several
// SMYRF rounds appears once per round: the softmax runs over this multiset.
class KeySets {
 public:
  // Every key the query sees (mask, causal), round 0: reference and dense attention.
  explicit KeySets(const Problem& pr);
  // SMYRF (lsh): the clusters of every round as `clusters` lists them, restricted by causal,
  // with SmyrfConfig's causal fallback.
  KeySets(const Problem& pr, const SmyrfConfig& config, const reference::SmyrfClusters& clusters);
  // Explicit pairs: explicit_pairs[(b * H + h) * Nq + i] lists query i's (round, key) pairs
  // (a key-set method's own choice, e.g. from its TrainGroups).
  KeySets(const Problem& pr, std::vector<std::vector<std::pair<int, std::int32_t>>> explicit_pairs);
  // Explicit pairs, and the queries (uniform[(b * H + h) * Nq + i] = 1) whose logits are the
  // constant 0 rather than scale q.k (Informer's lazy means): uniform weights over their keys,
  // no gradient to Q or K, no dropout.
  KeySets(const Problem& pr, std::vector<std::vector<std::pair<int, std::int32_t>>> explicit_pairs,
          std::vector<std::uint8_t> uniform);
  // Appends the pairs of query i of (b, h) to out (cleared first); empty for masked queries.
  void pairs(std::int64_t b, std::int64_t h, std::int64_t i,
             std::vector<std::pair<int, std::int32_t>>& out) const;
  // Whether query i of (b, h) has the constant logits 0 (see the constructor).
  bool uniform(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return !uniform_.empty() && uniform_[static_cast<std::size_t>((b * pr_->H + h) * pr_->Nq + i)] != 0;
  }

 private:
  const Problem* pr_;
  std::vector<std::vector<std::pair<int, std::int32_t>>> explicit_;
  std::vector<std::uint8_t> uniform_;
  bool clustered_ = false;
  int rounds_ = 1;
  std::int64_t fallback_window_ = 0;  // causal SMYRF: keys of the fallback window
  // Clustered: per (bh, round), the cluster of each query position (-1: inactive), and the
  // keys in sorted order with each cluster's key range.
  std::vector<std::int32_t> query_cluster_;      // [(bh * R + r) * Nq + i]
  std::vector<std::int32_t> k_sorted_;           // [(bh * R + r) * Nk + t]
  std::vector<std::int64_t> n_clusters_, k_count_;  // [B]
};

// Contiguous double tensors of one problem (sizes, masks, scale, seed and dropout from pr).
struct DoubleProblem {
  const Problem* pr = nullptr;
  const double* q = nullptr;  // [B, H, Nq, d]
  const double* k = nullptr;  // [B, H, Nk, d]
  const double* v = nullptr;  // [B, H, Nk, dv]
};

// o [B,H,Nq,dv], lse [B,H,Nq] (lse may be nullptr).
void sets_forward(const DoubleProblem& dp, const KeySets& sets, double* o, double* lse);
// Gradients written (contiguous, same shapes as q, k, v).
void sets_backward(const DoubleProblem& dp, const KeySets& sets, const double* o,
                   const double* lse, const double* grad_o, double* grad_q, double* grad_k,
                   double* grad_v);

// The problem's inputs as contiguous doubles.
struct DoubleCopy {
  std::vector<double> q, k, v;
  explicit DoubleCopy(const Problem& pr);
  DoubleProblem view(const Problem& pr) const { return {&pr, q.data(), k.data(), v.data()}; }
};

// The reference method's training path through the float API: inputs converted to double,
// O (and params.lse when set) written with dropout applied.
void reference_train_forward(const Problem& pr);
void reference_backward(const Problem& pr, const GradientParams& grads);

}  // namespace smyrf::detail
