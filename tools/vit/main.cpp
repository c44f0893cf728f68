// smyrf-vit: the interchangeability experiment of the SMYRF paper on a small Vision
// Transformer (Fashion-MNIST, 2x2 patches = 196 tokens): train with one attention, evaluate
// with another.
//   smyrf-vit train        train one model with --attention torch|dense|smyrf, save it
//   smyrf-vit evaluate     evaluate a saved model with any attention
//   smyrf-vit interchange  train a dense and a SMYRF model, evaluate each with both: the
//                          2 x 2 table (JSON and markdown)
//   smyrf-vit smoke        the quick self-check registered with ctest
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vit.h"

namespace {

// Exit code of `smoke` when the data set is missing: ctest reports the test as skipped.
constexpr int kSkipped = 77;
constexpr const char* kDefaultData = "/usr/share/datasets/fashion-mnist";

struct Common {
  std::string data_dir = kDefaultData;
  std::int64_t test_limit = 0;
  int threads = 2;
};

void add_common(CLI::App* cmd, Common& common) {
  cmd->add_option("--data", common.data_dir, "Folder of the Fashion-MNIST IDX .gz files")
      ->capture_default_str();
  cmd->add_option("--test-limit", common.test_limit,
                  "Evaluate on the first N test images (0 = all 10,000)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--threads", common.threads, "Threads for Torch and the attention kernels")
      ->check(CLI::Range(1, 1024))->capture_default_str();
}

void add_smyrf_options(CLI::App* cmd, vit::AttentionSettings& attention) {
  cmd->add_option("--hashes", attention.n_hashes, "SMYRF: hashing rounds")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_option("--cluster", attention.cluster, "SMYRF: query and key cluster size")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
}

void add_attention_option(CLI::App* cmd, vit::AttentionSettings& attention) {
  cmd->add_option_function<std::string>(
         "--attention",
         [&attention](const std::string& name) {
           attention.kind = name == "torch"   ? vit::AttentionKind::torch
                            : name == "dense" ? vit::AttentionKind::dense
                                              : vit::AttentionKind::smyrf;
         },
         "Attention core: torch (plain torch ops: the cross-check), dense (the library's exact "
         "kernel), smyrf (SMYRF: --hashes, --cluster)")
      ->check(CLI::IsMember({"torch", "dense", "smyrf"}))
      ->default_str(vit::attention_name(attention.kind));
  add_smyrf_options(cmd, attention);
}

void add_model_options(CLI::App* cmd, vit::ModelConfig& model) {
  cmd->add_option("--dim", model.dim, "Embedding width")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--depth", model.depth, "Transformer blocks")
      ->check(CLI::Range(1, 64))->capture_default_str();
  cmd->add_option("--heads", model.heads, "Attention heads (must divide --dim)")
      ->check(CLI::Range(1, 256))->capture_default_str();
  cmd->add_option("--mlp", model.mlp, "Hidden width of each block's MLP")
      ->check(CLI::Range(1, 16384))->capture_default_str();
}

void add_train_options(CLI::App* cmd, vit::TrainConfig& config, std::int64_t& train_limit) {
  cmd->add_option("--epochs", config.epochs, "Passes over the training images")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_option("--train-limit", train_limit,
                  "Train on the first N training images (0 = all 60,000)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--batch", config.batch, "Training batch size")
      ->check(CLI::Range(1, 65536))->capture_default_str();
  cmd->add_option("--lr", config.lr, "Peak AdamW learning rate (linear warmup, cosine decay)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--weight-decay", config.weight_decay, "AdamW weight decay")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--seed", config.seed, "Seed of the weights, the shuffle and SMYRF's hashes")
      ->capture_default_str();
}

// Throws CLI::ValidationError naming --heads if it does not divide --dim.
void check_model(const vit::ModelConfig& model) {
  if (model.dim % model.heads != 0) {
    throw CLI::ValidationError("--heads", std::to_string(model.heads) +
                                              " does not divide --dim " +
                                              std::to_string(model.dim));
  }
}

void require_glue(const vit::AttentionSettings& attention, const char* option) {
  if (attention.kind != vit::AttentionKind::torch && !vit::glue_available()) {
    throw CLI::ValidationError(option, std::string(vit::attention_name(attention.kind)) +
                                           " needs the smyrf_torch glue, which this build lacks "
                                           "(only torch is available)");
  }
}

std::string percent(double fraction) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f%%", 100.0 * fraction);
  return text;
}

