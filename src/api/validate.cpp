#include "api/validate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/parallel.h"

namespace smyrf::detail {
namespace {

__extension__ using Int128 = __int128;  // exact offset arithmetic for the overflow checks

[[noreturn]] void fail(const std::string& parameter, const std::string& value,
                       const std::string& why) {
  throw Error("smyrf: " + parameter + " = " + value + ": " + why);
}

std::string str(std::int64_t v) { return std::to_string(v); }
std::string str(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
std::string ptr(const void* p) {
  std::ostringstream s;
  s << p;
  return s.str();
}

void require_size(const char* name, std::int64_t v) {
  if (v < 1) fail(std::string("params.") + name, str(v), "must be >= 1");
}

// Largest element offset a tensor with these extents/strides can address, or throws on
// overflow of the int64 offset arithmetic.
std::int64_t max_offset(const std::string& tensor, std::array<std::int64_t, 3> extent,
                        std::array<std::int64_t, 3> stride, std::int64_t row_len) {
  Int128 off = row_len - 1;
  for (int i = 0; i < 3; ++i) off += static_cast<Int128>(extent[i] - 1) * stride[i];
  if (off > std::numeric_limits<std::int64_t>::max() / 8)
    fail("params." + tensor + " strides", "(too large)", "element offsets overflow");
  return static_cast<std::int64_t>(off);
}

void check_input_strides(const std::string& t, std::int64_t B, std::int64_t H, std::int64_t N,
                         std::int64_t row_len, std::int64_t bs, std::int64_t hs,
                         std::int64_t rs) {
  if (bs < 0) fail("params." + t + "_batch_stride", str(bs), "must be >= 0");
  if (hs < 0) fail("params." + t + "_head_stride", str(hs), "must be >= 0");
  if (rs < 0) fail("params." + t + "_row_stride", str(rs), "must be >= 0");
  if (rs != 0 && rs < row_len)
    fail("params." + t + "_row_stride", str(rs),
         "rows overlap: must be 0 (broadcast) or >= the row length " + str(row_len));
  max_offset(t, {B, H, N}, {bs, hs, rs}, row_len);
}

// O must be writable without two elements sharing an address: sorting the dimensions by
// stride, each stride must exceed the span of the dimensions inside it.
void check_output_strides(const AttentionParams& p) {
  const std::int64_t B = p.batch, H = p.heads, N = p.nq;
  if (p.o_batch_stride < 0) fail("params.o_batch_stride", str(p.o_batch_stride), "must be >= 0");
  if (p.o_head_stride < 0) fail("params.o_head_stride", str(p.o_head_stride), "must be >= 0");
  if (p.o_row_stride < 0) fail("params.o_row_stride", str(p.o_row_stride), "must be >= 0");
  struct Dim {
    const char* name;
    std::int64_t extent, stride;
  };
  std::array<Dim, 3> dims{{{"params.o_row_stride", N, p.o_row_stride},
                           {"params.o_head_stride", H, p.o_head_stride},
                           {"params.o_batch_stride", B, p.o_batch_stride}}};
  std::stable_sort(dims.begin(), dims.end(),
                   [](const Dim& a, const Dim& b) { return a.stride < b.stride; });
  Int128 span = p.dv;  // elements covered by the dimensions checked so far
  for (const Dim& dim : dims) {
    if (dim.extent == 1) continue;
    if (dim.stride < span)
      fail(dim.name, str(dim.stride),
           "output elements would overlap: must be >= " + str(static_cast<std::int64_t>(span)));
    span = static_cast<Int128>(dim.stride) * (dim.extent - 1) + span;
  }
  max_offset("o", {B, H, N}, {p.o_batch_stride, p.o_head_stride, p.o_row_stride}, p.dv);
}

void check_mask(const char* name, const std::uint8_t* mask, std::int64_t stride, std::int64_t n) {
  if (mask == nullptr) return;
  if (stride != 0 && stride < n)
    fail(std::string("params.") + name + "_batch_stride", str(stride),
         "must be 0 (one mask for every batch element) or >= the sequence length " + str(n));
}

struct Range {
  std::uintptr_t lo, hi;
};
Range byte_range(const void* base, std::int64_t max_off, std::size_t elem_bytes) {
  const auto lo = reinterpret_cast<std::uintptr_t>(base);
  return {lo, lo + static_cast<std::uintptr_t>(max_off + 1) * elem_bytes};
}

}  // namespace

Problem validate_params(const AttentionParams& p) {
  require_size("batch", p.batch);
  require_size("heads", p.heads);
  require_size("nq", p.nq);
  require_size("nk", p.nk);
  require_size("d", p.d);
  require_size("dv", p.dv);
  constexpr std::int64_t kMaxLen = std::numeric_limits<std::int32_t>::max();
  if (p.nq > kMaxLen) fail("params.nq", str(p.nq), "must be < 2^31");
  if (p.nk > kMaxLen) fail("params.nk", str(p.nk), "must be < 2^31");
  if (p.dtype != DType::f32 && p.dtype != DType::bf16)
    fail("params.dtype", str(static_cast<std::int64_t>(p.dtype)), "must be DType::f32 or DType::bf16");
  if (p.q == nullptr) fail("params.q", "nullptr", "must point to the queries");
  if (p.k == nullptr) fail("params.k", "nullptr", "must point to the keys");
  if (p.v == nullptr) fail("params.v", "nullptr", "must point to the values");
  if (p.o == nullptr) fail("params.o", "nullptr", "must point to the output");
  check_input_strides("q", p.batch, p.heads, p.nq, p.d, p.q_batch_stride, p.q_head_stride,
                      p.q_row_stride);
  check_input_strides("k", p.batch, p.heads, p.nk, p.d, p.k_batch_stride, p.k_head_stride,
                      p.k_row_stride);
  check_input_strides("v", p.batch, p.heads, p.nk, p.dv, p.v_batch_stride, p.v_head_stride,
                      p.v_row_stride);
  check_output_strides(p);
  check_mask("key_mask", p.key_mask, p.key_mask_batch_stride, p.nk);
  check_mask("query_mask", p.query_mask, p.query_mask_batch_stride, p.nq);
  if (p.scale && !std::isfinite(*p.scale))
    fail("params.scale", str(static_cast<double>(*p.scale)), "must be finite");
  if (p.num_threads < 0 || p.num_threads > kMaxThreads)
    fail("params.num_threads", str(std::int64_t{p.num_threads}),
         "must be in [0, " + str(std::int64_t{kMaxThreads}) + "] (0 = all available threads)");
  if (!(p.dropout >= 0.0f && p.dropout < 1.0f))
    fail("params.dropout", str(static_cast<double>(p.dropout)), "must be in [0, 1)");
  if (p.dropout > 0.0f && p.dtype != DType::f32)
    fail("params.dropout", str(static_cast<double>(p.dropout)), "dropout needs f32 inputs");

  // O must not overlap the inputs (the kernels read Q, K, V after writing O).
  const Range o = byte_range(p.o, max_offset("o", {p.batch, p.heads, p.nq},
                                             {p.o_batch_stride, p.o_head_stride, p.o_row_stride},
                                             p.dv), sizeof(float));
  const std::size_t in_bytes = p.dtype == DType::bf16 ? 2 : 4;
  const std::array<std::pair<const char*, Range>, 3> inputs{{
      {"params.q", byte_range(p.q, max_offset("q", {p.batch, p.heads, p.nq},
                                              {p.q_batch_stride, p.q_head_stride, p.q_row_stride},
                                              p.d), in_bytes)},
      {"params.k", byte_range(p.k, max_offset("k", {p.batch, p.heads, p.nk},
                                              {p.k_batch_stride, p.k_head_stride, p.k_row_stride},
                                              p.d), in_bytes)},
      {"params.v", byte_range(p.v, max_offset("v", {p.batch, p.heads, p.nk},
                                              {p.v_batch_stride, p.v_head_stride, p.v_row_stride},
                                              p.dv), in_bytes)},
  }};
  for (const auto& [name, r] : inputs)
    if (r.lo < o.hi && o.lo < r.hi)
      fail("params.o", ptr(p.o), std::string("output memory overlaps ") + name);

  Problem pr;
  pr.p = &p;
  pr.B = p.batch;
  pr.H = p.heads;
  pr.Nq = p.nq;
  pr.Nk = p.nk;
  pr.d = p.d;
  pr.dv = p.dv;
  pr.scale = p.scale ? *p.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.d)));
  pr.threads = resolve_threads(p.num_threads);
  pr.dtype = p.dtype;
  return pr;
}

