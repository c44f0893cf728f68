// Google Benchmark micro-benchmarks of the methods and of SMYRF's clustering step.
// Counters: GFLOP/s of the attention (4 * scores * d, as in the `smyrf bench` tool).
// Run: ./build/bench/bench_attention --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "api/inspect.h"
#include "methods/smyrf/clustering.h"
#include "smyrf/smyrf.h"

namespace {

struct Tensors {
  std::vector<float> q, k, v, o;
  smyrf::AttentionParams params;
  Tensors(std::int64_t n, std::int64_t d) : q(n * d), k(n * d), v(n * d), o(n * d) {
    std::mt19937 rng(1);
    std::normal_distribution<float> g;
    for (auto* t : {&q, &k, &v})
      for (auto& x : *t) x = g(rng);
    params = smyrf::AttentionParams::contiguous(1, 1, n, n, d, d, q.data(), k.data(), v.data(),
                                                o.data());
  }
};

void run(benchmark::State& state, const smyrf::MethodConfig& config) {
  const std::int64_t n = state.range(0), d = state.range(1);
  Tensors t(n, d);
  smyrf::Workspace ws;
  smyrf::RunInfo info = smyrf::attention(t.params, config, &ws);  // warm-up, sizes the workspace
  for (auto _ : state) info = smyrf::attention(t.params, config, &ws);
  state.counters["GFLOP/s"] = benchmark::Counter(
      4.0 * static_cast<double>(info.attention_scores) * static_cast<double>(d),
      benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["workspace_MiB"] = static_cast<double>(info.workspace_bytes) / (1 << 20);
}

void BM_Dense(benchmark::State& state) { run(state, smyrf::DenseConfig{}); }
BENCHMARK(BM_Dense)->Args({1024, 64})->Args({4096, 64})->Args({4096, 128})->Unit(benchmark::kMillisecond);

void BM_Smyrf(benchmark::State& state) {
  smyrf::SmyrfConfig c;
  c.n_hashes = static_cast<int>(state.range(2));
  c.q_cluster_size = c.k_cluster_size = 32;
  run(state, c);
}
BENCHMARK(BM_Smyrf)
    ->Args({4096, 64, 8})
    ->Args({16384, 64, 8})
    ->Args({16384, 64, 2})
    ->Unit(benchmark::kMillisecond);

// Hashing + sorting alone (the part of SMYRF that is not attention).
void BM_SmyrfClustering(benchmark::State& state) {
  Tensors t(state.range(0), 64);
  smyrf::SmyrfConfig c;
  c.n_hashes = 8;
  for (auto _ : state) benchmark::DoNotOptimize(smyrf::detail::compute_clusters(t.params, c));
  state.SetItemsProcessed(state.iterations() * state.range(0) * 2 * c.n_hashes);
}
BENCHMARK(BM_SmyrfClustering)->Arg(16384)->Arg(65536)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
