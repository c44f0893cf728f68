// Training kernels: the backward pass of dense and SMYRF attention and the dropout forward
// pass, on the shared tile kernels (attention_tile-inl.h).
//
// Every method is "attention over key sets": each active query i attends to a multiset of
// (round, key) pairs (dense: every visible key once; SMYRF: its cluster's keys in every round),
// O_i = sum_(r,j) P_rij V_j with P_rij = exp(s_ij - lse_i) and lse_i the logsumexp over the
// multiset (the forward's round merge computes exactly this). With dropout factors F_rij
// (0 or 1/(1-p)) and D_i = dO_i . O_i (flash attention's identity, which holds with dropout):
//   dV_j += P_rij F_rij dO_i
//   dS_rij = P_rij (F_rij dO_i . V_j - D_i)
//   dQ_i += scale dS_rij K_j,   dK_j += scale dS_rij Q_i
// The work is cut into groups (a list of queries against a list of keys) whose outputs are
// disjoint within one parallel launch; launches run in a fixed order, so gradients have the
// same bits whatever the thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "spec/draws.h"
#include "common/call_scratch.h"
#include "common/heuristics.h"
#include "common/timer.h"
#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// What a group computes (bit set).
enum GroupMode : int {
  kGroupOut = 1,     // O_i += sum P F V (dropout forward); O rows zeroed beforehand
  kGroupGradQ = 2,   // dQ_i += ...
  kGroupGradKV = 4,  // dK_j, dV_j += ...
};

struct Group {
  std::int64_t b = 0, h = 0;
  int round = 0;
  const std::int32_t* queries = nullptr;  // positions
  std::int64_t n_queries = 0;
  const std::int32_t* keys = nullptr;  // positions
  std::int64_t n_keys = 0;
};

struct TrainArgs {
  const Problem* pr = nullptr;
  const float* lse = nullptr;    // [B*H*Nq]
  const float* delta = nullptr;  // [B*H*Nq] D_i (backward only)
  const GradientParams* grads = nullptr;  // backward only
  spec::Dropout dropout{0.0f, 0};
  int mode = 0;
  std::int64_t max_group_queries = 0;  // largest n_queries of a group (accumulator rows)
};

// Tile shape of the training kernels and the per-thread scratch carved from it.
constexpr std::size_t kTrainQueryTile = kDenseQueryTile;  // 48
constexpr std::size_t kTrainKeyTile = kDenseKeyTile;      // 256

struct TrainScratch {
  std::size_t ldd, ldv, acc_rows;
  std::size_t kt, vt, kp, vp, s, dp, tr, qp, dop, dk, dv, dq, out, lse, delta, total;
  static TrainScratch make(const TrainArgs& a) {
    TrainScratch t{};
    const Problem& pr = *a.pr;
    t.ldd = pad_floats(static_cast<std::size_t>(pr.d));
    t.ldv = pad_floats(static_cast<std::size_t>(pr.dv));
    t.acc_rows = pad_floats(static_cast<std::size_t>(std::max<std::int64_t>(a.max_group_queries, 1)));
    const std::size_t M = kTrainQueryTile, N = kTrainKeyTile;
    std::size_t at = 0;
    auto take = [&at](std::size_t floats) {
      const std::size_t o = at;
      at += pad_floats(floats);
      return o;
    };
    t.kt = take(static_cast<std::size_t>(pr.d) * N);
    t.vt = take(static_cast<std::size_t>(pr.dv) * N);
    t.kp = take(N * t.ldd);
    t.vp = take(N * t.ldv);
    t.s = take(M * N);
    t.dp = take(M * N);
    t.tr = take(N * M);
    t.qp = take(M * t.ldd);
    t.dop = take(M * t.ldv);
    t.dk = take(N * t.ldd);
    t.dv = take(N * t.ldv);
    t.dq = take(t.acc_rows * t.ldd);
    t.out = take(t.acc_rows * t.ldv);
    t.lse = take(M);
    t.delta = take(M);
    t.total = at;
    return t;
  }
};

// Floats of per-thread scratch for these args.
std::size_t train_scratch_floats(const TrainArgs& args);
// Runs the groups on pr->threads threads (outputs of different groups must be disjoint).
void run_groups(const TrainArgs& args, const Group* groups, std::int64_t n_groups, float* scratch,
                std::size_t per_thread, int threads);