void validate_gradients(const AttentionParams& p, const GradientParams& g) {
  if (p.dtype != DType::f32) fail("params.dtype", "bf16", "the backward pass needs f32 inputs");
  const std::array<std::pair<const char*, const void*>, 6> ptrs{{{"grads.o", g.o},
                                                                  {"grads.lse", g.lse},
                                                                  {"grads.grad_o", g.grad_o},
                                                                  {"grads.grad_q", g.grad_q},
                                                                  {"grads.grad_k", g.grad_k},
                                                                  {"grads.grad_v", g.grad_v}}};
  for (const auto& [name, q] : ptrs)
    if (q == nullptr) fail(name, "nullptr", "the backward pass needs it");
  // Each gradient element belongs to one input element: no broadcast (zero) strides.
  const std::array<std::pair<const char*, std::int64_t>, 9> strides{{
      {"params.q_batch_stride", p.batch > 1 ? p.q_batch_stride : 1},
      {"params.q_head_stride", p.heads > 1 ? p.q_head_stride : 1},
      {"params.q_row_stride", p.nq > 1 ? p.q_row_stride : 1},
      {"params.k_batch_stride", p.batch > 1 ? p.k_batch_stride : 1},
      {"params.k_head_stride", p.heads > 1 ? p.k_head_stride : 1},
      {"params.k_row_stride", p.nk > 1 ? p.k_row_stride : 1},
      {"params.v_batch_stride", p.batch > 1 ? p.v_batch_stride : 1},
      {"params.v_head_stride", p.heads > 1 ? p.v_head_stride : 1},
      {"params.v_row_stride", p.nk > 1 ? p.v_row_stride : 1}}};
  for (const auto& [name, v] : strides)
    if (v == 0) fail(name, "0", "broadcast inputs have no backward (gradients would alias)");
  // The gradients are written while Q, K, V, O, dO and lse are read: no overlaps.
  auto range = [&](const void* base, std::array<std::int64_t, 3> extent,
                   std::array<std::int64_t, 3> stride, std::int64_t row) {
    return byte_range(base, max_offset("grads", extent, stride, row), sizeof(float));
  };
  const Range gq = range(g.grad_q, {p.batch, p.heads, p.nq}, {p.q_batch_stride, p.q_head_stride, p.q_row_stride}, p.d);
  const Range gk = range(g.grad_k, {p.batch, p.heads, p.nk}, {p.k_batch_stride, p.k_head_stride, p.k_row_stride}, p.d);
  const Range gv = range(g.grad_v, {p.batch, p.heads, p.nk}, {p.v_batch_stride, p.v_head_stride, p.v_row_stride}, p.dv);
  const std::array<std::pair<const char*, Range>, 9> all{{
      {"grads.grad_q", gq},
      {"grads.grad_k", gk},
      {"grads.grad_v", gv},
      {"params.q", range(p.q, {p.batch, p.heads, p.nq}, {p.q_batch_stride, p.q_head_stride, p.q_row_stride}, p.d)},
      {"params.k", range(p.k, {p.batch, p.heads, p.nk}, {p.k_batch_stride, p.k_head_stride, p.k_row_stride}, p.d)},
      {"params.v", range(p.v, {p.batch, p.heads, p.nk}, {p.v_batch_stride, p.v_head_stride, p.v_row_stride}, p.dv)},
      {"grads.o", range(g.o, {p.batch, p.heads, p.nq}, {p.o_batch_stride, p.o_head_stride, p.o_row_stride}, p.dv)},
      {"grads.grad_o", range(g.grad_o, {p.batch, p.heads, p.nq}, {p.o_batch_stride, p.o_head_stride, p.o_row_stride}, p.dv)},
      {"grads.lse", byte_range(g.lse, p.batch * p.heads * p.nq - 1, sizeof(float))},
  }};
  for (std::size_t a = 0; a < 3; ++a)
    for (std::size_t b = 0; b < all.size(); ++b)
      if (a != b && all[a].second.lo < all[b].second.hi && all[b].second.lo < all[a].second.hi)
        fail(all[a].first, ptr(a == 0 ? static_cast<const void*>(g.grad_q) : a == 1 ? g.grad_k : g.grad_v),
             std::string("gradient memory overlaps ") + all[b].first);
}

