// Low-rank and compressed attention: the forward and the float backward (definitions and the
// backward's contract: smyrf/methods/compressed.h; the double definition: compressed_f64.cpp).
//
// Each kind runs in two stages:
//   1. Synthesis: the short key/value rows of every (batch, head), in f32 buffers of this
//      call's scratch. Sums over tokens are accumulated in double in position order (products
//      of two floats are exact in double, so contraction cannot change them) and rounded once
//      (Linformer's projections by register-tiled Highway kernels, CompressedProject);
//      rows computed by attention (star's relay, induced points, Nystrom's A3 V) come from the
//      dense kernel run on a sub-problem whose queries are the synthesised rows.
//   2. Attention: detail::dense_forward on a sub-problem whose keys and values are the
//      synthesised rows (a key mask hides rows a batch element does not have); star and
//      global_memory add the local window of real keys by detail::sparse_forward (pattern
//      local) into a second buffer, merged with the first part by logsumexp.
// bf16 inputs: rows that meet synthesised f32 rows in one kernel call are first converted to
// f32 copies (exact), so every sub-problem has a single element type.
//
// Parallel: synthesis over (batch, head, block of rows), Nystrom's small matrices over (batch,
// head) (their products by a register-tiled double kernel, CompressedMatMul, each element
// summed in index order); every output row has one task and a fixed summation order, and the
// kernels are deterministic, so results do not depend on the thread count.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "methods/compressed/compressed.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cmath>
#include <cstdint>

#include "hwy/highway.h"
#include "kernels/tile_matmul-inl.h"

HWY_BEFORE_NAMESPACE();
namespace smyrf {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// out[r * ldo + c] = sum_{t < n} P[r * ldp + keys[t]] * X[keys[t] * rs + c] for r < rn,
// c < width: each sum in double over t in order (P holds floats widened to double, and products
// of two floats are exact in double, so fused or separate multiply-adds give the same bits on
// every target and in the scalar tail). P in double so that its broadcasts are plain loads.
// The tile kernel with the key list as inner index: tiles of 4 (then 1) rows x 4 (then 1)
// vectors of columns, each accumulated over all t, then the remaining columns one by one.
void CompressedProject(const double* P, std::int64_t ldp, std::int64_t rn,
                       const std::int32_t* keys, std::int64_t n, const float* X, std::int64_t rs,
                       std::int64_t width, double* out, std::int64_t ldo) {
  tile::MatMul<4>(hn::ScalableTag<double>(), tile::Strided<double>{P, ldp, 1},
                  tile::RowMajor<float>{X, rs}, rn, n, width, out, ldo, tile::Indexed{keys});
}

// Rows [i0, i1) of C = A B (A [., k], B [k, m], C [., m], row-major, double): each element a
// sum over t in index order by multiply-adds (fused where the target has them: then the vector
// tiles and the std::fma tail give the same bits). Register tiles of 4 (then 1) rows x 4 (then
// 1) vectors.
void CompressedMatMul(const double* A, const double* Bm, double* Cm, std::int64_t i0,
                      std::int64_t i1, std::int64_t k, std::int64_t m) {
  tile::MatMul<4>(hn::ScalableTag<double>(), tile::Strided<double>{A + i0 * k, k, 1},
                  tile::RowMajor<double>{Bm, m}, i1 - i0, k, m, Cm + i0 * m, m);
}

// out[t * ldo + c] = sum_{r < k} P[r * ldp + t] * X[r * rs + c] for t < n, c < width (P^T X,
// Linformer's chain dK = E^T dK'): each sum in double over r in order, the same bits as
// CompressedProject's (exact products of floats in double).
void CompressedProjectT(const double* P, std::int64_t ldp, std::int64_t n, std::int64_t k, const float* X,
                        std::int64_t rs, std::int64_t width, double* out, std::int64_t ldo) {
  tile::MatMul<4>(hn::ScalableTag<double>(), tile::Strided<double>{P, 1, ldp}, tile::RowMajor<float>{X, rs}, n, k,
                  width, out, ldo);
}

// out[r * ldo + c] = start + sum_{t < w} A[r * lda + t] * B[t * ldb + c] for r < m, c < n, in
// double over t in order (exact products of floats), start = +0 or (accumulate) the value
// already in out: a learned projection's gradient, one batch element at a time.
void CompressedOuter(const float* A, std::int64_t lda, std::int64_t m, std::int64_t w, const float* B,
                     std::int64_t ldb, std::int64_t n, double* out, std::int64_t ldo, bool accumulate) {
  const hn::ScalableTag<double> dd;
  if (accumulate)
    tile::MatMul<4, tile::Start::out>(dd, tile::Strided<float>{A, lda, 1}, tile::RowMajor<float>{B, ldb}, m, w, n,
                                      out, ldo);
  else
    tile::MatMul<4>(dd, tile::Strided<float>{A, lda, 1}, tile::RowMajor<float>{B, ldb}, m, w, n, out, ldo);
}

}  // namespace HWY_NAMESPACE
}  // namespace smyrf
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "methods/compressed/compressed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "methods/compressed/registration.h"
#include "common/call_scratch.h"
#include "common/parallel.h"
#include "common/timer.h"
#include "methods/dense/dense.h"
#include "methods/sparse/registration.h"
#include "methods/train/train.h"
#include "methods/sparse/sparse.h"

namespace smyrf::detail {
HWY_EXPORT(CompressedProject);
HWY_EXPORT(CompressedProjectT);
HWY_EXPORT(CompressedMatMul);
HWY_EXPORT(CompressedOuter);

void compressed_matmul(const double* A, const double* B, double* C, std::int64_t n, std::int64_t k,
                       std::int64_t m) {
  HWY_DYNAMIC_DISPATCH(CompressedMatMul)(A, B, C, 0, n, k, m);
}

namespace {



// Throws naming `name` and the first non-finite element of a contiguous [a, b, c] array.
void check_finite_array(const char* name, const float* x, std::int64_t a, std::int64_t b,
                        std::int64_t c, const char* shape) {
  if (x == nullptr) return;
  for (std::int64_t i = 0; i < a; ++i)
    for (std::int64_t j = 0; j < b; ++j)
      for (std::int64_t t = 0; t < c; ++t) {
        const float v = x[(i * b + j) * c + t];
        if (!std::isfinite(v))
          fail(std::string("CompressedConfig.") + name + "[" + std::to_string(i) + ", " +
                   std::to_string(j) + ", " + std::to_string(t) + "]",
               std::to_string(v), std::string("must be finite (") + shape + " floats, contiguous)");
      }
}

// An f32 tensor [B, H, N, width] by strides (0 = broadcast).
struct Rows {
  const float* p = nullptr;
  std::int64_t bs = 0, hs = 0, rs = 0;
  const float* row(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return p + b * bs + h * hs + i * rs;
  }
};
Rows contiguous_rows(const float* p, std::int64_t H, std::int64_t n, std::int64_t width) {
  return {p, H * n * width, n * width, width};
}
// A learned per-head array [H, n, width] shared by every batch element.
Rows head_rows(const float* p, std::int64_t n, std::int64_t width) {
  return {p, 0, n * width, width};
}

// The f32 view of Q (which = 0), K (1) or V (2): the tensor itself for f32 inputs, else its
// rows converted into `buf` ([B, H, N, width] contiguous, every row).
Rows float_view(const Problem& pr, int which, float* buf) {
  const AttentionParams& p = *pr.p;
  const std::int64_t n = which == 0 ? pr.Nq : pr.Nk, w = which == 2 ? pr.dv : pr.d;
  if (pr.dtype == DType::f32) {
    if (which == 0)
      return {static_cast<const float*>(p.q), p.q_batch_stride, p.q_head_stride, p.q_row_stride};
    if (which == 1)
      return {static_cast<const float*>(p.k), p.k_batch_stride, p.k_head_stride, p.k_row_stride};
    return {static_cast<const float*>(p.v), p.v_batch_stride, p.v_head_stride, p.v_row_stride};
  }
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    for (std::int64_t i = 0; i < n; ++i) {
      const hwy::bfloat16_t* src = which == 0   ? pr.q_row<hwy::bfloat16_t>(b, h, i)
                                   : which == 1 ? pr.k_row<hwy::bfloat16_t>(b, h, i)
                                                : pr.v_row<hwy::bfloat16_t>(b, h, i);
      float* dst = buf + (bh * n + i) * w;
      for (std::int64_t t = 0; t < w; ++t) dst[t] = to_float(src[t]);
    }
  });
  return contiguous_rows(buf, pr.H, n, w);
}

// Exact attention of the rows of q ([B, H, nq, d], query mask qmask [B, nq] or nullptr) to the
// rows of k, v ([B, H, nk, d|dv], key mask kmask [B, nk] or nullptr), all f32, written to o
// ([B, H, nq, dv] by strides) and lse ([B, H, nq] contiguous, or nullptr).
// The sub-problem of attend_f32 and attend_backward_f32.
AttentionParams sub_params(const Problem& pr, std::int64_t nq, const Rows& q, const std::uint8_t* qmask,
                           std::int64_t qmask_stride, std::int64_t nk, const Rows& k, const Rows& v,
                           std::int64_t dv, const std::uint8_t* kmask, std::int64_t kmask_stride,
                           const Rows& o) {
  AttentionParams s;
  s.batch = pr.B;
  s.heads = pr.H;
  s.nq = nq;
  s.nk = nk;
  s.d = pr.d;
  s.dv = dv;
  s.dtype = DType::f32;
  s.q = q.p;
  s.q_batch_stride = q.bs, s.q_head_stride = q.hs, s.q_row_stride = q.rs;
  s.k = k.p;
  s.k_batch_stride = k.bs, s.k_head_stride = k.hs, s.k_row_stride = k.rs;
  s.v = v.p;
  s.v_batch_stride = v.bs, s.v_head_stride = v.hs, s.v_row_stride = v.rs;
  s.o = const_cast<float*>(o.p);
  s.o_batch_stride = o.bs, s.o_head_stride = o.hs, s.o_row_stride = o.rs;
  s.key_mask = kmask;
  s.key_mask_batch_stride = kmask_stride;
  s.query_mask = qmask;
  s.query_mask_batch_stride = qmask_stride;
  s.scale = pr.scale;
  s.seed = pr.p->seed;
  s.num_threads = pr.threads;
  s.check_finite = false;
  return s;
}

RunInfo attend_f32(const Problem& pr, Workspace* ws, std::int64_t nq, const Rows& q,
                   const std::uint8_t* qmask, std::int64_t qmask_stride, std::int64_t nk,
                   const Rows& k, const Rows& v, std::int64_t dv, const std::uint8_t* kmask,
                   std::int64_t kmask_stride, const Rows& o, float* lse) {
  AttentionParams s = sub_params(pr, nq, q, qmask, qmask_stride, nk, k, v, dv, kmask, kmask_stride, o);
  s.lse = lse;
  if (lse != nullptr) std::fill_n(lse, pr.B * pr.H * nq, -std::numeric_limits<float>::infinity());
  const Problem sub = checked_problem(s);
  return dense_forward(sub, ws);
}

