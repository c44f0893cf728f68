#include "api/validate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"

namespace smyrf::detail {
namespace {

__extension__ using Int128 = __int128;  // exact offset arithmetic for the overflow checks

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

void check_params(const AttentionParams& p) {
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
  if (p.key_bias != nullptr) {
    if (p.key_bias_batch_stride < 0)
      fail("params.key_bias_batch_stride", str(p.key_bias_batch_stride), "must be >= 0");
    if (p.key_bias_head_stride < 0)
      fail("params.key_bias_head_stride", str(p.key_bias_head_stride), "must be >= 0");
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t h = 0; h < p.heads; ++h)
        for (std::int64_t j = 0; j < p.nk; ++j) {
          const float x = p.key_bias[b * p.key_bias_batch_stride + h * p.key_bias_head_stride + j];
          if (!(std::abs(x) <= 0x1p32f))
            fail("params.key_bias[" + str(b) + ", " + str(h) + ", " + str(j) + "]", str(static_cast<double>(x)),
                 "must be finite with |value| <= 2^32");
        }
  }
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
      fail("params.o", ptr_str(p.o), std::string("output memory overlaps ") + name);

}

Problem validate_params(const AttentionParams& p) {
  check_params(p);
  return checked_problem(p);
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
        fail(all[a].first, ptr_str(a == 0 ? static_cast<const void*>(g.grad_q) : a == 1 ? g.grad_k : g.grad_v),
             std::string("gradient memory overlaps ") + all[b].first);
}

}  // namespace smyrf::detail
