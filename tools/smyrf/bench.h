// `smyrf bench`: sweeps problem sizes and methods, reports time, memory and error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "inputs.h"

namespace smyrf::cli {

struct BenchOptions {
  std::vector<std::int64_t> n{1024, 2048, 4096, 8192, 16384};
  std::int64_t nk = 0;    // > 0: Nk fixed for every N (e.g. a fixed memory)
  double nk_ratio = 1.0;  // otherwise Nk = round(N * nk_ratio)
  std::vector<std::int64_t> d{64};
  std::int64_t dv = 0;  // 0: dv = d
  std::int64_t batch = 1, heads = 1;
  std::vector<int> n_hashes{8}, q_cluster{32}, k_cluster{32};
  float r = 0.0f;
  std::string transform = "xbox_plus";
  std::vector<std::string> methods{"reference", "dense", "smyrf"};
  std::vector<std::string> variants;  // specs of src/models/variants.h, e.g. "local:0.1"
  std::vector<std::string> inputs{"gaussian", "clustered"};
  std::vector<std::string> dtypes{"f32", "bf16"};
  InputSpec spec;
  int repeats = 5;
  int threads = 0;
  std::uint64_t seed = 1;
  std::int64_t reference_max_n = 4096;
  // Without dense among the methods, the exact result is still computed (by dense) up to this
  // length so that errors can be reported; beyond it errors are not reported.
  std::int64_t exact_max_n = 32768;
  bool measure_peak = true;
  bool causal = false;    // params.causal for every method (and the exact result)
  bool backward = false;  // also time attention_backward (f32 dense and SMYRF rows)
  std::string json = "out/bench.json";
  std::string csv = "out/bench.csv";
  bool quiet = false;
};

// Runs the sweep, prints the table, writes JSON and CSV. Returns the process exit code.
int run_bench(const BenchOptions& options);

}  // namespace smyrf::cli
