// The smyrf command-line tool.
//   smyrf eval    a real pretrained model with its attention swapped, on real text
//   smyrf layers  per-layer attention error of the variants on the model's real activations
//   smyrf bench   sweep sizes and methods: time, memory, error against the exact result
//   smyrf run     one method on one generated problem (RunInfo, error): for profiling
//   smyrf perf    the performance targets, each as a ratio measured in one run
//   smyrf peak    the machine's measured fp32 FMA peak
//   smyrf methods every method form and its capabilities (--json for a list of objects)
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <new>
#include <string>

#include "bench.h"
#if SMYRF_HAVE_MODELS
#include "embed.h"
#include "eval.h"
#include "layers.h"
#endif
#include "methods_table.h"
#include "peak.h"
#include "perf.h"
#include "run.h"
#include "smyrf/smyrf.h"

namespace {
// CLI11's PositiveNumber reports the whole double range on failure; say it plainly.
const CLI::Validator kPositive(
    [](std::string& value) -> std::string {
      try {
        if (std::stod(value) > 0) return "";
      } catch (const std::exception&) {
      }
      return "must be a positive number, got '" + value + "'";
    },
    "POSITIVE");
const CLI::Validator kNonNegative(
    [](std::string& value) -> std::string {
      try {
        if (std::stod(value) >= 0) return "";
      } catch (const std::exception&) {
      }
      return "must be a number >= 0, got '" + value + "'";
    },
    "NON-NEGATIVE");
// Options stored as float: a value beyond the float range would become an infinity.
const CLI::Validator kFitsFloat(
    [](std::string& value) -> std::string {
      try {
        if (std::abs(std::stod(value)) <= std::numeric_limits<float>::max()) return "";
      } catch (const std::exception&) {
      }
      return "must be a number within the float32 range, got '" + value + "'";
    },
    "FLOAT");
// OpenMP thread counts: far more threads than any machine has exhaust the process's resources
// (the runtime then crashes instead of failing), so there is a generous ceiling.
constexpr int kMaxThreads = 1024;
const CLI::Validator kThreads(
    [](std::string& value) -> std::string {
      try {
        std::size_t used = 0;
        const long long t = std::stoll(value, &used);
        if (used == value.size() && t >= 0 && t <= kMaxThreads) return "";
      } catch (const std::exception&) {
      }
      return "must be an integer in [0, " + std::to_string(kMaxThreads) + "] (0: all), got '" + value + "'";
    },
    "THREADS");
// A share strictly between 0 and 1 (a training split).
const CLI::Validator kOpenFraction(
    [](std::string& value) -> std::string {
      try {
        const double v = std::stod(value);
        if (v > 0 && v < 1) return "";
      } catch (const std::exception&) {
      }
      return "must be a number in (0, 1), got '" + value + "'";
    },
    "(0, 1)");
// A share of at most all of them (a fraction of the keys).
const CLI::Validator kFraction(
    [](std::string& value) -> std::string {
      try {
        const double v = std::stod(value);
        if (v > 0 && v <= 1) return "";
      } catch (const std::exception&) {
      }
      return "must be a number in (0, 1], got '" + value + "'";
    },
    "(0, 1]");

// The options of the generated inputs, shared by `bench` and `run`. The construction is
// documented in inputs.h.
void add_clustered_options(CLI::App* cmd, smyrf::cli::InputSpec& spec) {
  CLI::Option* per_center =
      cmd->add_option("--keys-per-center", spec.keys_per_center,
                      "clustered: number of centres M = Nk / this (so the keys per centre stay "
                      "the same at every N)")
          ->check(kPositive)->capture_default_str();
  cmd->add_option("--centers", spec.centers, "clustered: exactly this many centres M at every N")
      ->check(kPositive)->excludes(per_center);
  cmd->add_option("--center-norm", spec.center_norm,
                  "clustered: centre c_m ~ N(0, I) * center-norm / sqrt(d), so |c_m| ~ center-norm")
      ->check(kPositive)->check(kFitsFloat)->capture_default_str();
  cmd->add_option("--noise", spec.noise,
                  "clustered: every query and key = a uniformly drawn centre + noise * N(0, I)")
      ->check(kNonNegative)->check(kFitsFloat)->capture_default_str();
  cmd->add_option("--temperature", spec.temperature,
                  "clustered: softmax scale = 1 / (sqrt(d) * temperature)")
      ->check(kPositive)->check(kFitsFloat)->capture_default_str();
}

// The model and text options shared by `eval` and `layers`.
[[maybe_unused]] void add_model_options(CLI::App* cmd, std::string& model, std::string& corpus,
                                        std::string& mail_text) {
  cmd->add_option("--model", model, "Folder of model.json, its shards and vocab.json")->capture_default_str();
  cmd->add_option("--corpus", corpus,
                  "SpamAssassin data folder, a folder of .txt files, or a JSONL file with a 'text' "
                  "and an optional 'label' field")->capture_default_str();
  cmd->add_option("--mail-text", mail_text,
                  "SpamAssassin mails: subject-body (the Subject value and the body, what a person "
                  "reads) or raw (the whole message, headers included)")->capture_default_str();
}

const char* const kInputsHelp =
    "gaussian: Q, K, V iid N(0,1) (nearly uniform attention, the worst case for clustering); "
    "clustered: Q and K drawn from a mixture of Gaussians around M shared centres, V iid N(0,1) "
    "(a query's largest logits are the keys of its own centre: peaked attention, as in trained "
    "models)";
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"smyrf: efficient attention (SMYRF and friends) — benchmarks and tools"};
  app.set_version_flag("--version", std::string("smyrf ") + SMYRF_VERSION_STRING);
  app.require_subcommand(1);
  // One line, like the errors of a run ("error: ..."), naming the option and what is wrong.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "error: " + std::string(e.what()) + " (see smyrf --help)\n";
  });

  smyrf::cli::BenchOptions b;
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Sweep N (and d, hashes, cluster sizes) for reference / dense / smyrf on iid Gaussian and "
      "clustered inputs; report median time, achieved GFLOP/s and fraction of the measured peak, "
      "extra memory, and the error against the exact result (relative Frobenius error of O and "
      "mean cosine per query row). Table on stdout, JSON and CSV to files.");
  bench->add_option("--n", b.n, "Query lengths N")->delimiter(',')->check(kPositive)->capture_default_str();
  CLI::Option* nk_ratio =
      bench->add_option("--nk-ratio", b.nk_ratio,
                        "Key length Nk = N * ratio (e.g. 0.25: keys pooled 2x2 as in BigGAN)")
          ->check(kPositive)->capture_default_str();
  bench->add_option("--nk", b.nk, "Key length Nk, the same for every N (default: from --nk-ratio)")
      ->check(kPositive)->excludes(nk_ratio);
  bench->add_option("--d", b.d, "Head dimensions d")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--dv", b.dv, "Value dimension (0: = d)")->check(kNonNegative)->capture_default_str();
  bench->add_option("--batch", b.batch, "Batch size B")->check(kPositive)->capture_default_str();
  bench->add_option("--heads", b.heads, "Heads H")->check(kPositive)->capture_default_str();
  bench->add_option("--n-hashes", b.n_hashes, "SMYRF hashing rounds")->delimiter(',')->check(CLI::Range(1, 1024))->capture_default_str();
  bench->add_option("--q-cluster", b.q_cluster, "SMYRF query cluster sizes")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--k-cluster", b.k_cluster, "SMYRF key cluster sizes")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--r", b.r, "E2LSH bucket width (0: order by the projection)")->check(kNonNegative)->check(kFitsFloat)->capture_default_str();
  bench->add_option("--transform", b.transform, "xbox_plus | xbox | h2_alsh | l2_alsh")
      ->check(CLI::IsMember({"xbox_plus", "xbox", "h2_alsh", "l2_alsh"}))->capture_default_str();
  bench->add_option("--methods", b.methods, "Methods: reference, dense, smyrf")->delimiter(',')
      ->check(CLI::IsMember({"reference", "dense", "smyrf"}))->capture_default_str();
  bench->add_option("--variants", b.variants,
                    "Attention variants at a memory budget F, e.g. smyrf:8:0.03,reformer:4:0.03,"
                    "local:0.03,bigbird:0.03 (grammar in src/models/variants.h); run at every N "
                    "next to --methods")
      ->delimiter(',');
  bench->add_flag("--causal", b.causal, "Causal attention (params.causal) for every method");
  bench->add_option("--inputs", b.inputs, kInputsHelp)
      ->delimiter(',')->check(CLI::IsMember({"gaussian", "clustered"}))->capture_default_str();
  bench->add_option("--dtypes", b.dtypes,
                    "Input element types: f32, bf16 (bf16 rows also report the speed-up over f32)")
      ->delimiter(',')->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  add_clustered_options(bench, b.spec);
  bench->add_option("--repeats", b.repeats, "Timed repeats after one warm-up (median reported)")->check(CLI::Range(1, 1000))->capture_default_str();
  bench->add_option("--threads", b.threads, "Threads (0: all)")->check(kThreads)->capture_default_str();
  bench->add_option("--seed", b.seed, "Seed of the inputs and of SMYRF's hashes")->check(kNonNegative)->capture_default_str();
  bench->add_option("--reference-max-n", b.reference_max_n,
                    "Run the O(N^2) double-precision reference only where Nq*Nk <= this^2")
      ->check(kNonNegative)->capture_default_str();
  bench->add_option("--exact-max-n", b.exact_max_n,
                    "Compute the exact result with dense (for errors) only up to this length when "
                    "dense is not among --methods")
      ->check(kNonNegative)->capture_default_str();
  bench->add_flag("!--no-peak", b.measure_peak, "Skip measuring the FMA peak");
  bench->add_flag("--backward", b.backward,
                  "Also time the backward pass (attention_backward) of every f32 row whose form has one");
  bench->add_option("--json", b.json, "JSON output file ('' for none)")->capture_default_str();
  bench->add_option("--csv", b.csv, "CSV output file ('' for none)")->capture_default_str();
  bench->add_flag("--quiet", b.quiet, "No progress bar");

  smyrf::cli::RunOptions r;
  CLI::App* run = app.add_subcommand(
      "run", "Run one method on one generated problem and print its RunInfo (extra memory, "
             "scores, time per phase) and its error against the exact result; for profiling");
  run->add_option("--method", r.method, "reference | dense | smyrf")
      ->check(CLI::IsMember({"reference", "dense", "smyrf"}))->capture_default_str();
  run->add_option("--input", r.spec.kind, kInputsHelp)
      ->check(CLI::IsMember({"gaussian", "clustered"}))->capture_default_str();
  run->add_option("--n", r.n, "Query length N")->check(kPositive)->capture_default_str();
  run->add_option("--nk", r.nk, "Key length Nk (0: = N)")->check(kNonNegative)->capture_default_str();
  run->add_option("--d", r.d, "Head dimension d")->check(kPositive)->capture_default_str();
  run->add_option("--dv", r.dv, "Value dimension (0: = d)")->check(kNonNegative)->capture_default_str();
  run->add_option("--batch", r.batch, "Batch size B")->check(kPositive)->capture_default_str();
  run->add_option("--heads", r.heads, "Heads H")->check(kPositive)->capture_default_str();
  run->add_option("--n-hashes", r.smyrf.n_hashes, "SMYRF hashing rounds")->check(CLI::Range(1, 1024))->capture_default_str();
  run->add_option("--q-cluster", r.smyrf.q_cluster_size, "SMYRF query cluster size")->check(kPositive)->capture_default_str();
  run->add_option("--k-cluster", r.smyrf.k_cluster_size, "SMYRF key cluster size")->check(kPositive)->capture_default_str();
  run->add_option("--r", r.smyrf.r, "E2LSH bucket width (0: order by the projection)")->check(kNonNegative)->check(kFitsFloat)->capture_default_str();
  run->add_option("--transform", r.transform, "xbox_plus | xbox | h2_alsh | l2_alsh")
      ->check(CLI::IsMember({"xbox_plus", "xbox", "h2_alsh", "l2_alsh"}))->capture_default_str();
  add_clustered_options(run, r.spec);
  run->add_option("--repeats", r.repeats, "Calls (the first one, which sizes the workspace, is reported apart)")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  run->add_option("--threads", r.threads, "Threads (0: all)")->check(kThreads)->capture_default_str();
  run->add_option("--seed", r.seed, "Seed of the inputs and of SMYRF's hashes")->check(kNonNegative)->capture_default_str();
  run->add_option("--reference-max-n", r.reference_max_n,
                  "The exact result is the double reference where Nq*Nk <= this^2, else dense")
      ->check(kNonNegative)->capture_default_str();
  run->add_flag("!--no-error", r.error, "Skip computing the exact result (cleaner profiles)");

  int peak_threads = 0;
  CLI::App* peak = app.add_subcommand("peak", "Measure the fp32 FMA peak (GFLOP/s) of this machine");
  peak->add_option("--threads", peak_threads, "Threads (0: all)")->check(kThreads);

  smyrf::cli::PerfOptions perf_options;
  CLI::App* perf = app.add_subcommand(
      "perf", "The performance targets, each measured as a ratio in one run (vs the measured "
              "peak, another method or another thread count), with the raw times");
  perf->add_option("--repeats", perf_options.repeats, "Timed repeats after a warm-up")->check(CLI::Range(1, 100))->capture_default_str();
  perf->add_option("--large-n", perf_options.large_n, "N of the scaling and memory targets")->check(kPositive)->capture_default_str();
  perf->add_option("--json", perf_options.json, "JSON output file ('' for none)")->capture_default_str();
  perf->add_flag("--quiet", perf_options.quiet, "No progress lines");

