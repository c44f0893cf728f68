#include "perf.h"

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <vector>

#include "inputs.h"
#include "movement.h"
#include "output.h"
#include "peak.h"
#include "smyrf/smyrf.h"

extern char** environ;

namespace smyrf::cli {
namespace {

struct Problem {
  std::int64_t B, H, N, d;
  Floats q, k, v, o;
  AttentionParams params;
  Problem(std::int64_t B_, std::int64_t H_, std::int64_t N_, std::int64_t d_)
      : B(B_), H(H_), N(N_), d(d_) {
    const std::size_t n = static_cast<std::size_t>(B * H * N * d);
    q.resize(n);
    k.resize(n);
    v.resize(n);
    o.resize(n);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> g;
    for (auto* t : {&q, &k, &v})
      for (float& x : *t) x = g(rng);
    params = AttentionParams::contiguous(B, H, N, N, d, d, q.data(), k.data(), v.data(), o.data());
  }
};

SmyrfConfig smyrf_config(int hashes, int cluster) {
  SmyrfConfig c;
  c.n_hashes = hashes;
  c.q_cluster_size = c.k_cluster_size = cluster;
  return c;
}

// Median wall seconds of `repeats` calls after a warm-up; `info` gets the last RunInfo.
double time_call(Problem& p, const MethodConfig& config, int threads, int repeats,
                 RunInfo* info = nullptr) {
  Workspace ws;
  p.params.num_threads = threads;
  attention(p.params, config, &ws);
  std::vector<double> s;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const RunInfo r = attention(p.params, config, &ws);
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (info) *info = r;
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

struct Target {
  std::string name, measured_as;
  double value, goal;
  bool at_most;  // goal is an upper bound
  bool met() const { return at_most ? value <= goal : value >= goal; }
};

// Runs the probe in a fresh process so that its peak RSS counts only that problem.
std::pair<double, double> probe_rss(const char* self_exe, std::int64_t n) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  const std::string n_text = std::to_string(n);
  char* argv[] = {const_cast<char*>(self_exe), const_cast<char*>("rss-probe"),
                  const_cast<char*>("--n"), const_cast<char*>(n_text.c_str()), nullptr};
  pid_t pid;
  const int rc = posix_spawn(&pid, self_exe, &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) throw std::runtime_error("cannot start the memory probe");
  std::string out;
  char buf[256];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  double tensors = 0, rss = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      std::sscanf(out.c_str(), "%lf %lf", &tensors, &rss) != 2)
    throw std::runtime_error("the memory probe failed: " + out);
  return {tensors, rss};
}

}  // namespace

int run_rss_probe(std::int64_t n) {
  Problem p(1, 1, n, 64);
  attention(p.params, smyrf_config(8, 32));
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double tensors = 4.0 * static_cast<double>(p.q.size()) * sizeof(float);
  std::printf("%.0f %.0f\n", tensors, static_cast<double>(usage.ru_maxrss) * 1024.0);
  return 0;
}

