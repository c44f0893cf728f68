// smyrf/methods/sparse.h: SparseConfig, the fixed sparsity patterns, and their exact definitions.
// Included by smyrf/smyrf.h, which states the rules every method shares (key sets, masks,
// causal positions, the logsumexp merge of rounds, lse, errors) and defines the seeded
// draws random_bits, uniform_open01 and standard_normal used below.
#pragma once

#include <cstdint>

namespace smyrf {

// Fixed sparsity patterns, computed as block-sparse attention over tiles of the dense kernel
// (never an N x N mask). With p = i + (Nk - Nq) the query's position in key coordinates (p < 0
// for the first Nq - Nk queries when Nq > Nk); "/" is floor division and "mod" lies in [0, m):
//   local:        |p - j| <= window
//   dilated:      |p - j| <= window * dilation and (p - j) divisible by dilation
//   strided:      |p - j| <= window or (p - j) divisible by stride      (Sparse Transformer,
//                 Child et al. 2019, both heads' sets in one)
//   fixed:        j / stride == p / stride or j mod stride >= stride - summary
//                 (Sparse Transformer "fixed": the block, plus the last `summary` positions of
//                 every block)
//   longformer:   |p - j| <= window, or j < global_tokens, or 0 <= p < global_tokens (Beltagy
//                 et al. 2020: the first global_tokens positions attend to and are seen by all)
//   bigbird:      blocks of block_size in key coordinates: key j is in block kb = j / block_size
//                 (n_blocks = ceil(Nk / block_size), the last one may be short), the query in
//                 qb = p / block_size. Visible: |kb - qb| <= 1 (3 blocks), or kb <
//                 global_blocks, or the query's block is global (0 <= qb < global_blocks), or kb
//                 is one of qb's random blocks (Zaheer et al. 2020, ITC form). Random blocks,
//                 per (seed, head, qb), the same in every batch element: with g =
//                 min(global_blocks, n_blocks), the candidates are the blocks of [g, n_blocks)
//                 outside [qb - 1, qb + 1], ranked 0..n-1 in ascending order;
//                 r = min(random_blocks, n) of them are drawn without replacement by a
//                 partial Fisher-Yates shuffle of the ranks: a[k] = k; for t = 0..r-1,
//                 x = t + floor(u_t (n - t) / 2^64) with u_t = random_bits(seed, (head << 32) |
//                 (qb mod 2^32), t) (smyrf.h), swap a[t] and a[x], draw the candidate of rank
//                 a[t]. Fewer candidates than random_blocks: all of them. A global query
//                 block draws none.
//   axial_rows:   positions form rows of `width` (row-major 2-D grid; position x is in row
//                 x / width, column x mod width): same row
//   axial_columns: same column (Ho et al. 2019: one axis per call)
//   criss_cross:  same row or same column (Huang et al., CCNet 2019; the query's own position
//                 counted once)
// Each pattern is a set: a key is attended at most once. Masks restrict it; causal: every
// pattern, intersected with j <= p. No fallback: a query with an empty set gets O = 0, lse =
// -inf. Nq != Nk allowed. No dropout, no backward. Keys per query (K): local and dilated
// 2 window + 1; strided 2 window + 1 + Nk / stride; fixed stride + summary Nk / stride;
// longformer 2 window + 1 + global_tokens (Nk for a global query); bigbird (3 + global_blocks
// + random_blocks) block_size; axial_rows width; axial_columns Nk / width; criss_cross width +
// Nk / width - 1. Time O(N K (d + dv)), plus O(K) per group of up to 48 queries to list the
// keys (bigbird: O(random_blocks^2) per query block for the draws); memory O(N) (no N x N mask
// or scores).
//
// Capabilities.
//   causal:        supported (forward, dropout, backward): every pattern intersected with
//                  j <= p.
//   dropout:       yes, causal too: weight (b, h, part, i, j), part 0 or 1 (strided and
//                  criss_cross have two parts; every other pattern one).
//   backward:      attention_backward (f32, no broadcast strides): the key sets are fixed by the
//                  pattern (BigBird's random blocks by the seed).
//   attention_f64: attention_f64 and attention_backward_f64 over the same (part, key) pairs.
//   bf16 inputs:   yes (forward).
//   masks:         key and query masks.
//   Nq != Nk:      yes (p < 0 for the first Nq - Nk queries when Nq > Nk).
//   stride 0:      yes (forward).
//   learned parts: none.
//   complexity:    time O(N K (d + dv)), memory O(N), K the keys per query above. Config checks
//                  (smyrf::Error naming the field): pattern a SparsePattern value, window >= 0,
//                  dilation >= 1, stride >= 1, fixed: 1 <= summary <= stride, global_tokens >= 0,
//                  block_size >= 1, global_blocks >= 0, random_blocks >= 0, width >= 1.
enum class SparsePattern : std::uint8_t {
  local = 0, dilated, strided, fixed, longformer, bigbird, axial_rows, axial_columns, criss_cross
};
struct SparseConfig {
  SparsePattern pattern = SparsePattern::local;
  int window = 64;
  int dilation = 2;
  int stride = 64;
  int summary = 8;  // fixed only: 1 <= summary <= stride
  int global_tokens = 1;
  int block_size = 64;
  int global_blocks = 1;
  int random_blocks = 3;
  int width = 64;
};

}  // namespace smyrf