void validate_config(const SmyrfConfig& c) {
  if (c.keys != KeySelection::lsh && c.keys != KeySelection::centroid)
    fail("SmyrfConfig.keys", str(std::int64_t{static_cast<int>(c.keys)}), "is not a KeySelection value");
  if (c.keys == KeySelection::centroid && c.n_hashes != 1)
    fail("SmyrfConfig.n_hashes", str(std::int64_t{c.n_hashes}), "must be 1 with keys = centroid (one round)");
  if (c.n_hashes < 1 || c.n_hashes > 1024)
    fail("SmyrfConfig.n_hashes", str(std::int64_t{c.n_hashes}), "must be in [1, 1024]");
  if (c.q_cluster_size < 1)
    fail("SmyrfConfig.q_cluster_size", str(std::int64_t{c.q_cluster_size}), "must be >= 1");
  if (c.k_cluster_size < 1)
    fail("SmyrfConfig.k_cluster_size", str(std::int64_t{c.k_cluster_size}), "must be >= 1");
  if (!(std::isfinite(c.r) && c.r >= 0.0f))
    fail("SmyrfConfig.r", str(static_cast<double>(c.r)),
         "must be finite and >= 0 (0 = order by the projection)");
  const auto t = static_cast<int>(c.transform);
  if (t < 0 || t > static_cast<int>(Transform::l2_alsh))
    fail("SmyrfConfig.transform", str(std::int64_t{t}), "is not a Transform value");
  if (c.transform == Transform::l2_alsh) {
    if (c.alsh_m < 1 || c.alsh_m > 8)
      fail("SmyrfConfig.alsh_m", str(std::int64_t{c.alsh_m}), "must be in [1, 8]");
    if (!(c.alsh_u > 0.0f && c.alsh_u < 1.0f))
      fail("SmyrfConfig.alsh_u", str(static_cast<double>(c.alsh_u)), "must be in (0, 1)");
  }
}