int run_perf(const PerfOptions& o, const char* self_exe) {
  check_output_paths({{"--json", o.json}});
  const int threads = 2;
  const Peak peak1 = measure_fma_peak(1), peak2 = measure_fma_peak(threads);
  std::printf("smyrf %s | %s | measured fp32 FMA peak %.1f GFLOP/s (1 thread), %.1f (%d threads)\n",
              SMYRF_VERSION_STRING, simd_target().c_str(), peak1.gflops, peak2.gflops, threads);
  std::printf("fp32, d = 64, B = H = 1 unless stated; medians of %d runs after a warm-up\n\n",
              o.repeats);
  std::vector<Target> targets;
  auto say = [&](const std::string& what) {
    if (!o.quiet) std::fprintf(stderr, "measuring %s ...\n", what.c_str());
  };

  say("dense N = 4096");
  Problem p4k(1, 1, 4096, 64);
  const double dense_flops = 4.0 * 4096.0 * 4096.0 * 64.0;
  const double dense2 = time_call(p4k, DenseConfig{}, threads, o.repeats);
  const double dense1 = time_call(p4k, DenseConfig{}, 1, o.repeats);
  targets.push_back({"dense N=4096: fraction of the measured peak", "GFLOP/s / peak",
                     dense_flops / dense2 / 1e9 / peak2.gflops, 0.60, false});

  say("SMYRF N = 16384");
  Problem p16k(1, 1, 16384, 64);
  RunInfo info16k;
  const double smyrf16k = time_call(p16k, smyrf_config(8, 32), threads, o.repeats, &info16k);
  const double smyrf16k_1 = time_call(p16k, smyrf_config(8, 32), 1, o.repeats);
  const double attention_at_peak = 4.0 * static_cast<double>(info16k.attention_scores) * 64.0 / (peak2.gflops * 1e9);
  targets.push_back({"SMYRF N=16384, 8 hashes x 32: time / attention FLOPs at peak",
                     "end-to-end time / (4*scores*d / peak)", smyrf16k / attention_at_peak, 2.5, true});

  say("SMYRF at the large N");
  Problem plarge(1, 1, o.large_n, 64);
  const double smyrf_large = time_call(plarge, smyrf_config(8, 32), threads, std::max(1, o.repeats / 2));
  targets.push_back({"SMYRF t(N=" + std::to_string(o.large_n) + ") / t(N=16384)",
                     "N log N would give " +
                         std::to_string(static_cast<int>(std::lround(
                             static_cast<double>(o.large_n) / 16384.0 *
                             std::log2(static_cast<double>(o.large_n)) / 14.0))),
                     smyrf_large / smyrf16k, 80.0, true});
  say("data-movement bound at the large N");
  const MovementBound bound = smyrf_movement_bound(plarge.q.data(), plarge.k.data(), plarge.v.data(),
                                                   o.large_n, 64, 8, threads);
  plarge = Problem(1, 1, 1, 1);  // release before the probe

  say("peak memory of a fresh process");
  const auto [tensor_bytes, rss] = probe_rss(self_exe, o.large_n);
  targets.push_back({"SMYRF N=" + std::to_string(o.large_n) + ": peak RSS / bytes of q, k, v, o",
                     "getrusage ru_maxrss", rss / tensor_bytes, 2.0, true});

  targets.push_back({"dense N=4096: 2 threads vs 1", "t(1) / t(2)", dense1 / dense2, 1.8, false});
  targets.push_back({"SMYRF N=16384: 2 threads vs 1", "t(1) / t(2)", smyrf16k_1 / smyrf16k, 1.8, false});

  say("BERT-base shape B = 4, H = 12, N = 4096");
  Problem bert(4, 12, 4096, 64);
  const double bert_dense = time_call(bert, DenseConfig{}, threads, std::max(1, o.repeats / 2));
  const double bert_smyrf = time_call(bert, smyrf_config(2, 32), threads, o.repeats);
  targets.push_back({"BERT shape B=4 H=12 N=4096: SMYRF 2x32 vs dense", "t(dense) / t(smyrf)",
                     bert_dense / bert_smyrf, 8.0, false});

  std::printf("%-62s %9s %8s %6s  %s\n", "target", "measured", "goal", "met", "measured as");
  nlohmann::json rows = nlohmann::json::array();
  int met = 0;
  for (const Target& t : targets) {
    std::printf("%-62s %9.3f %6s%.2f %6s  %s\n", t.name.c_str(), t.value, t.at_most ? "<= " : ">= ",
                t.goal, t.met() ? "yes" : "NO", t.measured_as.c_str());
    rows.push_back({{"target", t.name}, {"value", t.value}, {"goal", t.goal},
                    {"at_most", t.at_most}, {"met", t.met()}, {"measured_as", t.measured_as}});
    met += t.met() ? 1 : 0;
  }
  std::printf("\n%d of %zu targets met. Raw: dense N=4096 %.2f ms (1 thread %.2f); SMYRF N=16384 "
              "%.2f ms (1 thread %.2f), N=%lld %.1f ms; BERT shape dense %.1f ms, SMYRF %.1f ms\n",
              met, targets.size(), dense2 * 1e3, dense1 * 1e3, smyrf16k * 1e3, smyrf16k_1 * 1e3,
              static_cast<long long>(o.large_n), smyrf_large * 1e3, bert_dense * 1e3, bert_smyrf * 1e3);
  // Targets 2b and 2c together: 2b caps t(16384); 2c then caps t(large) at 80 times that, which
  // the data-movement bound (movement.h) may already exceed.
  const double cap_16k = 2.5 * attention_at_peak, cap_large = 80.0 * cap_16k;
  const bool joint_possible = bound.seconds <= cap_large;
  std::printf("\nData movement, N=%lld, 8 rounds (movement.h): q, k, v streamed at %.1f GB/s, read "
              "in a random row order at %.1f GB/s -> any implementation needs >= %.1f ms "
              "(measured SMYRF: %.1f ms, %.2fx that bound).\n",
              static_cast<long long>(o.large_n), bound.stream_gbs, bound.random_rows_gbs,
              bound.seconds * 1e3, smyrf_large * 1e3, smyrf_large / bound.seconds);
  std::printf("Targets 2b and 2c together allow t(N=16384) <= 2.5 x %.2f ms = %.2f ms and then "
              "t(N=%lld) <= 80 x %.2f ms = %.1f ms: %s\n",
              attention_at_peak * 1e3, cap_16k * 1e3, static_cast<long long>(o.large_n),
              cap_16k * 1e3, cap_large * 1e3,
              joint_possible ? "not excluded by the bound."
                             : "below the data-movement bound, so on this machine no "
                               "implementation meets both.");
  if (!o.json.empty()) {
    nlohmann::json doc = {{"machine", {{"simd_target", simd_target()}, {"peak_1_thread_gflops", peak1.gflops},
                                       {"peak_gflops", peak2.gflops}, {"threads", threads}}},
                          {"targets", rows},
                          {"data_movement", {{"n", o.large_n}, {"stream_gbs", bound.stream_gbs},
                                             {"random_rows_gbs", bound.random_rows_gbs},
                                             {"bound_seconds", bound.seconds},
                                             {"smyrf_seconds", smyrf_large},
                                             {"cap_16k_seconds", cap_16k},
                                             {"cap_large_seconds", cap_large},
                                             {"targets_2b_2c_jointly_possible", joint_possible}}}};
    write_files({{o.json, doc.dump(2) + "\n"}});
  }
  return 0;
}

}  // namespace smyrf::cli