// The dropout forward: recomputes O with dropout from the forward's lse (every row of an
// active query is rewritten). config: DenseConfig or SmyrfConfig (lsh).
// Scratch comes from `workspace` when given (reused across calls), else from the call.
void dropout_forward(const Problem& pr, const MethodConfig& config, const float* lse,
                     Workspace* workspace);
// The mask of a group that is cut by causality only (when `causal`): key j only if
// j <= i + offset (offset = Nk - Nq); the functor shape of keyset-inl.h's masks.
struct CausalPairs {
  bool causal = false;
  std::int64_t offset = 0;
  void operator()(const std::int32_t* qpos, std::size_t m, const std::int32_t* kpos, std::size_t n,
                  float* s, std::size_t lds) const {
    if (!causal) return;
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t c = 0; c < n; ++c)
        if (kpos[c] > qpos[r] + offset) s[r * lds + c] = -std::numeric_limits<float>::infinity();
  }
};

// A set of groups with one mask functor each (the forward's masks, keyset-inl.h), owning their
// query and key lists, cut into launches: the groups of one launch have disjoint queries (each
// query's dQ row is written by one group of the launch); launches run in order. Each group's
// keys get consecutive partial rows (dK, dV) in group order, from partial_row[g].
template <class Mask>
struct TrainGroups {
  std::vector<Group> groups;
  std::vector<Mask> masks;
  std::vector<std::size_t> launch_ends;  // end (exclusive) of each launch in groups
  std::vector<std::size_t> partial_row;  // first partial row of each group
  std::size_t partial_rows = 0;
  std::int64_t max_group_queries = 0;

  void add(std::int64_t b, std::int64_t h, int round, const std::int32_t* q, std::size_t mq,
           const std::int32_t* k, std::size_t nk, const Mask& mask) {
    if (mq == 0 || nk == 0) return;
    Group g{b, h, round, nullptr, static_cast<std::int64_t>(mq), nullptr, static_cast<std::int64_t>(nk)};
    q_at_.push_back(index_.size());
    index_.insert(index_.end(), q, q + mq);
    k_at_.push_back(index_.size());
    index_.insert(index_.end(), k, k + nk);
    groups.push_back(g);
    masks.push_back(mask);
    partial_row.push_back(partial_rows);
    partial_rows += nk;
    max_group_queries = std::max(max_group_queries, g.n_queries);
  }
  // Closes the current launch (empty launches are dropped).
  void end_launch() {
    if (groups.size() > (launch_ends.empty() ? 0 : launch_ends.back())) launch_ends.push_back(groups.size());
  }
  // Points the groups at their lists; call once, after the last add.
  void finish() {
    end_launch();
    for (std::size_t g = 0; g < groups.size(); ++g) {
      groups[g].queries = index_.data() + q_at_[g];
      groups[g].keys = index_.data() + k_at_[g];
    }
  }

 private:
  std::vector<std::int32_t> index_;
  std::vector<std::size_t> q_at_, k_at_;
};

