// The Vision Transformer, its training loop, evaluation and the smoke test: everything of the
// experiment that touches LibTorch (one translation unit: Torch headers compile slowly).
//
// Code is in namespace vit, not smyrf::vit: inside namespace smyrf, `torch::` would name the
// glue's namespace smyrf::torch. Torch itself is always spelled ::torch here.
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#if SMYRF_VIT_HAVE_GLUE
#include "smyrf/torch.h"
#endif
#include "vit.h"

namespace vit {

const char* attention_name(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::torch: return "torch";
    case AttentionKind::dense: return "dense";
    case AttentionKind::smyrf: return "smyrf";
  }
  return "?";
}

std::string describe(const AttentionSettings& settings) {
  if (settings.kind != AttentionKind::smyrf) return attention_name(settings.kind);
  return "smyrf (" + std::to_string(settings.n_hashes) + " hashes x cluster " +
         std::to_string(settings.cluster) + ")";
}

bool glue_available() { return SMYRF_VIT_HAVE_GLUE != 0; }

namespace {

using ::torch::Tensor;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// What one forward pass asks of the attention cores: which core, training or not, the seed
// of SMYRF's hashes for this pass (each layer derives its own) and the thread count.
struct AttentionCall {
  AttentionSettings settings;
  bool training = false;
  std::uint64_t seed = 0;
  int threads = 2;
};

// A different, reproducible seed for every (seed, index) pair (index: a training step, an
// evaluation batch, a layer): SplitMix64 finaliser.
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// q [B,H,N,d], k [B,H,N,d], v [B,H,N,d] -> O [B,H,N,d].
Tensor attention_core(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionCall& call,
                      std::uint64_t seed) {
  if (call.settings.kind == AttentionKind::torch) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    return ::torch::matmul(::torch::softmax(::torch::matmul(q, k.transpose(-2, -1)) * scale, -1),
                           v);
  }
#if SMYRF_VIT_HAVE_GLUE
  smyrf::torch::Options options;
  if (call.settings.kind == AttentionKind::smyrf) {
    options.method = smyrf::SmyrfConfig{.n_hashes = call.settings.n_hashes,
                                        .q_cluster_size = call.settings.cluster,
                                        .k_cluster_size = call.settings.cluster};
  } else {
    options.method = smyrf::DenseConfig{};
  }
  options.training = call.training;
  options.seed = seed;
  options.num_threads = call.threads;
  return smyrf::torch::attention(q, k, v, options);  // copies the strided q, k, v itself
#else
  (void)seed;
  throw std::runtime_error(std::string("--attention ") + attention_name(call.settings.kind) +
                           ": this build has no smyrf_torch glue (torch/ was not built); only "
                           "--attention torch is available");
#endif
}

// Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x)).
struct BlockImpl : ::torch::nn::Module {
  BlockImpl(const ModelConfig& config, int layer_index)
      : heads(config.heads),
        layer(layer_index),
        ln1(register_module("ln1", ::torch::nn::LayerNorm(
                                       ::torch::nn::LayerNormOptions({config.dim})))),
        qkv(register_module("qkv", ::torch::nn::Linear(config.dim, 3 * config.dim))),
        proj(register_module("proj", ::torch::nn::Linear(config.dim, config.dim))),
        ln2(register_module("ln2", ::torch::nn::LayerNorm(
                                       ::torch::nn::LayerNormOptions({config.dim})))),
        fc1(register_module("fc1", ::torch::nn::Linear(config.dim, config.mlp))),
        fc2(register_module("fc2", ::torch::nn::Linear(config.mlp, config.dim))) {}

