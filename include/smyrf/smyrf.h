// smyrf — efficient attention. The public contract.
//
// One plain parameter struct (raw pointers, explicit strides, sizes, flags), one
// configuration struct per method, and one entry point:
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
  // its fallback), Reformer, routing, the sparse patterns, and the wave-2 methods whose config
  // says "causal: supported"; backward: reference and dense; with dropout: reference only. Other combinations throw smyrf::Error naming params.causal.
  bool causal = false;

  // Row-major contiguous tensors: Q [B,H,Nq,d], K [B,H,Nk,d], V [B,H,Nk,dv], O [B,H,Nq,dv].
  static AttentionParams contiguous(std::int64_t batch, std::int64_t heads, std::int64_t nq,
                                    std::int64_t nk, std::int64_t d, std::int64_t dv,
                                    const float* q, const float* k, const float* v, float* o);
  // Sets the mask pointers with contiguous [B, N] layout (either may be nullptr).
  AttentionParams& with_masks(const std::uint8_t* key_mask_bn, const std::uint8_t* query_mask_bn);
};

// ---------------------------------------------------------------------------------------
// Methods. Each has its own configuration; MethodConfig selects one.

// Naive attention accumulated in double: the test oracle. O(Nq*Nk) time, O(Nk) memory per
// thread. Never optimised on purpose.
struct ReferenceConfig {};

// Exact attention with an online softmax over key tiles (flash-attention style): O(N) extra
// memory, SIMD kernels with runtime ISA dispatch, threads over batch x heads x query tiles.
struct DenseConfig {};

// Asymmetric transform that turns maximum-inner-product search into nearest-neighbour search.
// With MQ, MK the largest query and key norms of the (batch, head) and m = alsh_m:
//   xbox_plus: q -> [q, 0, sqrt(MQ^2+MK^2-|q|^2)],  k -> [k, sqrt(MQ^2+MK^2-|k|^2), 0]
//   xbox:      q -> [q, 0],                         k -> [k, sqrt(MK^2-|k|^2)]
//   h2_alsh:   q -> [q * MK/|q|, 0],                k -> [k, sqrt(MK^2-|k|^2)]   (QNF)
//   l2_alsh:   q -> [q/|q|, 1/2, ..., 1/2],         k -> [U k/MK, |k'|^2, |k'|^4, ..., |k'|^(2^m)]
// Arguments of sqrt are clamped at 0; a zero-norm vector is scaled by 0.
enum class Transform : std::uint8_t { xbox_plus = 0, xbox = 1, h2_alsh = 2, l2_alsh = 3 };

// How SMYRF chooses the keys each query cluster attends to.
//   lsh:      the paper's asymmetric LSH: balanced clusters of hashed queries and keys, paired
//             by rank, n_hashes rounds (below).
//   centroid: queries are cut into clusters of q_cluster_size consecutive active positions
//             (sequences with locality: text, audio); each cluster attends exactly to the
//             k_cluster_size visible keys with the largest inner product with the cluster's
//             mean query (ties by position). One round: n_hashes must be 1. Cost: besides the
//             n_q * k_cluster_size attention scores, ceil(n_q / q_cluster_size) * n_k centroid
//             scores (both counted in RunInfo::attention_scores): O(Nq Nk d / q_cluster_size)
//             time, quadratic in N, for the short and medium sequences of pretrained models.
enum class KeySelection : std::uint8_t { lsh = 0, centroid = 1 };

