// The attention variants the model evaluation compares, as short specs:
//   dense            exact attention
//   smyrf:H:F        SMYRF with H hashing rounds at attention-memory budget F (0 < F <= 1):
//                    clusters of c = round(F * N / H) queries and keys (at least 1) for a
//                    sequence of N tokens, so each query sees H * c ~ F * N keys. At N = 128:
//                    smyrf:2:0.5 = 2x32, smyrf:2:0.25 = 2x16, smyrf:1:0.125 = 1x16, the
//                    paper's BERT settings.
//   smyrf:HxC        SMYRF with H rounds and clusters of C at every length (a sequence of at
//                    most C tokens is one cluster: exact attention).
//   smyrf-c:F[:Q]    SMYRF with centroid key selection (KeySelection::centroid) at budget F:
//                    query clusters of Q consecutive tokens (default 16), each attending to its
//                    k = round(F * N) - ceil(N / Q) best keys (at least 1), so that with the
//                    centroid scores each query costs ~F * N scores.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "smyrf/smyrf.h"

namespace smyrf::models {

struct AttentionVariant {
  std::string spec;   // as given
  enum class Kind { dense, smyrf_budget, smyrf_fixed, smyrf_centroid } kind = Kind::dense;
  int n_hashes = 0;
  double budget = 1.0;  // smyrf_budget
  int cluster = 0;      // smyrf_fixed; smyrf_centroid: query cluster size

  // Key cluster size used for a sequence of n tokens (0 for dense).
  std::int64_t cluster_for(std::int64_t n) const;
  // True when the variant computes exact attention at this length (dense, or one cluster).
  bool exact_at(std::int64_t n) const;
  MethodConfig config_for(std::int64_t n) const;
  // e.g. "dense", "smyrf 2 x 50%", "smyrf 2x32".
  std::string label() const;
};

// Throws smyrf::Error naming the spec and what is wrong.
AttentionVariant parse_variant(std::string_view spec);

}  // namespace smyrf::models