namespace {
void at_least(const char* name, int v, int lo) {
  if (v < lo) fail(name, str(std::int64_t{v}), "must be >= " + str(std::int64_t{lo}));
}
}  // namespace

void validate_config(const ReformerConfig& c, const Problem& pr) {
  if (c.n_hashes < 1 || c.n_hashes > 1024)
    fail("ReformerConfig.n_hashes", str(std::int64_t{c.n_hashes}), "must be in [1, 1024]");
  if (c.n_buckets < 2 || c.n_buckets % 2 != 0)
    fail("ReformerConfig.n_buckets", str(std::int64_t{c.n_buckets}), "must be even and >= 2");
  if (c.n_buckets > 65536)
    fail("ReformerConfig.n_buckets", str(std::int64_t{c.n_buckets}), "must be <= 65536");
  at_least("ReformerConfig.chunk_size", c.chunk_size, 1);
  if (c.shared_qk && pr.Nq != pr.Nk)
    fail("ReformerConfig.shared_qk", "true",
         "needs nq == nk (keys are the normalised queries), got nq = " + str(pr.Nq) +
             ", nk = " + str(pr.Nk));
}

void validate_config(const ClusteredConfig& c) {
  at_least("ClusteredConfig.n_clusters", c.n_clusters, 1);
  if (c.hash_bits < 1 || c.hash_bits > 64)
    fail("ClusteredConfig.hash_bits", str(std::int64_t{c.hash_bits}), "must be in [1, 64]");
  at_least("ClusteredConfig.iterations", c.iterations, 0);
  at_least("ClusteredConfig.topk", c.topk, 0);
}

