// The validated problem as the methods see it: typed row access and the per-batch lists of
// active queries and visible keys. Built once at the API edge after the checks, so methods
// can trust every size, stride and pointer.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/convert.h"
#include "common/workspace.h"
#include "hwy/base.h"
#include "smyrf/smyrf.h"

namespace smyrf::detail {

struct Problem {
  const AttentionParams* p = nullptr;
  std::int64_t B = 0, H = 0, Nq = 0, Nk = 0, d = 0, dv = 0;
  float scale = 1.0f;
  int threads = 1;
  DType dtype = DType::f32;  // of Q, K, V: T below is float for f32, hwy::bfloat16_t for bf16

  template <class T = float>
  const T* q_row(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return static_cast<const T*>(p->q) + b * p->q_batch_stride + h * p->q_head_stride +
           i * p->q_row_stride;
  }
  template <class T = float>
  const T* k_row(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return static_cast<const T*>(p->k) + b * p->k_batch_stride + h * p->k_head_stride +
           j * p->k_row_stride;
  }
  template <class T = float>
  const T* v_row(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return static_cast<const T*>(p->v) + b * p->v_batch_stride + h * p->v_head_stride +
           j * p->v_row_stride;
  }
  // Addresses of input rows whatever the element type.
  std::size_t elem_bytes() const { return dtype == DType::bf16 ? 2 : 4; }
  const void* q_addr(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return static_cast<const char*>(p->q) +
           (b * p->q_batch_stride + h * p->q_head_stride + i * p->q_row_stride) *
               static_cast<std::int64_t>(elem_bytes());
  }
  const void* k_addr(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return static_cast<const char*>(p->k) +
           (b * p->k_batch_stride + h * p->k_head_stride + j * p->k_row_stride) *
               static_cast<std::int64_t>(elem_bytes());
  }
  const void* v_addr(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return static_cast<const char*>(p->v) +
           (b * p->v_batch_stride + h * p->v_head_stride + j * p->v_row_stride) *
               static_cast<std::int64_t>(elem_bytes());
  }
  float* o_row(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return p->o + b * p->o_batch_stride + h * p->o_head_stride + i * p->o_row_stride;
  }
  bool query_active(std::int64_t b, std::int64_t i) const {
    return p->query_mask == nullptr || p->query_mask[b * p->query_mask_batch_stride + i] != 0;
  }
  bool key_visible(std::int64_t b, std::int64_t j) const {
    return p->key_mask == nullptr || p->key_mask[b * p->key_mask_batch_stride + j] != 0;
  }
  // params.key_bias at (b, h, j): 0 without one.
  float key_bias(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return p->key_bias == nullptr ? 0.0f
                                  : p->key_bias[b * p->key_bias_batch_stride + h * p->key_bias_head_stride + j];
  }
  // Query i in key coordinates (causal alignment: the last query faces the last key).
  std::int64_t key_position(std::int64_t i) const { return i + Nk - Nq; }
  // Whether query i may see key j under the key mask and params.causal.
  bool sees(std::int64_t b, std::int64_t i, std::int64_t j) const {
    return key_visible(b, j) && (!p->causal || j <= key_position(i));
  }
};

// The Problem of parameters that passed the edge's checks (src/api/validate.cpp), or of an inner
// sub-problem a method builds from checked data (compressed and synthesizer attention run dense
// attention on synthesised rows). Checks nothing.
Problem checked_problem(const AttentionParams& params);

// Calls fn(T{}) with T the element type of the inputs: the one place where the runtime dtype
// becomes a compile-time type.
template <class Fn>
decltype(auto) with_input_type(DType dtype, Fn&& fn) {
  if (dtype == DType::bf16) return fn(hwy::bfloat16_t{});
  return fn(float{});
}

// Per batch element: the indices of active queries and visible keys, ascending.
struct TokenLists {
  const std::int32_t* q_index = nullptr;  // [B * Nq]; batch b's list starts at b * Nq
  const std::int32_t* k_index = nullptr;  // [B * Nk]
  const std::int32_t* q_count = nullptr;  // [B]
  const std::int32_t* k_count = nullptr;  // [B]
  const std::int32_t* queries(std::int64_t b, std::int64_t Nq) const { return q_index + b * Nq; }
  const std::int32_t* keys(std::int64_t b, std::int64_t Nk) const { return k_index + b * Nk; }
};

// Reserves the lists in `arena` (first pass) ...
struct TokenListSlots {
  std::size_t q_index, k_index, q_count, k_count;
};
inline TokenListSlots plan_token_lists(Arena& arena, const Problem& pr) {
  return {arena.add<std::int32_t>(static_cast<std::size_t>(pr.B * pr.Nq)),
          arena.add<std::int32_t>(static_cast<std::size_t>(pr.B * pr.Nk)),
          arena.add<std::int32_t>(static_cast<std::size_t>(pr.B)),
          arena.add<std::int32_t>(static_cast<std::size_t>(pr.B))};
}
// ... and fills them once the arena is bound.
inline TokenLists fill_token_lists(const Arena& arena, const TokenListSlots& s, const Problem& pr) {
  auto* qi = arena.at<std::int32_t>(s.q_index);
  auto* ki = arena.at<std::int32_t>(s.k_index);
  auto* qc = arena.at<std::int32_t>(s.q_count);
  auto* kc = arena.at<std::int32_t>(s.k_count);
  for (std::int64_t b = 0; b < pr.B; ++b) {
    std::int32_t n = 0;
    for (std::int64_t i = 0; i < pr.Nq; ++i)
      if (pr.query_active(b, i)) qi[b * pr.Nq + n++] = static_cast<std::int32_t>(i);
    qc[b] = n;
    n = 0;
    for (std::int64_t j = 0; j < pr.Nk; ++j)
      if (pr.key_visible(b, j)) ki[b * pr.Nk + n++] = static_cast<std::int32_t>(j);
    kc[b] = n;
  }
  return {qi, ki, qc, kc};
}

// Writes zeros to the output rows of masked queries, and to every row of batch elements
// without a visible key (the documented output for queries that see nothing).
void zero_unattended_rows(const Problem& pr, const TokenLists& lists);

}  // namespace smyrf::detail
