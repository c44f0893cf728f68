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
// The backward: gradients of Q, K, V and the learned parts' grad_*.
RunInfo compressed_backward(const Problem& pr, const GradientParams& grads, const CompressedConfig& config,
                            Workspace* workspace);
// The double-precision definition and its gradient (compressed_f64.cpp).
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

// C = A B (A [n, k], B [k, m], row-major, double): each element one sum over t in index order
// by multiply-adds (fused where the target has them), on the register-tiled SIMD kernel of the
// float path (compressed.cpp, CompressedMatMul).
void compressed_matmul(const double* A, const double* B, double* C, std::int64_t n, std::int64_t k,
                       std::int64_t m);

// Nystrom's pseudo-inverse iteration (smyrf/methods/compressed.h) on A2 [mq, mk] (double,
// row-major), its products by compressed_matmul: Zs receives the iterates Z_0 .. Z_T
// (T = iterations), [mk, mq] each. Used by the double definition and the float backward
// (compressed_f64.cpp).
void nystrom_pinv_iterates(const double* A2, std::int64_t mq, std::int64_t mk, int iterations, double* Zs);
// The iteration's gradient: dZ = dL/dZ_T on entry (overwritten: scratch); dL/dA2 is added to
// dA2. Through Z_0 = A2^T / (max_row max_col) the first maximal row and column carry the
// derivative of the maxima.
void nystrom_pinv_backward(const double* A2, std::int64_t mq, std::int64_t mk, int iterations, const double* Zs,
                           double* dZ, double* dA2);

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
