// smyrf — efficient attention. The public contract.
//
// One plain parameter struct (raw pointers, explicit strides, sizes, flags), one
// configuration struct per method (each in smyrf/methods/<method>.h, with the method's exact
// definition and capabilities; all included here), and one entry point:
//
//     smyrf::AttentionParams p = smyrf::AttentionParams::contiguous(B, H, Nq, Nk, d, dv,
//                                                                   q, k, v, o);
//     smyrf::attention(p, smyrf::SmyrfConfig{.n_hashes = 8, .q_cluster_size = 32,
//                                             .k_cluster_size = 32});
//
// Nothing in this header depends on a framework; bindings convert their tensors to
// AttentionParams.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>

#include "smyrf/methods/clustered.h"
#include "smyrf/methods/compressed.h"
#include "smyrf/methods/dense.h"
#include "smyrf/methods/informer.h"
#include "smyrf/methods/linear.h"
#include "smyrf/methods/reference.h"
#include "smyrf/methods/reformer.h"
#include "smyrf/methods/routing.h"
#include "smyrf/methods/sinkhorn.h"
#include "smyrf/methods/smyrf.h"
#include "smyrf/methods/sparse.h"
#include "smyrf/methods/synthesizer.h"
#include "smyrf/version.h"

namespace smyrf {

// ---------------------------------------------------------------------------------------
// Errors. Every check at the API edge throws smyrf::Error; its message names the parameter
// and the offending value, e.g. "smyrf: params.nq = 0: must be >= 1".
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument(what) {}
};

// Element type of the Q, K, V inputs (the output is always f32):
//   f32:  IEEE float.
//   bf16: bfloat16 stored as uint16 (the upper half of a float, as in PyTorch/TF). Converted to
//         f32 exactly where the kernels pack their tiles, or (dense scores, on CPUs with
//         AVX512_BF16) multiplied in bf16 pairs with exact products; every sum is accumulated
//         in f32, so the f32 error rule applies to the bf16 values as given.
enum class DType : std::uint8_t { f32 = 0, bf16 = 1 };

// ---------------------------------------------------------------------------------------
// The problem. Shapes:
//   Q [B, H, Nq, d]    K [B, H, Nk, d]    V [B, H, Nk, dv]    O [B, H, Nq, dv]  (O is f32)
//   key_mask [B, Nk], query_mask [B, Nq]: optional, uint8, nonzero = the token takes part.
// Strides are in elements. The last dimension of every tensor must be contiguous (stride 1).
// Input strides may be 0 (broadcast, e.g. one K/V head shared by all query heads) or any
// value >= the row length; O's layout must not map two elements to the same address, and O
// must not overlap Q, K or V.
//
// Semantics, for every method:
//   O[b,h,i] = sum_j softmax_j(scale * Q[b,h,i] . K[b,h,j]) V[b,h,j]   over visible keys j
// (for approximate methods: over the keys the method lets query i see).
//   * A masked key (key_mask[b,j] == 0) is never attended to.
//   * A masked query (query_mask[b,i] == 0) gets O = 0 and does not influence other rows.
//   * A query with no visible key (all keys of its batch masked) gets O = 0.
//   * Non-finite inputs: with check_finite (default) the call scans the unmasked rows of Q, K
//     and V and throws smyrf::Error naming the tensor and the first non-finite element. With
//     check_finite = false such inputs give unspecified output values (never a crash).
//   * Float range: the same scan rejects (smyrf::Error naming the tensor and row, or
//     params.scale) inputs outside the range every method can compute in float without
//     overflow: each unmasked Q and K row norm and each |V| element at most 2^32, and
//     |scale| * R^2 at most 2^32, R the largest unmasked Q or K row norm. Inside it, finite
//     inputs give finite outputs for every method. (Scores beyond 2^32 are far past the point
//     where softmax is one-hot; rescale such inputs.) check_finite = false skips this check too.
// The most worker threads a call accepts (params.num_threads); more is an error, not a crash.
inline constexpr int kMaxThreads = 1024;

struct AttentionParams {
  std::int64_t batch = 0, heads = 0;  // B, H
  std::int64_t nq = 0, nk = 0;        // query and key sequence lengths
  std::int64_t d = 0, dv = 0;         // head dimension of Q/K and of V/O

  DType dtype = DType::f32;  // element type of q, k and v
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  float* o = nullptr;