// SMYRF (Daras et al., NeurIPS 2020). Per (batch, head) and for each of n_hashes rounds:
// transform, project on one Gaussian direction a (the same for queries and keys), sort queries
// and keys by their hash, cut both sorted lists into C balanced clusters; query cluster i
// attends to key cluster i; rounds are merged with softmax weights over each query's
// per-round logsumexp.
//
// Hash: with r == 0, h(x) = a.x' (the projection itself; buckets of one point). With r > 0,
// the E2LSH hash h(x) = floor((a.x' + b) / r), b ~ U(0, r), and tokens with equal hash are
// ordered by position (so a large r tends to local attention).
//
// Cluster rule (any lengths, any masks): with n_q, n_k the unmasked queries and keys of a
// batch element, C = max(ceil(n_q / q_cluster_size), ceil(n_k / k_cluster_size)). Cluster i
// holds sorted queries [floor(i n_q / C), floor((i+1) n_q / C)) and sorted keys
// [floor(i n_k / C), max(floor((i+1) n_k / C), floor(i n_k / C) + 1)): sizes differ by at most
// one, never exceed the configured sizes, and every key cluster is non-empty when n_k >= 1
// (when n_k < C a key may serve several clusters). With Nq/q_cluster_size = Nk/k_cluster_size
// and exact divisibility this is the original SMYRF chunking. Masked tokens are excluded before
// hashing and from the max norms. When q_cluster_size >= Nq and k_cluster_size >= Nk the
// result is exactly the dense one (the dense kernel is used).
//
// A negative softmax scale hashes -q, so clusters still gather the largest logits.
// Causal (params.causal, none of the peers has it): within its cluster a query sees only the
// keys at positions <= its own (p = i + Nk - Nq); rounds where it sees none add nothing. A
// query that sees no key in any round attends to the up to min(k_cluster_size, Nk) nearest
// visible keys at positions <= p (a local window); with none of those either, O = 0. Clusters
// are the non-causal ones (hashing ignores positions). No backward yet (throws).
// Attention memory: n_hashes * Nq * k_cluster_size scores instead of Nq * Nk.
struct SmyrfConfig {
  int n_hashes = 8;
  int q_cluster_size = 32;
  int k_cluster_size = 32;
  float r = 0.0f;  // E2LSH bucket width; 0 = order by the projection itself
  Transform transform = Transform::xbox_plus;
  int alsh_m = 3;         // l2_alsh only: number of appended norm powers
  float alsh_u = 0.83f;   // l2_alsh only: largest key norm after scaling, in (0, 1)
  KeySelection keys = KeySelection::lsh;
};

// ---------------------------------------------------------------------------------------
// The other efficient attentions. Every method below defines, for each query, the multiset of
// keys it attends to (a key counted once per round that pairs it with the query); within that
// set the output is exact softmax attention, and rounds are merged by each round's logsumexp
// exactly as SMYRF's. Key masks, query masks and params.causal restrict the sets further; the
// definitions use positions in the tensors (masked tokens keep their positions). A query whose
// set is empty gets O = 0 and lse = -inf unless the method names a fallback. "Learned" parts
// are inputs; when absent the documented default is used.

