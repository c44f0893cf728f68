#include "methods/reformer/reformer.h"

namespace smyrf::detail {

RunInfo reformer_forward(const Problem&, const ReformerConfig&, Workspace*) {
  throw Error("smyrf: reformer: not built yet");
}

}  // namespace smyrf::detail