  std::int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  std::int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  std::int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  std::int64_t o_batch_stride = 0, o_head_stride = 0, o_row_stride = 0;

  const std::uint8_t* key_mask = nullptr;  // [B, Nk] or nullptr (every key visible)
  std::int64_t key_mask_batch_stride = 0;
  const std::uint8_t* query_mask = nullptr;  // [B, Nq] or nullptr (every query active)
  std::int64_t query_mask_batch_stride = 0;

  // Additive per-key bias, or nullptr: the score of query i on key j becomes
  //   scale * Q[b,h,i] . K[b,h,j] + key_bias[b,h,j]
  // at key_bias + b * key_bias_batch_stride + h * key_bias_head_stride + j (strides >= 0; 0
  // broadcasts). What pretrained models with position biases need where the bias depends on the
  // key only: a learned bias per key, a soft mask, and ALiBi in its causal form (BLOOM's
  // slope_h * j, which differs from -slope_h * (i - j) by a constant per row, so O is the same
  // and lse includes the bias as given). A constant of the gradient (no gradient is computed for
  // it). Every addressed value must be finite with |value| <= 2^32 (smyrf::Error naming
  // params.key_bias[b, h, j]). Methods: those whose capabilities say key_bias — the reference
  // method, dense attention, and the key-set methods on the shared group engines (SMYRF's LSH
  // clusters, Reformer, routing, every sparse pattern: the bias is added to each score of a
  // group; their key selections do not see it) —; the others throw smyrf::Error "smyrf:
  // params.key_bias: <method> has no additive key bias".
  const float* key_bias = nullptr;
  std::int64_t key_bias_batch_stride = 0, key_bias_head_stride = 0;

  // Softmax scale; empty means 1/sqrt(d). Must be finite.
  std::optional<float> scale;
  // Seed of every random choice a method makes. Same seed, same inputs -> same bits,
  // whatever the thread count.
  std::uint64_t seed = 0;
  // Worker threads; 0 means all threads OpenMP offers (OMP_NUM_THREADS).
  int num_threads = 0;  // at most kMaxThreads
  bool check_finite = true;  // the non-finite and float-range scan described above

  // Training (see attention_backward below).
  // lse: optional output, [B, H, Nq] contiguous: each query's logsumexp of the scaled scores
  // over every key it attends to (for SMYRF: over all rounds, a key counted once per round
  // that pairs it with the query), so that O = sum over those (round, key) of
  // exp(s - lse) V. -inf for a masked query or one with no visible key.
  float* lse = nullptr;
  // Dropout on the attention weights, probability in [0, 1). Weight (b, h, round, i, j) is
  // kept with probability 1 - dropout and then scaled by 1 / (1 - dropout); lse is unchanged.
  // The keep decision is a pure function of (seed, b, h, round, i, j): the same in the
  // forward and the backward call, whatever the thread count.
  float dropout = 0.0f;

  // Causal (autoregressive) attention: query i sees key j only if j <= i + (Nk - Nq), i.e.
  // positions are aligned at the end (with Nq == Nk: j <= i; a shorter query block is the last
  // Nq positions of the key sequence, as when decoding with a cache). Combined with the masks:
  // a query with no visible key among j <= i + (Nk - Nq) gets O = 0 and lse = -inf (except where
  // a method documents a fallback). Forward: reference, dense, SMYRF (lsh; see SmyrfConfig for
  // its fallback), Reformer, routing, the sparse patterns, and the linear, compressed, informer
  // and synthesizer configs whose Capabilities (smyrf/methods/<method>.h) say "causal:
  // supported"; backward and dropout: the forms whose capabilities say causal_backward and
  // causal_dropout (smyrf::capabilities). Other combinations throw smyrf::Error naming
  // params.causal.
  bool causal = false;

  // Row-major contiguous tensors: Q [B,H,Nq,d], K [B,H,Nk,d], V [B,H,Nk,dv], O [B,H,Nq,dv].
  static AttentionParams contiguous(std::int64_t batch, std::int64_t heads, std::int64_t nq,
                                    std::int64_t nk, std::int64_t d, std::int64_t dv,
                                    const float* q, const float* k, const float* v, float* o);
  // Sets the mask pointers with contiguous [B, N] layout (either may be nullptr).
  AttentionParams& with_masks(const std::uint8_t* key_mask_bn, const std::uint8_t* query_mask_bn);
};