// Reformer LSH attention (Kitaev et al., ICLR 2020). Per (batch, head) and round r: random
// rotation R_r [d, n_buckets/2] with N(0, 1) entries, a function of (seed, head, round) only
// (the same for every batch element): with n = n_buckets / 2,
//   R_r[t][c] = standard_normal(seed, stream, t * n + c)   (src/common/rng.h)
//   stream    = 0x5245465200000000 + head * 1024 + r        (tag "REFR"; r < 1024).
// Bucket h(x) = argmax over [xR_r; -xR_r] (first maximum on ties), exactly: x is the token's row
// as given (bf16 converted to f32 exactly), in double; y_c = fma chain over t = 0..d-1 in index
// order (y_c = fma(x[t], R_r[t][c], y_c), from y_c = 0); the candidates are v_c = y_c and
// v_{n+c} = -y_c for c < n, scanned in index order from bucket 0, a later candidate replacing
// the best only when strictly larger (double comparison; a zero row gets bucket 0).
// With shared_qk the keys are the queries normalised to unit length (k_j = q_j / |q_j|, k_j = 0
// when q_j = 0; the K tensor is not read; Nq == Nk) and the hash is computed once per token,
// from its q row (the key's bucket is the query's); token j is a query iff query_mask allows it
// and a key iff key_mask allows it (its key is built from its q row even when its query is
// masked). Otherwise queries are hashed from Q and keys from K. The scale's sign is not used.
// Active queries and visible keys are each sorted by (bucket, position) and cut into C =
// ceil(max(n_q, n_k) / chunk_size) balanced chunks (n_q, n_k of the batch element; nothing
// when either is 0) by SMYRF's cluster rule with cluster size chunk_size on both sides: query
// chunk c = sorted queries [floor(c n_q / C), floor((c+1) n_q / C)), key chunk c = sorted keys
// [floor(c n_k / C), max(floor((c+1) n_k / C), floor(c n_k / C) + 1)). Query chunk c attends to
// the union, as a set, of key chunks c and (c - 1) mod C (chunk 0 to the last chunk,
// cyclically, as in the original; with C == 1 only to chunk 0, with C == 2 to every key once);
// a key in both chunks (C == 2, or overlapping chunks when n_k < C) is counted once.
// Causal: supported: key j only if j <= i + (Nk - Nq). Self-attention exclusion (shared_qk
// only), applied last: a query does not attend to its own position unless no other key of its
// set survives the masks and causality in that round (then it attends to itself alone, if its
// key is visible). Rounds are merged by logsumexp; lse is over the multiset of (round, key), so
// when C == 1 (every round the same set; computed once) lse = the set's logsumexp + log(n_hashes).
// Complexity O(n_hashes * N * (chunk_size + n_buckets / 2) * d). No learned parts.
struct ReformerConfig {
  int n_hashes = 4;
  int n_buckets = 32;   // even, >= 2
  int chunk_size = 64;
  bool shared_qk = true;
};

// Clustered attention (Vyas, Katharopoulos & Fleuret, NeurIPS 2020). Per (batch, head), over
// the n_q active queries (ranked in position order) and the n_k visible keys:
//   Hash: each active query q gets a hash_bits-bit code (a uint64; bit t has value 1 << t):
//   bit t = [dot_t > 0] (so dot_t = 0 gives 0), with dot_t the fma chain in double over
//   j = 0..d-1 (dot = fma(q[j], w_t[j], dot), q[j] converted exactly to double). Hyperplanes
//   w_t ~ N(0, I): w_t[j] = standard_normal(seed, 0x436C757300000000 + head, t * d + j)
//   (common/rng.h): different per head, the same in every batch slot.
//   k-means (Lloyd's, Hamming distance): C = min(n_clusters, n_q); initial centroid c = the
//   code of the query at rank floor(c n_q / C); every query joins the nearest centroid (ties
//   to the lowest index); then `iterations` times: update (each centroid bit = the majority of
//   its members' bits, ties to 0; an empty cluster keeps its centroid), then join again.
//   iterations = 0 keeps the assignment to the initial centroids.
//   Centroid query qbar_c: the members' input rows summed in double in position order,
//   divided by their count, rounded to f32 (also for bf16 inputs).
// Plain clustered (topk = 0): every member gets the centroid's attention row over all visible
// keys, O_i = softmax(scale * qbar_c K^T) V; params.lse gets the centroid's logsumexp.
// Improved clustered attention (topk > 0): with A_c the centroid's attention weights, T_c the
// min(topk, n_k) visible keys of largest centroid logit scale * qbar_c . k_j (i.e. weight;
// ties to the lower position; topk >= n_k: every visible key) and m_c = sum_{j in T_c} A_c(j),
// a member attends exactly to T_c with its own scores, scaled by m_c, and keeps the centroid's
// weights on the other keys: O_i = m_c * softmax_{T_c}(scale q_i K_T^T) V_T + sum_{j not in
// T_c} A_c(j) v_j (T_c = every key: exact attention). params.lse gets lse_i(T_c) - log(m_c),
// the value for which the member's weights on T_c are exp(scale q_i . k_j - lse) (the dense
// logsumexp when T_c holds every key). The fast path ranks the f32 logits of the attention
// kernel, the oracle the double ones: the sets agree unless two logits are within f32
// rounding of each other.
// RunInfo::attention_scores = per (batch, head), (clusters with members) * n_k, plus for
// improved n_q * min(topk, n_k). Not causal, no dropout (both throw). Complexity
// O(n_q hash_bits d + iterations n_q C + C n_k d + n_q topk d), extra memory O(N). No learned
// parts.
struct ClusteredConfig {
  int n_clusters = 100;
  int hash_bits = 63;  // 1..64
  int iterations = 10;
  int topk = 0;        // 0: clustered; > 0: improved clustered with this many keys
};