  Tensor forward(const Tensor& x, const AttentionCall& call) {
    const std::int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
    // [B, N, 3D] -> [3, B, H, N, D/H]
    const Tensor packed =
        qkv(ln1(x)).view({batch, tokens, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
    const Tensor o = attention_core(packed[0], packed[1], packed[2], call,
                                    mix_seed(call.seed, static_cast<std::uint64_t>(layer)));
    const Tensor h = x + proj(o.transpose(1, 2).reshape({batch, tokens, dim}));
    return h + fc2(::torch::gelu(fc1(ln2(h))));
  }

  int heads;
  int layer;
  ::torch::nn::LayerNorm ln1;
  ::torch::nn::Linear qkv, proj;
  ::torch::nn::LayerNorm ln2;
  ::torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Block);

struct VitImpl : ::torch::nn::Module {
  explicit VitImpl(const ModelConfig& model_config)
      : config(model_config),
        embed(register_module("embed", ::torch::nn::Linear(kPatch * kPatch, config.dim))),
        position(register_parameter("position",
                                    ::torch::randn({1, kTokens, config.dim}) * 0.02)),
        norm(register_module("norm", ::torch::nn::LayerNorm(
                                         ::torch::nn::LayerNormOptions({config.dim})))),
        head(register_module("head", ::torch::nn::Linear(config.dim, kClasses))) {
    for (int i = 0; i < config.depth; ++i) {
      blocks.push_back(register_module("block" + std::to_string(i), Block(config, i)));
    }
  }

  // images [B, 28, 28] (normalised) -> logits [B, 10].
  Tensor forward(const Tensor& images, const AttentionCall& call) {
    constexpr int side = kImageSide / kPatch;
    const std::int64_t batch = images.size(0);
    // [B, 14, 2, 14, 2] -> [B, 14, 14, 2, 2] -> [B, 196, 4]: one token per 2x2 patch.
    const Tensor patches = images.view({batch, side, kPatch, side, kPatch})
                               .permute({0, 1, 3, 2, 4})
                               .reshape({batch, kTokens, kPatch * kPatch});
    Tensor x = embed(patches) + position;
    for (Block& block : blocks) x = block->forward(x, call);
    return head(norm(x).mean(1));
  }

  ModelConfig config;
  ::torch::nn::Linear embed;
  Tensor position;
  std::vector<Block> blocks;
  ::torch::nn::LayerNorm norm;
  ::torch::nn::Linear head;
};
TORCH_MODULE(Vit);

// Pixels to a float tensor [n, 28, 28], normalised with the training-set mean and standard
// deviation of Fashion-MNIST (0.2860, 0.3530), and the labels to int64 [n].
struct Tensors {
  Tensor images;
  Tensor labels;
};
Tensors to_tensors(const Dataset& data) {
  std::vector<std::uint8_t> pixels = data.pixels;
  std::vector<std::uint8_t> labels = data.labels;
  Tensors t;
  t.images = ::torch::from_blob(pixels.data(), {data.n, kImageSide, kImageSide}, ::torch::kUInt8)
                 .to(::torch::kFloat32)
                 .div_(255.0)
                 .sub_(0.2860)
                 .div_(0.3530);
  t.labels = ::torch::from_blob(labels.data(), {data.n}, ::torch::kUInt8).to(::torch::kInt64);
  return t;
}

void save_model(Vit& model, const std::string& path) {
  ::torch::serialize::OutputArchive archive;
  model->save(archive);
  const ModelConfig& c = model->config;
  archive.write("vit_config", ::torch::tensor({std::int64_t{c.dim}, std::int64_t{c.depth},
                                               std::int64_t{c.heads}, std::int64_t{c.mlp}}));
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  try {
    archive.save_to(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot write model " + path + ": " + e.what_without_backtrace());
  }
}

Vit load_model(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw std::runtime_error("--model " + path + ": no such file");
  }
  ::torch::serialize::InputArchive archive;
  Tensor config_tensor;
  try {
    archive.load_from(path);
    archive.read("vit_config", config_tensor);
  } catch (const c10::Error& e) {
    throw std::runtime_error("--model " + path + ": not a model saved by smyrf-vit train (" +
                             e.what_without_backtrace() + ")");
  }
  if (config_tensor.numel() != 4) {
    throw std::runtime_error("--model " + path + ": malformed vit_config entry");
  }
  const auto c = config_tensor.to(::torch::kInt64);
  Vit model(ModelConfig{.dim = static_cast<int>(c[0].item<std::int64_t>()),
                        .depth = static_cast<int>(c[1].item<std::int64_t>()),
                        .heads = static_cast<int>(c[2].item<std::int64_t>()),
                        .mlp = static_cast<int>(c[3].item<std::int64_t>())});
  try {
    model->load(archive);
  } catch (const c10::Error& e) {
    throw std::runtime_error("--model " + path + ": " + e.what_without_backtrace());
  }
  return model;
}

std::string format_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
  return text;
}

// Progress bar on stderr. On a terminal it redraws one line (at most 4 times a second); in a
// log file it writes a line every 30 seconds and at the end, so the log stays readable.
class Progress {
 public:
  Progress(std::string label, std::int64_t total_steps, std::int64_t batch)
      : label_(std::move(label)),
        total_(total_steps),
        batch_(batch),
        tty_(isatty(STDERR_FILENO) != 0),
        start_(Clock::now()),
        last_(start_) {}

