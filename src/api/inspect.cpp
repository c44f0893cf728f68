#include "api/inspect.h"

#include "api/dispatch.h"
#include "common/error.h"

#include <string>
#include <vector>

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

namespace smyrf {

void routing_update_centroids(const AttentionParams& params, const RoutingConfig& config, float decay, float* out) {
  detail::out_of_memory_is_an_error("the centroid update of routing attention", [&] {
    if (config.centroids == nullptr)
      detail::fail("RoutingConfig.centroids", "nullptr", "the update needs the centroids it updates");
    if (!(decay >= 0.0f && decay <= 1.0f))
      detail::fail("decay", std::to_string(decay), "must be in [0, 1]");
    if (out == nullptr) detail::fail("out", "nullptr", "the updated centroids are written there");
    AttentionParams p = params;
    p.v = p.k;  // V and O are not read: any valid rows
    p.v_batch_stride = p.k_batch_stride;
    p.v_head_stride = p.k_head_stride;
    p.v_row_stride = p.k_row_stride;
    p.dv = p.d;
    std::vector<float> o(static_cast<std::size_t>(params.batch * params.heads * params.nq * params.d));
    p.o = o.data();
    p.o_batch_stride = params.heads * params.nq * params.d;
    p.o_head_stride = params.nq * params.d;
    p.o_row_stride = params.d;
    p.lse = nullptr;
    p.dropout = 0.0f;
    const detail::Problem pr = detail::check_call(p, config);
    detail::prepare_call(pr, config);
    detail::routing_update_centroids(pr, config, decay, out);
    return 0;
  });
}

}  // namespace smyrf