void validate_config(const RoutingConfig& c) {
  at_least("RoutingConfig.n_clusters", c.n_clusters, 1);
  if (c.n_clusters > 65536)
    fail("RoutingConfig.n_clusters", str(std::int64_t{c.n_clusters}), "must be <= 65536");
  at_least("RoutingConfig.window", c.window, 1);
  at_least("RoutingConfig.iterations", c.iterations, 0);
}

void validate_config(const SparseConfig& c) {
  const auto kind = static_cast<int>(c.pattern);
  if (kind < 0 || kind > static_cast<int>(SparsePattern::criss_cross))
    fail("SparseConfig.pattern", str(std::int64_t{kind}), "is not a SparsePattern value");
  at_least("SparseConfig.window", c.window, 0);
  at_least("SparseConfig.dilation", c.dilation, 1);
  at_least("SparseConfig.stride", c.stride, 1);
  if (c.pattern == SparsePattern::fixed && (c.summary < 1 || c.summary > c.stride))
    fail("SparseConfig.summary", str(std::int64_t{c.summary}),
         "must be in [1, stride = " + str(std::int64_t{c.stride}) + "] for the fixed pattern");
  at_least("SparseConfig.global_tokens", c.global_tokens, 0);
  at_least("SparseConfig.block_size", c.block_size, 1);
  at_least("SparseConfig.global_blocks", c.global_blocks, 0);
  at_least("SparseConfig.random_blocks", c.random_blocks, 0);
  at_least("SparseConfig.width", c.width, 1);
}