// ---------------------------------------------------------------------------------------
// Methods. Each has its own configuration struct, declared in smyrf/methods/<method>.h (all
// included above) with the method's exact definition (ties, precision of hashes, fallbacks,
// cost) and a uniform "Capabilities" list: causal, dropout, backward, attention_f64, bf16
// inputs, masks, Nq != Nk, broadcast strides (stride 0), learned parts, complexity.
//   reference.h    ReferenceConfig     naive attention in double: the test oracle
//   dense.h        DenseConfig         exact attention, flash-attention style
//   smyrf.h        SmyrfConfig         SMYRF (Transform, KeySelection)
//   reformer.h     ReformerConfig      Reformer LSH attention
//   clustered.h    ClusteredConfig     clustered and improved clustered attention
//   routing.h      RoutingConfig       routing attention
//   sparse.h       SparseConfig        fixed sparsity patterns (SparsePattern)
//   linear.h       LinearConfig        feature-map ("linear") attention (FeatureMap)
//   compressed.h   CompressedConfig    low-rank and compressed attention (Compression)
//   informer.h     InformerConfig      Informer ProbSparse attention
//   sinkhorn.h     SinkhornConfig      Sinkhorn sorting attention
//   synthesizer.h  SynthesizerConfig   Synthesizer (SynthesizerKind)
// MethodConfig selects one.
//
// Rules every method shares. Every method other than reference and dense defines, for each
// query, the multiset of keys it attends to (a key counted once per round that pairs it with
// the query); within that set the output is exact softmax attention, and rounds are merged by
// each round's logsumexp exactly as SMYRF's. Key masks, query masks and params.causal restrict
// the sets further; the definitions use positions in the tensors (masked tokens keep their
// positions). A query whose set is empty gets O = 0 and lse = -inf unless the method names a
// fallback. "Learned" parts are inputs; when absent the documented (seeded) default is used.
// Methods whose output is not a softmax over a key set (linear attention, Nystrom) write NaN to
// params.lse for active queries (it has no meaning there); each config says which.
// The training path (dropout, attention_backward, attention_f64, attention_backward_f64) exists
// for the forms whose Capabilities say so (smyrf::capabilities, smyrf::methods, the README's
// methods table); every other form throws smyrf::Error naming the method ("... has no
// dropout", "... has no backward", "... has no double-precision path").
//
// Seeded draws. Every random choice is a pure function of (params.seed, a stream, a counter),
// whatever the thread count or the order of evaluation; the method headers define their draws
// by these functions (uint64 arithmetic modulo 2^64):
//   mix(x): x += 0x9E3779B97F4A7C15; x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
//     x = (x ^ (x >> 27)) * 0x94D049BB133111EB; then mix(x) = x ^ (x >> 31) (the SplitMix64
//     finaliser).
//   random_bits(seed, s, c) = mix(mix(mix(seed) ^ s) ^ c).
//   uniform_open01(seed, s, c) = ((random_bits(seed, s, c) >> 11) + 0.5) * 2^-53, in (0, 1).
//   standard_normal(seed, s, c) = sqrt(-2 log(u1)) cos(2 pi u2) in double (Box-Muller), with
//     u1 = uniform_open01(seed, s, 2 c) and u2 = uniform_open01(seed, s, 2 c + 1); log and cos
//     are the C++ library's, so a draw may differ in its last bit between math libraries.

using MethodConfig = std::variant<ReferenceConfig, DenseConfig, SmyrfConfig, ReformerConfig,
                                  ClusteredConfig, RoutingConfig, SparseConfig, LinearConfig,
                                  CompressedConfig, InformerConfig, SinkhornConfig,
                                  SynthesizerConfig>;

// The method's name as the CLI spells it: "reference", "dense", "smyrf", "reformer",
// "clustered", "routing", "sparse", "linear", "compressed", "informer", "sinkhorn",
// "synthesizer".
const char* method_name(const MethodConfig& config);

// ---------------------------------------------------------------------------------------
// Reusable scratch memory. Passing the same Workspace to repeated calls avoids allocating
// (and page-faulting) large buffers every call. Not thread-safe: one per concurrent caller.
class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  // Bytes currently reserved.
  std::size_t capacity_bytes() const;

  struct Impl;
  Impl* impl() { return impl_.get(); }

 private:
  std::unique_ptr<Impl> impl_;
};

