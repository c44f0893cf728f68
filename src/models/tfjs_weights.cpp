#include "models/tfjs_weights.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "smyrf/smyrf.h"

namespace smyrf::models {
namespace {

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& why) {
  throw Error("smyrf: model file " + file.string() + ": " + why);
}

std::string read_file(const std::filesystem::path& path, const std::filesystem::path& referer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(referer, "cannot open " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) fail(referer, "cannot read " + path.string());
  return std::move(s).str();
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string r = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) r += (i ? ", " : "") + std::to_string(shape[i]);
  return r + "]";
}

std::size_t dtype_bytes(const std::string& dtype, const std::filesystem::path& file,
                        const std::string& name) {
  if (dtype == "float32" || dtype == "int32") return 4;
  fail(file, "weight '" + name + "' has dtype '" + dtype + "'; only float32 and int32 are read");
}

}  // namespace

std::int64_t TfjsTensor::numel() const {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  return n;
}

TfjsWeights TfjsWeights::load(const std::filesystem::path& model_json) {
  TfjsWeights w;
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(read_file(model_json, model_json));
  } catch (const nlohmann::json::exception& e) {
    fail(model_json, std::string("not valid JSON: ") + e.what());
  }
  if (!doc.is_object() || !doc.contains("weightsManifest") || !doc["weightsManifest"].is_array())
    fail(model_json, "no 'weightsManifest' array");
  if (doc["weightsManifest"].empty()) fail(model_json, "the 'weightsManifest' array is empty: no weights");
  if (doc.contains("modelTopology")) w.topology_ = std::move(doc["modelTopology"]);
  const std::filesystem::path dir = model_json.parent_path();

  try {
    for (const auto& group : doc["weightsManifest"]) {
      // The group's shards, concatenated.
      std::string bytes;
      for (const auto& p : group.at("paths")) {
        const std::string shard = p.get<std::string>();
        if (shard.find("..") != std::string::npos || shard.empty() || shard.front() == '/')
          fail(model_json, "shard path '" + shard + "' leaves the model folder");
        bytes += read_file(dir / shard, model_json);
      }
      std::size_t offset = 0;
      for (const auto& spec : group.at("weights")) {
        TfjsTensor t;
        t.name = spec.at("name").get<std::string>();
        t.dtype = spec.at("dtype").get<std::string>();
        t.shape = spec.at("shape").get<std::vector<std::int64_t>>();
        if (spec.contains("quantization"))
          fail(model_json, "weight '" + t.name + "' is quantised; only unquantised weights are read");
        // The element count is checked before any multiplication, so that a corrupted shape
        // cannot wrap around and pass the size check below.
        std::int64_t count = 1;
        for (std::int64_t s : t.shape) {
          if (s < 0) fail(model_json, "weight '" + t.name + "' has a negative dimension " + shape_string(t.shape));
          if (s == 0) fail(model_json, "weight '" + t.name + "' has a zero dimension " + shape_string(t.shape) + ": an empty weight");
          if (count > std::numeric_limits<std::int64_t>::max() / s)
            fail(model_json, "weight '" + t.name + "' has shape " + shape_string(t.shape) +
                                 " whose element count overflows");
          count *= s;
        }
        const std::size_t elem = dtype_bytes(t.dtype, model_json, t.name);
        const auto n = static_cast<std::size_t>(count);
        if (n > (bytes.size() - offset) / elem)
          fail(model_json, "the shards hold " + std::to_string(bytes.size()) +
                               " bytes but the manifest needs more (weight '" + t.name + "' of " +
                               std::to_string(n) + " elements starts at byte " + std::to_string(offset) +
                               "): truncated or missing shard data");
        const std::size_t need = n * elem;
        if (t.dtype == "float32") {
          t.values.resize(n);
          std::memcpy(t.values.data(), bytes.data() + offset, need);
          // No trained weight is NaN or infinite: such a value means corrupted shard bytes,
          // and would otherwise only surface as NaN embeddings far from the cause.
          for (std::size_t k = 0; k < n; ++k)
            if (!std::isfinite(t.values[k]))
              fail(model_json, "weight '" + t.name + "' holds " + (std::isnan(t.values[k]) ? "NaN" : "an infinity") +
                                   " at element " + std::to_string(k) + " (shard byte " +
                                   std::to_string(offset + k * elem) + " of its group): corrupted shard data");
        } else {
          t.ints.resize(n);
          std::memcpy(t.ints.data(), bytes.data() + offset, need);
        }
        offset += need;
        if (!w.tensors_.emplace(t.name, std::move(t)).second)
          fail(model_json, "weight '" + spec.at("name").get<std::string>() + "' appears twice");
      }
      if (offset != bytes.size())
        fail(model_json, "the shards hold " + std::to_string(bytes.size()) +
                             " bytes but the manifest describes " + std::to_string(offset) +
                             ": the manifest and the shards disagree");
    }
  } catch (const nlohmann::json::exception& e) {
    fail(model_json, std::string("malformed weights manifest: ") + e.what());
  }
  return w;
}

bool TfjsWeights::contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

const TfjsTensor& TfjsWeights::at(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error("smyrf: model weights: no weight named '" + std::string(name) + "'");
  return it->second;
}

const std::vector<float>& TfjsWeights::floats(std::string_view name,
                                              const std::vector<std::int64_t>& shape) const {
  const TfjsTensor& t = at(name);
  auto str = [](const std::vector<std::int64_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  };
  if (t.dtype != "float32" || t.shape != shape)
    throw Error("smyrf: model weights: '" + t.name + "' is " + t.dtype + " " + str(t.shape) +
                ", expected float32 " + str(shape));
  return t.values;
}

}  // namespace smyrf::models