void check_inputs_finite(const Problem& pr) {
  // One pass over the rows a method reads checks two things, in a fixed order so that the
  // message does not depend on the thread count. Tasks are blocks of rows — per (b, h): query
  // rows, then key rows (K row j, then V row j) — and each records its first bad row; the lowest
  // task wins.
  //   * Every element is finite.
  //   * Every value stays inside the float range the methods compute in: Q and K row norms and
  //     |V| elements at most 2^32, and |scale| * R^2 at most 2^32, R the largest Q or K row norm.
  //     Then scores, squared norms, feature-map arguments and sums of up to 2^31 weighted values
  //     all stay far from FLT_MAX (~2^128) in every method; larger inputs would overflow to
  //     Inf/NaN somewhere, so they are rejected here instead.
  struct Hit {
    int tensor = -1;  // 0 = q, 1 = k, 2 = v
    bool finite = true;
    std::int64_t row = 0, col = 0;
    double value = 0;  // the non-finite element, the row norm or |v|
  };
  constexpr double kLimit = 4294967296.0;  // 2^32
  constexpr std::int64_t kRows = 512;
  const std::int64_t q_blocks = (pr.Nq + kRows - 1) / kRows, k_blocks = (pr.Nk + kRows - 1) / kRows;
  const std::int64_t per_head = q_blocks + k_blocks;
  const std::int64_t tasks = pr.B * pr.H * per_head;
  std::vector<Hit> hits(static_cast<std::size_t>(tasks));
  std::vector<double> max_norm2(static_cast<std::size_t>(tasks), 0.0);
  with_input_type(pr.dtype, [&](auto type_tag) {
    using T = decltype(type_tag);
    // A Q or K row: its first non-finite element, else its norm if above the limit.
    auto check_row = [&](int tensor, const T* row, std::int64_t i, double* norm2, Hit* hit) {
      double sum = 0;
      for (std::int64_t c = 0; c < pr.d; ++c) {
        const float x = to_float(row[c]);
        if (!std::isfinite(x)) {
          *hit = {tensor, false, i, c, x};
          return true;
        }
        sum += static_cast<double>(x) * x;
      }
      *norm2 = std::max(*norm2, sum);
      if (sum <= kLimit * kLimit) return false;
      *hit = {tensor, true, i, 0, std::sqrt(sum)};
      return true;
    };
    auto check_values = [&](const T* row, std::int64_t j, Hit* hit) {
      for (std::int64_t c = 0; c < pr.dv; ++c) {
        const float x = to_float(row[c]);
        if (std::isfinite(x) && std::fabs(x) <= kLimit) continue;
        *hit = {2, std::isfinite(x), j, c, std::isfinite(x) ? std::fabs(x) : x};
        return true;
      }
      return false;
    };
    parallel_for(tasks, pr.threads, [&](std::int64_t t) {
      const std::int64_t bh = t / per_head, block = t % per_head;
      const std::int64_t b = bh / pr.H, h = bh % pr.H;
      Hit& hit = hits[static_cast<std::size_t>(t)];
      double& norm2 = max_norm2[static_cast<std::size_t>(t)];
      if (block < q_blocks) {
        for (std::int64_t i = block * kRows; i < std::min(pr.Nq, (block + 1) * kRows); ++i)
          if (pr.query_active(b, i) && check_row(0, pr.q_row<T>(b, h, i), i, &norm2, &hit)) return;
        return;
      }
      const std::int64_t kb = block - q_blocks;
      for (std::int64_t j = kb * kRows; j < std::min(pr.Nk, (kb + 1) * kRows); ++j) {
        if (!pr.key_visible(b, j)) continue;
        if (check_row(1, pr.k_row<T>(b, h, j), j, &norm2, &hit) || check_values(pr.v_row<T>(b, h, j), j, &hit))
          return;
      }
    });
  });
  static constexpr const char* kNames[] = {"params.q", "params.k", "params.v"};
  double r2 = 0;
  for (std::int64_t t = 0; t < tasks; ++t) {
    r2 = std::max(r2, max_norm2[static_cast<std::size_t>(t)]);
    const Hit& hit = hits[static_cast<std::size_t>(t)];
    if (hit.tensor < 0) continue;
    std::ostringstream where;
    const std::int64_t bh = t / per_head;
    where << kNames[hit.tensor] << "[" << bh / pr.H << ", " << bh % pr.H << ", " << hit.row;
    if (!hit.finite || hit.tensor == 2) where << ", " << hit.col;
    where << "]";
    if (!hit.finite)
      fail(where.str(), str(hit.value), "non-finite input (set params.check_finite = false to skip this scan)");
    fail(where.str() + (hit.tensor == 2 ? "" : " row norm"), str(hit.value),
         "above 2^32, outside the float range the methods compute in (rescale the input; "
         "params.check_finite = false skips this check)");
  }
  const double bound = std::fabs(static_cast<double>(pr.scale)) * r2;
  if (bound > kLimit) {
    std::ostringstream why;
    why << "|scale| * R^2 = " << bound << " is above 2^32 (R = " << std::sqrt(r2)
        << ", the largest Q or K row norm): scores would leave the float range the methods compute "
           "in (params.check_finite = false skips this check)";
    fail("params.scale", str(static_cast<double>(pr.scale)), why.str());
  }
}

}  // namespace smyrf::detail
