// Synthesizer attention (see SynthesizerConfig in smyrf.h). The exact definition:
//
//   dense:  logits_ij = b2[h][j] + sum_u w2[h][u][j] relu(b1[h][u] + sum_t q_it w1[h][t][u])
//           with w1 [H, d, hidden], b1 [H, hidden], w2 [H, hidden, Nk], b2 [H, Nk], contiguous,
//           for this call's d and Nk (the net of a head sees the query only, never the keys).
//   random: logits_ij = R[h][i][j], R = config.logits [H, Nq, Nk] contiguous.
//   O_i = sum_j softmax_j(logits_ij) V_j over the keys query i sees (key mask; with
//   params.causal j <= i + Nk - Nq); lse_i = logsumexp_j logits_ij over the same keys. A masked
//   query, or one that sees no key, gets O = 0 and lse = -inf. params.scale is not used (the
//   logits are the net's or R's, unscaled).
//
// Defaults: each pointer that is nullptr is replaced by a seeded draw, a function of
// (params.seed, head) only (the same for every batch element), given pointers are used as
// they are (each independently):
//   w1[h][t][u] = float(standard_normal(seed, stream(h, 0), t * hidden + u) / sqrt(d))
//   w2[h][u][j] = float(standard_normal(seed, stream(h, 1), u * Nk + j) / sqrt(hidden))
//   R[h][i][j]  = float(standard_normal(seed, stream(h, 2), i * Nk + j))
//   b1 = 0, b2 = 0
// with stream(h, part) = 0x53594E5400000000 + 4 h + part (tag "SYNT") and standard_normal of
// src/common/rng.h: spec::synthesizer_default_* in src/spec/draws.h (the oracle uses them too).
//
// Validation: kind is dense or random; dense: 1 <= hidden <= 65536 and logits == nullptr;
// random: w1, b1, w2, b2 == nullptr (hidden is not read); given arrays must be finite.
//
// Fast paths. dense: the logits are exact attention with scale 1 between the queries
// h'_i = [relu(W1^T q_i + b1), 1] and the keys k'_j = [w2[:, j], b2_j] (hidden + 1 features):
// both are built into buffers and detail::dense_forward runs on that sub-problem (masks and
// causality carry over; bf16 V is converted to f32 first): O(Nq hidden (d + Nk) + Nq Nk dv),
// RunInfo as dense's (scores: the (query, key) pairs of the sub-problem) plus the buffers.
// random: tasks (head, block of kSynthQueryBlock queries), each reading (or drawing, for the
// default R: H Nq Nk normal draws per call) its logit rows once for every batch element; per row
// the max, exp and sum on SIMD vectors, then P.V on the packed V rows with the dense tile kernel:
// O(Nq Nk dv); attention_scores = the (active query, visible key) pairs.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"
#include "spec/draws.h"

namespace smyrf::detail {

RunInfo synthesizer_forward(const Problem& pr, const SynthesizerConfig& config,
                            Workspace* workspace);

// ---- Internals shared by the per-target code and the driver (synthesizer.cpp). ----

// Queries per task of the random kind and of the hidden-feature pass.
constexpr std::int64_t kSynthQueryBlock = 32;

struct SynthRandomArgs {
  const Problem* pr;
  const SynthesizerConfig* config;
  const TokenLists* lists;
  std::int64_t blocks;     // query blocks of kSynthQueryBlock
  float* scratch;          // per thread: per_thread floats
  std::size_t per_thread;  // accumulators, probabilities, drawn logits (defaults)
  float* vp;               // [B * H][Nk][pad_floats(dv)]: packed V rows of the visible keys
  std::int64_t* counts;    // [H * blocks]: scores per task
};

}  // namespace smyrf::detail
