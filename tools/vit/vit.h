// The ViT interchangeability experiment: a small Vision Transformer on Fashion-MNIST whose
// attention core is pluggable (plain torch ops, the library's dense kernel, SMYRF).
//
// This header is free of Torch so that the command-line front end (main.cpp) compiles fast;
// everything that touches LibTorch lives in vit.cpp, the IDX reader in idx.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vit {

constexpr int kImageSide = 28;  // Fashion-MNIST images are 28 x 28, one channel
constexpr int kPatch = 2;       // 2 x 2 patches: (28 / 2)^2 = 196 tokens per image
constexpr int kTokens = (kImageSide / kPatch) * (kImageSide / kPatch);
constexpr int kClasses = 10;

// One split of Fashion-MNIST: n images, row-major uint8 pixels, labels in [0, 10).
struct Dataset {
  std::int64_t n = 0;
  std::vector<std::uint8_t> pixels;  // n * 28 * 28
  std::vector<std::uint8_t> labels;  // n
};

// Reads <dir>/train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (train) or the t10k
// files (test); limit > 0 keeps the first `limit` images. Throws std::runtime_error naming the
// file on a missing, truncated or malformed file.
Dataset load_fashion_mnist(const std::string& dir, bool train, std::int64_t limit);

// The attention core of every layer.
//   torch: softmax(Q K^T / sqrt(d)) V in plain torch ops (the cross-check),
//   dense: the library's exact kernel through smyrf::torch::attention,
//   smyrf: SMYRF (asymmetric LSH, balanced clusters) through smyrf::torch::attention.
enum class AttentionKind { torch, dense, smyrf };
const char* attention_name(AttentionKind kind);

struct AttentionSettings {
  AttentionKind kind = AttentionKind::dense;
  int n_hashes = 2;  // SMYRF rounds
  int cluster = 32;  // SMYRF query and key cluster size
};
// "dense", "torch" or e.g. "smyrf (2 hashes x cluster 32)".
std::string describe(const AttentionSettings& settings);
// Whether the smyrf_torch glue was built in (dense and smyrf need it).
bool glue_available();

// Architecture: 2x2 patch embedding + learned position embedding, `depth` pre-LN blocks of
// multi-head attention and a GELU MLP, final LayerNorm, mean pooling, linear classifier.
struct ModelConfig {
  int dim = 64;
  int depth = 3;
  int heads = 4;
  int mlp = 128;
};

// AdamW with linear warmup and a cosine decay to 0, one learning-rate update per step.
struct TrainConfig {
  int epochs = 5;
  int batch = 64;
  double lr = 2e-3;
  double weight_decay = 0.05;
  double warmup = 0.05;  // fraction of all steps
  std::uint64_t seed = 1;
  int threads = 2;
  bool progress = true;  // progress bar on stderr
};

struct EpochStats {
  int epoch = 0;
  double loss = 0;            // mean training loss over the epoch
  double train_accuracy = 0;  // accuracy of the training batches, before each step
  double seconds = 0;
};

struct TrainResult {
  std::vector<EpochStats> epochs;
  std::int64_t steps = 0;
  double seconds = 0;
  double images_per_second = 0;
  std::int64_t parameters = 0;
};

// Trains a fresh model (seeded with config.seed) on `data` with the given attention and saves
// it (weights and ModelConfig) to out_path.
TrainResult train(const ModelConfig& model, const AttentionSettings& attention,
                  const TrainConfig& config, const Dataset& data, const std::string& out_path);

struct EvalResult {
  double accuracy = 0;
  double loss = 0;  // mean cross-entropy
  std::int64_t images = 0;
  double seconds = 0;
};

// Loads a model saved by train() and evaluates it on `data` with any attention. SMYRF draws
// new hash functions for every batch of 100 images, from `seed` and the batch index (so the
// result is reproducible and averages over 100 draws on the full test set).
EvalResult evaluate(const std::string& model_path, const AttentionSettings& attention,
                    const Dataset& data, int threads, std::uint64_t seed);

// The smoke test (ctest): a few dozen training steps on a few hundred images for each
// attention path built in, the dense-glue vs torch cross-check of logits and gradients, and
// save/reload. Prints every check; returns the number of failed checks.
int smoke(const Dataset& train_data, const AttentionSettings& smyrf_settings, int threads);

}  // namespace vit