#if SMYRF_HAVE_MODELS
  smyrf::cli::EvalOptions ev;
  CLI::App* eval = app.add_subcommand(
      "eval",
      "Embed real texts with the pretrained Universal Sentence Encoder lite, its attention swapped "
      "for each variant without retraining, in the native (128-token) and extended regimes; report "
      "each variant's attention memory, cosine to the dense embeddings, and the accuracy of a "
      "spam classifier trained on dense embeddings. Table on stdout, JSON and CSV to files.");
  add_model_options(eval, ev.model, ev.corpus, ev.mail_text);
  eval->add_option("--limit", ev.limit, "Use a seeded (stratified) subset of this many texts; 0 = all")
      ->check(kNonNegative)->capture_default_str();
  eval->add_option("--regimes", ev.regimes, "native (the model's 128-token clip) and/or extended")
      ->delimiter(',')->capture_default_str();
  eval->add_option("--extended-tokens", ev.extended_tokens, "Token clip of the extended regime")
      ->check(kPositive)->capture_default_str();
  eval->add_option("--extended-limit", ev.extended_limit,
                   "Extended regime: a seeded (stratified) part of the texts of this size; 0 = all")
      ->check(kNonNegative)->capture_default_str();
  eval->add_option("--variants", ev.variants,
                   "Attention variants: dense, smyrf:H:F (H rounds, memory budget F; at 128 tokens "
                   "smyrf:2:0.5 = 2x32), smyrf:HxC (fixed clusters of C), smyrf-c:F[:Q], and every "
                   "other method at budget F: reformer:H:F, clustered:F, iclustered:F[:K], "
                   "routing:F, local:F, dilated:F[:R], strided:F, fixed:F, longformer:F[:G], "
                   "bigbird:F, axial-rows:F, axial-cols:F, criss-cross:F, performer:F, favor:F, rfa:F, "
                   "linformer:F, nystrom:F, mca:F, isab:F, star:F, gmat:F, informer:F, sinkhorn:F; "
                   "and without budget linear, l2, efficient, dpfp[:NU], synthesizer-dense, "
                   "synthesizer-random (src/models/variants.h)")
      ->delimiter(',')->capture_default_str();
  eval->add_option("--lambda", ev.lambda, "L2 strength of the logistic regression (mean log-loss + lambda/2 |w|^2)")
      ->check(kPositive)->capture_default_str();
  eval->add_flag("--cv", ev.cross_validate, "Also choose lambda by 5-fold cross-validation");
  eval->add_option("--train-fraction", ev.train_fraction, "Training share of the stratified split")
      ->check(kOpenFraction)->capture_default_str();
  eval->add_option("--seed", ev.seed, "Seed of the subset, the split and the hashing")->check(kNonNegative)->capture_default_str();
  eval->add_option("--threads", ev.threads, "Threads (texts run in parallel); 0 = all")->check(kThreads)->capture_default_str();
  eval->add_option("--json", ev.json, "JSON output ('' for none)")->capture_default_str();
  eval->add_option("--csv", ev.csv, "CSV output ('' for none)")->capture_default_str();
  eval->add_flag("--quiet", ev.quiet, "No progress bar");

  smyrf::cli::EmbedOptions em;
  CLI::App* embed = app.add_subcommand(
      "embed",
      "Embed the user's texts with the pretrained Universal Sentence Encoder lite under one "
      "attention variant (no retraining): a NumPy .npy matrix float32 [texts, 512] with the ids "
      "in <output>.ids.json, or JSONL with one {id, tokens, variant, embedding} per text");
  add_model_options(embed, em.model, em.corpus, em.mail_text);
  embed->get_option("--corpus")->required();
  embed->add_option("--variant", em.variant, "One attention variant (as smyrf eval's --variants)")->capture_default_str();
  embed->add_option("--max-tokens", em.max_tokens,
                    "Tokens kept per text: 128 is the model's clip; more lifts it (beyond the training "
                    "length); 0 keeps every token")->check(kNonNegative)->capture_default_str();
  embed->add_option("--output", em.output, "Output file: .npy or .jsonl")->capture_default_str();
  embed->add_option("--seed", em.seed, "Seed of the attention's hashing (per text, as smyrf eval)")->check(kNonNegative)->capture_default_str();
  embed->add_option("--threads", em.threads, "Threads (texts run in parallel); 0 = all")->check(kThreads)->capture_default_str();
  embed->add_flag("--quiet", em.quiet, "No progress bar");

  smyrf::cli::LayersOptions lo;
  CLI::App* layers = app.add_subcommand(
      "layers",
      "Where a variant loses quality inside the pretrained model: each layer's attention inputs "
      "captured under dense attention on real mails; relative error of each variant's attention "
      "output, next to oracles (each query's exact top-k keys, a local window, content-blind "
      "clusters) at the same budget");
  add_model_options(layers, lo.model, lo.corpus, lo.mail_text);
  layers->add_option("--limit", lo.limit, "Texts (every k-th of the corpus)")->check(kPositive)->capture_default_str();
  layers->add_option("--max-tokens", lo.max_tokens, "Token clip (128 = the model's)")->check(kPositive)->capture_default_str();
  layers->add_option("--budget", lo.budget, "Oracles' keys per query as a fraction of N")->check(kFraction)->capture_default_str();
  layers->add_option("--variants", lo.variants, "Variants (as smyrf eval)")->delimiter(',')->capture_default_str();
  layers->add_option("--seed", lo.seed, "Seed")->check(kNonNegative)->capture_default_str();
  layers->add_option("--threads", lo.threads, "Threads (texts in parallel); 0 = all")->check(kThreads)->capture_default_str();
