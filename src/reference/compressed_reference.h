// Naive double-precision oracle of compressed attention, written from the definitions in
// src/methods/compressed/compressed.h in plain loops: its own segment means, projections,
// softmaxes, Nystrom pseudo-inverse iteration and window sets. Shared with the fast path: only
// the definition pieces of compressed.h (segment bounds, the default Linformer projection).
#pragma once

#include <cstdint>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::detail {

struct CompressedOracle {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0, d = 0, dv = 0;
  std::vector<double> o;    // [B, H, Nq, dv]
  std::vector<double> lse;  // [B, H, Nq]: -inf for a query that sees nothing; NaN (nystrom)
  // Per (b, h) in order: the synthetic key rows (d each) and value rows (dv each) the queries
  // attend to (nystrom: the landmarks K~ and W = Z (A3 V); star: the relay row).
  std::vector<std::vector<double>> keys, values;
  // Per (b, h): the rows that attend to the real keys to build the synthetic rows (nystrom:
  // Q~; star: q_r; induced_points: the inducing rows), d each; empty for the others.
  std::vector<std::vector<double>> stage_queries;
  // Per (b, h): nystrom: max_i sum_j |Z_ij| (how much W amplifies errors of A3 V); else 1.
  std::vector<double> amplify;
};

// Validates params and config as attention() does (throws smyrf::Error) and computes the
// oracle; does not write params.o or params.lse.
CompressedOracle compressed_reference(const AttentionParams& params,
                                      const CompressedConfig& config);

}  // namespace smyrf::detail
