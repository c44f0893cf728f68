// Synthetic attention problems for the benchmark, generated from a seed.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

namespace smyrf::cli {

// Tensors on 64-byte boundaries, as frameworks allocate them: rows of 16 floats then never
// straddle cache lines that another thread writes (measured: unaligned outputs cost SMYRF's
// round merge ~20% at 2 threads).
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(std::size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }
  friend bool operator==(const CacheAligned&, const CacheAligned&) { return true; }
};
using Floats = std::vector<float, CacheAligned<float>>;

// gaussian:  Q, K, V iid N(0, 1). Attention is nearly uniform: the worst case for any method
//            that keeps only some keys per query.
// clustered: M centre directions c_m ~ N(0, I) * center_norm / sqrt(d) (so |c_m| ~ center_norm);
//            every query and key is c_m + noise * N(0, I) for a uniformly drawn m; V iid
//            N(0, 1). M = `centers` when set, else Nk / keys_per_center, so that by default
//            every centre keeps about the same number of keys at any N. With the defaults
//            (norm 8, d = 64) a same-centre logit is about 8 and an unrelated one about
//            N(0, 1): a query's largest logits are the keys of its own centre, so attention is
//            peaked as in trained models. softmax_scale() divides 1/sqrt(d) by `temperature`.
struct InputSpec {
  std::string kind = "gaussian";
  std::int64_t keys_per_center = 8;  // M = max(1, Nk / keys_per_center) unless centers > 0
  std::int64_t centers = 0;          // > 0: exactly this many centres at every N
  float center_norm = 8.0f;
  float noise = 0.5f;
  float temperature = 1.0f;
};

struct Tensors {
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0, d = 0, dv = 0;
  Floats q, k, v;  // contiguous [B, H, N, d]
};

// The softmax scale the benchmark uses for this input: 1 / (sqrt(d) * temperature) for
// clustered inputs, 1 / sqrt(d) for gaussian ones (their logits are not tuned).
float softmax_scale(const InputSpec& spec, std::int64_t d);

Tensors make_inputs(const InputSpec& spec, std::int64_t B, std::int64_t H, std::int64_t Nq,
                    std::int64_t Nk, std::int64_t d, std::int64_t dv, std::uint64_t seed);

}  // namespace smyrf::cli