// Routing attention (Roy, Saffar, Vaswani & Grangier, TACL 2021). Shared centroids mu_c
// (K = n_clusters of them, d dims): given per head in `centroids` ([H, n_clusters, d] floats,
// contiguous, shared by the batch; the model's learned, online-k-means-updated centroids;
// every value must be finite; `iterations` is then unused) or, when nullptr, fitted to this
// call's inputs per (batch, head) by `iterations` rounds of spherical k-means on the
// unit-normalised active queries and visible keys. Each query and key is routed to its most
// similar centroid (largest cosine, ties to the lowest index); queries and keys are sorted by
// (centroid, position) and cut into C = max(ceil(n_q / window), ceil(n_k / window), 1)
// balanced chunks by SMYRF's cluster rule; query chunk c attends to key chunk c (one round).
// Exact arithmetic (all in double, in this order, so cluster ids are reproducible bit for bit):
//   unit vector of a row x (inputs as double): n2 = fma chain over j = 0..d-1 (n2 = fma(x_j,
//     x_j, n2), from 0); u_j = x_j * inv with inv = 1 / sqrt(n2) (one rounded inverse);
//     u = 0 when n2 == 0. Given centroids are normalised by this rule too (a zero row stays 0).
//   similarity sim(u, mu) = fma chain over j = 0..d-1 of u_j * mu_j (from 0); the cosine of
//     the rule. A token goes to the centroid of largest sim, ties to the lowest index.
//   k-means list (per (b, h)): active queries in position order, then visible keys in position
//     order, n entries. Initial mu_c = u of entry floor(c n / K) (c = 0..K-1). Each iteration:
//     assign every entry, then mu_c = unit vector (rule above) of the sum s of its members'
//     unit vectors (the normalised mean), accumulated in list order as fma chains
//     s_j = fma(x_j, inv, s_j) from 0 (x the member's row, inv its inverse norm above); a
//     centroid with no member, or whose s has n2 == 0, keeps its value. Routing uses the
//     centroids after the last iteration (iterations = 0: the initial ones). The softmax
//     scale plays no part in the routing.
// Causal: supported. A query at p = i + Nk - Nq sees the keys of its chunk at positions <= p;
// if there is none it attends to the key at position p alone when 0 <= p and that key is
// visible (with Nq == Nk: its own position), else O = 0 and lse = -inf. With window >= Nq and
// window >= Nk (one chunk) the result is dense attention (the dense kernel is used), causal or
// not. Complexity O(N K d (iterations + 1) + N window d).
struct RoutingConfig {
  int n_clusters = 16;
  int window = 64;
  int iterations = 4;
  const float* centroids = nullptr;
};

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
//                 outside [qb - 1, qb + 1], ranked 0..n-1 in ascending order; r = min(random_blocks,
//                 n) of them are drawn without replacement by a partial Fisher-Yates shuffle of
//                 the ranks: a[k] = k; for t = 0..r-1, x = t + floor(u_t (n - t) / 2^64) with
//                 u_t = random_bits(seed, (head << 32) | (qb mod 2^32), t) (src/common/rng.h),
//                 swap a[t] and a[x], draw the candidate of rank a[t]. Fewer candidates than
//                 random_blocks: all of them. A global query block draws none.
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

