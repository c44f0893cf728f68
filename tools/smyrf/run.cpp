#include "run.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "methods.h"
#include "metrics.h"

namespace smyrf::cli {
namespace {

// Phases a method does not have (e.g. dense has no transform) stay zero and are left out.
void print_phase(const char* name, const Phase& p) {
  if (p.seconds == 0 && p.bytes == 0) return;
  std::printf("  %-10s %9.3f ms %10.2f MB %8.1f GB/s\n", name, p.seconds * 1e3, p.bytes / 1e6,
              p.seconds > 0 ? p.bytes / p.seconds / 1e9 : 0.0);
}

void print_info(const RunInfo& info, double dense_scores) {
  std::printf("workspace      %.3f MiB (%zu bytes)\n",
              static_cast<double>(info.workspace_bytes) / (1 << 20), info.workspace_bytes);
  std::printf("scores         %zu (%.2f%% of dense)\n", info.attention_scores,
              100.0 * static_cast<double>(info.attention_scores) / dense_scores);
  std::printf("seconds_total  %.3f ms\nphases (estimated bytes moved):\n", info.seconds_total * 1e3);
  print_phase("transform", info.transform);
  print_phase("sort", info.sort);
  print_phase("gather", info.gather);
  print_phase("attention", info.attention);
  print_phase("merge", info.merge);
}

}  // namespace

int run_one(const RunOptions& o) {
  SmyrfConfig sc = o.smyrf;
  sc.transform = parse_transform(o.transform);
  const MethodConfig config = parse_method(o.method, sc);
  const std::int64_t nk = o.nk > 0 ? o.nk : o.n;
  const std::int64_t dv = o.dv > 0 ? o.dv : o.d;
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();

  const Tensors t = make_inputs(o.spec, o.batch, o.heads, o.n, nk, o.d, dv, o.seed);
  Floats out(static_cast<std::size_t>(o.batch * o.heads * o.n * dv));
  AttentionParams p = AttentionParams::contiguous(o.batch, o.heads, o.n, nk, o.d, dv, t.q.data(),
                                                  t.k.data(), t.v.data(), out.data());
  p.seed = o.seed;
  p.num_threads = threads;
  p.scale = softmax_scale(o.spec, o.d);

  std::printf("smyrf %s | SIMD target %s | %d threads\n", SMYRF_VERSION_STRING,
              simd_target().c_str(), threads);
  std::printf("%s on %s: B=%lld H=%lld Nq=%lld Nk=%lld d=%lld dv=%lld\n", o.method.c_str(),
              o.spec.kind.c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.heads),
              static_cast<long long>(o.n), static_cast<long long>(nk), static_cast<long long>(o.d),
              static_cast<long long>(dv));
  if (o.method == "smyrf")
    std::printf("settings       %d hashes, clusters %d/%d, r=%g, %s\n", sc.n_hashes,
                sc.q_cluster_size, sc.k_cluster_size, static_cast<double>(sc.r), o.transform.c_str());

  // One workspace for every call, so that only the first call pays for its allocation.
  Workspace ws;
  RunInfo info;
  std::vector<double> seconds;
  for (int i = 0; i < o.repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    info = attention(p, config, &ws);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("wall           first %.3f ms", seconds.front() * 1e3);
  if (seconds.size() > 1) {
    std::sort(seconds.begin() + 1, seconds.end());
    std::printf(", then median %.3f ms, min %.3f ms over %zu", seconds[seconds.size() / 2] * 1e3,
                seconds[1] * 1e3, seconds.size() - 1);
  }
  std::printf("\n");
  print_info(info, static_cast<double>(o.batch * o.heads) * static_cast<double>(o.n) *
                       static_cast<double>(nk));

  if (!o.error || o.method == "reference") return 0;
  // The exact result: the double reference where affordable, else the dense kernel.
  const bool use_reference = static_cast<double>(o.n) * static_cast<double>(nk) <=
                             static_cast<double>(o.reference_max_n) *
                                 static_cast<double>(o.reference_max_n);
  if (!use_reference && o.method == "dense") return 0;
  Floats exact(out.size());
  AttentionParams pe = p;
  pe.o = exact.data();
  attention(pe, use_reference ? MethodConfig{ReferenceConfig{}} : MethodConfig{DenseConfig{}}, &ws);
  const ErrorMetrics e = compare(out, exact, static_cast<std::size_t>(dv));
  std::printf("error vs %-9s rel_frobenius %.3e, mean cosine %.4f, min cosine %.4f\n",
              use_reference ? "reference" : "dense", e.rel_frobenius, e.mean_cosine, e.min_cosine);
  return 0;
}

}  // namespace smyrf::cli
