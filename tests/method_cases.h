// The method configs every cross-method test runs (one entry per method config of the API,
// causal where the method has a causal form), small enough for problems of a few dozen tokens.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "smyrf/smyrf.h"

namespace smyrf::test {

struct Case {
  std::string name;
  MethodConfig config;
  bool causal = false;
  bool seeded = false;  // the output depends on params.seed
};

inline std::vector<Case> cases() {
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

// gtest prints a case by its name.
inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

}  // namespace smyrf::test
