#include "bench.h"
#include "output.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "methods.h"
#include "smyrf/registry.h"
#include "models/variants.h"
#include "metrics.h"
#include "peak.h"
#include "progress.h"
#include "smyrf/smyrf.h"

namespace smyrf::cli {
namespace {

// Ordered so that JSON rows and the CSV columns read in the order to_json() lists them.
using json = nlohmann::ordered_json;

struct Row {
  std::string input, method, settings, truth;
  std::int64_t batch, heads, nq, nk, d, dv;
  int n_hashes = 0, q_cluster = 0, k_cluster = 0;
  double median_s = 0, min_s = 0;
  int repeats = 0;
  std::size_t workspace_bytes = 0, scores = 0;
  double memory_fraction = 0;  // scores / dense scores
  double gflops = 0, peak_fraction = 0;
  ErrorMetrics error;
  RunInfo phases;  // per-phase seconds (mean over repeats) and bytes
  double speedup_vs_dense = std::numeric_limits<double>::quiet_NaN();
  std::string dtype = "f32";
  double speedup_vs_f32 = std::numeric_limits<double>::quiet_NaN();
  // --backward: median seconds of attention_backward, its GFLOP/s counting 10 * scores * d
  // (scores, dP, dV, dQ, dK: what any backward must do; recomputation is not counted).
  double backward_s = std::numeric_limits<double>::quiet_NaN();
  double backward_gflops = std::numeric_limits<double>::quiet_NaN();
  double backward_peak_fraction = std::numeric_limits<double>::quiet_NaN();
};

// One method on one problem: `repeats` timed calls after a warm-up, buffers reused.
struct Timing {
  std::vector<double> seconds;
  RunInfo info;  // of the last call; phases averaged over the timed calls
};

Timing time_method(const AttentionParams& params, const MethodConfig& config, int repeats,
                   Workspace& ws) {
  Timing t;
  attention(params, config, &ws);  // warm-up: sizes the workspace, faults pages in
  RunInfo sum;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    t.info = attention(params, config, &ws);
    t.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    for (auto [total, one] : {std::pair{&sum.transform, &t.info.transform}, std::pair{&sum.sort, &t.info.sort},
                              std::pair{&sum.gather, &t.info.gather}, std::pair{&sum.attention, &t.info.attention},
                              std::pair{&sum.merge, &t.info.merge}})
      total->seconds += one->seconds / repeats;
  }
  t.info.transform.seconds = sum.transform.seconds;
  t.info.sort.seconds = sum.sort.seconds;
  t.info.gather.seconds = sum.gather.seconds;
  t.info.attention.seconds = sum.attention.seconds;
  t.info.merge.seconds = sum.merge.seconds;
  return t;
}

double median(std::vector<double> v);

// Backward timing: one forward call that saves the lse, then `repeats` backward calls after a
// warm-up; dO is a fixed pseudo-random tensor.
double time_backward(const AttentionParams& params, const MethodConfig& config, int repeats) {
  const std::size_t rows_q = static_cast<std::size_t>(params.batch * params.heads * params.nq);
  const std::size_t rows_k = static_cast<std::size_t>(params.batch * params.heads * params.nk);
  Floats lse(rows_q), grad_o(rows_q * static_cast<std::size_t>(params.dv));
  Floats gq(rows_q * static_cast<std::size_t>(params.d)), gk(rows_k * static_cast<std::size_t>(params.d)),
      gv(rows_k * static_cast<std::size_t>(params.dv));
  for (std::size_t i = 0; i < grad_o.size(); ++i)
    grad_o[i] = static_cast<float>((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  AttentionParams p = params;
  p.lse = lse.data();
  attention(p, config);
  const GradientParams g{p.o, lse.data(), grad_o.data(), gq.data(), gk.data(), gv.data()};
  Workspace ws;
  attention_backward(p, g, config, &ws);  // warm-up: sizes the workspace
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    attention_backward(p, g, config, &ws);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(seconds);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string fmt(const char* f, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Rounds to the nearest bfloat16, ties to even (NaN kept quiet).
std::vector<std::uint16_t, CacheAligned<std::uint16_t>> to_bf16(const Floats& x) {
  std::vector<std::uint16_t, CacheAligned<std::uint16_t>> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &x[i], sizeof bits);
    out[i] = std::isnan(x[i]) ? static_cast<std::uint16_t>(0x7FC0)
                              : static_cast<std::uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
  }
  return out;
}

void print_header() {
  std::printf("%-10s %6s %6s %4s %-5s %-10s %-14s %10s %9s %6s %9s %6s %9s %8s %8s %7s %9s\n",
              "input", "Nq", "Nk", "d", "dtype", "method", "settings", "median_ms", "GFLOP/s", "%peak",
              "extra_MiB", "mem%", "rel_err", "mean_cos", "vs_dense", "vs_f32", "truth");
}

void print_row(const Row& r) {
  std::printf("%-10s %6lld %6lld %4lld %-5s %-10s %-14s %10s %9s %6s %9s %6s %9s %8s %8s %7s %9s\n",
              r.input.c_str(), static_cast<long long>(r.nq), static_cast<long long>(r.nk),
              static_cast<long long>(r.d), r.dtype.c_str(), r.method.c_str(), r.settings.c_str(),
              fmt("%.3f", r.median_s * 1e3).c_str(), fmt("%.1f", r.gflops).c_str(),
              fmt("%.1f", 100 * r.peak_fraction).c_str(),
              fmt("%.2f", static_cast<double>(r.workspace_bytes) / (1 << 20)).c_str(),
              fmt("%.1f", 100 * r.memory_fraction).c_str(),
              fmt("%.2e", r.error.rel_frobenius).c_str(), fmt("%.4f", r.error.mean_cosine).c_str(),
              fmt("%.2fx", r.speedup_vs_dense).c_str(), fmt("%.2fx", r.speedup_vs_f32).c_str(),
              r.truth.c_str());
  std::fflush(stdout);
}

// SMYRF's time by phase: ms, and the estimated bytes moved as GB/s.
void print_phases(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  std::printf("\nSMYRF phases: ms (GB/s of estimated bytes moved); wall time of the call = sum + "
              "checks\n%-10s %6s %-5s %-12s %16s %16s %16s %16s %16s %9s\n",
              "input", "N", "dtype", "settings", "transform", "sort", "gather", "attention", "merge", "total_ms");
  for (const Row& r : rows) {
    auto cell = [](const Phase& p) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f (%.1f)", p.seconds * 1e3,
                    p.seconds > 0 ? p.bytes / p.seconds / 1e9 : 0.0);
      return std::string(buf);
    };
    std::printf("%-10s %6lld %-5s %-12s %16s %16s %16s %16s %16s %9.2f\n", r.input.c_str(),
                static_cast<long long>(r.nq), r.dtype.c_str(), r.settings.c_str(), cell(r.phases.transform).c_str(),
                cell(r.phases.sort).c_str(), cell(r.phases.gather).c_str(),
                cell(r.phases.attention).c_str(), cell(r.phases.merge).c_str(), r.median_s * 1e3);
  }
}

// Backward rows (--backward): time, GFLOP/s, fraction of peak, and backward / forward time.
void print_backward(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  std::printf("\nBackward (attention_backward; FLOPs = 10 * scores * d)\n%-10s %6s %6s %4s %-10s %-14s "
              "%12s %9s %6s %12s\n",
              "input", "Nq", "Nk", "d", "method", "settings", "backward_ms", "GFLOP/s", "%peak", "bwd/fwd");
  for (const Row& r : rows)
    std::printf("%-10s %6lld %6lld %4lld %-10s %-14s %12.3f %9.1f %6s %11.2fx\n", r.input.c_str(),
                static_cast<long long>(r.nq), static_cast<long long>(r.nk), static_cast<long long>(r.d),
                r.method.c_str(), r.settings.c_str(), r.backward_s * 1e3, r.backward_gflops,
                fmt("%.1f", 100 * r.backward_peak_fraction).c_str(), r.backward_s / r.median_s);
}

json to_json(const Row& r) {
  auto num = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  return {{"input", r.input},
          {"dtype", r.dtype},
          {"batch", r.batch},
          {"heads", r.heads},
          {"nq", r.nq},
          {"nk", r.nk},
          {"d", r.d},
          {"dv", r.dv},
          {"method", r.method},
          {"settings", r.settings},
          {"n_hashes", r.n_hashes},
          {"q_cluster", r.q_cluster},
          {"k_cluster", r.k_cluster},
          {"median_s", r.median_s},
          {"min_s", r.min_s},
          {"repeats", r.repeats},
          {"speedup_vs_dense", num(r.speedup_vs_dense)},
          {"speedup_vs_f32", num(r.speedup_vs_f32)},
          {"workspace_bytes", r.workspace_bytes},
          {"scores", r.scores},
          {"memory_fraction", r.memory_fraction},
          {"gflops", r.gflops},
          {"peak_fraction", num(r.peak_fraction)},
          {"truth", r.truth},
          {"rel_frobenius", num(r.error.rel_frobenius)},
          {"mean_cosine", num(r.error.mean_cosine)},
          {"min_cosine", num(r.error.min_cosine)},
          {"transform_s", r.phases.transform.seconds},
          {"transform_bytes", r.phases.transform.bytes},
          {"sort_s", r.phases.sort.seconds},
          {"sort_bytes", r.phases.sort.bytes},
          {"gather_s", r.phases.gather.seconds},
          {"gather_bytes", r.phases.gather.bytes},
          {"attention_s", r.phases.attention.seconds},
          {"attention_bytes", r.phases.attention.bytes},
          {"merge_s", r.phases.merge.seconds},
          {"merge_bytes", r.phases.merge.bytes},
          {"backward_s", num(r.backward_s)},
          {"backward_gflops", num(r.backward_gflops)},
          {"backward_peak_fraction", num(r.backward_peak_fraction)}};
}


}  // namespace