// One phase of a call: wall-clock seconds and an estimate of the bytes it reads and writes
// (model in src/common/phases.h).
struct Phase {
  double seconds = 0;
  double bytes = 0;
};

// What a call did: the scratch memory it needed and where its time went.
struct RunInfo {
  std::size_t workspace_bytes = 0;   // extra memory beyond the caller's tensors
  std::size_t attention_scores = 0;  // score entries computed (Nq*Nk for dense), all rounds
  double seconds_total = 0;
  // SMYRF: norms and projections on every round's direction (one pass over Q and K).
  Phase transform;
  // SMYRF: hash values and the radix sort of queries and keys, per round.
  Phase sort;
  // Gathering rows into packed tiles (SMYRF: per cluster; dense: K^T and V once).
  Phase gather;
  // Scores, online softmax and P.V.
  Phase attention;
  // SMYRF: merging each round into O with the running logsumexp (dense: 0, its O writes are
  // part of attention).
  Phase merge;
};

// Computes attention into params.o with the chosen method. Throws smyrf::Error on invalid
// parameters (before touching o). workspace may be nullptr (scratch is then allocated and
// freed inside the call).
RunInfo attention(const AttentionParams& params, const MethodConfig& config,
                  Workspace* workspace = nullptr);

// ---------------------------------------------------------------------------------------
// Backward pass. Given the forward call's params (same inputs, masks, scale, seed, dropout
// and method config: SMYRF's clusters are recomputed from them and treated as constants, as
// in the paper; every method's discrete choices likewise, its header says which) and dL/dO,
// writes dL/dQ, dL/dK, dL/dV. Only O and the per-query logsumexp of the forward call are kept;
// scores are recomputed tile by tile (flash-attention style), so extra memory is O(N) (linear
// attention recomputes its features and reads neither). Rows of masked queries and keys get
// zero gradients.
//   Q, K, V must be f32 without broadcast (non-zero strides): each gradient element belongs
//   to one input element. Gradients use the layouts (strides) of Q, K and V; dO and the
//   forward O use O's. SmyrfConfig::keys = centroid has no backward (throws).
// Deterministic: same bits whatever the thread count. workspace: as for attention() (scratch
// reused across calls; may be nullptr).
struct GradientParams {
  const float* o = nullptr;       // the forward output, O's layout
  const float* lse = nullptr;     // [B, H, Nq], the forward call's params.lse
  const float* grad_o = nullptr;  // dL/dO, O's layout
  float* grad_q = nullptr;        // written, Q's layout
  float* grad_k = nullptr;        // written, K's layout
  float* grad_v = nullptr;        // written, V's layout
};

RunInfo attention_backward(const AttentionParams& params, const GradientParams& grads,
                           const MethodConfig& config, Workspace* workspace = nullptr);

// Double-precision forward and backward of the same definitions (the test oracle, and what
// gradient checks in double run against). Contiguous tensors: q [B,H,Nq,d], k [B,H,Nk,d],
// v [B,H,Nk,dv], o [B,H,Nq,dv], lse [B,H,Nq]; masks [B,N] or nullptr. The method config
// chooses the keys each query sees: reference and dense attend to every visible key, SMYRF
// (lsh) to its clusters, computed from the inputs rounded to f32 (every key-set method to its
// own sets, likewise; linear and compressed attention compute their own definitions in
// double, the latter with its learned parts in CompressedConfig::f64). Only the sizes,
// masks, scale, seed, dropout, causal and num_threads of params are read (its pointers and
// strides are ignored).
// Masked queries get O = 0, lse = -inf and zero gradients, as in the f32 calls.
struct DoubleTensors {
  const double* q = nullptr;
  const double* k = nullptr;
  const double* v = nullptr;
};
void attention_f64(const AttentionParams& params, const DoubleTensors& in,
                   const MethodConfig& config, double* o, double* lse);
void attention_backward_f64(const AttentionParams& params, const DoubleTensors& in,
                            const MethodConfig& config, const double* o, const double* lse,
                            const double* grad_o, double* grad_q, double* grad_k,
                            double* grad_v);

// The SIMD target chosen at run time for this CPU (e.g. "AVX3", "AVX2").
std::string simd_target();

}  // namespace smyrf
