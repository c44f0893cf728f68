// Determinism of every method, in one place: the same inputs and seed give the same bits at 1,
// 2 and 7 threads and on repeated calls (with and without a reused Workspace), for every method
// config of the API, with masks and padded strides, causal where the method has a causal form.
// Seeded methods also get a second seed, which must change their output (a method that ignored
// the seed would pass the bit checks vacuously).
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "test_util.h"

namespace smyrf::test {
namespace {

struct Case {
  std::string name;
  MethodConfig config;
  bool causal = false;
  bool seeded = false;  // the output depends on params.seed
};

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"reference", ReferenceConfig{}});
  c.push_back({"dense", DenseConfig{}});
  c.push_back({"dense_causal", DenseConfig{}, true});
  c.push_back({"smyrf", SmyrfConfig{.n_hashes = 3, .q_cluster_size = 8, .k_cluster_size = 8}, false, true});
  c.push_back({"smyrf_causal", SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8}, true, true});
  c.push_back({"smyrf_centroid",
               SmyrfConfig{.n_hashes = 1, .q_cluster_size = 8, .k_cluster_size = 12, .keys = KeySelection::centroid}});
  c.push_back({"reformer", ReformerConfig{.n_hashes = 2, .n_buckets = 8, .chunk_size = 8, .shared_qk = false},
               false, true});
  c.push_back({"reformer_causal",
               ReformerConfig{.n_hashes = 2, .n_buckets = 8, .chunk_size = 8, .shared_qk = false}, true, true});
  c.push_back({"clustered", ClusteredConfig{.n_clusters = 6}, false, true});
  c.push_back({"iclustered", ClusteredConfig{.n_clusters = 6, .topk = 8}, false, true});
  c.push_back({"routing", RoutingConfig{.n_clusters = 4, .window = 12}});
  c.push_back({"routing_causal", RoutingConfig{.n_clusters = 4, .window = 12}, true});
  c.push_back({"bigbird", SparseConfig{.pattern = SparsePattern::bigbird, .block_size = 6, .random_blocks = 2},
               false, true});
  c.push_back({"bigbird_causal",
               SparseConfig{.pattern = SparsePattern::bigbird, .block_size = 6, .random_blocks = 2}, true, true});
  c.push_back({"performer", LinearConfig{.map = FeatureMap::favor_plus, .n_features = 24}, false, true});
  c.push_back({"performer_causal", LinearConfig{.map = FeatureMap::favor_plus, .n_features = 24, .chunk = 7},
               true, true});
  c.push_back({"favor", LinearConfig{.map = FeatureMap::favor, .n_features = 24}, false, true});
  c.push_back({"rfa_causal", LinearConfig{.map = FeatureMap::rfa, .n_features = 24, .chunk = 5}, true, true});
  c.push_back({"linear", LinearConfig{.map = FeatureMap::elu}});
  c.push_back({"linear_causal", LinearConfig{.map = FeatureMap::elu, .chunk = 6}, true});
  c.push_back({"efficient", LinearConfig{.map = FeatureMap::efficient}});
  c.push_back({"dpfp", LinearConfig{.map = FeatureMap::dpfp, .dpfp_nu = 2}});
  c.push_back({"linformer", CompressedConfig{.kind = Compression::linformer, .rank = 9}, false, true});
  c.push_back({"nystrom", CompressedConfig{.kind = Compression::nystrom, .rank = 5}});
  c.push_back({"memory_compressed", CompressedConfig{.kind = Compression::memory_compressed, .stride = 3}});
  c.push_back({"induced_points", CompressedConfig{.kind = Compression::induced_points, .rank = 5}});
  c.push_back({"star", CompressedConfig{.kind = Compression::star, .window = 2}});
  c.push_back({"global_memory", CompressedConfig{.kind = Compression::global_memory, .rank = 4, .window = 2}});
  c.push_back({"informer", InformerConfig{.top_queries = 6, .sample_keys = 5}, false, true});
  c.push_back({"informer_causal", InformerConfig{.top_queries = 6, .sample_keys = 5}, true, true});
  c.push_back({"sinkhorn", SinkhornConfig{.block_size = 7}});
  c.push_back({"synthesizer_random", SynthesizerConfig{.kind = SynthesizerKind::random}, false, true});
  c.push_back({"synthesizer_dense_causal", SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 8}, true,
               true});
  return c;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Determinism : public ::testing::TestWithParam<Case> {};

TEST_P(Determinism, SameBitsAtOneTwoAndSevenThreadsAndOnRepeatedCalls) {
  const Case& c = GetParam();
  Problem pr(2, 3, 45, 53, 12, 10, /*padded=*/true, 7);
  pr.random_masks(3, 0.85, 0.9);
  pr.params.causal = c.causal;
  pr.params.seed = 11;
  const std::vector<float> one = pr.run(c.config, 1);
  EXPECT_TRUE(bitwise_equal(one, pr.run(c.config, 2))) << c.name << ": 1 vs 2 threads";
  EXPECT_TRUE(bitwise_equal(one, pr.run(c.config, 7))) << c.name << ": 1 vs 7 threads";
  EXPECT_TRUE(bitwise_equal(one, pr.run(c.config, 2))) << c.name << ": repeated call";
  Problem big(1, 2, 90, 70, 16, 16, false, 8);
  big.params.causal = c.causal;
  expect_workspace_reuse_same_bits(pr, big, c.config);
  if (c.seeded) {
    pr.params.seed = 12;
    EXPECT_FALSE(bitwise_equal(one, pr.run(c.config, 2))) << c.name << ": the seed plays no part";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryMethod, Determinism, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace smyrf::test