// The softmax backward of attend_f32's attention (the dense kernels) given its output o (with
// lse [B, H, nq]) and the gradient go of o (o's layout): dq in q's layout, dk in k's, dv in v's
// (rows of masked queries and keys zero). o and lse may be those of a larger softmax of which
// this attention is a part (the merged output of star and global_memory): then the gradients
// are this part's (train.h: D = dO . O and P = exp(s - lse) over the whole softmax).
RunInfo attend_backward_f32(const Problem& pr, Workspace* ws, std::int64_t nq, const Rows& q,
                            const std::uint8_t* qmask, std::int64_t qmask_stride, std::int64_t nk,
                            const Rows& k, const Rows& v, std::int64_t dv, const std::uint8_t* kmask,
                            std::int64_t kmask_stride, const Rows& o, const float* lse, const float* go,
                            float* dq, float* dk, float* dvout) {
  const AttentionParams s = sub_params(pr, nq, q, qmask, qmask_stride, nk, k, v, dv, kmask, kmask_stride, o);
  const Problem sub = checked_problem(s);
  return train_backward(sub, GradientParams{o.p, lse, go, dq, dk, dvout}, DenseConfig{}, ws);
}

// The output of params.o as Rows.
Rows output_rows(const Problem& pr) {
  const AttentionParams& p = *pr.p;
  return {p.o, p.o_batch_stride, p.o_head_stride, p.o_row_stride};
}

// Segment / window mean of rows list[begin, end) of (b, h): double sum in list order, divided
// by the count, rounded to f32.
template <class T, class RowFn>
void mean_rows(RowFn&& row, const std::int32_t* list, std::int64_t begin, std::int64_t end,
               std::int64_t width, double* acc, float* out) {
  std::fill_n(acc, width, 0.0);
  for (std::int64_t t = begin; t < end; ++t) {
    const T* x = row(list[t]);
    for (std::int64_t c = 0; c < width; ++c) acc[c] += static_cast<double>(to_float(x[c]));
  }
  const double n = static_cast<double>(end - begin);
  for (std::int64_t c = 0; c < width; ++c) out[c] = static_cast<float>(acc[c] / n);
}

// Segment means (compressed.h) of the visible keys (queries = false) or the active queries of
// every (b, h): K rows into km [BH, M, d], V rows into vm [BH, M, dv] (vm may be nullptr;
// queries: Q rows into km). Rows past a batch element's segment count are zero.
template <class T>
void segment_means(const Problem& pr, const TokenLists& lists, bool queries, std::int64_t rank,
                   std::int64_t M, float* km, float* vm, double* acc_all) {
  const std::int64_t w = std::max(pr.d, pr.dv);
  parallel_for_tid(pr.B * pr.H, pr.threads, [&](std::int64_t bh, int tid) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t n = queries ? lists.q_count[b] : lists.k_count[b];
    const std::int32_t* list = queries ? lists.queries(b, pr.Nq) : lists.keys(b, pr.Nk);
    const std::int64_t s = segment_count(rank, n);
    double* acc = acc_all + static_cast<std::int64_t>(tid) * w;
    std::fill_n(km + bh * M * pr.d, M * pr.d, 0.0f);
    if (vm != nullptr) std::fill_n(vm + bh * M * pr.dv, M * pr.dv, 0.0f);
    for (std::int64_t t = 0; t < s; ++t) {
      const std::int64_t lo = segment_begin(t, n, s), hi = segment_begin(t + 1, n, s);
      if (queries) {
        mean_rows<T>([&](std::int32_t i) { return pr.q_row<T>(b, h, i); }, list, lo, hi, pr.d, acc,
                     km + (bh * M + t) * pr.d);
      } else {
        mean_rows<T>([&](std::int32_t j) { return pr.k_row<T>(b, h, j); }, list, lo, hi, pr.d, acc,
                     km + (bh * M + t) * pr.d);
        if (vm != nullptr)
          mean_rows<T>([&](std::int32_t j) { return pr.v_row<T>(b, h, j); }, list, lo, hi, pr.dv,
                       acc, vm + (bh * M + t) * pr.dv);
      }
    }
  });
}

// key mask [B, M]: rows t < count(b) exist.
template <class Count>
void fill_row_mask(std::int64_t B, std::int64_t M, std::uint8_t* mask, Count&& count) {
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t c = count(b);
    for (std::int64_t t = 0; t < M; ++t) mask[b * M + t] = t < c ? 1 : 0;
  }
}

// A call's scratch (planned by the caller) and the scratch of the kernel calls on sub-problems
// (one buffer, reused by each of them in turn).
struct Scratch {
  CallScratch call;
  Arena& arena;
  Workspace inner;
  TokenLists lists;
  Scratch(const Problem& pr, Workspace* workspace) : call(pr, workspace), arena(call.arena()) {}
  void bind() { lists = call.bind(); }
};

void add_inner(RunInfo& info, const RunInfo& inner, std::size_t* inner_bytes) {
  info.attention_scores += inner.attention_scores;
  info.attention.seconds += inner.seconds_total;
  *inner_bytes = std::max(*inner_bytes, inner.workspace_bytes);
}

// Every query attends to the M synthesised rows of its (b, h) (kp [B, H, M, d], vp [B, H, M,
// dv]; mask [B, M]: the rows batch element b has), writing O and lse; finishes info.
RunInfo attend_synthesised(const Problem& pr, Scratch& sc, std::size_t q_slot, std::int64_t M,
                           float* kp, float* vp, const std::uint8_t* mask, RunInfo info) {
  const Rows q = float_view(pr, 0, sc.arena.at<float>(q_slot));
  std::size_t inner = 0;
  add_inner(info,
            attend_f32(pr, &sc.inner, pr.Nq, q, pr.p->query_mask, pr.p->query_mask_batch_stride, M,
                       contiguous_rows(kp, pr.H, M, pr.d), contiguous_rows(vp, pr.H, M, pr.dv),
                       pr.dv, mask, M, output_rows(pr), pr.p->lse),
            &inner);
  info.workspace_bytes = sc.arena.bytes() + inner;
  return info;
}

// ---- linformer ----

// Projection rows per task of the synthesis.
constexpr std::int64_t kLinformerRows = 8;
// Doubles of per-thread scratch of linformer_rows: the accumulator (kLinformerRows x w) and the
// task's rows of E and F.
std::int64_t linformer_acc_doubles(const Problem& pr) { return kLinformerRows * std::max(pr.d, pr.dv); }
std::int64_t linformer_draw_doubles(const Problem& pr) { return 2 * kLinformerRows * pr.Nk; }

// K' = E K, V' = F V over the visible keys of every (b, h) into kp [BH, M, d], vp [BH, M, dv]
// (M = rank; zero rows where no key is visible): one task per (b, h, block of kLinformerRows
// rows), each element summed in double over the key list in order. acc_all and draw_all:
// per-thread scratch (linformer_acc_doubles, linformer_draw_doubles).
void linformer_rows(const Problem& pr, const CompressedConfig& c, const TokenLists& lists, const Rows& kview,
                    const Rows& vview, float* kp, float* vp, double* acc_all, double* draw_all) {
  const std::int64_t M = c.rank, BH = pr.B * pr.H, d = pr.d, dv = pr.dv, Nk = pr.Nk;
  const bool own_e = c.projection_e == nullptr, own_f = c.projection_f == nullptr;
  constexpr std::int64_t kRows = kLinformerRows;
  const std::int64_t blocks = (M + kRows - 1) / kRows;
  parallel_for_tid(BH * blocks, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / blocks, r0 = (task % blocks) * kRows;
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int64_t rn = std::min(kRows, M - r0);
    const std::int32_t* keys = lists.keys(b, Nk);
    const std::int64_t n = lists.k_count[b];
    double* acc = acc_all + static_cast<std::int64_t>(tid) * linformer_acc_doubles(pr);
    // The task's rows of E and F in double (the kernel broadcasts them): the default
    // projections drawn here (not stored for all heads: drawing costs far less than the
    // projection), given ones widened.
    double* E = draw_all + static_cast<std::int64_t>(tid) * linformer_draw_doubles(pr);
    double* F = E + kRows * Nk;
    for (std::int64_t r = 0; r < (n > 0 ? rn : 0); ++r) {  // no visible key: K', V' = 0
      spec::linformer_projection_row<double>(pr.p->seed, h, r0 + r, Nk, M,
                                       own_e ? E + r * Nk : nullptr, own_f ? F + r * Nk : nullptr);
      if (!own_e) std::copy_n(c.projection_e + (h * M + r0 + r) * Nk, Nk, E + r * Nk);
      if (!own_f) std::copy_n(c.projection_f + (h * M + r0 + r) * Nk, Nk, F + r * Nk);
    }
    auto project = [&](const double* P, const Rows& x, std::int64_t width, float* out) {
      HWY_DYNAMIC_DISPATCH(CompressedProject)(P, Nk, rn, keys, n, x.row(b, h, 0), x.rs, width,
                                              acc, width);
      for (std::int64_t r = 0; r < rn; ++r)
        for (std::int64_t col = 0; col < width; ++col)
          out[(bh * M + r0 + r) * width + col] = static_cast<float>(acc[r * width + col]);
    };
    project(E, kview, d, kp);
    project(F, vview, dv, vp);
  });
}

RunInfo linformer(const Problem& pr, const CompressedConfig& c, Workspace* workspace) {
  const std::int64_t M = c.rank, BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const bool bf = pr.dtype == DType::bf16;
  Scratch sc(pr, workspace);
  const std::size_t k_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * M * d));
  const std::size_t v_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * M * dv));
  const std::size_t mask_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B * M));
  const std::size_t q_slot = sc.arena.add<float>(bf ? static_cast<std::size_t>(BH * pr.Nq * d) : 0);
  // bf16: f32 copies of K and V (exact) for the projection kernel.
  const std::size_t kv_slot =
      sc.arena.add<float>(bf ? static_cast<std::size_t>(BH * pr.Nk * d) : 0);
  const std::size_t vv_slot =
      sc.arena.add<float>(bf ? static_cast<std::size_t>(BH * pr.Nk * dv) : 0);
  const std::size_t acc_slot =
      sc.arena.add<double>(static_cast<std::size_t>(pr.threads * linformer_acc_doubles(pr)));
  const std::size_t draw_slot =
      sc.arena.add<double>(static_cast<std::size_t>(pr.threads * linformer_draw_doubles(pr)));
  sc.bind();
  Timer timer;
  RunInfo info;
  float* kp = sc.arena.at<float>(k_slot);
  float* vp = sc.arena.at<float>(v_slot);
  const TokenLists& lists = sc.lists;
  const Rows kview = float_view(pr, 1, sc.arena.at<float>(kv_slot));
  const Rows vview = float_view(pr, 2, sc.arena.at<float>(vv_slot));
  info.gather.seconds += timer.lap();
  linformer_rows(pr, c, lists, kview, vview, kp, vp, sc.arena.at<double>(acc_slot),
                 sc.arena.at<double>(draw_slot));
  std::uint8_t* mask = sc.arena.at<std::uint8_t>(mask_slot);
  fill_row_mask(pr.B, M, mask, [&](std::int64_t b) { return lists.k_count[b] > 0 ? M : 0; });
  info.transform.seconds += timer.lap();
  return attend_synthesised(pr, sc, q_slot, M, kp, vp, mask, info);
}

// ---- memory_compressed ----

