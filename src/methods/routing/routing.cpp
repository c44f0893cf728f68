#include "methods/routing/routing.h"

namespace smyrf::detail {

RunInfo routing_forward(const Problem&, const RoutingConfig&, Workspace*) {
  throw Error("smyrf: routing: not built yet");
}

}  // namespace smyrf::detail