int run_bench(const BenchOptions& o) {
  const Transform transform = parse_transform(o.transform);
  for (const auto& m : o.methods) parse_method(m, SmyrfConfig{});  // throws on unknown names
  std::vector<models::AttentionVariant> variants;
  for (const auto& v : o.variants) variants.push_back(models::parse_variant(v));
  check_output_paths({{"--json", o.json}, {"--csv", o.csv}});
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  auto wants = [&](const char* m) { return std::find(o.methods.begin(), o.methods.end(), m) != o.methods.end(); };

  std::printf("smyrf %s | SIMD target %s | %d threads\n", SMYRF_VERSION_STRING,
              simd_target().c_str(), threads);
  Peak peak;
  if (o.measure_peak) {
    peak = measure_fma_peak(threads);
    std::printf("measured fp32 FMA peak: %.1f GFLOP/s on %d threads\n", peak.gflops, threads);
  }
  std::printf("attention FLOPs = 4 * scores * d (dense: scores = Nq*Nk); hashing and sorting are "
              "in the time, not in the FLOPs\n\n");

  std::size_t smyrf_settings = o.n_hashes.size() * o.q_cluster.size() * o.k_cluster.size();
  std::size_t steps = 0;
  for (std::size_t i = 0; i < o.inputs.size() * o.n.size() * o.d.size() * o.dtypes.size(); ++i)
    steps += (wants("reference") ? 1 : 0) + (wants("dense") ? 1 : 0) +
             (wants("smyrf") ? smyrf_settings : 0) + variants.size();
  Progress progress(steps, o.quiet);

  json rows = json::array();
  std::vector<Row> smyrf_rows, backward_rows;
  bool skipped_reference = false;
  std::vector<std::string> unsupported;  // variants a setting does not support, with why
  print_header();
  for (const auto& input : o.inputs) {
    InputSpec spec = o.spec;
    spec.kind = input;
    for (const std::int64_t n : o.n) {
      for (const std::int64_t d : o.d) {
        const std::int64_t nk =
            o.nk > 0 ? o.nk : std::max<std::int64_t>(1, std::llround(static_cast<double>(n) * o.nk_ratio));
        const std::int64_t dv = o.dv > 0 ? o.dv : d;
        const Tensors t = make_inputs(spec, o.batch, o.heads, n, nk, d, dv, o.seed);
        std::map<std::string, double> f32_median;  // by method and settings
        for (const std::string& dtype : o.dtypes) {
        const bool bf16 = dtype == "bf16";
        const auto q16 = bf16 ? to_bf16(t.q) : decltype(to_bf16(t.q)){};
        const auto k16 = bf16 ? to_bf16(t.k) : decltype(to_bf16(t.k)){};
        const auto v16 = bf16 ? to_bf16(t.v) : decltype(to_bf16(t.v)){};
        Floats out(static_cast<std::size_t>(o.batch * o.heads * n * dv));
        Floats truth_out;
        AttentionParams p = AttentionParams::contiguous(o.batch, o.heads, n, nk, d, dv, t.q.data(),
                                                        t.k.data(), t.v.data(), out.data());
        if (bf16) {
          p.dtype = DType::bf16;
          p.q = q16.data();
          p.k = k16.data();
          p.v = v16.data();
        }
        p.seed = o.seed;
        p.causal = o.causal;
        p.num_threads = threads;
        p.scale = softmax_scale(spec, d);
        const double dense_scores = static_cast<double>(o.batch * o.heads) * static_cast<double>(n) *
                                    static_cast<double>(nk);
        std::string truth_name;
        double dense_median = std::numeric_limits<double>::quiet_NaN();

        auto record = [&](const std::string& method, const std::string& settings,
                          const Timing& tm, const SmyrfConfig* sc,
                          double backward_s = std::numeric_limits<double>::quiet_NaN()) {
          Row r;
          r.input = input;
          r.method = method;
          r.settings = settings;
          r.batch = o.batch;
          r.heads = o.heads;
          r.nq = n;
          r.nk = nk;
          r.d = d;
          r.dv = dv;
          if (sc) {
            r.n_hashes = sc->n_hashes;
            r.q_cluster = sc->q_cluster_size;
            r.k_cluster = sc->k_cluster_size;
          }
          r.median_s = median(tm.seconds);
          r.min_s = *std::min_element(tm.seconds.begin(), tm.seconds.end());
          r.repeats = static_cast<int>(tm.seconds.size());
          r.workspace_bytes = tm.info.workspace_bytes;
          r.scores = tm.info.attention_scores;
          r.memory_fraction = static_cast<double>(r.scores) / dense_scores;
          r.gflops = 4.0 * static_cast<double>(r.scores) * static_cast<double>(d) / r.median_s / 1e9;
          r.peak_fraction = o.measure_peak ? r.gflops / peak.gflops : std::numeric_limits<double>::quiet_NaN();
          r.truth = truth_name.empty() ? "none" : truth_name;
          // The row that is the exact result has no error to report ("-", null in JSON).
          if (truth_name.empty() || truth_name == method) {
            const double nan = std::numeric_limits<double>::quiet_NaN();
            r.error = {nan, nan, nan};
          } else {
            r.error = compare(out, truth_out, static_cast<std::size_t>(dv));
          }
          r.phases = tm.info;
          if (method == "dense") dense_median = r.median_s;
          r.speedup_vs_dense = dense_median / r.median_s;
          r.dtype = dtype;
          if (!bf16) f32_median[method + settings] = r.median_s;
          const auto f32 = f32_median.find(method + settings);
          if (bf16 && f32 != f32_median.end()) r.speedup_vs_f32 = f32->second / r.median_s;
          if (!std::isnan(backward_s)) {
            r.backward_s = backward_s;
            r.backward_gflops = 10.0 * static_cast<double>(r.scores) * static_cast<double>(d) / backward_s / 1e9;
            if (o.measure_peak) r.backward_peak_fraction = r.backward_gflops / peak.gflops;
            backward_rows.push_back(r);
          }
          progress.clear();
          print_row(r);
          if (method == "smyrf") smyrf_rows.push_back(r);
          rows.push_back(to_json(r));
        };

        const std::string where =
            "N=" + std::to_string(n) + " d=" + std::to_string(d) + " " + input + " " + dtype;
        // Ground truth: the double-precision reference where affordable, else dense.
        Workspace ws;
        const bool reference_affordable =
            static_cast<double>(n) * static_cast<double>(nk) <=
            static_cast<double>(o.reference_max_n) * static_cast<double>(o.reference_max_n);
        if (wants("reference") && reference_affordable) {
          // One timed call: the oracle is slow by design and its time only orients.
          progress.begin("reference " + where);
          const Timing tm = time_method(p, ReferenceConfig{}, 1, ws);
          truth_out = out;
          truth_name = "reference";
          record("reference", "double", tm, nullptr);
          progress.step("reference " + where);
        } else if (wants("reference")) {
          skipped_reference = true;
          progress.step("reference skipped " + where);
        }
        const bool exact_affordable = n <= o.exact_max_n && nk <= o.exact_max_n;
        if (wants("dense") || (truth_name.empty() && exact_affordable)) {
          progress.begin("dense " + where);
          const Timing tm = time_method(p, DenseConfig{}, o.repeats, ws);
          if (truth_name.empty()) {
            truth_out = out;
            truth_name = "dense";
          }
          if (wants("dense")) {
            record("dense", "flash", tm, nullptr,
                   o.backward && !bf16 ? time_backward(p, DenseConfig{}, o.repeats) : std::nan(""));
            progress.step("dense " + where);
          }
        }
        for (const models::AttentionVariant& variant : variants) {
          const MethodConfig config = variant.config_for(n);
          const std::string label = variant.label();
          progress.begin(label + " " + where);
          Timing tm;
          try {
            tm = time_method(p, config, o.repeats, ws);
          } catch (const Error& e) {  // a setting the method does not have (e.g. --causal)
            unsupported.push_back(label + " " + where + ": " + e.what());
            progress.step(label + " " + where + " unsupported");
            continue;
          }
          // --backward: every variant whose form has one (with --causal: a causal one).
          const Capabilities caps = capabilities(config);
          const bool trains = caps.backward && (!o.causal || caps.causal_backward);
          record(method_name(config), label, tm, std::get_if<SmyrfConfig>(&config),
                 o.backward && !bf16 && trains ? time_backward(p, config, o.repeats) : std::nan(""));
          progress.step(label + " " + where);
        }
        if (!wants("smyrf")) continue;
        for (const int hashes : o.n_hashes)
          for (const int qc : o.q_cluster)
            for (const int kc : o.k_cluster) {
              SmyrfConfig sc;
              sc.n_hashes = hashes;
              sc.q_cluster_size = qc;
              sc.k_cluster_size = kc;
              sc.r = o.r;
              sc.transform = transform;
              const std::string settings =
                  std::to_string(hashes) + "x" + std::to_string(qc) + "/" + std::to_string(kc);
              progress.begin("smyrf " + settings + " " + where);
              const Timing tm = time_method(p, sc, o.repeats, ws);
              record("smyrf", settings, tm, &sc,
                     o.backward && !bf16 ? time_backward(p, sc, o.repeats) : std::nan(""));
              progress.step("smyrf " + settings + " " + where);
            }
        }
      }
    }
  }
  for (const std::string& why : unsupported) std::printf("skipped %s\n", why.c_str());
  print_phases(smyrf_rows);
  print_backward(backward_rows);
  if (skipped_reference)
    std::printf("\nreference skipped where Nq*Nk > %lld^2 (naive O(N^2) in double; "
                "--reference-max-n raises the limit); dense served as the exact result there\n",
                static_cast<long long>(o.reference_max_n));

  json doc = {{"machine",
               {{"simd_target", simd_target()},
                {"threads", threads},
                {"version", SMYRF_VERSION_STRING},
                {"fma_peak_gflops", o.measure_peak ? json(peak.gflops) : json(nullptr)}}},
              {"config",
               {{"n", o.n},
                {"nk", o.nk},
                {"nk_ratio", o.nk_ratio},
                {"d", o.d},
                {"dv", o.dv},
                {"batch", o.batch},
                {"heads", o.heads},
                {"n_hashes", o.n_hashes},
                {"q_cluster", o.q_cluster},
                {"k_cluster", o.k_cluster},
                {"r", o.r},
                {"transform", o.transform},
                {"methods", o.methods},
                {"variants", o.variants},
                {"causal", o.causal},
                {"dtypes", o.dtypes},
                {"inputs", o.inputs},
                {"keys_per_center", o.spec.keys_per_center},
                {"centers", o.spec.centers},
                {"center_norm", o.spec.center_norm},
                {"noise", o.spec.noise},
                {"temperature", o.spec.temperature},
                {"repeats", o.repeats},
                {"backward", o.backward},
                {"seed", o.seed},
                {"reference_max_n", o.reference_max_n},
                {"exact_max_n", o.exact_max_n}}},
              {"results", rows}};
  write_files({{o.json, doc.dump(2) + "\n"}, {o.csv, to_csv(rows)}});
  if (!o.json.empty() || !o.csv.empty())
    std::printf("\nwrote %s %s\n", o.json.c_str(), o.csv.c_str());
  return 0;
}

}  // namespace smyrf::cli