// The window means of every (b, h) into kp [BH, M, d], vp [BH, M, dv] (M = ceil(Nk / stride);
// zero rows past a batch element's windows). acc_all: per-thread scratch of max(d, dv) doubles.
void window_means(const Problem& pr, const TokenLists& lists, std::int64_t stride, std::int64_t M, float* kp,
                  float* vp, double* acc_all) {
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv, w = std::max(d, dv);
  constexpr std::int64_t kRows = 16;  // windows per task
  const std::int64_t blocks = (M + kRows - 1) / kRows;
  with_input_type(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_for_tid(BH * blocks, pr.threads, [&](std::int64_t task, int tid) {
      const std::int64_t bh = task / blocks, t0 = (task % blocks) * kRows;
      const std::int64_t b = bh / pr.H, h = bh % pr.H;
      const std::int32_t* keys = lists.keys(b, pr.Nk);
      const std::int64_t n = lists.k_count[b];
      double* acc = acc_all + static_cast<std::int64_t>(tid) * w;
      for (std::int64_t t = t0; t < std::min(M, t0 + kRows); ++t) {
        float* krow = kp + (bh * M + t) * d;
        float* vrow = vp + (bh * M + t) * dv;
        const std::int64_t lo = t * stride, hi = std::min(n, lo + stride);
        if (lo >= n) {
          std::fill_n(krow, d, 0.0f);
          std::fill_n(vrow, dv, 0.0f);
          continue;
        }
        mean_rows<T>([&](std::int32_t j) { return pr.k_row<T>(b, h, j); }, keys, lo, hi, d, acc,
                     krow);
        mean_rows<T>([&](std::int32_t j) { return pr.v_row<T>(b, h, j); }, keys, lo, hi, dv, acc,
                     vrow);
      }
    });
  });
}

RunInfo memory_compressed(const Problem& pr, const CompressedConfig& c, Workspace* workspace) {
  const std::int64_t stride = c.stride, BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t M = (pr.Nk + stride - 1) / stride;
  Scratch sc(pr, workspace);
  const std::size_t k_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * M * d));
  const std::size_t v_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * M * dv));
  const std::size_t mask_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B * M));
  const std::size_t q_slot =
      sc.arena.add<float>(pr.dtype == DType::bf16 ? static_cast<std::size_t>(BH * pr.Nq * d) : 0);
  const std::int64_t w = std::max(d, dv);
  const std::size_t acc_slot = sc.arena.add<double>(static_cast<std::size_t>(pr.threads * w));
  sc.bind();
  Timer timer;
  RunInfo info;
  float* kp = sc.arena.at<float>(k_slot);
  float* vp = sc.arena.at<float>(v_slot);
  const TokenLists& lists = sc.lists;
  window_means(pr, lists, stride, M, kp, vp, sc.arena.at<double>(acc_slot));
  std::uint8_t* mask = sc.arena.at<std::uint8_t>(mask_slot);
  fill_row_mask(pr.B, M, mask,
                [&](std::int64_t b) { return (lists.k_count[b] + stride - 1) / stride; });
  info.transform.seconds = timer.lap();
  return attend_synthesised(pr, sc, q_slot, M, kp, vp, mask, info);
}

// ---- the window of real keys (star, global_memory) ----

// Local attention |p - j| <= window of the real keys (params' masks, causal and dtype) into
// ow [B, H, Nq, dv] and lw [B, H, Nq] (contiguous).
RunInfo window_part(const Problem& pr, Workspace* ws, std::int64_t window, float* ow, float* lw) {
  AttentionParams s = *pr.p;
  s.o = ow;
  s.o_row_stride = pr.dv, s.o_head_stride = pr.Nq * pr.dv, s.o_batch_stride = pr.H * pr.Nq * pr.dv;
  s.lse = lw;
  s.num_threads = pr.threads;
  s.check_finite = false;
  std::fill_n(lw, pr.B * pr.H * pr.Nq, -std::numeric_limits<float>::infinity());
  const Problem sub = checked_problem(s);
  SparseConfig local;
  local.pattern = SparsePattern::local;
  // |p - j| <= Nq + Nk holds for every pair: a larger radius is the same set.
  local.window = static_cast<int>(std::min<std::int64_t>(window, pr.Nq + pr.Nk));
  return sparse_forward(sub, local, ws);
}

// params.o holds the synthetic part (logsumexp ls); merges the window part (ow, lw) into it
// as one softmax over the union (disjoint sets): O = (e^(ls-m) O_s + e^(lw-m) O_w) / (e^(ls-m)
// + e^(lw-m)), lse = m + log(that sum), m = max(ls, lw); both -inf: O = 0, lse = -inf.
void merge_parts(const Problem& pr, const TokenLists& lists, const float* ls, const float* ow,
                 const float* lw) {
  float* lse = pr.p->lse;
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    for (std::int32_t t = 0; t < lists.q_count[b]; ++t) {
      const std::int64_t i = queries[t], row = bh * pr.Nq + i;
      float* o = pr.o_row(b, h, i);
      const float* w = ow + row * pr.dv;
      const double a = ls[row], c = lw[row], m = std::max(a, c);
      if (m == -std::numeric_limits<double>::infinity()) {
        std::fill_n(o, pr.dv, 0.0f);
        continue;
      }
      const double ea = std::exp(a - m), ec = std::exp(c - m), sum = ea + ec;
      const double wa = ea / sum, wc = ec / sum;
      for (std::int64_t x = 0; x < pr.dv; ++x)
        o[x] = static_cast<float>(wa * o[x] + wc * static_cast<double>(w[x]));
      if (lse != nullptr) lse[row] = static_cast<float>(m + std::log(sum));
    }
  });
}

// The bf16 conversion buffers of Q, K, V (none for f32 inputs).
struct ViewSlots {
  std::size_t q = 0, k = 0, v = 0;
  ViewSlots(Arena& arena, const Problem& pr, bool need_kv) {
    const bool bf = pr.dtype == DType::bf16;
    const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
    q = arena.add<float>(bf ? BH * static_cast<std::size_t>(pr.Nq * pr.d) : 0);
    k = arena.add<float>(bf && need_kv ? BH * static_cast<std::size_t>(pr.Nk * pr.d) : 0);
    v = arena.add<float>(bf && need_kv ? BH * static_cast<std::size_t>(pr.Nk * pr.dv) : 0);
  }
};

// ---- nystrom ----

// C = A B, A [n, k], B [k, m], row-major, double, each sum in index order.
void matmul(const double* A, const double* Bm, double* C, std::int64_t n, std::int64_t k,
            std::int64_t m) {
  compressed_matmul(A, Bm, C, n, k, m);
}
// X <- x I - X (square n x n).
void shift(double x, double* X, std::int64_t n) {
  for (std::int64_t i = 0; i < n * n; ++i) X[i] = -X[i];
  for (std::int64_t i = 0; i < n; ++i) X[i * n + i] += x;
}

RunInfo nystrom(const Problem& pr, const CompressedConfig& c, Workspace* workspace) {
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv, rank = c.rank;
  const std::int64_t Mq = std::min<std::int64_t>(rank, pr.Nq),
                     Mk = std::min<std::int64_t>(rank, pr.Nk);
  const std::int64_t w = std::max(d, dv);
  // Per thread: A2 [mq, mk], Z and the next Z [mk, mq], A2 Z and two products [mq, mq], one
  // row of W (also the segment sums' accumulator).
  const std::int64_t per_thread = 3 * Mq * Mk + 3 * Mq * Mq + w;
  Scratch sc(pr, workspace);
  const ViewSlots views(sc.arena, pr, true);
  const std::size_t qt_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * Mq * d));
  const std::size_t kt_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * Mk * d));
  const std::size_t qm_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B * Mq));
  const std::size_t km_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B * Mk));
  const std::size_t a3v_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * Mq * dv));
  const std::size_t w_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * Mk * dv));
  const std::size_t dbl_slot =
      sc.arena.add<double>(static_cast<std::size_t>(pr.threads * per_thread));
  sc.bind();
  const TokenLists& lists = sc.lists;
  Timer timer;
  RunInfo info;
  std::size_t inner = 0;
  float* qt = sc.arena.at<float>(qt_slot);
  float* kt = sc.arena.at<float>(kt_slot);
  double* dbl = sc.arena.at<double>(dbl_slot);
  with_input_type(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    segment_means<T>(pr, lists, true, rank, Mq, qt, nullptr, dbl);
    segment_means<T>(pr, lists, false, rank, Mk, kt, nullptr, dbl);
  });
  auto mq_of = [&](std::int64_t b) { return segment_count(rank, lists.q_count[b]); };
  auto mk_of = [&](std::int64_t b) { return segment_count(rank, lists.k_count[b]); };
  std::uint8_t* qmask = sc.arena.at<std::uint8_t>(qm_slot);
  std::uint8_t* kmask = sc.arena.at<std::uint8_t>(km_slot);
  fill_row_mask(pr.B, Mq, qmask, mq_of);
  fill_row_mask(pr.B, Mk, kmask, mk_of);
  info.transform.seconds = timer.lap();
  // A3 V: the landmark queries attend to the real keys.
  float* a3v = sc.arena.at<float>(a3v_slot);
  const Rows kview = float_view(pr, 1, sc.arena.at<float>(views.k));
  const Rows vview = float_view(pr, 2, sc.arena.at<float>(views.v));
  add_inner(info,
            attend_f32(pr, &sc.inner, Mq, contiguous_rows(qt, pr.H, Mq, d), qmask, Mq, pr.Nk, kview,
                       vview, dv, pr.p->key_mask, pr.p->key_mask_batch_stride,
                       contiguous_rows(a3v, pr.H, Mq, dv), nullptr),
            &inner);
  // Z and W = Z (A3 V) per (b, h), in double.
  timer.lap();
  float* W = sc.arena.at<float>(w_slot);
  const double scale = pr.scale;
  parallel_for_tid(BH, pr.threads, [&](std::int64_t bh, int tid) {
    const std::int64_t b = bh / pr.H, mq = mq_of(b), mk = lists.k_count[b] > 0 ? mk_of(b) : 0;
    float* wrow = W + bh * Mk * dv;
    std::fill_n(wrow, Mk * dv, 0.0f);
    if (mq == 0 || mk == 0) return;
    double* A2 = dbl + static_cast<std::int64_t>(tid) * per_thread;
    double* Z = A2 + mq * mk;
    double* Zn = Z + mk * mq;
    double* AZ = Zn + mk * mq;
    double* P1 = AZ + mq * mq;
    double* P2 = P1 + mq * mq;
    for (std::int64_t i = 0; i < mq; ++i) {
      const float* q = qt + (bh * Mq + i) * d;
      double* a = A2 + i * mk;
      double mx = -std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < mk; ++j) {
        const float* k = kt + (bh * Mk + j) * d;
        double s = 0.0;
        for (std::int64_t t = 0; t < d; ++t)
          s += static_cast<double>(q[t]) * static_cast<double>(k[t]);
        a[j] = scale * s;
        mx = std::max(mx, a[j]);
      }
      double sum = 0.0;
      for (std::int64_t j = 0; j < mk; ++j) {
        a[j] = std::exp(a[j] - mx);
        sum += a[j];
      }
      for (std::int64_t j = 0; j < mk; ++j) a[j] /= sum;
    }
    double max_row = 0.0, max_col = 0.0;
    for (std::int64_t i = 0; i < mq; ++i) {
      double s = 0.0;
      for (std::int64_t j = 0; j < mk; ++j) s += std::abs(A2[i * mk + j]);
      max_row = std::max(max_row, s);
    }
    for (std::int64_t j = 0; j < mk; ++j) {
      double s = 0.0;
      for (std::int64_t i = 0; i < mq; ++i) s += std::abs(A2[i * mk + j]);
      max_col = std::max(max_col, s);
    }
    for (std::int64_t i = 0; i < mk; ++i)
      for (std::int64_t j = 0; j < mq; ++j) Z[i * mq + j] = A2[j * mk + i] / (max_row * max_col);
    for (int it = 0; it < c.pinv_iterations; ++it) {
      matmul(A2, Z, AZ, mq, mk, mq);  // A2 Z
      std::copy_n(AZ, mq * mq, P1);
      shift(7.0, P1, mq);              // 7 I - A2 Z
      matmul(AZ, P1, P2, mq, mq, mq);  // A2 Z (7 I - A2 Z)
      shift(15.0, P2, mq);             // 15 I - ...
      matmul(AZ, P2, P1, mq, mq, mq);  // A2 Z (15 I - ...)
      shift(13.0, P1, mq);             // 13 I - ...
      matmul(Z, P1, Zn, mk, mq, mq);   // Z (13 I - ...)
      for (std::int64_t x = 0; x < mk * mq; ++x) Z[x] = 0.25 * Zn[x];
    }
    // W = Z (A3 V), [mk, dv], one row at a time in the thread's last w doubles.
    double* acc = dbl + static_cast<std::int64_t>(tid) * per_thread + per_thread - w;
    const float* av = a3v + bh * Mq * dv;
    for (std::int64_t i = 0; i < mk; ++i) {
      std::fill_n(acc, dv, 0.0);
      for (std::int64_t t = 0; t < mq; ++t) {
        const double z = Z[i * mq + t];
        for (std::int64_t x = 0; x < dv; ++x) acc[x] += z * static_cast<double>(av[t * dv + x]);
      }
      for (std::int64_t x = 0; x < dv; ++x) wrow[i * dv + x] = static_cast<float>(acc[x]);
    }
  });
  for (std::int64_t b = 0; b < pr.B; ++b)
    if (lists.k_count[b] > 0)
      info.attention_scores += static_cast<std::size_t>(pr.H * mq_of(b) * mk_of(b));
  info.transform.seconds += timer.lap();
  // O = A1 W: the queries attend to the key landmarks with values W.
  const Rows q = float_view(pr, 0, sc.arena.at<float>(views.q));
  add_inner(info,
            attend_f32(pr, &sc.inner, pr.Nq, q, pr.p->query_mask, pr.p->query_mask_batch_stride, Mk,
                       contiguous_rows(kt, pr.H, Mk, d), contiguous_rows(W, pr.H, Mk, dv), dv,
                       kmask, Mk, output_rows(pr), nullptr),
            &inner);
  if (float* lse = pr.p->lse; lse != nullptr)
    for (std::int64_t b = 0; b < pr.B; ++b) {
      if (lists.k_count[b] == 0) continue;
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int32_t t = 0; t < lists.q_count[b]; ++t)
          lse[(b * pr.H + h) * pr.Nq + lists.queries(b, pr.Nq)[t]] =
              std::numeric_limits<float>::quiet_NaN();
    }
  info.workspace_bytes = sc.arena.bytes() + inner;
  return info;
}

