// Synthetic attention problems for the benchmark, generated from a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smyrf::cli {

// gaussian:  Q, K, V iid N(0, 1). Attention is nearly uniform: the worst case for any method
//            that keeps only some keys per query.
// clustered: `centers` centre directions c_m ~ N(0, I) * center_norm / sqrt(d); every query and
//            key is c_m + noise * N(0, I) for a uniformly drawn m; V iid N(0, 1). A query's
//            largest logits are the keys of its own centre, so attention is peaked as in
//            trained models; the benchmark divides the softmax scale by `temperature`.
struct InputSpec {
  std::string kind = "gaussian";
  std::int64_t keys_per_center = 8;  // centers = max(1, Nk / keys_per_center)
  float center_norm = 8.0f;
  float noise = 0.5f;
  float temperature = 1.0f;
};

struct Tensors {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0, d = 0, dv = 0;
  std::vector<float> q, k, v;  // contiguous [B, H, N, d]
};

Tensors make_inputs(const InputSpec& spec, std::int64_t B, std::int64_t H, std::int64_t Nq,
                    std::int64_t Nk, std::int64_t d, std::int64_t dv, std::uint64_t seed);

}  // namespace smyrf::cli
