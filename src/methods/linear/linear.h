// Feature-map ("linear") attention: internals. The exact definitions (maps, stabilisers, the
// blockwise computation and its precision, causal chunks, RunInfo counts) are the public
// contract in smyrf/methods/linear.h; the key blocks are kLinearKeyTask (linear_internal.h).
#pragma once

#include "common/problem.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

// Number of features m of the config on a problem with head dimension d.
std::int64_t linear_feature_count(const LinearConfig& config, std::int64_t d);

RunInfo linear_forward(const Problem& pr, const LinearConfig& config, Workspace* workspace);

// The map's name as the messages spell it.
inline const char* feature_map_name(FeatureMap map) {
  switch (map) {
    case FeatureMap::elu: return "elu";
    case FeatureMap::favor_plus: return "favor_plus";
    case FeatureMap::favor: return "favor";
    case FeatureMap::rfa: return "rfa";
    case FeatureMap::dpfp: return "dpfp";
    case FeatureMap::efficient: return "efficient";
    case FeatureMap::l2: return "l2";
  }
  return "?";
}

}  // namespace smyrf::detail
