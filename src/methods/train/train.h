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

#include "spec/draws.h"
#include "common/heuristics.h"
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
RunInfo train_backward(const Problem& pr, const GradientParams& grads, const MethodConfig& config,
                       Workspace* workspace);

}  // namespace smyrf::detail
