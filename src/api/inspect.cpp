#include "api/inspect.h"

#include "api/dispatch.h"
#include "common/error.h"

namespace smyrf::detail {
namespace {

// Checks the call as attention() does, then runs hook(problem).
template <class Hook>
auto inspect(const AttentionParams& params, const MethodConfig& config, Hook&& hook) {
  return out_of_memory_is_an_error("the inspection of " + subject(config), [&] {
    const Problem pr = check_call(params, config);
    prepare_call(pr, config);
    return hook(pr);
  });
}

}  // namespace

ClusterLists compute_clusters(const AttentionParams& params, const SmyrfConfig& config) {
  return inspect(params, config, [&](const Problem& pr) { return compute_clusters(pr, config); });
}
std::vector<std::vector<std::int32_t>> centroid_keys(const AttentionParams& params, const SmyrfConfig& config) {
  return inspect(params, config, [&](const Problem& pr) { return centroid_keys(pr, config); });
}
ReformerBuckets reformer_buckets(const AttentionParams& params, const ReformerConfig& config) {
  return inspect(params, config, [&](const Problem& pr) { return reformer_buckets(pr, config); });
}
ClusteredInspection clustered_inspect(const AttentionParams& params, const ClusteredConfig& config,
                                      KMeansSchedule schedule) {
  return inspect(params, config, [&](const Problem& pr) { return clustered_inspect(pr, config, schedule); });
}
RoutingRoutes routing_routes(const AttentionParams& params, const RoutingConfig& config) {
  return inspect(params, config, [&](const Problem& pr) { return routing_routes(pr, config); });
}
std::vector<std::vector<std::int32_t>> sparse_visible_keys(const AttentionParams& params,
                                                           const SparseConfig& config, std::int64_t b,
                                                           std::int64_t h) {
  return inspect(params, config, [&](const Problem& pr) { return sparse_visible_keys(pr, config, b, h); });
}
std::vector<std::int32_t> sparse_visible_keys(const AttentionParams& params, const SparseConfig& config,
                                              std::int64_t b, std::int64_t h, std::int64_t i) {
  return inspect(params, config, [&](const Problem& pr) { return sparse_visible_keys(pr, config, b, h, i); });
}

}  // namespace smyrf::detail
