// SMYRF in place of dense attention on one [B, H, N, d] problem, and how far apart they are.
#include <smyrf/registry.h>
#include <smyrf/smyrf.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  const std::int64_t B = 2, H = 4, N = 2048, d = 64;
  std::vector<float> q(B * H * N * d), k(q.size()), v(q.size()), o_dense(q.size()), o(q.size());
  std::mt19937 rng(0);
  std::normal_distribution<float> gauss;
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = gauss(rng);

  auto params = smyrf::AttentionParams::contiguous(B, H, N, N, d, d, q.data(), k.data(),
                                                   v.data(), o_dense.data());
  smyrf::attention(params, smyrf::DenseConfig{});

  params.o = o.data();
  params.seed = 1234;
  smyrf::SmyrfConfig config;
  config.n_hashes = 4;
  config.q_cluster_size = 64;
  config.k_cluster_size = 64;
  const smyrf::RunInfo info = smyrf::attention(params, config);

  double err = 0, ref = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    err += (o[i] - o_dense[i]) * double(o[i] - o_dense[i]);
    ref += o_dense[i] * double(o_dense[i]);
  }
  // iid Gaussian inputs give nearly uniform attention, the worst case for any clustering:
  // the dense output averages all N values while each SMYRF cluster sees k_cluster_size.
  std::printf("smyrf %s: %.2f ms, %zu scores (dense: %lld), relative error %.3f "
              "(iid Gaussian inputs: the worst case)\n",
              smyrf::simd_target().c_str(), info.seconds_total * 1e3, info.attention_scores,
              static_cast<long long>(B * H * N * N), std::sqrt(err / ref));
  const smyrf::Capabilities caps = smyrf::capabilities(config);
  std::printf("smyrf: causal %s, backward %s; %zu method forms registered\n", caps.causal ? "yes" : "no",
              caps.backward ? "yes" : "no", smyrf::methods().size());
  return 0;
}