nlohmann::json to_json(const vit::TrainResult& r) {
  nlohmann::json epochs = nlohmann::json::array();
  for (const vit::EpochStats& e : r.epochs) {
    epochs.push_back({{"epoch", e.epoch},
                      {"loss", e.loss},
                      {"train_accuracy", e.train_accuracy},
                      {"seconds", e.seconds}});
  }
  return {{"steps", r.steps},           {"seconds", r.seconds},
          {"minutes", r.seconds / 60},  {"images_per_second", r.images_per_second},
          {"parameters", r.parameters}, {"epochs", epochs}};
}

void print_train(const vit::TrainResult& r) {
  for (const vit::EpochStats& e : r.epochs) {
    std::printf("epoch %d: loss %.4f, train accuracy %s, %.1f s\n", e.epoch, e.loss,
                percent(e.train_accuracy).c_str(), e.seconds);
  }
  std::printf("trained %lld steps in %.1f min (%.0f images/s), %lld parameters\n",
              static_cast<long long>(r.steps), r.seconds / 60, r.images_per_second,
              static_cast<long long>(r.parameters));
}

std::string join_command(int argc, char** argv) {
  std::string command;
  for (int i = 0; i < argc; ++i) {
    if (i > 0) command += ' ';
    command += argv[i];
  }
  return command;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"smyrf-vit: train a small ViT on Fashion-MNIST with one attention, evaluate with "
               "another (the interchangeability experiment of the SMYRF paper)"};
  app.require_subcommand(1);

  // ---- train ----
  Common train_common;
  vit::AttentionSettings train_attention;
  vit::ModelConfig train_model;
  vit::TrainConfig train_config;
  std::int64_t train_limit = 18000;
  std::string train_out = "model.pt";
  CLI::App* train_cmd = app.add_subcommand("train", "Train one model and save it");
  add_common(train_cmd, train_common);
  add_attention_option(train_cmd, train_attention);
  add_model_options(train_cmd, train_model);
  add_train_options(train_cmd, train_config, train_limit);
  train_cmd->add_option("--out", train_out, "Where to save the model")->capture_default_str();

  // ---- evaluate ----
  Common eval_common;
  vit::AttentionSettings eval_attention;
  std::string eval_model;
  std::uint64_t eval_seed = 1;
  CLI::App* eval_cmd =
      app.add_subcommand("evaluate", "Evaluate a saved model on the test images with any attention");
  add_common(eval_cmd, eval_common);
  add_attention_option(eval_cmd, eval_attention);
  eval_cmd->add_option("--model", eval_model, "Model saved by `smyrf-vit train`")->required();
  eval_cmd->add_option("--seed", eval_seed, "Seed of SMYRF's hashes")->capture_default_str();

  // ---- interchange ----
  Common ix_common;
  vit::AttentionSettings ix_smyrf{.kind = vit::AttentionKind::smyrf};
  vit::ModelConfig ix_model;
  vit::TrainConfig ix_config;
  std::int64_t ix_limit = 18000;
  std::string ix_out_dir = "vit-results";
  std::string ix_model_dir;
  int ix_eval_seeds = 3;
  CLI::App* ix_cmd = app.add_subcommand(
      "interchange", "Train a dense and a SMYRF model, evaluate each with both attentions");
  add_common(ix_cmd, ix_common);
  add_smyrf_options(ix_cmd, ix_smyrf);
  add_model_options(ix_cmd, ix_model);
  add_train_options(ix_cmd, ix_config, ix_limit);
  ix_cmd->add_option("--eval-seeds", ix_eval_seeds,
                     "Evaluate with SMYRF this many times (hash seeds --seed, --seed + 1, ...)")
      ->check(CLI::Range(1, 100))->capture_default_str();
  ix_cmd->add_option("--out-dir", ix_out_dir,
                     "Folder for interchange.json and interchange.md")->capture_default_str();
  ix_cmd->add_option("--model-dir", ix_model_dir,
                     "Folder for the two trained models (default: --out-dir)");

  // ---- smoke ----
  Common smoke_common;
  vit::AttentionSettings smoke_smyrf{.kind = vit::AttentionKind::smyrf};
  std::int64_t smoke_images = 256;
  CLI::App* smoke_cmd = app.add_subcommand(
      "smoke", "Quick self-check (ctest): training steps per attention path, dense glue vs "
               "torch ops, save/reload; exit 77 if the data set is missing");
  smoke_cmd->add_option("--data", smoke_common.data_dir, "Folder of the Fashion-MNIST files")
      ->capture_default_str();
  smoke_cmd->add_option("--threads", smoke_common.threads, "Threads")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  smoke_cmd->add_option("--images", smoke_images, "Training images")
      ->check(CLI::Range(32, 60000))->capture_default_str();
  add_smyrf_options(smoke_cmd, smoke_smyrf);

  try {
    app.parse(argc, argv);
    if (train_cmd->parsed()) {
      check_model(train_model);
      require_glue(train_attention, "--attention");
      const vit::Dataset train_data =
          vit::load_fashion_mnist(train_common.data_dir, true, train_limit);
      const vit::Dataset test_data =
          vit::load_fashion_mnist(train_common.data_dir, false, train_common.test_limit);
      train_config.threads = train_common.threads;
      std::printf("training with %s on %lld images, %d epochs\n",
                  vit::describe(train_attention).c_str(), static_cast<long long>(train_data.n),
                  train_config.epochs);
      print_train(vit::train(train_model, train_attention, train_config, train_data, train_out));
      const vit::EvalResult r = vit::evaluate(train_out, train_attention, test_data,
                                              train_common.threads, train_config.seed);
      std::printf("saved %s; test accuracy (%s) %s on %lld images (loss %.4f)\n",
                  train_out.c_str(), vit::describe(train_attention).c_str(),
                  percent(r.accuracy).c_str(), static_cast<long long>(r.images), r.loss);
    } else if (eval_cmd->parsed()) {
      require_glue(eval_attention, "--attention");
      const vit::Dataset test_data =
          vit::load_fashion_mnist(eval_common.data_dir, false, eval_common.test_limit);
      const vit::EvalResult r =
          vit::evaluate(eval_model, eval_attention, test_data, eval_common.threads, eval_seed);
      std::printf("%s evaluated with %s: test accuracy %s on %lld images (loss %.4f, %.1f s)\n",
                  eval_model.c_str(), vit::describe(eval_attention).c_str(),
                  percent(r.accuracy).c_str(), static_cast<long long>(r.images), r.loss,
                  r.seconds);
    } else if (ix_cmd->parsed()) {
      check_model(ix_model);
      require_glue(ix_smyrf, "interchange");
      const vit::Dataset train_data = vit::load_fashion_mnist(ix_common.data_dir, true, ix_limit);
      const vit::Dataset test_data =
          vit::load_fashion_mnist(ix_common.data_dir, false, ix_common.test_limit);
      ix_config.threads = ix_common.threads;
      const std::filesystem::path out_dir = ix_out_dir;
      const std::filesystem::path model_dir = ix_model_dir.empty() ? out_dir : std::filesystem::path(ix_model_dir);
      std::filesystem::create_directories(out_dir);
      std::filesystem::create_directories(model_dir);

      const std::vector<vit::AttentionSettings> methods{{.kind = vit::AttentionKind::dense},
                                                        ix_smyrf};
      // Attention memory of SMYRF relative to dense: n_hashes rounds of clusters of at most
      // `cluster` keys (balanced: ceil(N / cluster) clusters of N / that many tokens).
      const int clusters = (vit::kTokens + ix_smyrf.cluster - 1) / ix_smyrf.cluster;
      const double balanced = static_cast<double>(vit::kTokens) / clusters;
      const double memory_fraction = ix_smyrf.n_hashes * balanced / vit::kTokens;

      nlohmann::json json{
          {"command", join_command(argc, argv)},
          {"started_utc", utc_now()},
          // OpenMP threads that spin while waiting slow everything down on a shared machine.
          {"omp_wait_policy", std::getenv("OMP_WAIT_POLICY") != nullptr
                                  ? std::getenv("OMP_WAIT_POLICY")
                                  : "(unset)"},
          {"data", {{"train_images", train_data.n}, {"test_images", test_data.n}}},
          {"tokens", vit::kTokens},
          {"model",
           {{"dim", ix_model.dim},
            {"depth", ix_model.depth},
            {"heads", ix_model.heads},
            {"mlp", ix_model.mlp}}},
          {"training",
           {{"epochs", ix_config.epochs},
            {"batch", ix_config.batch},
            {"lr", ix_config.lr},
            {"weight_decay", ix_config.weight_decay},
            {"seed", ix_config.seed},
            {"threads", ix_config.threads}}},
          {"smyrf",
           {{"n_hashes", ix_smyrf.n_hashes},
            {"cluster", ix_smyrf.cluster},
            {"clusters_per_round", clusters},
            {"attention_memory_fraction", memory_fraction}}}};

      // Accuracy cells of the table: dense is deterministic (one evaluation); SMYRF draws its
      // hashes from a seed, so it is evaluated with `eval_seeds` seeds: mean, min and max.
      struct Cell {
        double mean = 0, min = 1, max = 0;
        int runs = 0;
      };
      std::vector<std::vector<Cell>> table(2, std::vector<Cell>(2));
      for (std::size_t t = 0; t < methods.size(); ++t) {
        const std::string name = vit::attention_name(methods[t].kind);
        const std::string path = (model_dir / ("model_" + name + ".pt")).string();
        std::printf("== training with %s on %lld images, %d epochs\n",
                    vit::describe(methods[t]).c_str(), static_cast<long long>(train_data.n),
                    ix_config.epochs);
        std::fflush(stdout);
        const vit::TrainResult trained =
            vit::train(ix_model, methods[t], ix_config, train_data, path);
        print_train(trained);
        json["trained"][name] = to_json(trained);
        json["trained"][name]["model"] = path;
        for (std::size_t e = 0; e < methods.size(); ++e) {
          const std::string eval_name = vit::attention_name(methods[e].kind);
          const int runs = methods[e].kind == vit::AttentionKind::smyrf ? ix_eval_seeds : 1;
          Cell& cell = table[t][e];
          nlohmann::json evaluations = nlohmann::json::array();
          for (int run = 0; run < runs; ++run) {
            const std::uint64_t seed = ix_config.seed + static_cast<std::uint64_t>(run);
            const vit::EvalResult r =
                vit::evaluate(path, methods[e], test_data, ix_common.threads, seed);
            cell.mean += r.accuracy / runs;
            cell.min = std::min(cell.min, r.accuracy);
            cell.max = std::max(cell.max, r.accuracy);
            evaluations.push_back(
                {{"seed", seed}, {"accuracy", r.accuracy}, {"loss", r.loss}, {"seconds", r.seconds}});
            std::printf("trained %s, evaluated %s (seed %llu): test accuracy %s (loss %.4f, %.1f s)\n",
                        name.c_str(), vit::describe(methods[e]).c_str(),
                        static_cast<unsigned long long>(seed), percent(r.accuracy).c_str(), r.loss,
                        r.seconds);
            std::fflush(stdout);
          }
          cell.runs = runs;
          json["evaluated"][name][eval_name] = {{"accuracy", cell.mean},
                                                {"min_accuracy", cell.min},
                                                {"max_accuracy", cell.max},
                                                {"runs", evaluations}};
        }
      }
      json["finished_utc"] = utc_now();

      char header[512];
      std::snprintf(
          header, sizeof header,
          "Fashion-MNIST test accuracy (%lld test images) of a ViT (%d blocks, width %d, %d "
          "heads, %d tokens) trained %d epochs on %lld images.\nSMYRF: %d hashes x clusters "
          "of %d (%d balanced clusters of ~%.0f tokens per round): attention memory %.0f%% of "
          "dense.\n\n",
          static_cast<long long>(test_data.n), ix_model.depth, ix_model.dim, ix_model.heads,
          vit::kTokens, ix_config.epochs, static_cast<long long>(train_data.n),
          ix_smyrf.n_hashes, ix_smyrf.cluster, clusters, balanced, 100 * memory_fraction);
      std::string markdown = header;
      markdown += "| trained with \\ evaluated with | dense | " + vit::describe(ix_smyrf) +
                  " |\n|---|---|---|\n";
      for (std::size_t t = 0; t < methods.size(); ++t) {
        const double minutes =
            json["trained"][vit::attention_name(methods[t].kind)]["minutes"].get<double>();
        char row[256];
        std::snprintf(row, sizeof row, "| %s (trained in %.1f min) |",
                      vit::describe(methods[t]).c_str(), minutes);
        markdown += row;
        for (const Cell& cell : table[t]) {
          markdown += " " + percent(cell.mean);
          if (cell.runs > 1) {
            markdown += " (" + percent(cell.min) + " to " + percent(cell.max) + ", " +
                        std::to_string(cell.runs) + " hash seeds)";
          }
          markdown += " |";
        }
        markdown += "\n";
      }
      markdown += "\nCommand: `" + join_command(argc, argv) + "`\n";
      write_file(out_dir / "interchange.json", json.dump(2) + "\n");
      write_file(out_dir / "interchange.md", markdown);
      std::printf("\n%s\nwrote %s and %s\n", markdown.c_str(),
                  (out_dir / "interchange.json").c_str(), (out_dir / "interchange.md").c_str());
    } else if (smoke_cmd->parsed()) {
      if (!std::filesystem::exists(smoke_common.data_dir + "/train-images-idx3-ubyte.gz")) {
        std::fprintf(stderr, "smyrf-vit smoke: skipped, no Fashion-MNIST in --data %s\n",
                     smoke_common.data_dir.c_str());
        return kSkipped;
      }
      const vit::Dataset data =
          vit::load_fashion_mnist(smoke_common.data_dir, true, smoke_images);
      return vit::smoke(data, smoke_smyrf, smoke_common.threads) == 0 ? 0 : 1;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smyrf-vit: %s\n", e.what());
    return 1;
  }
  return 0;
}
