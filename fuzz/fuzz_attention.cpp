// libFuzzer target for the public entry point, smyrf::attention.
//
// The fuzz input chooses everything a caller can: sizes, strides (padded, broadcast), masks,
// dtype, scale, causal, seed, thread count, the method and its config (valid and invalid
// values), and the input values (drawn from a palette of ordinary numbers, zeros, NaN, +-Inf,
// denormals, huge and tiny magnitudes, or raw bit patterns). The contract checked on every call:
//   * the call returns, or throws smyrf::Error (never another exception, never a crash: the
//     sanitizers this target is built with report memory and UB errors);
//   * when it returns and check_finite was on: every output element is finite, the rows of
//     masked queries are exactly 0 and their lse is -inf;
//   * when it throws: the output buffer is untouched (errors are raised before any write).
// Any violation aborts with a message, which libFuzzer reports as a crash with the input.
//
// Build and run: bash scripts/fuzz.sh [seconds] (README, "Guarantees").
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "smyrf/smyrf.h"

namespace {

using smyrf::AttentionParams;
using smyrf::MethodConfig;

// The call under test, for the report.
std::string g_call;

[[noreturn]] void fail(const char* what, std::int64_t index = -1) {
  std::fprintf(stderr, "fuzz_attention: contract violated: %s (element %lld)\n  call: %s\n", what,
               static_cast<long long>(index), g_call.c_str());
  std::abort();
}

// One input value from the palette.
float draw_value(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 0: return 0.0f;
    case 1: return std::numeric_limits<float>::quiet_NaN();
    case 2: return std::numeric_limits<float>::infinity();
    case 3: return -std::numeric_limits<float>::infinity();
    case 4: return std::numeric_limits<float>::denorm_min() * in.ConsumeIntegralInRange<int>(1, 1000);
    case 5: return in.ConsumeBool() ? 1e30f : -1e30f;
    case 6: return in.ConsumeBool() ? 1e-30f : -1e-30f;
    case 7: return in.ConsumeBool() ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::max();
    case 8: {
      const std::uint32_t bits = in.ConsumeIntegral<std::uint32_t>();
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    default: return static_cast<float>(in.ConsumeIntegralInRange<int>(-4000, 4000)) / 1000.0f;
  }
}

// A tensor of `rows` rows of `cols` with a drawn row padding; all values drawn, padding NaN
// (a kernel that reads padding produces NaN and fails the finiteness check).
struct Tensor {
  std::vector<float> data;
  std::int64_t row = 0, head = 0, batch = 0;
};
Tensor draw_tensor(FuzzedDataProvider& in, std::int64_t B, std::int64_t H, std::int64_t rows,
                   std::int64_t cols, bool allow_broadcast, bool all_normal) {
  Tensor t;
  t.row = cols + in.ConsumeIntegralInRange<int>(0, 2);
  t.head = rows * t.row + in.ConsumeIntegralInRange<int>(0, 3);
  t.batch = H * t.head + in.ConsumeIntegralInRange<int>(0, 3);
  if (allow_broadcast && in.ConsumeIntegralInRange<int>(0, 7) == 0) t.head = 0;
  if (allow_broadcast && in.ConsumeIntegralInRange<int>(0, 7) == 0) t.batch = 0;
  t.data.assign(static_cast<std::size_t>(std::max<std::int64_t>(1, (B - 1) * t.batch + (H - 1) * t.head +
                                                                        (rows - 1) * t.row + cols)),
                std::numeric_limits<float>::quiet_NaN());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) {
          const float x = all_normal ? static_cast<float>(in.ConsumeIntegralInRange<int>(-3000, 3000)) / 1000.0f
                                     : draw_value(in);
          t.data[static_cast<std::size_t>(b * t.batch + h * t.head + r * t.row + c)] = x;
        }
  return t;
}