// ---------------------------------------------------------------------------------------
// Wave 2: kernel (feature-map), low-rank / compressed and learned methods. Same rules as above
// (key masks, query masks, causal where supported; "learned" parts are inputs with a documented
// seeded default when absent). Methods whose output is not a softmax over a key set write NaN
// to params.lse for active queries (it has no meaning there); each config says which.

// Feature-map ("linear") attention: exp(scale q.k) replaced by a kernel phi_q(q) . phi_k(k):
//   O_i = sum_j phi_q(q_i) . phi_k(k_j) v_j / sum_j phi_q(q_i) . phi_k(k_j)
// over the keys query i sees (key mask; with params.causal j <= i + Nk - Nq); a query with no
// visible key gets O = 0. Cost O((Nq + Nk) m (d + dv)) time (+ O(Nq chunk (m + dv)) causal),
// O(m dv) state per (b, h), m the number of features. Precision: features and normalisers in
// double; without causal, the value products Phi_k^T V and phi_q . S are float (error about
// (128 + m) 2^-24 relative to sum |phi_q| |phi_k| |v|). Causal: the prefix-sum (RNN) form computed in chunks of `chunk`
// positions with one running state (SLiM's sub-linear-memory form). The maps (exact
// definitions in src/methods/linear/linear.h):
//   elu:        phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), m = d.
//   favor_plus: Performer FAVOR+ (Choromanski et al. 2021): positive random features
//               exp(w_r . x - |x|^2 / 2) / sqrt(m), x = sqrt(scale) q (sqrt(|scale|) k), w_r
//               orthogonal (blocks of d Gram-Schmidt rows, scaled by chi(d) norms) or i.i.d.
//               N(0, I); drawn from (seed, head): a new seed redraws them.
//   favor:      the original FAVOR trigonometric features exp(|x|^2 / 2 - c) [sin(w x), cos(w x)]
//               / sqrt(m/2) (m/2 directions, x as for favor_plus; c cancels in the ratio); the
//               normaliser can be <= 0: the raw ratio is kept (the estimator is not positive).
//   rfa:        Random Feature Attention (Peng et al. 2021): x / |x| then [sin(w x), cos(w x)]
//               / sqrt(m/2), w ~ N(0, rfa_sigma^-2 I) (orthogonal blocks when orthogonal);
//               optional gating (causal only): S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T over
//               the visible keys, g_t = gates[b, h, t].
//   dpfp:       DPFP (Schlag et al. 2021): r = relu([x, -x]), phi(x)_{nu, i} = r_i r_{(i + nu)
//               mod 2d} for nu = 1..dpfp_nu, m = 2 d dpfp_nu.
//   efficient:  Efficient Attention (Shen et al. 2021): softmax over features of each q_i times
//               softmax over positions (visible keys) of each key feature: O = rho_q(Q)
//               (rho_k(K)^T V). Not causal.
//   l2:         l2-normalised linear attention (Li et al. 2020): similarity 1 + q^.k^ of the
//               unit vectors, m = d + 1.
// A normaliser of exactly 0 gives O = 0. elu, dpfp, efficient and l2 do not use the softmax
// scale. lse: NaN for active queries that see a key (no softmax), -inf otherwise. No learned
// parts except the optional RFA gates. No dropout, no backward.
enum class FeatureMap : std::uint8_t { elu = 0, favor_plus, favor, rfa, dpfp, efficient, l2 };
struct LinearConfig {
  FeatureMap map = FeatureMap::elu;
  int n_features = 256;          // favor_plus, favor, rfa: m (favor, rfa: even)
  bool orthogonal = true;        // favor_plus, favor, rfa: orthogonal random features
  float rfa_sigma = 1.0f;        // rfa: scale of the random directions, > 0
  int dpfp_nu = 1;               // dpfp: 1 <= nu <= 2d
  int chunk = 64;                // causal: positions per chunk, >= 1
  const float* gates = nullptr;  // rfa with causal only: [B, H, Nk] contiguous, each in [0, 1]
};

