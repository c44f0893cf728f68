// Low-rank and compressed attention: internals. The exact definitions, cost and RunInfo counts
// are the public contract in smyrf/methods/compressed.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/problem.h"
#include "smyrf/smyrf.h"
#include "spec/draws.h"

namespace smyrf::detail {

RunInfo compressed_forward(const Problem& pr, const CompressedConfig& config, Workspace* workspace);
// The backward (every kind but nystrom): gradients of Q, K, V and the learned parts' grad_*.
RunInfo compressed_backward(const Problem& pr, const GradientParams& grads, const CompressedConfig& config,
                            Workspace* workspace);
// The double-precision definition and its gradient (compressed_f64.cpp; every kind but nystrom).
void compressed_forward_f64(const Problem& pr, const DoubleTensors& in, const CompressedConfig& config, double* o,
                            double* lse);
void compressed_backward_f64(const Problem& pr, const DoubleTensors& in, const CompressedConfig& config,
                             const double* grad_o, double* grad_q, double* grad_k, double* grad_v);

// The kind's name as the messages spell it.
inline const char* compression_name(Compression k) {
  switch (k) {
    case Compression::linformer:
      return "linformer";
    case Compression::nystrom:
      return "nystrom";
    case Compression::memory_compressed:
      return "memory_compressed";
    case Compression::induced_points:
      return "induced_points";
    case Compression::star:
      return "star";
    case Compression::global_memory:
      return "global_memory";
  }
  return "?";
}

// Largest accepted rank and pinv_iterations.
constexpr int kCompressedMaxRank = 65536;
constexpr int kCompressedMaxPinvIterations = 100;

// ---- Pieces of the definition (the default projections are spec::linformer_*). ----

// First row of segment t of n rows cut into s segments: floor(t n / s).
inline std::int64_t segment_begin(std::int64_t t, std::int64_t n, std::int64_t s) {
  return t * n / s;
}
// Number of segments of n rows with `rank` segments requested: min(rank, n).
inline std::int64_t segment_count(std::int64_t rank, std::int64_t n) { return rank < n ? rank : n; }

}  // namespace smyrf::detail