// A method config with fields drawn from small ranges that include invalid values.
MethodConfig draw_config(FuzzedDataProvider& in, std::int64_t H, std::int64_t d,
                         std::vector<float>& centroids) {
  auto small = [&](int lo, int hi) { return in.ConsumeIntegralInRange<int>(lo, hi); };
  switch (in.ConsumeIntegralInRange<int>(0, 11)) {
    case 0: return smyrf::ReferenceConfig{};
    case 1: return smyrf::DenseConfig{};
    case 2: {
      smyrf::SmyrfConfig c;
      c.n_hashes = small(0, 4);
      c.q_cluster_size = small(0, 9);
      c.k_cluster_size = small(0, 9);
      c.r = in.ConsumeBool() ? 0.0f : static_cast<float>(small(-1, 4));
      c.transform = static_cast<smyrf::Transform>(small(0, 4));
      c.alsh_m = small(0, 4);
      c.alsh_u = static_cast<float>(small(-1, 11)) / 10.0f;
      c.keys = static_cast<smyrf::KeySelection>(small(0, 2));
      return c;
    }
    case 3: {
      smyrf::ReformerConfig c;
      c.n_hashes = small(0, 3);
      c.n_buckets = small(0, 9);
      c.chunk_size = small(0, 9);
      c.shared_qk = in.ConsumeBool();
      return c;
    }
    case 4: {
      smyrf::ClusteredConfig c;
      c.n_clusters = small(0, 9);
      c.hash_bits = small(0, 65);
      c.iterations = small(-1, 4);
      c.topk = small(-1, 9);
      return c;
    }
    case 5: {
      smyrf::RoutingConfig c;
      c.n_clusters = small(0, 6);
      c.window = small(0, 9);
      c.iterations = small(-1, 3);
      if (c.n_clusters > 0 && in.ConsumeBool()) {
        centroids.resize(static_cast<std::size_t>(H * c.n_clusters * d));
        for (float& x : centroids) x = draw_value(in);
        c.centroids = centroids.data();
      }
      return c;
    }
    case 6: {
      smyrf::SparseConfig c;
      c.pattern = static_cast<smyrf::SparsePattern>(small(0, 9));
      c.window = small(-1, 6);
      c.dilation = small(0, 4);
      c.stride = small(0, 8);
      c.summary = small(0, 8);
      c.global_tokens = small(-1, 4);
      c.block_size = small(0, 8);
      c.global_blocks = small(-1, 3);
      c.random_blocks = small(-1, 4);
      c.width = small(0, 8);
      return c;
    }
    case 7: {
      smyrf::LinearConfig c;
      c.map = static_cast<smyrf::FeatureMap>(small(0, 7));
      c.n_features = small(0, 33);
      c.orthogonal = in.ConsumeBool();
      c.rfa_sigma = static_cast<float>(small(-1, 4)) / 2.0f;
      c.dpfp_nu = small(0, 4);
      c.chunk = small(0, 9);
      return c;
    }
    case 8: {
      smyrf::CompressedConfig c;
      c.kind = static_cast<smyrf::Compression>(small(0, 6));
      c.rank = small(0, 9);
      c.pinv_iterations = small(-1, 8);
      c.stride = small(0, 5);
      c.window = small(-1, 4);
      return c;
    }
    case 9: {
      smyrf::InformerConfig c;
      c.factor = static_cast<float>(small(-1, 8)) / 2.0f;
      c.top_queries = small(-1, 9);
      c.sample_keys = small(-1, 9);
      return c;
    }
    case 10: {
      smyrf::SinkhornConfig c;
      c.block_size = small(0, 9);
      c.iterations = small(-1, 9);
      c.temperature = static_cast<float>(small(-1, 8)) / 4.0f;
      return c;
    }
    default: {
      smyrf::SynthesizerConfig c;
      c.kind = static_cast<smyrf::SynthesizerKind>(small(0, 2));
      c.hidden = small(0, 9);
      return c;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider in(bytes, size);
  const std::int64_t B = in.ConsumeIntegralInRange<int>(1, 2), H = in.ConsumeIntegralInRange<int>(1, 3);
  const std::int64_t Nq = in.ConsumeIntegralInRange<int>(1, 33), Nk = in.ConsumeIntegralInRange<int>(1, 33);
  const std::int64_t d = in.ConsumeIntegralInRange<int>(1, 20), dv = in.ConsumeIntegralInRange<int>(1, 20);
  // Most inputs are ordinary numbers so that the methods' own paths get explored; the rest mix
  // in the whole palette.
  const bool all_normal = in.ConsumeIntegralInRange<int>(0, 3) != 0;
  std::vector<float> centroids;
  const MethodConfig config = draw_config(in, H, d, centroids);
  Tensor q = draw_tensor(in, B, H, Nq, d, true, all_normal);
  Tensor k = draw_tensor(in, B, H, Nk, d, true, all_normal);
  Tensor v = draw_tensor(in, B, H, Nk, dv, true, all_normal);
  const std::int64_t o_row = dv + in.ConsumeIntegralInRange<int>(0, 2);
  const float sentinel = -12345.0f;
  std::vector<float> o(static_cast<std::size_t>(B * H * Nq * o_row), sentinel);
  std::vector<float> lse(static_cast<std::size_t>(B * H * Nq), sentinel);
  std::vector<std::uint8_t> key_mask, query_mask;

  AttentionParams p;
  p.batch = B;
  p.heads = H;
  p.nq = Nq;
  p.nk = Nk;
  p.d = d;
  p.dv = dv;
  p.q = q.data.data();
  p.k = k.data.data();
  p.v = v.data.data();
  p.o = o.data();
  p.q_batch_stride = q.batch, p.q_head_stride = q.head, p.q_row_stride = q.row;
  p.k_batch_stride = k.batch, p.k_head_stride = k.head, p.k_row_stride = k.row;
  p.v_batch_stride = v.batch, p.v_head_stride = v.head, p.v_row_stride = v.row;
  p.o_batch_stride = H * Nq * o_row, p.o_head_stride = Nq * o_row, p.o_row_stride = o_row;
  if (in.ConsumeBool()) {
    key_mask.resize(static_cast<std::size_t>(B * Nk));
    for (auto& m : key_mask) m = in.ConsumeIntegralInRange<int>(0, 3) != 0;
    p.key_mask = key_mask.data();
    p.key_mask_batch_stride = Nk;
  }
  if (in.ConsumeBool()) {
    query_mask.resize(static_cast<std::size_t>(B * Nq));
    for (auto& m : query_mask) m = in.ConsumeIntegralInRange<int>(0, 3) != 0;
    p.query_mask = query_mask.data();
    p.query_mask_batch_stride = Nq;
  }
  if (in.ConsumeBool()) p.scale = in.ConsumeBool() ? draw_value(in) : 0.0f;
  p.causal = in.ConsumeBool();
  p.seed = in.ConsumeIntegral<std::uint64_t>();
  p.num_threads = in.ConsumeIntegralInRange<int>(1, 3);
  p.check_finite = in.ConsumeIntegralInRange<int>(0, 7) != 0;
  if (in.ConsumeBool()) p.lse = lse.data();
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) p.dropout = static_cast<float>(in.ConsumeIntegralInRange<int>(-1, 10)) / 10.0f;

  g_call = std::string(smyrf::method_name(config)) + " B=" + std::to_string(B) + " H=" + std::to_string(H) +
           " Nq=" + std::to_string(Nq) + " Nk=" + std::to_string(Nk) + " d=" + std::to_string(d) +
           " dv=" + std::to_string(dv) + " scale=" + (p.scale ? std::to_string(*p.scale) : "default") +
           " causal=" + std::to_string(p.causal) + " ordinary_values=" + std::to_string(all_normal);
  try {
    smyrf::attention(p, config);
  } catch (const smyrf::Error&) {
    for (std::size_t i = 0; i < o.size(); ++i)
      if (o[i] != sentinel) fail("the output was written before an error", static_cast<std::int64_t>(i));
    return 0;
  }
  for (std::size_t r = 0; r < static_cast<std::size_t>(B * H * Nq); ++r)
    for (std::int64_t c = dv; c < o_row; ++c)
      if (o[r * static_cast<std::size_t>(o_row) + static_cast<std::size_t>(c)] != sentinel)
        fail("a write outside the output's rows", static_cast<std::int64_t>(r));
  if (!p.check_finite) return 0;  // documented: unspecified values (but no crash)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < Nq; ++i) {
        const bool active = query_mask.empty() || query_mask[static_cast<std::size_t>(b * Nq + i)] != 0;
        const std::int64_t row = (b * H + h) * Nq + i;
        for (std::int64_t c = 0; c < dv; ++c) {
          const float x = o[static_cast<std::size_t>(row * o_row + c)];
          if (!std::isfinite(x)) fail("non-finite output from finite input", row * o_row + c);
          if (!active && x != 0.0f) fail("a masked query's output is not 0", row * o_row + c);
        }
        if (p.lse != nullptr && !active && lse[static_cast<std::size_t>(row)] != -std::numeric_limits<float>::infinity())
          fail("a masked query's lse is not -inf", row);
      }
  return 0;
}