// Low-rank and compressed attention: each query attends, by exact softmax, to a short list of
// synthesised key/value rows (and, for star and global_memory, to a local window of real
// keys, merged as one softmax). Exact definitions in src/methods/compressed/compressed.h.
// Segment means: the n visible keys (or active queries) in position order cut into
// min(rank, n) balanced segments [floor(t n / s), floor((t + 1) n / s)), each averaged (double
// sum, rounded to f32).
//   linformer:         (Wang et al. 2020) K' = E K, V' = F V with E, F [rank, Nk] per head
//                      (inputs; when nullptr, seeded Rademacher signs +-1/sqrt(rank), E and F
//                      independent, a function of (seed, head, r, j)); sums in double over the
//                      visible keys in position order; masked keys' columns are dropped (no
//                      renormalisation). Not causal.
//   nystrom:           Nystromformer (Xiong et al. 2021): rank landmarks = segment means of Q
//                      and K; O = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V, the
//                      pseudo-inverse by pinv_iterations of the paper's iteration. Not causal;
//                      lse NaN for active queries (-inf where nothing is visible).
//   memory_compressed: (Liu et al. 2018) K, V mean-pooled over windows of `stride` consecutive
//                      visible keys (the last may be shorter). Not causal.
//   induced_points:    Set Transformer ISAB (Lee et al. 2019): rank inducing points I attend
//                      to (K, V); queries attend to the results (H_k = A K, H_v = A V). I
//                      [H, rank, d] input; when nullptr, segment means of the keys. Not causal.
//   star:              Star-Transformer (Guo et al. 2019): keys within |p - j| <= window plus
//                      one relay token (the softmax mean of K and V under the mean query). Not
//                      causal.
//   global_memory:     GMAT / ETC (Gupta & Berant 2020; Ainslie et al. 2020): keys within
//                      |p - j| <= window plus rank memory tokens, memory_k [H, rank, d] and
//                      memory_v [H, rank, dv] (inputs; when nullptr, segment means of K, V).
//                      Causal: supported with given memory only (window keys j <= p, memory
//                      always visible); a batch element with no visible key then attends to the
//                      memory alone.
// No dropout, no backward.
enum class Compression : std::uint8_t {
  linformer = 0, nystrom, memory_compressed, induced_points, star, global_memory
};
struct CompressedConfig {
  Compression kind = Compression::linformer;
  int rank = 64;  // 1..65536: linformer k, nystrom landmarks, inducing points, memory tokens
  const float* projection_e = nullptr;  // linformer: [H, rank, Nk] contiguous or nullptr
  const float* projection_f = nullptr;  // linformer: [H, rank, Nk] contiguous or nullptr
  int pinv_iterations = 6;              // nystrom: 0..100
  int stride = 4;                       // memory_compressed: pooling window and stride
  const float* inducing = nullptr;      // induced_points: [H, rank, d] contiguous or nullptr
  int window = 1;                       // star, global_memory: local radius
  const float* memory_k = nullptr;      // global_memory: [H, rank, d] contiguous or nullptr
  const float* memory_v = nullptr;      // global_memory: [H, rank, dv] contiguous or nullptr
};

// Informer ProbSparse self-attention (Zhou et al., AAAI 2021). Per (batch, head), each active
// query that sees a key draws U keys uniformly with replacement from the keys it sees (visible;
// causal: j <= i + Nk - Nq), the draw a function of (seed, i, t) only (shared by heads and batch
// elements, as in the official code); M(q_i) = max_t s - mean_t s (s = scale q.k; the official
// code divides the sum by L_K instead). The u queries of largest M (ties to the lower position)
// get exact attention; the others the mean of V over the keys they see (causal: the visible
// prefix, the official cumulative sum). Defaults (0): u = min(n_q, ceil(factor ln n_q)),
// U = max(1, min(n_k, ceil(factor ln n_k))). Exact definition (bit-exact scores, so the
// selection matches the oracle) in src/methods/informer/informer.h. Causal: supported. No
// learned parts. lse: exact queries their lse, the others log(number of keys seen) (uniform
// weights, logits 0). Cost O(n_q U d + u n_k (d + dv) + (n_q + n_k) dv).
struct InformerConfig {
  float factor = 5.0f;
  int top_queries = 0;
  int sample_keys = 0;
};

