// The attention variants the evaluations compare, as short specs. F is an attention-memory
// budget in (0, 1]: the variant is set up so that each query attends to about F * N keys for a
// sequence of N tokens (the scores a call computes are measured and reported, so where a
// method cannot hit F exactly the tables show what it used).
//   dense            exact attention
//   smyrf:H:F        SMYRF with H hashing rounds: clusters of c = round(F * N / H) queries and
//                    keys (at least 1). At N = 128: smyrf:2:0.5 = 2x32, smyrf:2:0.25 = 2x16,
//                    smyrf:1:0.125 = 1x16, the paper's BERT settings.
//   smyrf:HxC        SMYRF with H rounds and clusters of C at every length (a sequence of at
//                    most C tokens is one cluster: exact attention).
//   smyrf-c:F[:Q]    SMYRF with centroid key selection (KeySelection::centroid): query clusters
//                    of Q consecutive tokens (default 16), each attending to its
//                    k = round(F * N) - ceil(N / Q) best keys (at least 1), so that with the
//                    centroid scores each query costs ~F * N scores.
//   reformer:H:F     Reformer LSH, H rounds, separate Q and K (a pretrained model's keys are
//                    not its queries): chunks of c = round(F * N / (2 H)) (a chunk sees itself
//                    and the previous one), n_buckets = the even number nearest N / c.
//   clustered:F      clustered attention with round(F * N) clusters (C * N scores).
//   iclustered:F[:K] improved clustered attention, top K keys (default 32, at most F * N / 2)
//                    and round(F * N) - K clusters.
//   routing:F        routing attention, window round(F * N), N / window fitted centroids.
//   local:F          sliding window of round((F * N - 1) / 2) on each side.
//   dilated:F[:R]    dilated window, dilation R (default 2), same number of keys as local:F.
//   strided:F        Sparse Transformer strided: stride ceil(sqrt(N)), window filling the rest.
//   fixed:F          Sparse Transformer fixed: blocks of round(F * N / 2), summary positions so
//                    that the summaries take the other half.
//   longformer:F[:G] window + G global tokens (default 1: the first token).
//   bigbird:F        blocks of round(F * N / 8): 3 window blocks, 1 global, 4 random.
//   axial-rows:F, axial-cols:F, criss-cross:F
//                    the 2-D patterns on a grid whose width gives ~F * N keys per query.
// Wave 2. Feature maps hold m features per query and per key ((Nq + Nk) m entries per
// (batch, head), RunInfo::attention_scores), so m = F * N / 2 is the same memory as F * N keys:
//   performer:F      FAVOR+, m = round(F * N / 2) orthogonal positive features (with --causal:
//                    the chunked prefix form of SLiM).
//   favor:F          the original trigonometric FAVOR, m = 2 round(F * N / 4).
//   rfa:F            Random Feature Attention, m = 2 round(F * N / 4), sigma 1.
//   linear, l2, efficient, dpfp[:NU]
//                    fixed-size maps (m = d, d + 1, d, 2 d NU): no budget; their memory is
//                    reported as measured.
//   linformer:F      projected length round(F * N), seeded random E and F.
//   nystrom:F        round(F * N / 2) landmarks (N * m scores on each side).
//   mca:F            memory-compressed attention, pooling stride round(1 / F).
//   isab:F           Set Transformer induced points, round(F * N / 3) of them (M scores per
//                    query, 2 M per key: the inducing points' attention runs on K and on V).
//   star:F           Star-Transformer: window round((F * N - 2) / 2) on each side + the relay.
//   gmat:F           global memory: round(F * N / 2) memory tokens (segment means) + a window
//                    of the other half.
//   informer:F       ProbSparse: round(F * N / 2) exact queries, round(F * N / 2) sampled keys.
//   sinkhorn:F       blocks of round(F * N / 2) (own block + sorted block).
//   synthesizer-dense, synthesizer-random
//                    quadratic by definition (no budget), seeded random weights: a pretrained
//                    model has none of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "smyrf/smyrf.h"

namespace smyrf::models {

struct AttentionVariant {
  std::string spec;  // as given
  enum class Kind {
    dense, smyrf_budget, smyrf_fixed, smyrf_centroid, reformer, clustered, iclustered, routing,
    sparse, linear, compressed, informer, sinkhorn, synthesizer
  } kind = Kind::dense;
  int n_hashes = 0;
  double budget = 1.0;  // F
  int cluster = 0;      // smyrf_fixed: C; smyrf_centroid: Q; iclustered: K; dilated: R;
                        // longformer: G
  SparsePattern pattern = SparsePattern::local;  // sparse
  FeatureMap map = FeatureMap::elu;               // linear (cluster: dpfp's NU)
  Compression compression = Compression::linformer;  // compressed
  SynthesizerKind synthesizer = SynthesizerKind::random;  // synthesizer
  bool has_budget() const;

  // SMYRF's key cluster size for a sequence of n tokens (0 for the other methods).
  std::int64_t cluster_for(std::int64_t n) const;
  // True when the variant computes exact attention at this length.
  bool exact_at(std::int64_t n) const;
  MethodConfig config_for(std::int64_t n) const;
  // e.g. "dense", "smyrf 2 x 50%", "smyrf 2x32", "reformer 2 x 50%", "local 25%".
  std::string label() const;
};

// Throws smyrf::Error naming the spec and what is wrong.
AttentionVariant parse_variant(std::string_view spec);

}  // namespace smyrf::models
