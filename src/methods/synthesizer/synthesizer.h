// Synthesizer attention: internals. The exact definition (logits, seeded defaults, validation,
// computation and cost) is the public contract in smyrf/methods/synthesizer.h.
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