#endif

  std::int64_t probe_n = 0;
  bool methods_json = false;
  CLI::App* methods = app.add_subcommand("methods", "Every method form with its capabilities (from the registrations)");
  methods->add_flag("--json", methods_json, "A JSON list of objects: name, form, config, specs, summary, one boolean per capability");

  CLI::App* probe = app.add_subcommand("rss-probe", "(internal) peak memory of one SMYRF call");
  probe->group("");  // hidden from --help
  probe->add_option("--n", probe_n)->required()->check(kPositive);

  // CLI11 reports an unknown command only as "a subcommand is required"; name it.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      found = found || sub->check_name(argv[1]);
      if (!sub->get_group().empty()) known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) {
      std::fprintf(stderr, "error: unknown command '%s' (commands: %s; see smyrf --help)\n", argv[1],
                   known.c_str());
      return static_cast<int>(CLI::ExitCodes::ExtrasError);
    }
  }
  CLI11_PARSE(app, argc, argv);
  try {
#if SMYRF_HAVE_MODELS
    if (eval->parsed()) return smyrf::cli::run_eval(ev);
    if (embed->parsed()) return smyrf::cli::run_embed(em);
    if (layers->parsed()) return smyrf::cli::run_layers(lo);
#endif
    if (bench->parsed()) return smyrf::cli::run_bench(b);
    if (run->parsed()) return smyrf::cli::run_one(r);
    if (perf->parsed()) return smyrf::cli::run_perf(perf_options, "/proc/self/exe");
    if (probe->parsed()) return smyrf::cli::run_rss_probe(probe_n);
    if (methods->parsed()) return smyrf::cli::run_methods(methods_json);
    if (peak->parsed()) {
      for (int t : {1, peak_threads}) {
        const smyrf::cli::Peak p = smyrf::cli::measure_fma_peak(t);
        std::printf("%s, %d thread%s: %.1f GFLOP/s fp32 FMA\n", p.target, p.threads,
                    p.threads == 1 ? "" : "s", p.gflops);
      }
      return 0;
    }
  } catch (const smyrf::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    // Sizes from the command line (--n, --d, --batch, --heads) can ask for more than
    // the machine has; std::bad_alloc alone does not say so.
    std::fprintf(stderr, "error: out of memory: the sizes given ask for more memory than can be allocated\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
