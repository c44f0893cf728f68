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
RunInfo synthesizer_backward(const Problem& pr, const GradientParams& grads,
                             const SynthesizerConfig& config, Workspace* workspace);
// The double-precision definition and its gradient (synthesizer_f64.cpp).
void synthesizer_forward_f64(const Problem& pr, const DoubleTensors& in, const SynthesizerConfig& config,
                             double* o, double* lse);
void synthesizer_backward_f64(const Problem& pr, const DoubleTensors& in, const SynthesizerConfig& config,
                              const double* grad_o, double* grad_q, double* grad_k, double* grad_v);

// ---- Internals shared by the per-target code and the driver (synthesizer.cpp). ----

// Queries per task of the random kind and of the hidden-feature pass; keys per task of the
// random kind's dV pass.
constexpr std::int64_t kSynthQueryBlock = 32;
constexpr std::int64_t kSynthKeyBlock = 64;

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

// The random kind's backward (f32 inputs).
struct SynthRandomBackwardArgs {
  const Problem* pr;
  const SynthesizerConfig* config;
  const TokenLists* lists;
  const GradientParams* g;
  const float* delta;         // [B, H, Nq]: D_i = dO_i . O_i
  std::int64_t qblocks;       // query blocks of kSynthQueryBlock
  std::int64_t kblocks;       // key blocks of kSynthKeyBlock
  float* scratch;             // per thread: per_thread floats
  std::size_t per_thread;
  double* sums;               // per thread: kSynthQueryBlock * Nk doubles (dlogits), or nullptr
  float* vt;                  // [B * H][dv][ldk]: V^T of the visible keys (list order)
  float* dop;                 // [B * H][Nq][ldv]: dO rows
};

}  // namespace smyrf::detail