// ---- global_memory and star: synthetic rows plus the window ----

RunInfo with_window(const Problem& pr, const CompressedConfig& c, Workspace* workspace) {
  const bool star = c.kind == Compression::star;
  const bool given = !star && c.memory_k != nullptr;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t M = star ? 1 : given ? c.rank : std::min<std::int64_t>(c.rank, pr.Nk);
  const std::int64_t w = std::max(d, dv);
  Scratch sc(pr, workspace);
  const ViewSlots views(sc.arena, pr, star);
  const std::size_t k_slot = sc.arena.add<float>(given ? 0 : static_cast<std::size_t>(BH * M * d));
  const std::size_t v_slot = sc.arena.add<float>(given ? 0 : static_cast<std::size_t>(BH * M * dv));
  const std::size_t qr_slot = sc.arena.add<float>(star ? static_cast<std::size_t>(BH * d) : 0);
  const std::size_t mask_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B * M));
  const std::size_t qmask_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B));
  const std::size_t ls_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t lw_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * pr.Nq));
  const std::size_t ow_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * pr.Nq * dv));
  const std::size_t acc_slot = sc.arena.add<double>(static_cast<std::size_t>(pr.threads * w));
  sc.bind();
  const TokenLists& lists = sc.lists;
  Timer timer;
  RunInfo info;
  std::size_t inner = 0;
  std::uint8_t* mask = sc.arena.at<std::uint8_t>(mask_slot);
  Rows ks, vs;
  if (given) {
    ks = head_rows(c.memory_k, c.rank, d);
    vs = head_rows(c.memory_v, c.rank, dv);
    std::fill_n(mask, pr.B * M, std::uint8_t{1});  // always visible
  } else if (!star) {
    float* km = sc.arena.at<float>(k_slot);
    float* vm = sc.arena.at<float>(v_slot);
    with_input_type(pr.dtype, [&](auto tag) {
      segment_means<decltype(tag)>(pr, lists, false, c.rank, M, km, vm,
                                   sc.arena.at<double>(acc_slot));
    });
    fill_row_mask(pr.B, M, mask,
                  [&](std::int64_t b) { return segment_count(c.rank, lists.k_count[b]); });
    ks = contiguous_rows(km, pr.H, M, d);
    vs = contiguous_rows(vm, pr.H, M, dv);
  } else {
    // The relay: q_r = mean of the active queries; its softmax means of K and of V.
    float* qr = sc.arena.at<float>(qr_slot);
    with_input_type(pr.dtype, [&](auto tag) {
      segment_means<decltype(tag)>(pr, lists, true, 1, 1, qr, nullptr,
                                   sc.arena.at<double>(acc_slot));
    });
    std::uint8_t* qmask = sc.arena.at<std::uint8_t>(qmask_slot);
    for (std::int64_t b = 0; b < pr.B; ++b) qmask[b] = lists.q_count[b] > 0 ? 1 : 0;
    float* rk = sc.arena.at<float>(k_slot);
    float* rv = sc.arena.at<float>(v_slot);
    const Rows kview = float_view(pr, 1, sc.arena.at<float>(views.k));
    const Rows vview = float_view(pr, 2, sc.arena.at<float>(views.v));
    const Rows qrows = contiguous_rows(qr, pr.H, 1, d);
    add_inner(info,
              attend_f32(pr, &sc.inner, 1, qrows, qmask, 1, pr.Nk, kview, kview, d, pr.p->key_mask,
                         pr.p->key_mask_batch_stride, contiguous_rows(rk, pr.H, 1, d), nullptr),
              &inner);
    add_inner(info,
              attend_f32(pr, &sc.inner, 1, qrows, qmask, 1, pr.Nk, kview, vview, dv, pr.p->key_mask,
                         pr.p->key_mask_batch_stride, contiguous_rows(rv, pr.H, 1, dv), nullptr),
              &inner);
    for (std::int64_t b = 0; b < pr.B; ++b)
      mask[b] = lists.q_count[b] > 0 && lists.k_count[b] > 0 ? 1 : 0;
    ks = contiguous_rows(rk, pr.H, 1, d);
    vs = contiguous_rows(rv, pr.H, 1, dv);
  }
  info.transform.seconds = timer.lap();
  float* ls = sc.arena.at<float>(ls_slot);
  const Rows q = float_view(pr, 0, sc.arena.at<float>(views.q));
  add_inner(info,
            attend_f32(pr, &sc.inner, pr.Nq, q, pr.p->query_mask, pr.p->query_mask_batch_stride, M,
                       ks, vs, dv, mask, M, output_rows(pr), ls),
            &inner);
  float* ow = sc.arena.at<float>(ow_slot);
  float* lw = sc.arena.at<float>(lw_slot);
  add_inner(info, window_part(pr, &sc.inner, c.window, ow, lw), &inner);
  timer.lap();
  merge_parts(pr, lists, ls, ow, lw);
  info.merge.seconds = timer.lap();
  info.workspace_bytes = sc.arena.bytes() + inner;
  return info;
}

// ---- induced_points ----
RunInfo induced_points(const Problem& pr, const CompressedConfig& c, Workspace* workspace) {
  const bool given = c.inducing != nullptr;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t M = given ? c.rank : std::min<std::int64_t>(c.rank, pr.Nk);
  const std::int64_t w = std::max(d, dv);
  Scratch sc(pr, workspace);
  const ViewSlots views(sc.arena, pr, true);
  const std::size_t i_slot = sc.arena.add<float>(given ? 0 : static_cast<std::size_t>(BH * M * d));
  const std::size_t hk_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * M * d));
  const std::size_t hv_slot = sc.arena.add<float>(static_cast<std::size_t>(BH * M * dv));
  const std::size_t mask_slot = sc.arena.add<std::uint8_t>(static_cast<std::size_t>(pr.B * M));
  const std::size_t acc_slot = sc.arena.add<double>(static_cast<std::size_t>(pr.threads * w));
  sc.bind();
  const TokenLists& lists = sc.lists;
  Timer timer;
  RunInfo info;
  std::size_t inner = 0;
  std::uint8_t* mask = sc.arena.at<std::uint8_t>(mask_slot);
  Rows I;
  if (given) {
    I = head_rows(c.inducing, c.rank, d);
    fill_row_mask(pr.B, M, mask, [&](std::int64_t b) { return lists.k_count[b] > 0 ? M : 0; });
  } else {
    float* ib = sc.arena.at<float>(i_slot);
    with_input_type(pr.dtype, [&](auto tag) {
      segment_means<decltype(tag)>(pr, lists, false, c.rank, M, ib, nullptr,
                                   sc.arena.at<double>(acc_slot));
    });
    fill_row_mask(pr.B, M, mask,
                  [&](std::int64_t b) { return segment_count(c.rank, lists.k_count[b]); });
    I = contiguous_rows(ib, pr.H, M, d);
  }
  info.transform.seconds = timer.lap();
  float* hk = sc.arena.at<float>(hk_slot);
  float* hv = sc.arena.at<float>(hv_slot);
  const Rows kview = float_view(pr, 1, sc.arena.at<float>(views.k));
  const Rows vview = float_view(pr, 2, sc.arena.at<float>(views.v));
  add_inner(info,
            attend_f32(pr, &sc.inner, M, I, mask, M, pr.Nk, kview, kview, d, pr.p->key_mask,
                       pr.p->key_mask_batch_stride, contiguous_rows(hk, pr.H, M, d), nullptr),
            &inner);
  add_inner(info,
            attend_f32(pr, &sc.inner, M, I, mask, M, pr.Nk, kview, vview, dv, pr.p->key_mask,
                       pr.p->key_mask_batch_stride, contiguous_rows(hv, pr.H, M, dv), nullptr),
            &inner);
  const Rows q = float_view(pr, 0, sc.arena.at<float>(views.q));
  add_inner(info,
            attend_f32(pr, &sc.inner, pr.Nq, q, pr.p->query_mask, pr.p->query_mask_batch_stride, M,
                       contiguous_rows(hk, pr.H, M, d), contiguous_rows(hv, pr.H, M, dv), dv, mask,
                       M, output_rows(pr), pr.p->lse),
            &inner);
  info.workspace_bytes = sc.arena.bytes() + inner;
  return info;
}

// ---- backward (contract: compressed.h, "Backward") ----
//
// Each kind recomputes its synthesised rows as its forward does (the same functions, so the
// same bits), runs the softmax backward of the synthetic part with the forward's merged O and
// lse (attend_backward_f32; star and global_memory first run the window part's backward, the
// sparse local pattern's, into the gradients), then chains dK', dV' back through the synthesis.
// Buffers are per call (std::vector): the synthesised rows, their gradients and f32 copies,
// O(N) per head. Every sum over tokens or batch elements is taken in a fixed order.

// Contiguous f32 copy [B, H, N, width] of Q (0), K (1) or V (2) (f32 inputs: the backward's).
std::vector<float> contiguous_copy(const Problem& pr, int which) {
  const std::int64_t n = which == 0 ? pr.Nq : pr.Nk, w = which == 2 ? pr.dv : pr.d;
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.H * n * w));
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* src = which == 0 ? pr.q_row<float>(b, h, i) : which == 1 ? pr.k_row<float>(b, h, i) : pr.v_row<float>(b, h, i);
      std::copy_n(src, w, out.data() + (bh * n + i) * w);
    }
  });
  return out;
}