// Sinkhorn sorting attention (Tay et al., ICML 2020). Per (batch, head): the visible keys
// (position order) are cut into nb = ceil(n_k / block_size) blocks of block_size (the last may
// be shorter), the active queries into nb balanced blocks. Block logits R [nb, nb]: with
// sort_net [H, d, ceil(Nk / block_size)] given (a batch element with fewer blocks uses the first
// nb columns), R_ab = (sum of the key rows of block a) . sort_net[:, b]; when nullptr,
// R_ab = scale * (mean query of block a) . (mean key of block b) (a parameter-free content sort
// for pretrained models; an empty query block uses its key block's mean). `iterations`
// Sinkhorn normalisations of R / temperature in log space (rows, then columns) give P; query
// block a attends by one softmax to its own key block and the sorted block, row t =
// sum_b P_ab (K_bt, V_bt) / sum_b P_ab over the blocks having a row t (2 block_size keys). With
// one block the sorted block is the block itself: dense output, lse + log 2. Exact definition in
// src/methods/sinkhorn/sinkhorn.h. Not causal. Cost O(n_k nb (d + dv) + n_q block_size
// (d + dv)); memory nb^2 doubles per (batch, head).
struct SinkhornConfig {
  int block_size = 64;
  int iterations = 8;
  float temperature = 0.75f;
  const float* sort_net = nullptr;  // [H, d, ceil(Nk / block_size)] contiguous or nullptr
};

// Synthesizer (Tay et al., ICML 2021): attention weights not from q.k.
//   dense:  logits_ij = w2[:, j] . relu(W1^T q_i + b1) + b2_j (a two-layer net of the query
//           over the Nk positions); w1 [H, d, hidden], b1 [H, hidden], w2 [H, hidden, Nk],
//           b2 [H, Nk].
//   random: logits_ij = R[h, i, j], R [H, Nq, Nk].
// O_i = softmax_j(logits_ij) V over the visible keys (causal: supported); lse the logsumexp of
// the logits. params.scale is not used. Learned weights are inputs; each nullptr pointer is
// replaced by a seeded draw from (seed, head), the same for every batch element: R ~ N(0, 1),
// w1 ~ N(0, 1/d), w2 ~ N(0, 1/hidden), biases 0. hidden (1..65536) is read by the dense kind
// only. Cost O(Nq Nk dv) (random), O(Nq hidden (d + Nk) + Nq Nk dv) (dense): quadratic, like
// dense. Exact definition in src/methods/synthesizer/synthesizer.h.
enum class SynthesizerKind : std::uint8_t { dense = 0, random };
struct SynthesizerConfig {
  SynthesizerKind kind = SynthesizerKind::random;
  int hidden = 64;
  const float* w1 = nullptr;
  const float* b1 = nullptr;
  const float* w2 = nullptr;
  const float* b2 = nullptr;
  const float* logits = nullptr;
};

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
// in the paper) and dL/dO, writes dL/dQ, dL/dK, dL/dV. Only O and the per-query logsumexp of
// the forward call are kept; scores are recomputed tile by tile (flash-attention style), so
// extra memory is O(N). Rows of masked queries and keys get zero gradients.
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
// (lsh) to its clusters, computed from the inputs rounded to f32. Only the sizes, masks, scale,
// seed, dropout and num_threads of params are read (its pointers and strides are ignored).
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
