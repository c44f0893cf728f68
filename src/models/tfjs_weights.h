// Loader for TensorFlow.js model files: model.json (graph topology + weights manifest) and
// the binary shards the manifest lists. Shards hold the raw little-endian weights of the
// manifest's entries, concatenated in manifest order across all shards of a group.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace smyrf::models {

struct TfjsTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::string dtype;             // "float32" or "int32"
  std::vector<float> values;     // float32 weights
  std::vector<std::int32_t> ints;  // int32 weights
  std::int64_t numel() const;
};

class TfjsWeights {
 public:
  // Reads model.json and every shard next to it. Throws smyrf::Error naming the file and what
  // is wrong: unreadable or malformed JSON, a missing field, a dtype or quantisation this
  // loader does not read, a shard that is missing, or shard bytes that disagree with the
  // manifest's shapes (truncated or extra bytes).
  static TfjsWeights load(const std::filesystem::path& model_json);

  bool contains(std::string_view name) const;
  // The tensor called `name`; throws smyrf::Error if absent.
  const TfjsTensor& at(std::string_view name) const;
  // The float tensor called `name` with the given shape; throws if the shape or dtype differ.
  const std::vector<float>& floats(std::string_view name, const std::vector<std::int64_t>& shape) const;
  const nlohmann::json& topology() const { return topology_; }
  std::size_t size() const { return tensors_.size(); }

 private:
  nlohmann::json topology_;
  std::map<std::string, TfjsTensor, std::less<>> tensors_;
};

}  // namespace smyrf::models
