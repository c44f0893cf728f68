#include "methods/clustered/clustered.h"

namespace smyrf::detail {

RunInfo clustered_forward(const Problem&, const ClusteredConfig&, Workspace*) {
  throw Error("smyrf: clustered: not built yet");
}

}  // namespace smyrf::detail
