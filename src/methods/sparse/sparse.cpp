#include "methods/sparse/sparse.h"

namespace smyrf::detail {

RunInfo sparse_forward(const Problem&, const SparseConfig&, Workspace*) {
  throw Error("smyrf: sparse: not built yet");
}

}  // namespace smyrf::detail
