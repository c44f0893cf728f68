// The machine's fp32 FMA peak, measured: every thread runs independent chains of vector FMAs
// that never touch memory (no dependency stalls: more chains than FMA latency x pipes).
#pragma once

namespace smyrf::cli {

struct Peak {
  double gflops = 0;  // fp32, 2 flops per FMA lane
  int threads = 0;
  const char* target = "";
};

Peak measure_fma_peak(int threads, double seconds = 0.25);

}  // namespace smyrf::cli
