// Synthesizer attention: internals. The exact definition (logits, seeded defaults, validation,
// computation and cost) is the public contract in smyrf/methods/synthesizer.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/problem.h"
#include "common/rng.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Checks the config against the problem (throws smyrf::Error naming the field).
void validate_config(const SynthesizerConfig& config, const Problem& pr);
RunInfo synthesizer_forward(const Problem& pr, const SynthesizerConfig& config,
                            Workspace* workspace);

// ---- Definition pieces shared with the oracle. ----

inline std::uint64_t synthesizer_stream(std::int64_t h, int part) {
  return 0x53594E5400000000ull + 4 * static_cast<std::uint64_t>(h) +
         static_cast<std::uint64_t>(part);
}
// Default w1[h][t][u] (N(0, 1/d)).
inline float synthesizer_default_w1(std::uint64_t seed, std::int64_t h, std::int64_t t,
                                    std::int64_t u, std::int64_t d, std::int64_t hidden) {
  return static_cast<float>(
      standard_normal(seed, synthesizer_stream(h, 0), static_cast<std::uint64_t>(t * hidden + u)) /
      std::sqrt(static_cast<double>(d)));
}
// Default w2[h][u][j] (N(0, 1/hidden)).
inline float synthesizer_default_w2(std::uint64_t seed, std::int64_t h, std::int64_t u,
                                    std::int64_t j, std::int64_t nk, std::int64_t hidden) {
  return static_cast<float>(
      standard_normal(seed, synthesizer_stream(h, 1), static_cast<std::uint64_t>(u * nk + j)) /
      std::sqrt(static_cast<double>(hidden)));
}
// Default R[h][i][j] (N(0, 1)).
inline float synthesizer_default_logit(std::uint64_t seed, std::int64_t h, std::int64_t i,
                                       std::int64_t j, std::int64_t nk) {
  return static_cast<float>(
      standard_normal(seed, synthesizer_stream(h, 2), static_cast<std::uint64_t>(i * nk + j)));
}

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