// A learned [H, rows, width] array repeated for every batch element, [B, H, rows, width]: the
// backward needs one gradient row per (b, h) row.
std::vector<float> per_batch(const Problem& pr, const float* x, std::int64_t rows, std::int64_t width) {
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.H * rows * width));
  for (std::int64_t b = 0; b < pr.B; ++b)
    std::copy_n(x, pr.H * rows * width, out.data() + b * pr.H * rows * width);
  return out;
}

// grad [H, rows, width] = sum over b (in order) of part [B, H, rows, width], in double.
void sum_over_batch(const Problem& pr, const float* part, std::int64_t rows, std::int64_t width, float* grad) {
  const std::int64_t per_head = rows * width;
  parallel_for(pr.H, pr.threads, [&](std::int64_t h) {
    for (std::int64_t x = 0; x < per_head; ++x) {
      double acc = 0.0;
      for (std::int64_t b = 0; b < pr.B; ++b) acc += static_cast<double>(part[(b * pr.H + h) * per_head + x]);
      grad[h * per_head + x] = static_cast<float>(acc);
    }
  });
}

// Row i of a gradient in its input's layout (which: 0 = Q, 1 = K, 2 = V).
float* grad_row(const Problem& pr, const GradientParams& g, int which, std::int64_t b, std::int64_t h,
                std::int64_t i) {
  const AttentionParams& p = *pr.p;
  if (which == 0) return g.grad_q + b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride;
  if (which == 1) return g.grad_k + b * p.k_batch_stride + h * p.k_head_stride + i * p.k_row_stride;
  return g.grad_v + b * p.v_batch_stride + h * p.v_head_stride + i * p.v_row_stride;
}

// The mean's gradient: each visible key of segment [lo, hi) of b's key list gets
// g_t / (hi - lo) added to its gradient row (which: 1 = dK, 2 = dV); segments as `bounds`.
template <class Bounds>
void add_mean_gradient(const Problem& pr, const GradientParams& g, const TokenLists& lists, int which,
                       std::int64_t M, const float* grad_rows, Bounds&& bounds) {
  const std::int64_t w = which == 2 ? pr.dv : pr.d;
  // Segments are disjoint: tasks of kSegments segments each.
  constexpr std::int64_t kSegments = 32;
  const std::int64_t chunks = (M + kSegments - 1) / kSegments;
  parallel_for(pr.B * pr.H * chunks, pr.threads, [&](std::int64_t task) {
    const std::int64_t bh = task / chunks, b = bh / pr.H, h = bh % pr.H, t0 = (task % chunks) * kSegments;
    const std::int32_t* keys = lists.keys(b, pr.Nk);
    const std::int64_t n = lists.k_count[b];
    for (std::int64_t t = t0; t < std::min(M, t0 + kSegments); ++t) {
      const auto [lo, hi] = bounds(t, n);
      if (lo >= hi) continue;
      const float* gt = grad_rows + (bh * M + t) * w;
      const double count = static_cast<double>(hi - lo);
      for (std::int64_t u = lo; u < hi; ++u) {
        float* out = grad_row(pr, g, which, b, h, keys[u]);
        for (std::int64_t x = 0; x < w; ++x) out[x] = static_cast<float>(static_cast<double>(out[x]) + gt[x] / count);
      }
    }
  });
}

// The same for the active queries' segments (into dQ, added to what it holds).
template <class Bounds>
void add_query_mean_gradient(const Problem& pr, const GradientParams& g, const TokenLists& lists, std::int64_t M,
                             const float* grad_rows, Bounds&& bounds) {
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    const std::int32_t* queries = lists.queries(b, pr.Nq);
    const std::int64_t n = lists.q_count[b];
    for (std::int64_t t = 0; t < M; ++t) {
      const auto [lo, hi] = bounds(t, n);
      if (lo >= hi) continue;
      const float* gt = grad_rows + (bh * M + t) * pr.d;
      const double count = static_cast<double>(hi - lo);
      for (std::int64_t u = lo; u < hi; ++u) {
        float* out = grad_row(pr, g, 0, b, h, queries[u]);
        for (std::int64_t x = 0; x < pr.d; ++x) out[x] = static_cast<float>(static_cast<double>(out[x]) + gt[x] / count);
      }
    }
  });
}

// Gradient rows of every key of (b, h) (visible or not) set to zero (which: 1 = dK, 2 = dV).
void zero_key_gradients(const Problem& pr, const GradientParams& g, int which) {
  const std::int64_t w = which == 2 ? pr.dv : pr.d;
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    for (std::int64_t j = 0; j < pr.Nk; ++j) std::fill_n(grad_row(pr, g, which, bh / pr.H, bh % pr.H, j), w, 0.0f);
  });
}

// grad rows (in Q's, K's or V's layout) += the contiguous parts [B, H, n, w], in the order given.
void add_parts(const Problem& pr, const GradientParams& g, int which, std::initializer_list<const float*> parts) {
  const std::int64_t n = which == 0 ? pr.Nq : pr.Nk, w = which == 2 ? pr.dv : pr.d;
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    for (std::int64_t i = 0; i < n; ++i) {
      float* out = grad_row(pr, g, which, b, h, i);
      for (std::int64_t x = 0; x < w; ++x) {
        double acc = out[x];
        for (const float* part : parts) acc += static_cast<double>(part[(bh * n + i) * w + x]);
        out[x] = static_cast<float>(acc);
      }
    }
  });
}

// The forward output and its gradient as the rows of a sub-problem's O.
Rows grad_output_rows(const Problem& pr, const GradientParams& g) {
  const AttentionParams& p = *pr.p;
  return {g.o, p.o_batch_stride, p.o_head_stride, p.o_row_stride};
}

RunInfo linformer_backward(const Problem& pr, const GradientParams& g, const CompressedConfig& c,
                           Workspace* workspace) {
  const std::int64_t M = c.rank, BH = pr.B * pr.H, d = pr.d, dv = pr.dv, Nk = pr.Nk;
  Scratch sc(pr, workspace);
  sc.bind();
  const TokenLists& lists = sc.lists;
  std::vector<float> kp(static_cast<std::size_t>(BH * M * d)), vp(static_cast<std::size_t>(BH * M * dv));
  std::vector<float> dkp(kp.size()), dvp(vp.size());
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(pr.B * M));
  {
    std::vector<double> acc(static_cast<std::size_t>(pr.threads * linformer_acc_doubles(pr)));
    std::vector<double> draw(static_cast<std::size_t>(pr.threads * linformer_draw_doubles(pr)));
    linformer_rows(pr, c, lists, float_view(pr, 1, nullptr), float_view(pr, 2, nullptr), kp.data(), vp.data(),
                   acc.data(), draw.data());
  }
  fill_row_mask(pr.B, M, mask.data(), [&](std::int64_t b) { return lists.k_count[b] > 0 ? M : 0; });
  RunInfo info;
  std::size_t inner = 0;
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, pr.Nq, float_view(pr, 0, nullptr), pr.p->query_mask,
                                pr.p->query_mask_batch_stride, M, contiguous_rows(kp.data(), pr.H, M, d),
                                contiguous_rows(vp.data(), pr.H, M, dv), dv, mask.data(), M,
                                grad_output_rows(pr, g), g.lse, g.grad_o, g.grad_q, dkp.data(), dvp.data()),
            &inner);
  // dK[j] = sum_r E[h, r, j] dK'[r], dV[j] = sum_r F[h, r, j] dV'[r]: one task per (b, h, block
  // of 32 keys, one random word of the default projections per row), E_block^T dK' on the
  // register-tiled kernel, sums in double over r in order.
  constexpr std::int64_t kKeys = 32;
  const std::int64_t blocks = (Nk + kKeys - 1) / kKeys;
  // The block's columns of E and F: given, or the default's (one random word per row: the
  // block is the word's 32 keys).
  static_assert(kKeys == 32, "a block of keys is one word of the default projections");
  auto entries = [&](std::int64_t h, std::int64_t j0, std::int64_t n, double* E, double* F) {
    for (std::int64_t r = 0; r < M; ++r) {
      double* e = E + r * kKeys;
      double* f = F + r * kKeys;
      const std::int64_t at = (h * M + r) * Nk + j0;
      if (c.projection_e == nullptr || c.projection_f == nullptr)
        spec::linformer_projection_row(pr.p->seed, h, r, n, M, e, f, j0);
      if (c.projection_e != nullptr)
        for (std::int64_t t = 0; t < n; ++t) e[t] = c.projection_e[at + t];
      if (c.projection_f != nullptr)
        for (std::int64_t t = 0; t < n; ++t) f[t] = c.projection_f[at + t];
    }
  };
  const std::int64_t wmax = std::max(d, dv);
  std::vector<double> ef(static_cast<std::size_t>(pr.threads * 2 * M * kKeys));
  std::vector<double> accs(static_cast<std::size_t>(pr.threads * kKeys * wmax));
  parallel_for_tid(BH * blocks, pr.threads, [&](std::int64_t task, int tid) {
    const std::int64_t bh = task / blocks, j0 = (task % blocks) * kKeys, b = bh / pr.H, h = bh % pr.H;
    const std::int64_t n = std::min(kKeys, Nk - j0);
    double* E = ef.data() + static_cast<std::int64_t>(tid) * 2 * M * kKeys;
    double* F = E + M * kKeys;
    double* acc = accs.data() + static_cast<std::int64_t>(tid) * kKeys * wmax;
    entries(h, j0, n, E, F);
    auto chain = [&](const double* P, const float* grad_rows, std::int64_t w, int which) {
      HWY_DYNAMIC_DISPATCH(CompressedProjectT)(P, kKeys, n, M, grad_rows + bh * M * w, w, w, acc, w);
      for (std::int64_t t = 0; t < n; ++t) {
        float* out = grad_row(pr, g, which, b, h, j0 + t);
        const bool visible = pr.key_visible(b, j0 + t);
        for (std::int64_t x = 0; x < w; ++x) out[x] = visible ? static_cast<float>(acc[t * w + x]) : 0.0f;
      }
    };
    chain(E, dkp.data(), d, 1);
    chain(F, dvp.data(), dv, 2);
  });
  // dE[h, r, j] = sum_b dK'[b, h, r] . K[b, h, j] over the batch elements where j is visible:
  // each element one running double sum over b, then t, in order. One task per (h, block of
  // kCols keys): per b the block's K rows packed transposed (zero where not visible: a product
  // with +0 leaves the sum as it is), then dK'_bh (M x d) times them on the tile kernel.
  constexpr std::int64_t kCols = 64;
  const std::int64_t col_blocks = (Nk + kCols - 1) / kCols;
  auto projection_gradient = [&](float* grad, const float* grad_rows, int which, std::int64_t w) {
    if (grad == nullptr) return;
    std::vector<float> packs(static_cast<std::size_t>(pr.threads * w * kCols));
    std::vector<double> sums(static_cast<std::size_t>(pr.threads * M * kCols));
    parallel_for_tid(pr.H * col_blocks, pr.threads, [&](std::int64_t task, int tid) {
      const std::int64_t h = task / col_blocks, j0 = (task % col_blocks) * kCols;
      const std::int64_t nj = std::min(kCols, Nk - j0);
      float* xt = packs.data() + static_cast<std::int64_t>(tid) * w * kCols;
      double* out = sums.data() + static_cast<std::int64_t>(tid) * M * kCols;
      for (std::int64_t b = 0; b < pr.B; ++b) {
        for (std::int64_t u = 0; u < nj; ++u) {
          const std::int64_t j = j0 + u;
          const bool visible = pr.key_visible(b, j);
          const float* x = which == 1 ? pr.k_row<float>(b, h, j) : pr.v_row<float>(b, h, j);
          for (std::int64_t t = 0; t < w; ++t) xt[t * kCols + u] = visible ? x[t] : 0.0f;
        }
        HWY_DYNAMIC_DISPATCH(CompressedOuter)(grad_rows + (b * pr.H + h) * M * w, w, M, w, xt, kCols, nj, out,
                                              kCols, b > 0);
      }
      for (std::int64_t r = 0; r < M; ++r)
        for (std::int64_t u = 0; u < nj; ++u) grad[(h * M + r) * Nk + j0 + u] = static_cast<float>(out[r * kCols + u]);
    });
  };
  projection_gradient(c.grad_projection_e, dkp.data(), 1, d);
  projection_gradient(c.grad_projection_f, dvp.data(), 2, dv);
  info.workspace_bytes = (kp.size() + vp.size()) * 2 * sizeof(float) + (ef.size() + accs.size()) * sizeof(double) + inner;
  return info;
}