// The (round, key) pairs each query attends to in a TrainGroups set, per (b, h, i) at
// [(b * H + h) * Nq + i], in group order: the pairs its masks leave (the key sets of the
// double-precision definition, attention_f64).
using KeyPairs = std::vector<std::vector<std::pair<int, std::int32_t>>>;
template <class Mask>
KeyPairs group_pairs(const Problem& pr, const TrainGroups<Mask>& set) {
  KeyPairs out(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  std::vector<float> s;
  for (std::size_t gi = 0; gi < set.groups.size(); ++gi) {
    const Group& gr = set.groups[gi];
    const std::size_t n = static_cast<std::size_t>(gr.n_keys);
    for (std::int64_t r = 0; r < gr.n_queries; ++r) {
      s.assign(n, 0.0f);
      set.masks[gi](gr.queries + r, 1, gr.keys, n, s.data(), n);
      auto& list = out[static_cast<std::size_t>((gr.b * pr.H + gr.h) * pr.Nq + gr.queries[r])];
      for (std::size_t c = 0; c < n; ++c)
        if (s[c] == 0.0f) list.emplace_back(gr.round, gr.keys[c]);
    }
  }
  return out;
}

// grad_q, grad_k and grad_v set to zero on every addressed row (masked rows stay zero).
void zero_gradients(const Problem& pr, const GradientParams& g);
// D_i = dO_i . O_i per (b, h, i), summed in double (flash attention's identity).
std::vector<float> gradient_delta(const Problem& pr, const GradientParams& g);
// Adds the partial dK and dV rows of a TrainGroups set into grad_k and grad_v: each key's
// partial rows in group order (whatever the thread count), in parallel over keys.
void add_key_partials(const Problem& pr, const GradientParams& g, const std::vector<Group>& groups,
                      const std::vector<std::size_t>& partial_row, const float* pk, const float* pv);
// Rows of O of the active queries with a finite lse set to zero (the dropout forward rebuilds
// them; the others keep the forward's zeros).
void zero_attended_rows(const Problem& pr, const float* lse);

// The backward of a key-set method from its TrainGroups: gradients zeroed, D computed, the
// groups run by `run` (the method's dispatch of RunTrainGroups<Mask>, group_train-inl.h:
// run(args, set, pk, pv, scratch, per_thread)), the key partials added in group order.
template <class Mask, class Run>
RunInfo groups_backward_add(const Problem& pr, const GradientParams& g, const TrainGroups<Mask>& set,
                            const float* delta, Workspace* workspace, const Run& run);
template <class Mask, class Run>
RunInfo groups_backward(const Problem& pr, const GradientParams& g, const TrainGroups<Mask>& set,
                        Workspace* workspace, const Run& run) {
  Timer timer;
  zero_gradients(pr, g);
  const std::vector<float> delta = gradient_delta(pr, g);
  RunInfo info = groups_backward_add(pr, g, set, delta.data(), workspace, run);
  info.seconds_total = info.attention.seconds = timer.seconds();
  return info;
}

// The groups' gradients added to grad_q, grad_k and grad_v (not zeroed first), with the given
// D per (b, h, i) in place of dO_i . O_i (a method whose O has a part outside the groups, such
// as improved clustered attention's centroid rows, passes the groups' own share).
template <class Mask, class Run>
RunInfo groups_backward_add(const Problem& pr, const GradientParams& g, const TrainGroups<Mask>& set,
                            const float* delta, Workspace* workspace, const Run& run) {
  Timer timer;
  TrainArgs args;
  args.pr = &pr;
  args.lse = g.lse;
  args.delta = delta;
  args.grads = &g;
  args.dropout = spec::Dropout(pr.p->dropout, pr.p->seed);
  args.mode = kGroupGradQ | kGroupGradKV;
  args.max_group_queries = set.max_group_queries;
  const std::size_t per_thread = train_scratch_floats(args);
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  Arena& arena = scratch.arena();
  const std::size_t scratch_slot = arena.add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  const std::size_t pk_slot = arena.add<float>(set.partial_rows * static_cast<std::size_t>(pr.d));
  const std::size_t pv_slot = arena.add<float>(set.partial_rows * static_cast<std::size_t>(pr.dv));
  scratch.bind();
  RunInfo info;
  info.workspace_bytes = arena.bytes();
  run(args, set, arena.at<float>(pk_slot), arena.at<float>(pv_slot), arena.at<float>(scratch_slot), per_thread);
  add_key_partials(pr, g, set.groups, set.partial_row, arena.at<float>(pk_slot), arena.at<float>(pv_slot));
  info.seconds_total = info.attention.seconds = timer.seconds();
  return info;
}

// The dropout forward of a key-set method from its TrainGroups and the forward's lse: the rows
// of O of the groups' queries rebuilt as the sum over the groups of (exp(S - lse) F) V. Rows of
// queries in no group keep the forward's values (Informer's lazy means).
template <class Mask, class Run>
void groups_dropout_forward(const Problem& pr, const float* lse, const TrainGroups<Mask>& set,
                            Workspace* workspace, const Run& run) {
  for (const Group& gr : set.groups)
    for (std::int64_t r = 0; r < gr.n_queries; ++r) std::fill_n(pr.o_row(gr.b, gr.h, gr.queries[r]), pr.dv, 0.0f);
  TrainArgs args;
  args.pr = &pr;
  args.lse = lse;
  args.dropout = spec::Dropout(pr.p->dropout, pr.p->seed);
  args.mode = kGroupOut;
  args.max_group_queries = set.max_group_queries;
  const std::size_t per_thread = train_scratch_floats(args);
  CallScratch scratch(pr, workspace, CallScratch::Lists::none);
  const std::size_t scratch_slot = scratch.arena().add<float>(per_thread * static_cast<std::size_t>(pr.threads));
  scratch.bind();
  run(args, set, nullptr, nullptr, scratch.arena().at<float>(scratch_slot), per_thread);
}
RunInfo train_backward(const Problem& pr, const GradientParams& grads, const MethodConfig& config,
                       Workspace* workspace);

}  // namespace smyrf::detail