  void update(std::int64_t step, int epoch, int epochs, double loss) {
    const auto now = Clock::now();
    const bool done = step == total_;
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (!done && since_last < (tty_ ? 0.25 : 30.0)) return;
    last_ = now;
    const double elapsed = seconds_since(start_);
    const double per_step = elapsed / static_cast<double>(std::max<std::int64_t>(step, 1));
    constexpr int width = 24;
    const int filled = static_cast<int>(width * step / std::max<std::int64_t>(total_, 1));
    std::string bar(static_cast<std::size_t>(filled), '=');
    if (filled < width) bar += '>';
    bar.resize(width, ' ');
    std::fprintf(stderr, "%s%s [%s] epoch %d/%d step %lld/%lld loss %.4f %.0f img/s %s %s%s",
                 tty_ ? "\r" : "", label_.c_str(), bar.c_str(), epoch, epochs,
                 static_cast<long long>(step), static_cast<long long>(total_), loss,
                 static_cast<double>(step * batch_) / std::max(elapsed, 1e-9),
                 done ? "elapsed" : "ETA",
                 format_duration(done ? elapsed : per_step * static_cast<double>(total_ - step))
                     .c_str(),
                 tty_ && !done ? "\x1b[K" : "\n");
    std::fflush(stderr);
  }

 private:
  std::string label_;
  std::int64_t total_;
  std::int64_t batch_;
  bool tty_;
  Clock::time_point start_;
  Clock::time_point last_;
};

// Mean loss, accuracy and logits of `model` on all of `data`, in batches, without gradients.
// SMYRF's projection directions depend only on (seed, head, round), so all images of one call
// share them: every batch gets its own seed, derived from call.seed and the batch index, so
// that the accuracy averages over many draws of the hash functions instead of resting on one.
struct Scores {
  double loss = 0;
  double accuracy = 0;
  Tensor logits;
};
Scores score(Vit& model, const Tensors& data, const AttentionCall& call) {
  constexpr std::int64_t kEvalBatch = 100;
  ::torch::NoGradGuard no_grad;
  model->eval();
  std::vector<Tensor> logits;
  const std::int64_t n = data.images.size(0);
  for (std::int64_t begin = 0; begin < n; begin += kEvalBatch) {
    const std::int64_t end = std::min(n, begin + kEvalBatch);
    AttentionCall batch_call = call;
    batch_call.seed = mix_seed(call.seed, static_cast<std::uint64_t>(begin / kEvalBatch));
    logits.push_back(model->forward(data.images.slice(0, begin, end), batch_call));
  }
  Scores s;
  s.logits = ::torch::cat(logits);
  s.loss = ::torch::nn::functional::cross_entropy(s.logits, data.labels).item<double>();
  s.accuracy = s.logits.argmax(1).eq(data.labels).to(::torch::kFloat64).mean().item<double>();
  return s;
}

// The training loop shared by train() and the smoke test. Shuffles with its own seeded
// generator; SMYRF gets fresh hashes every step (seed derived from the step).
TrainResult fit(Vit& model, const AttentionSettings& attention, const TrainConfig& config,
                const Tensors& data) {
  const std::int64_t n = data.images.size(0);
  if (n < config.batch) {
    throw std::runtime_error("--train-limit: " + std::to_string(n) +
                             " training images are fewer than one batch of " +
                             std::to_string(config.batch));
  }
  const std::int64_t steps_per_epoch = n / config.batch;  // the last partial batch is dropped
  const std::int64_t total_steps = steps_per_epoch * config.epochs;
  const std::int64_t warmup_steps =
      std::max<std::int64_t>(1, std::llround(config.warmup * static_cast<double>(total_steps)));

  ::torch::optim::AdamW optimizer(
      model->parameters(),
      ::torch::optim::AdamWOptions(config.lr).weight_decay(config.weight_decay));
  std::mt19937_64 shuffle_rng(config.seed);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});

  TrainResult result;
  for (const auto& p : model->parameters()) result.parameters += p.numel();
  Progress progress(describe(attention), total_steps, config.batch);
  const auto start = Clock::now();
  std::int64_t step = 0;
  model->train();
  for (int epoch = 1; epoch <= config.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    std::shuffle(order.begin(), order.end(), shuffle_rng);
    const Tensor epoch_order = ::torch::tensor(order);
    double loss_sum = 0;
    std::int64_t correct = 0;
    for (std::int64_t b = 0; b < steps_per_epoch; ++b) {
      // Learning rate: linear warmup, then cosine decay to 0 at the last step.
      const double lr =
          step < warmup_steps
              ? config.lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps)
              : 0.5 * config.lr *
                    (1 + std::cos(M_PI * static_cast<double>(step - warmup_steps) /
                                  static_cast<double>(total_steps - warmup_steps)));
      for (auto& group : optimizer.param_groups()) {
        static_cast<::torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      const Tensor index = epoch_order.slice(0, b * config.batch, (b + 1) * config.batch);
      const Tensor images = data.images.index_select(0, index);
      const Tensor labels = data.labels.index_select(0, index);
      const AttentionCall call{.settings = attention,
                               .training = true,
                               .seed = mix_seed(config.seed, static_cast<std::uint64_t>(step)),
                               .threads = config.threads};
      optimizer.zero_grad();
      const Tensor logits = model->forward(images, call);
      const Tensor loss = ::torch::nn::functional::cross_entropy(logits, labels);
      loss.backward();
      optimizer.step();
      ++step;
      const double loss_value = loss.item<double>();
      loss_sum += loss_value;
      correct += logits.argmax(1).eq(labels).sum().item<std::int64_t>();
      if (config.progress) progress.update(step, epoch, config.epochs, loss_value);
    }
    result.epochs.push_back(EpochStats{
        .epoch = epoch,
        .loss = loss_sum / static_cast<double>(steps_per_epoch),
        .train_accuracy = static_cast<double>(correct) /
                          static_cast<double>(steps_per_epoch * config.batch),
        .seconds = seconds_since(epoch_start)});
  }
  result.steps = total_steps;
  result.seconds = seconds_since(start);
  result.images_per_second =
      static_cast<double>(total_steps * config.batch) / std::max(result.seconds, 1e-9);
  return result;
}

}  // namespace