RunInfo memory_compressed_backward(const Problem& pr, const GradientParams& g, const CompressedConfig& c,
                                   Workspace* workspace) {
  const std::int64_t stride = c.stride, BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t M = (pr.Nk + stride - 1) / stride;
  Scratch sc(pr, workspace);
  sc.bind();
  const TokenLists& lists = sc.lists;
  std::vector<float> kp(static_cast<std::size_t>(BH * M * d)), vp(static_cast<std::size_t>(BH * M * dv));
  std::vector<float> dkp(kp.size()), dvp(vp.size());
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(pr.B * M));
  {
    std::vector<double> acc(static_cast<std::size_t>(pr.threads * std::max(d, dv)));
    window_means(pr, lists, stride, M, kp.data(), vp.data(), acc.data());
  }
  fill_row_mask(pr.B, M, mask.data(), [&](std::int64_t b) { return (lists.k_count[b] + stride - 1) / stride; });
  RunInfo info;
  std::size_t inner = 0;
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, pr.Nq, float_view(pr, 0, nullptr), pr.p->query_mask,
                                pr.p->query_mask_batch_stride, M, contiguous_rows(kp.data(), pr.H, M, d),
                                contiguous_rows(vp.data(), pr.H, M, dv), dv, mask.data(), M,
                                grad_output_rows(pr, g), g.lse, g.grad_o, g.grad_q, dkp.data(), dvp.data()),
            &inner);
  zero_key_gradients(pr, g, 1);
  zero_key_gradients(pr, g, 2);
  auto windows = [&](std::int64_t t, std::int64_t n) {
    return std::pair<std::int64_t, std::int64_t>{std::min(n, t * stride), std::min(n, t * stride + stride)};
  };
  add_mean_gradient(pr, g, lists, 1, M, dkp.data(), windows);
  add_mean_gradient(pr, g, lists, 2, M, dvp.data(), windows);
  info.workspace_bytes = (kp.size() + vp.size()) * 2 * sizeof(float) + inner;
  return info;
}

// The inner attention of star and induced_points: queries iq [B, H, M, d] (row mask imask
// [B, M]) to the visible keys with values K (rows hk) and V (rows hv), and its backward given
// dhk, dhv: diq [B, H, M, d], and dK, dV contributions added to the gradients (after what
// they hold: the window part's for star, nothing for induced_points). Both share their
// weights, so each runs once with the values [K | V] (d + dv columns): each output column is
// the same chain as in an attention with K or V alone.
struct InnerAttention {
  std::vector<float> kc, kvc, hkv, hk, hv, lse;
  std::size_t bytes() const {
    return (kc.size() + kvc.size() + hkv.size() + hk.size() + hv.size() + lse.size()) * sizeof(float);
  }
};

// Rows [n, a + b] of the contiguous [B, H, n, a] and [B, H, n, b] side by side (or, split,
// back): one row per (b, h, i).
void join_columns(std::int64_t rows, std::int64_t wa, std::int64_t wb, const float* x, const float* y, float* xy) {
  for (std::int64_t r = 0; r < rows; ++r) {
    std::copy_n(x + r * wa, wa, xy + r * (wa + wb));
    std::copy_n(y + r * wb, wb, xy + r * (wa + wb) + wa);
  }
}
void split_columns(std::int64_t rows, std::int64_t wa, std::int64_t wb, const float* xy, float* x, float* y) {
  for (std::int64_t r = 0; r < rows; ++r) {
    std::copy_n(xy + r * (wa + wb), wa, x + r * wa);
    std::copy_n(xy + r * (wa + wb) + wa, wb, y + r * wb);
  }
}

void inner_forward(const Problem& pr, Scratch& sc, std::int64_t M, const Rows& iq, const std::uint8_t* imask,
                   InnerAttention& in, RunInfo& info, std::size_t* inner) {
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv, w = d + dv;
  in.kc = contiguous_copy(pr, 1);
  const std::vector<float> vc = contiguous_copy(pr, 2);
  in.kvc.resize(static_cast<std::size_t>(BH * pr.Nk * w));
  join_columns(BH * pr.Nk, d, dv, in.kc.data(), vc.data(), in.kvc.data());
  in.hkv.assign(static_cast<std::size_t>(BH * M * w), 0.0f);
  in.lse.assign(static_cast<std::size_t>(BH * M), 0.0f);
  add_inner(info,
            attend_f32(pr, &sc.inner, M, iq, imask, M, pr.Nk, contiguous_rows(in.kc.data(), pr.H, pr.Nk, d),
                       contiguous_rows(in.kvc.data(), pr.H, pr.Nk, w), w, pr.p->key_mask,
                       pr.p->key_mask_batch_stride, contiguous_rows(in.hkv.data(), pr.H, M, w), in.lse.data()),
            inner);
  in.hk.resize(static_cast<std::size_t>(BH * M * d));
  in.hv.resize(static_cast<std::size_t>(BH * M * dv));
  split_columns(BH * M, d, dv, in.hkv.data(), in.hk.data(), in.hv.data());
}
void inner_backward(const Problem& pr, const GradientParams& g, Scratch& sc, std::int64_t M, const Rows& iq,
                    const std::uint8_t* imask, const InnerAttention& in, const float* dhk, const float* dhv,
                    float* diq, RunInfo& info, std::size_t* inner) {
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv, w = d + dv;
  std::vector<float> dhkv(static_cast<std::size_t>(BH * M * w));
  join_columns(BH * M, d, dv, dhk, dhv, dhkv.data());
  std::vector<float> dk_keys(in.kc.size()), dkv(in.kvc.size());
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, M, iq, imask, M, pr.Nk, contiguous_rows(in.kc.data(), pr.H, pr.Nk, d),
                                contiguous_rows(in.kvc.data(), pr.H, pr.Nk, w), w, pr.p->key_mask,
                                pr.p->key_mask_batch_stride, contiguous_rows(in.hkv.data(), pr.H, M, w),
                                in.lse.data(), dhkv.data(), diq, dk_keys.data(), dkv.data()),
            inner);
  std::vector<float> dk_values(in.kc.size()), dv_values(static_cast<std::size_t>(BH * pr.Nk * dv));
  split_columns(BH * pr.Nk, d, dv, dkv.data(), dk_values.data(), dv_values.data());
  add_parts(pr, g, 1, {dk_keys.data(), dk_values.data()});
  add_parts(pr, g, 2, {dv_values.data()});
}

RunInfo induced_points_backward(const Problem& pr, const GradientParams& g, const CompressedConfig& c,
                                Workspace* workspace) {
  const bool given = c.inducing != nullptr;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t M = given ? c.rank : std::min<std::int64_t>(c.rank, pr.Nk);
  Scratch sc(pr, workspace);
  sc.bind();
  const TokenLists& lists = sc.lists;
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(pr.B * M));
  std::vector<float> I;
  if (given) {
    I = per_batch(pr, c.inducing, M, d);
    fill_row_mask(pr.B, M, mask.data(), [&](std::int64_t b) { return lists.k_count[b] > 0 ? M : 0; });
  } else {
    I.assign(static_cast<std::size_t>(BH * M * d), 0.0f);
    std::vector<double> acc(static_cast<std::size_t>(pr.threads * std::max(d, dv)));
    segment_means<float>(pr, lists, false, c.rank, M, I.data(), nullptr, acc.data());
    fill_row_mask(pr.B, M, mask.data(), [&](std::int64_t b) { return segment_count(c.rank, lists.k_count[b]); });
  }
  const Rows iq = contiguous_rows(I.data(), pr.H, M, d);
  RunInfo info;
  std::size_t inner = 0;
  InnerAttention in;
  inner_forward(pr, sc, M, iq, mask.data(), in, info, &inner);
  std::vector<float> dhk(in.hk.size()), dhv(in.hv.size()), dI(I.size(), 0.0f);
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, pr.Nq, float_view(pr, 0, nullptr), pr.p->query_mask,
                                pr.p->query_mask_batch_stride, M, contiguous_rows(in.hk.data(), pr.H, M, d),
                                contiguous_rows(in.hv.data(), pr.H, M, dv), dv, mask.data(), M,
                                grad_output_rows(pr, g), g.lse, g.grad_o, g.grad_q, dhk.data(), dhv.data()),
            &inner);
  zero_key_gradients(pr, g, 1);
  zero_key_gradients(pr, g, 2);
  inner_backward(pr, g, sc, M, iq, mask.data(), in, dhk.data(), dhv.data(), dI.data(), info, &inner);
  if (given) {
    if (c.grad_inducing != nullptr) sum_over_batch(pr, dI.data(), M, d, c.grad_inducing);
  } else {
    add_mean_gradient(pr, g, lists, 1, M, dI.data(), [&](std::int64_t t, std::int64_t n) {
      const std::int64_t s = segment_count(c.rank, n);
      return t < s ? std::pair<std::int64_t, std::int64_t>{segment_begin(t, n, s), segment_begin(t + 1, n, s)}
                   : std::pair<std::int64_t, std::int64_t>{0, 0};
    });
  }
  info.workspace_bytes = in.bytes() + (I.size() + dI.size() + dhk.size() + dhv.size()) * sizeof(float) + inner;
  return info;
}

