// The smyrf command-line tool.
//   smyrf bench   sweep sizes and methods: time, memory, error against the exact result
//   smyrf peak    the machine's measured fp32 FMA peak
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "bench.h"
#include "peak.h"
#include "perf.h"
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
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"smyrf: efficient attention (SMYRF and friends) — benchmarks and tools"};
  app.set_version_flag("--version", std::string("smyrf ") + SMYRF_VERSION_STRING);
  app.require_subcommand(1);

  smyrf::cli::BenchOptions b;
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Sweep N (and d, hashes, cluster sizes) for reference / dense / smyrf on iid Gaussian and "
      "clustered inputs; report median time, achieved GFLOP/s and fraction of the measured peak, "
      "extra memory, and the error against the exact result (relative Frobenius error of O and "
      "mean cosine per query row). Table on stdout, JSON and CSV to files.");
  bench->add_option("--n", b.n, "Query lengths N")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--nk-ratio", b.nk_ratio, "Nk = N * ratio (e.g. 0.25: keys pooled 2x2 as in BigGAN)")
      ->check(kPositive)->capture_default_str();
  bench->add_option("--d", b.d, "Head dimensions d")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--dv", b.dv, "Value dimension (0: = d)")->check(kNonNegative)->capture_default_str();
  bench->add_option("--batch", b.batch, "Batch size B")->check(kPositive)->capture_default_str();
  bench->add_option("--heads", b.heads, "Heads H")->check(kPositive)->capture_default_str();
  bench->add_option("--n-hashes", b.n_hashes, "SMYRF hashing rounds")->delimiter(',')->check(CLI::Range(1, 1024))->capture_default_str();
  bench->add_option("--q-cluster", b.q_cluster, "SMYRF query cluster sizes")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--k-cluster", b.k_cluster, "SMYRF key cluster sizes")->delimiter(',')->check(kPositive)->capture_default_str();
  bench->add_option("--r", b.r, "E2LSH bucket width (0: order by the projection)")->check(kNonNegative)->capture_default_str();
  bench->add_option("--transform", b.transform, "xbox_plus | xbox | h2_alsh | l2_alsh")
      ->check(CLI::IsMember({"xbox_plus", "xbox", "h2_alsh", "l2_alsh"}))->capture_default_str();
  bench->add_option("--methods", b.methods, "Methods: reference, dense, smyrf")->delimiter(',')
      ->check(CLI::IsMember({"reference", "dense", "smyrf"}))->capture_default_str();
  bench->add_option("--inputs", b.inputs,
                    "gaussian: Q, K, V iid N(0,1) (nearly uniform attention, the worst case for "
                    "clustering); clustered: Q and K near shared centres (peaked attention, as in "
                    "trained models)")
      ->delimiter(',')->check(CLI::IsMember({"gaussian", "clustered"}))->capture_default_str();
  bench->add_option("--dtypes", b.dtypes,
                    "Input element types: f32, bf16 (bf16 rows also report the speed-up over f32)")
      ->delimiter(',')->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  bench->add_option("--keys-per-center", b.spec.keys_per_center,
                    "clustered: centres = Nk / this; each centre c ~ N(0, I) * center-norm / sqrt(d)")
      ->check(kPositive)->capture_default_str();
  bench->add_option("--center-norm", b.spec.center_norm, "clustered: norm of the centres")->check(kPositive)->capture_default_str();
  bench->add_option("--noise", b.spec.noise, "clustered: token = centre + noise * N(0, I)")->check(kNonNegative)->capture_default_str();
  bench->add_option("--temperature", b.spec.temperature, "clustered: softmax scale = 1 / (sqrt(d) * temperature)")
      ->check(kPositive)->capture_default_str();
  bench->add_option("--repeats", b.repeats, "Timed repeats after one warm-up (median reported)")->check(CLI::Range(1, 1000))->capture_default_str();
  bench->add_option("--threads", b.threads, "Threads (0: all)")->check(kNonNegative)->capture_default_str();
  bench->add_option("--seed", b.seed, "Seed of the inputs and of SMYRF's hashes")->capture_default_str();
  bench->add_option("--reference-max-n", b.reference_max_n,
                    "Run the O(N^2) double-precision reference only where Nq*Nk <= this^2")
      ->check(kNonNegative)->capture_default_str();
  bench->add_option("--exact-max-n", b.exact_max_n,
                    "Compute the exact result with dense (for errors) only up to this length when "
                    "dense is not among --methods")
      ->check(kNonNegative)->capture_default_str();
  bench->add_flag("!--no-peak", b.measure_peak, "Skip measuring the FMA peak");
  bench->add_option("--json", b.json, "JSON output file ('' for none)")->capture_default_str();
  bench->add_option("--csv", b.csv, "CSV output file ('' for none)")->capture_default_str();
  bench->add_flag("--quiet", b.quiet, "No progress bar");

  int peak_threads = 0;
  CLI::App* peak = app.add_subcommand("peak", "Measure the fp32 FMA peak (GFLOP/s) of this machine");
  peak->add_option("--threads", peak_threads, "Threads (0: all)")->check(kNonNegative);

  smyrf::cli::PerfOptions perf_options;
  CLI::App* perf = app.add_subcommand(
      "perf", "The performance targets, each measured as a ratio in one run (vs the measured "
              "peak, another method or another thread count), with the raw times");
  perf->add_option("--repeats", perf_options.repeats, "Timed repeats after a warm-up")->check(CLI::Range(1, 100))->capture_default_str();
  perf->add_option("--large-n", perf_options.large_n, "N of the scaling and memory targets")->check(kPositive)->capture_default_str();
  perf->add_option("--json", perf_options.json, "JSON output file ('' for none)")->capture_default_str();
  perf->add_flag("--quiet", perf_options.quiet, "No progress lines");

  std::int64_t probe_n = 0;
  CLI::App* probe = app.add_subcommand("rss-probe", "(internal) peak memory of one SMYRF call");
  probe->group("");  // hidden from --help
  probe->add_option("--n", probe_n)->required()->check(kPositive);

  CLI11_PARSE(app, argc, argv);
  try {
    if (bench->parsed()) return smyrf::cli::run_bench(b);
    if (perf->parsed()) return smyrf::cli::run_perf(perf_options, "/proc/self/exe");
    if (probe->parsed()) return smyrf::cli::run_rss_probe(probe_n);
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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