TrainResult train(const ModelConfig& model_config, const AttentionSettings& attention,
                  const TrainConfig& config, const Dataset& data, const std::string& out_path) {
  ::torch::set_num_threads(config.threads);
  ::torch::manual_seed(config.seed);
  Vit model(model_config);
  const TrainResult result = fit(model, attention, config, to_tensors(data));
  save_model(model, out_path);
  return result;
}

EvalResult evaluate(const std::string& model_path, const AttentionSettings& attention,
                    const Dataset& data, int threads, std::uint64_t seed) {
  ::torch::set_num_threads(threads);
  Vit model = load_model(model_path);
  const auto start = Clock::now();
  const Scores s = score(model, to_tensors(data),
                         AttentionCall{.settings = attention, .seed = seed, .threads = threads});
  return EvalResult{
      .accuracy = s.accuracy, .loss = s.loss, .images = data.n, .seconds = seconds_since(start)};
}

int smoke(const Dataset& train_data, const AttentionSettings& smyrf_settings, int threads) {
  ::torch::set_num_threads(threads);
  const ModelConfig small{.dim = 32, .depth = 2, .heads = 2, .mlp = 64};
  const TrainConfig config{.epochs = 6, .batch = 32, .lr = 5e-3, .warmup = 0.1, .seed = 7,
                           .threads = threads, .progress = false};
  const Tensors data = to_tensors(train_data);
  int failures = 0;
  const auto check = [&](bool ok, const std::string& what) {
    std::printf("[%s] %s\n", ok ? " ok " : "FAIL", what.c_str());
    std::fflush(stdout);
    if (!ok) ++failures;
  };
  const auto max_abs_diff = [](const Tensor& a, const Tensor& b) {
    return (a - b).abs().max().item<double>();
  };
  char text[256];

  std::vector<AttentionSettings> paths{AttentionSettings{.kind = AttentionKind::torch}};
  if (glue_available()) {
    paths.push_back(AttentionSettings{.kind = AttentionKind::dense});
    paths.push_back(smyrf_settings);
  } else {
    std::printf("[skip] dense and smyrf paths: this build has no smyrf_torch glue\n");
  }

  // 1. Each path learns: loss on the training images after a few dozen steps well below the
  //    initial one (about ln 10 = 2.30 for an untrained classifier).
  // 2. A saved model reloads to the same logits, bit for bit.
  for (const AttentionSettings& attention : paths) {
    ::torch::manual_seed(config.seed);
    Vit model(small);
    const AttentionCall call{.settings = attention, .seed = 11, .threads = threads};
    const Scores before = score(model, data, call);
    const TrainResult trained = fit(model, attention, config, data);
    const Scores after = score(model, data, call);
    std::snprintf(text, sizeof text,
                  "%s learns: loss %.4f -> %.4f after %lld steps (%.1f s), must be < 0.85 x initial",
                  describe(attention).c_str(), before.loss, after.loss,
                  static_cast<long long>(trained.steps), trained.seconds);
    check(after.loss < 0.85 * before.loss, text);

    const std::string path = (std::filesystem::temp_directory_path() /
                              ("smyrf-vit-smoke-" + std::to_string(getpid()) + ".pt"))
                                 .string();
    save_model(model, path);
    Vit reloaded = load_model(path);
    std::filesystem::remove(path);
    const Scores again = score(reloaded, data, call);
    check(::torch::equal(after.logits, again.logits),
          describe(attention) + ": saved model reloads to identical logits");
  }

  if (glue_available()) {
    // 3. On the same weights and images, the dense glue and plain torch ops agree: logits and
    //    the gradients of every parameter.
    ::torch::manual_seed(config.seed);
    Vit model(small);
    const Tensor images = data.images.slice(0, 0, 32);
    const Tensor labels = data.labels.slice(0, 0, 32);
    const auto logits_and_grads = [&](AttentionKind kind) {
      model->zero_grad();
      const Tensor logits =
          model->forward(images, AttentionCall{.settings = {.kind = kind}, .threads = threads});
      ::torch::nn::functional::cross_entropy(logits, labels).backward();
      std::vector<Tensor> grads{logits.detach()};
      for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
      return grads;
    };
    const std::vector<Tensor> reference = logits_and_grads(AttentionKind::torch);
    const std::vector<Tensor> glue = logits_and_grads(AttentionKind::dense);
    const double logit_diff = max_abs_diff(reference[0], glue[0]);
    double grad_rel = 0;
    for (std::size_t i = 1; i < reference.size(); ++i) {
      const double scale = std::max(reference[i].abs().max().item<double>(), 1e-6);
      grad_rel = std::max(grad_rel, max_abs_diff(reference[i], glue[i]) / scale);
    }
    std::snprintf(text, sizeof text, "dense glue vs torch ops: max |logit diff| %.2e (< 1e-4)",
                  logit_diff);
    check(logit_diff < 1e-4, text);
    std::snprintf(text, sizeof text,
                  "dense glue vs torch ops: max relative parameter-gradient diff %.2e (< 1e-3)",
                  grad_rel);
    check(grad_rel < 1e-3, text);

    // 4. SMYRF with clusters as long as the sequence is exactly dense attention.
    ::torch::NoGradGuard no_grad;
    const Tensor dense_logits = model->forward(
        images, AttentionCall{.settings = {.kind = AttentionKind::dense}, .threads = threads});
    const Tensor full_smyrf_logits = model->forward(
        images, AttentionCall{.settings = {.kind = AttentionKind::smyrf,
                                           .n_hashes = 1,
                                           .cluster = kTokens},
                              .threads = threads});
    std::snprintf(text, sizeof text,
                  "smyrf with cluster = %d tokens vs dense: max |logit diff| %.2e (< 1e-6)",
                  kTokens, max_abs_diff(dense_logits, full_smyrf_logits));
    check(max_abs_diff(dense_logits, full_smyrf_logits) < 1e-6, text);
  }
  std::printf("%d check(s) failed\n", failures);
  return failures;
}

}  // namespace vit