// star and global_memory: the window part's backward (into the gradients), then the synthetic
// part's with a contiguous copy of Q (its dQ added after the window's), then the synthesis.
RunInfo with_window_backward(const Problem& pr, const GradientParams& g, const CompressedConfig& c,
                             Workspace* workspace) {
  const bool star = c.kind == Compression::star;
  const bool given = !star && c.memory_k != nullptr;
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv;
  const std::int64_t M = star ? 1 : given ? c.rank : std::min<std::int64_t>(c.rank, pr.Nk);
  Scratch sc(pr, workspace);
  sc.bind();
  const TokenLists& lists = sc.lists;
  RunInfo info;
  std::size_t inner = 0;
  {
    AttentionParams s = *pr.p;
    s.num_threads = pr.threads;
    s.check_finite = false;
    s.lse = nullptr;
    SparseConfig local;
    local.pattern = SparsePattern::local;
    local.window = static_cast<int>(std::min<std::int64_t>(c.window, pr.Nq + pr.Nk));
    add_inner(info, Method<SparseConfig>::backward(checked_problem(s), g, local, &sc.inner), &inner);
  }
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(pr.B * M));
  std::vector<float> ks, vs, qr;
  std::vector<std::uint8_t> qmask(static_cast<std::size_t>(pr.B));
  InnerAttention in;
  if (given) {
    ks = per_batch(pr, c.memory_k, M, d);
    vs = per_batch(pr, c.memory_v, M, dv);
    std::fill(mask.begin(), mask.end(), std::uint8_t{1});
  } else if (!star) {
    ks.assign(static_cast<std::size_t>(BH * M * d), 0.0f);
    vs.assign(static_cast<std::size_t>(BH * M * dv), 0.0f);
    std::vector<double> acc(static_cast<std::size_t>(pr.threads * std::max(d, dv)));
    segment_means<float>(pr, lists, false, c.rank, M, ks.data(), vs.data(), acc.data());
    fill_row_mask(pr.B, M, mask.data(), [&](std::int64_t b) { return segment_count(c.rank, lists.k_count[b]); });
  } else {
    qr.assign(static_cast<std::size_t>(BH * d), 0.0f);
    std::vector<double> acc(static_cast<std::size_t>(pr.threads * std::max(d, dv)));
    segment_means<float>(pr, lists, true, 1, 1, qr.data(), nullptr, acc.data());
    for (std::int64_t b = 0; b < pr.B; ++b) qmask[static_cast<std::size_t>(b)] = lists.q_count[b] > 0 ? 1 : 0;
    inner_forward(pr, sc, 1, contiguous_rows(qr.data(), pr.H, 1, d), qmask.data(), in, info, &inner);
    for (std::int64_t b = 0; b < pr.B; ++b)
      mask[static_cast<std::size_t>(b)] = lists.q_count[b] > 0 && lists.k_count[b] > 0 ? 1 : 0;
  }
  const float* krows = star ? in.hk.data() : ks.data();
  const float* vrows = star ? in.hv.data() : vs.data();
  const std::vector<float> qc = contiguous_copy(pr, 0);
  std::vector<float> dq(qc.size()), dks(static_cast<std::size_t>(BH * M * d)), dvs(static_cast<std::size_t>(BH * M * dv));
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, pr.Nq, contiguous_rows(qc.data(), pr.H, pr.Nq, d), pr.p->query_mask,
                                pr.p->query_mask_batch_stride, M, contiguous_rows(krows, pr.H, M, d),
                                contiguous_rows(vrows, pr.H, M, dv), dv, mask.data(), M, grad_output_rows(pr, g),
                                g.lse, g.grad_o, dq.data(), dks.data(), dvs.data()),
            &inner);
  add_parts(pr, g, 0, {dq.data()});
  if (given) {
    if (c.grad_memory_k != nullptr) sum_over_batch(pr, dks.data(), M, d, c.grad_memory_k);
    if (c.grad_memory_v != nullptr) sum_over_batch(pr, dvs.data(), M, dv, c.grad_memory_v);
  } else if (!star) {
    auto segments = [&](std::int64_t t, std::int64_t n) {
      const std::int64_t s = segment_count(c.rank, n);
      return t < s ? std::pair<std::int64_t, std::int64_t>{segment_begin(t, n, s), segment_begin(t + 1, n, s)}
                   : std::pair<std::int64_t, std::int64_t>{0, 0};
    };
    add_mean_gradient(pr, g, lists, 1, M, dks.data(), segments);
    add_mean_gradient(pr, g, lists, 2, M, dvs.data(), segments);
  } else {
    // The relay's backward, then dq_r / n_q to each active query (q_r is their mean).
    std::vector<float> dqr(qr.size(), 0.0f);
    inner_backward(pr, g, sc, 1, contiguous_rows(qr.data(), pr.H, 1, d), qmask.data(), in, dks.data(), dvs.data(),
                   dqr.data(), info, &inner);
    parallel_for(BH, pr.threads, [&](std::int64_t bh) {
      const std::int64_t b = bh / pr.H, h = bh % pr.H, n = lists.q_count[b];
      const std::int32_t* queries = lists.queries(b, pr.Nq);
      for (std::int64_t t = 0; t < n; ++t) {
        float* out = grad_row(pr, g, 0, b, h, queries[t]);
        for (std::int64_t x = 0; x < d; ++x)
          out[x] = static_cast<float>(static_cast<double>(out[x]) + static_cast<double>(dqr[static_cast<std::size_t>(bh * d + x)]) / static_cast<double>(n));
      }
    });
  }
  info.workspace_bytes = in.bytes() + (ks.size() + vs.size() + qr.size() + qc.size() + dq.size() + dks.size() + dvs.size()) * sizeof(float) + inner;
  return info;
}

// Nystrom: O = A1 W, W = Z (A3 V), Z the iteration on A2 (compressed.h). The landmarks and
// A3 V recomputed as the forward computes them; A2, the iterates and W per (b, h) in double
// (nystrom_pinv_iterates); the softmax backward of O = A1 W (its lse recomputed: the forward's
// lse holds NaN) gives dQ, dKt, dW; then per (b, h) in double dZ = dW (A3 V)^T,
// d(A3 V) = Z^T dW and the iteration's backward to dA2 and through its softmax to dQt, dKt;
// the softmax backward of A3 V gives dQt, dK, dV; the landmarks' gradients go to their
// segments' rows.
RunInfo nystrom_backward(const Problem& pr, const GradientParams& g, const CompressedConfig& c,
                         Workspace* workspace) {
  const std::int64_t BH = pr.B * pr.H, d = pr.d, dv = pr.dv, rank = c.rank;
  const std::int64_t Mq = std::min<std::int64_t>(rank, pr.Nq), Mk = std::min<std::int64_t>(rank, pr.Nk);
  const int T = c.pinv_iterations;
  Scratch sc(pr, workspace);
  sc.bind();
  const TokenLists& lists = sc.lists;
  auto mq_of = [&](std::int64_t b) { return segment_count(rank, lists.q_count[b]); };
  auto mk_of = [&](std::int64_t b) { return segment_count(rank, lists.k_count[b]); };
  std::vector<float> qt(static_cast<std::size_t>(BH * Mq * d)), kt(static_cast<std::size_t>(BH * Mk * d));
  {
    std::vector<double> acc(static_cast<std::size_t>(pr.threads * std::max(d, dv)));
    segment_means<float>(pr, lists, true, rank, Mq, qt.data(), nullptr, acc.data());
    segment_means<float>(pr, lists, false, rank, Mk, kt.data(), nullptr, acc.data());
  }
  std::vector<std::uint8_t> qmask(static_cast<std::size_t>(pr.B * Mq)), kmask(static_cast<std::size_t>(pr.B * Mk));
  fill_row_mask(pr.B, Mq, qmask.data(), mq_of);
  fill_row_mask(pr.B, Mk, kmask.data(), mk_of);
  RunInfo info;
  std::size_t inner = 0;
  // A3 V and its lse: the landmark queries attend to the real keys.
  std::vector<float> kc = contiguous_copy(pr, 1), vc = contiguous_copy(pr, 2);
  const Rows krows = contiguous_rows(kc.data(), pr.H, pr.Nk, d), vrows = contiguous_rows(vc.data(), pr.H, pr.Nk, dv);
  const Rows qtrows = contiguous_rows(qt.data(), pr.H, Mq, d), ktrows = contiguous_rows(kt.data(), pr.H, Mk, d);
  std::vector<float> a3v(static_cast<std::size_t>(BH * Mq * dv)), lse3(static_cast<std::size_t>(BH * Mq));
  add_inner(info,
            attend_f32(pr, &sc.inner, Mq, qtrows, qmask.data(), Mq, pr.Nk, krows, vrows, dv, pr.p->key_mask,
                       pr.p->key_mask_batch_stride, contiguous_rows(a3v.data(), pr.H, Mq, dv), lse3.data()),
            &inner);
  // A2 [mq, mk] in double per (b, h), as the forward computes it.
  const double scale = pr.scale;
  auto scores_a2 = [&](std::int64_t bh, std::int64_t mq, std::int64_t mk, double* A2) {
    for (std::int64_t i = 0; i < mq; ++i) {
      const float* q = qt.data() + (bh * Mq + i) * d;
      double* a = A2 + i * mk;
      double mx = -std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < mk; ++j) {
        const float* k = kt.data() + (bh * Mk + j) * d;
        double s = 0.0;
        for (std::int64_t t = 0; t < d; ++t) s += static_cast<double>(q[t]) * static_cast<double>(k[t]);
        a[j] = scale * s;
        mx = std::max(mx, a[j]);
      }
      double sum = 0.0;
      for (std::int64_t j = 0; j < mk; ++j) {
        a[j] = std::exp(a[j] - mx);
        sum += a[j];
      }
      for (std::int64_t j = 0; j < mk; ++j) a[j] /= sum;
    }
  };
  // W = Z_T (A3 V) [Mk, dv] per (b, h).
  std::vector<float> W(static_cast<std::size_t>(BH * Mk * dv), 0.0f);
  parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, mq = mq_of(b), mk = lists.k_count[b] > 0 ? mk_of(b) : 0;
    if (mq == 0 || mk == 0) return;
    std::vector<double> A2(static_cast<std::size_t>(mq * mk)), Zs(static_cast<std::size_t>((T + 1) * mk * mq));
    scores_a2(bh, mq, mk, A2.data());
    nystrom_pinv_iterates(A2.data(), mq, mk, T, Zs.data());
    const double* Z = Zs.data() + T * mk * mq;
    for (std::int64_t i = 0; i < mk; ++i)
      for (std::int64_t x = 0; x < dv; ++x) {
        double acc = 0.0;
        for (std::int64_t t = 0; t < mq; ++t)
          acc += Z[i * mq + t] * static_cast<double>(a3v[static_cast<std::size_t>((bh * Mq + t) * dv + x)]);
        W[static_cast<std::size_t>((bh * Mk + i) * dv + x)] = static_cast<float>(acc);
      }
  });
  // O = A1 W: its lse, then its softmax backward with the forward's O.
  std::vector<float> o1(static_cast<std::size_t>(BH * pr.Nq * dv)), lse1(static_cast<std::size_t>(BH * pr.Nq));
  const Rows wrows = contiguous_rows(W.data(), pr.H, Mk, dv);
  add_inner(info,
            attend_f32(pr, &sc.inner, pr.Nq, float_view(pr, 0, nullptr), pr.p->query_mask,
                       pr.p->query_mask_batch_stride, Mk, ktrows, wrows, dv, kmask.data(), Mk,
                       contiguous_rows(o1.data(), pr.H, pr.Nq, dv), lse1.data()),
            &inner);
  std::vector<float> dkt(kt.size()), dW(W.size());
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, pr.Nq, float_view(pr, 0, nullptr), pr.p->query_mask,
                                pr.p->query_mask_batch_stride, Mk, ktrows, wrows, dv, kmask.data(), Mk,
                                grad_output_rows(pr, g), lse1.data(), g.grad_o, g.grad_q, dkt.data(), dW.data()),
            &inner);
  // Per (b, h) in double: dZ, d(A3 V), the iteration's backward, A2's softmax backward.
  std::vector<float> da3v(a3v.size(), 0.0f);
  std::vector<double> dqt2(qt.size(), 0.0), dkt2(kt.size(), 0.0);
  parallel_for(BH, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, mq = mq_of(b), mk = lists.k_count[b] > 0 ? mk_of(b) : 0;
    if (mq == 0 || mk == 0) return;
    std::vector<double> A2(static_cast<std::size_t>(mq * mk)), Zs(static_cast<std::size_t>((T + 1) * mk * mq));
    scores_a2(bh, mq, mk, A2.data());
    nystrom_pinv_iterates(A2.data(), mq, mk, T, Zs.data());
    const double* Z = Zs.data() + T * mk * mq;
    const float* B3 = a3v.data() + bh * Mq * dv;
    const float* dWb = dW.data() + bh * Mk * dv;
    std::vector<double> dZ(static_cast<std::size_t>(mk * mq)), dA2(A2.size(), 0.0);
    for (std::int64_t i = 0; i < mk; ++i)
      for (std::int64_t t = 0; t < mq; ++t) {
        double acc = 0.0;
        for (std::int64_t x = 0; x < dv; ++x) acc += static_cast<double>(dWb[i * dv + x]) * static_cast<double>(B3[t * dv + x]);
        dZ[static_cast<std::size_t>(i * mq + t)] = acc;
      }
    for (std::int64_t t = 0; t < mq; ++t)
      for (std::int64_t x = 0; x < dv; ++x) {
        double acc = 0.0;
        for (std::int64_t i = 0; i < mk; ++i) acc += Z[i * mq + t] * static_cast<double>(dWb[i * dv + x]);
        da3v[static_cast<std::size_t>((bh * Mq + t) * dv + x)] = static_cast<float>(acc);
      }
    nystrom_pinv_backward(A2.data(), mq, mk, T, Zs.data(), dZ.data(), dA2.data());
    for (std::int64_t i = 0; i < mq; ++i) {
      double D = 0.0;
      for (std::int64_t j = 0; j < mk; ++j) D += A2[static_cast<std::size_t>(i * mk + j)] * dA2[static_cast<std::size_t>(i * mk + j)];
      for (std::int64_t j = 0; j < mk; ++j) {
        const double ds = scale * A2[static_cast<std::size_t>(i * mk + j)] * (dA2[static_cast<std::size_t>(i * mk + j)] - D);
        const float* q = qt.data() + (bh * Mq + i) * d;
        const float* k = kt.data() + (bh * Mk + j) * d;
        for (std::int64_t x = 0; x < d; ++x) {
          dqt2[static_cast<std::size_t>((bh * Mq + i) * d + x)] += ds * static_cast<double>(k[x]);
          dkt2[static_cast<std::size_t>((bh * Mk + j) * d + x)] += ds * static_cast<double>(q[x]);
        }
      }
    }
  });
  // A3 V's softmax backward: dQt, dK, dV.
  std::vector<float> dqt3(qt.size()), dk(kc.size()), dvv(vc.size());
  add_inner(info,
            attend_backward_f32(pr, &sc.inner, Mq, qtrows, qmask.data(), Mq, pr.Nk, krows, vrows, dv, pr.p->key_mask,
                                pr.p->key_mask_batch_stride, contiguous_rows(a3v.data(), pr.H, Mq, dv), lse3.data(),
                                da3v.data(), dqt3.data(), dk.data(), dvv.data()),
            &inner);
  // The landmarks' gradients (in double, in a fixed order) to their segments.
  std::vector<float> dqt(qt.size()), dkt_all(kt.size());
  for (std::size_t x = 0; x < qt.size(); ++x) dqt[x] = static_cast<float>(static_cast<double>(dqt3[x]) + dqt2[x]);
  for (std::size_t x = 0; x < kt.size(); ++x) dkt_all[x] = static_cast<float>(static_cast<double>(dkt[x]) + dkt2[x]);
  zero_key_gradients(pr, g, 1);
  zero_key_gradients(pr, g, 2);
  add_parts(pr, g, 1, {dk.data()});
  add_parts(pr, g, 2, {dvv.data()});
  auto segments = [&](std::int64_t t, std::int64_t n) {
    const std::int64_t s = segment_count(rank, n);
    return t < s ? std::pair<std::int64_t, std::int64_t>{segment_begin(t, n, s), segment_begin(t + 1, n, s)}
                 : std::pair<std::int64_t, std::int64_t>{0, 0};
  };
  add_mean_gradient(pr, g, lists, 1, Mk, dkt_all.data(), segments);
  add_query_mean_gradient(pr, g, lists, Mq, dqt.data(), segments);
  info.workspace_bytes = (qt.size() * 4 + kt.size() * 4 + kc.size() * 2 + vc.size() * 2 + a3v.size() * 2 +
                          W.size() * 2 + o1.size()) * sizeof(float) + (dqt2.size() + dkt2.size()) * sizeof(double) + inner;
  return info;
}

}  // namespace

RunInfo compressed_backward(const Problem& pr, const GradientParams& grads, const CompressedConfig& config,
                            Workspace* workspace) {
  Timer total;
  RunInfo info;
  switch (config.kind) {
    case Compression::linformer:
      info = linformer_backward(pr, grads, config, workspace);
      break;
    case Compression::memory_compressed:
      info = memory_compressed_backward(pr, grads, config, workspace);
      break;
    case Compression::global_memory:
    case Compression::star:
      info = with_window_backward(pr, grads, config, workspace);
      break;
    case Compression::induced_points:
      info = induced_points_backward(pr, grads, config, workspace);
      break;
    case Compression::nystrom:
      info = nystrom_backward(pr, grads, config, workspace);
      break;
  }
  info.seconds_total = total.seconds();
  return info;
}

// ---- validation ----

void Method<CompressedConfig>::check(const CompressedConfig& c, const Problem& pr) {
  const int kind = static_cast<int>(c.kind);
  if (kind < 0 || kind > static_cast<int>(Compression::global_memory))
    fail("CompressedConfig.kind", std::to_string(kind), "not a Compression value");
  const std::string kname = compression_name(c.kind);
  if (c.rank < 1) fail("CompressedConfig.rank", std::to_string(c.rank), "must be >= 1");
  if (c.rank > kCompressedMaxRank)
    fail("CompressedConfig.rank", std::to_string(c.rank),
         "must be <= " + std::to_string(kCompressedMaxRank));
  if (c.pinv_iterations < 0)
    fail("CompressedConfig.pinv_iterations", std::to_string(c.pinv_iterations), "must be >= 0");
  if (c.pinv_iterations > kCompressedMaxPinvIterations)
    fail("CompressedConfig.pinv_iterations", std::to_string(c.pinv_iterations),
         "must be <= " + std::to_string(kCompressedMaxPinvIterations));
  if (c.stride < 1) fail("CompressedConfig.stride", std::to_string(c.stride), "must be >= 1");
  if (c.window < 0) fail("CompressedConfig.window", std::to_string(c.window), "must be >= 0");
  // Learned inputs: only the kind that reads them may be given one.
  auto only_for = [&](const char* field, const void* p, Compression owner) {
    if (p != nullptr && c.kind != owner)
      fail(std::string("CompressedConfig.") + field, ptr_str(p),
           std::string("only read by CompressedConfig.kind = ") + compression_name(owner) +
               " (kind = " + kname + "): must be nullptr");
  };
  only_for("projection_e", c.projection_e, Compression::linformer);
  only_for("projection_f", c.projection_f, Compression::linformer);
  only_for("inducing", c.inducing, Compression::induced_points);
  only_for("memory_k", c.memory_k, Compression::global_memory);
  only_for("memory_v", c.memory_v, Compression::global_memory);
  if ((c.memory_k == nullptr) != (c.memory_v == nullptr))
    fail(c.memory_k == nullptr ? "CompressedConfig.memory_k" : "CompressedConfig.memory_v",
         "nullptr", "memory_k and memory_v are given together or not at all");
  // Gradients of learned parts: only of a part that is given (a default is not a parameter).
  auto grad_of = [&](const char* field, const void* grad, const void* input, Compression owner) {
    if (grad == nullptr) return;
    const std::string name = std::string("CompressedConfig.") + field;
    if (c.kind != owner)
      fail(name, ptr_str(grad),
           std::string("only written for CompressedConfig.kind = ") + compression_name(owner) + " (kind = " +
               kname + "): must be nullptr");
    if (input == nullptr)
      fail(name, ptr_str(grad),
           "CompressedConfig." + std::string(field).substr(std::string(field).find("grad_") + 5) +
               " = nullptr (the default is not a parameter): must be nullptr");
  };
  const CompressedDoubleParts none;
  const CompressedDoubleParts& f64 = c.f64 != nullptr ? *c.f64 : none;
  grad_of("grad_projection_e", c.grad_projection_e, c.projection_e, Compression::linformer);
  grad_of("grad_projection_f", c.grad_projection_f, c.projection_f, Compression::linformer);
  grad_of("grad_inducing", c.grad_inducing, c.inducing, Compression::induced_points);
  grad_of("grad_memory_k", c.grad_memory_k, c.memory_k, Compression::global_memory);
  grad_of("grad_memory_v", c.grad_memory_v, c.memory_v, Compression::global_memory);
  grad_of("f64->grad_projection_e", f64.grad_projection_e, c.projection_e, Compression::linformer);
  grad_of("f64->grad_projection_f", f64.grad_projection_f, c.projection_f, Compression::linformer);
  grad_of("f64->grad_inducing", f64.grad_inducing, c.inducing, Compression::induced_points);
  grad_of("f64->grad_memory_k", f64.grad_memory_k, c.memory_k, Compression::global_memory);
  grad_of("f64->grad_memory_v", f64.grad_memory_v, c.memory_v, Compression::global_memory);
  // The double values of a part replace the floats' in the double path: the part is given.
  auto double_of = [&](const char* field, const void* dbl, const void* input) {
    if (dbl != nullptr && input == nullptr)
      fail(std::string("CompressedConfig.f64->") + field, ptr_str(dbl),
           std::string("replaces CompressedConfig.") + field +
               "'s values in the double-precision path, which is nullptr: give both or neither");
  };
  double_of("projection_e", f64.projection_e, c.projection_e);
  double_of("projection_f", f64.projection_f, c.projection_f);
  double_of("inducing", f64.inducing, c.inducing);
  double_of("memory_k", f64.memory_k, c.memory_k);
  double_of("memory_v", f64.memory_v, c.memory_v);
  check_finite_array("projection_e", c.projection_e, pr.H, c.rank, pr.Nk, "[heads, rank, nk]");
  check_finite_array("projection_f", c.projection_f, pr.H, c.rank, pr.Nk, "[heads, rank, nk]");
  check_finite_array("inducing", c.inducing, pr.H, c.rank, pr.d, "[heads, rank, d]");
  check_finite_array("memory_k", c.memory_k, pr.H, c.rank, pr.d, "[heads, rank, d]");
  check_finite_array("memory_v", c.memory_v, pr.H, c.rank, pr.dv, "[heads, rank, dv]");
  // The other kinds' causal refusal comes from the capabilities; this one says why.
  if (pr.p->causal && c.kind == Compression::global_memory && c.memory_k == nullptr)
    throw Error(
        "smyrf: params.causal = true: compressed attention (global_memory) with the "
        "default memory (CompressedConfig.memory_k = nullptr) has no causal form "
        "(segment means mix future positions)");
}

RunInfo compressed_forward(const Problem& pr, const CompressedConfig& config,
                           Workspace* workspace) {
  Timer total;
  RunInfo info;
  switch (config.kind) {
    case Compression::linformer:
      info = linformer(pr, config, workspace);
      break;
    case Compression::memory_compressed:
      info = memory_compressed(pr, config, workspace);
      break;
    case Compression::nystrom:
      info = nystrom(pr, config, workspace);
      break;
    case Compression::global_memory:
    case Compression::star:
      info = with_window(pr, config, workspace);
      break;
    case Compression::induced_points:
      info = induced_points(pr, config, workspace);
      break;
  }
  info.seconds_total = total.seconds();
  return info;
}

}  // namespace smyrf::detail
#endif  // HWY_ONCE
