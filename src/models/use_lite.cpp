#include "models/use_lite.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <cblas.h>

#include "common/timer.h"
#include "models/tfjs_weights.h"

namespace smyrf::models {
namespace {

const std::string kEnc = "module_apply_default/Encoder_en/KonaTransformer/Encode/";
const std::string kStack = kEnc + "TransformerStack/";

std::vector<float> scalar_or_throw(const TfjsWeights& w, const std::string& name) {
  const TfjsTensor& t = w.at(name);
  if (t.dtype != "float32" || t.numel() != 1)
    throw Error("smyrf: model weights: '" + name + "' should be one float32");
  return t.values;
}

// A positive, finite float32 scalar (an epsilon): zero or negative would turn the norms into
// divisions by zero or square roots of negative numbers.
float positive_scalar(const TfjsWeights& w, const std::string& name) {
  const float v = scalar_or_throw(w, name)[0];
  if (!(v > 0.0f) || !std::isfinite(v)) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", static_cast<double>(v));
    throw Error("smyrf: model weights: '" + name + "' = " + value + ": must be a positive number");
  }
  return v;
}

// The forward pass hard-codes the graph's integer constants (the clip, the heads' split, the
// padding id); a model file whose constants differ is another model, not one to run silently.
void expect_int(const TfjsWeights& w, const std::string& name, std::int32_t expected) {
  const TfjsTensor& t = w.at(name);
  if (t.dtype != "int32" || t.ints.size() != 1)
    throw Error("smyrf: model weights: '" + name + "' should be one int32");
  if (t.ints[0] != expected)
    throw Error("smyrf: model weights: '" + name + "' = " + std::to_string(t.ints[0]) + ", expected " +
                std::to_string(expected) + " (the value this implementation is built for)");
}

// C[m, n] = A[m, k] W[k, n] + bias[n], row-major.
void dense(const float* a, std::int64_t m, std::int64_t k, const std::vector<float>& w,
           const std::vector<float>& bias, std::int64_t n, float* c) {
  for (std::int64_t i = 0; i < m; ++i) std::copy(bias.begin(), bias.end(), c + i * n);
  if (m == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a, static_cast<int>(k), w.data(), static_cast<int>(n), 1.0f,
              c, static_cast<int>(n));
}

// y = (x - mean) / sqrt(var + eps) * scale + bias per row, as the graph computes it (float).
void layer_norm(const float* x, std::int64_t m, std::int64_t d, const std::vector<float>& scale,
                const std::vector<float>& bias, float eps, float* y) {
  for (std::int64_t i = 0; i < m; ++i) {
    const float* r = x + i * d;
    double mean = 0;
    for (std::int64_t j = 0; j < d; ++j) mean += r[j];
    mean /= static_cast<double>(d);
    double var = 0;
    for (std::int64_t j = 0; j < d; ++j) var += (r[j] - mean) * (r[j] - mean);
    var /= static_cast<double>(d);
    const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
    for (std::int64_t j = 0; j < d; ++j)
      y[i * d + j] = (r[j] - static_cast<float>(mean)) * (scale[j] * inv) + bias[j];
  }
}

}  // namespace

void AttentionTrace::add(const AttentionTrace& o) {
  seconds += o.seconds;
  scores += o.scores;
  dense_scores += o.dense_scores;
  workspace_bytes = std::max(workspace_bytes, o.workspace_bytes);
  calls += o.calls;
}

UseLite UseLite::load(const std::filesystem::path& dist_dir) {
  const TfjsWeights w = TfjsWeights::load(dist_dir / "model.json");
  UseLite m;
  m.tokenizer_ = Tokenizer::load(dist_dir / "vocab.json");
  const TfjsTensor& emb = w.at("module/Embeddings_en");
  if (emb.dtype != "float32" || emb.shape.size() != 2 || emb.shape[1] != 256)
    throw Error("smyrf: model weights: module/Embeddings_en should be float32 [vocab, 256]");
  m.embeddings_ = emb.values;
  m.vocab_ = emb.shape[0];
  // 8000 pieces, 8002 embedding rows: the last two rows are never produced by the tokenizer.
  if (m.vocab_ < static_cast<std::int64_t>(m.tokenizer_.size()))
    throw Error("smyrf: model: vocab.json has " + std::to_string(m.tokenizer_.size()) +
                " pieces but the embedding table only " + std::to_string(m.vocab_) + " rows");
  m.inv_timescales_ =
      w.floats(kStack + "Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1", {1, 128});
  m.ln_epsilon_ = positive_scalar(w, kStack + "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x");
  m.l2_epsilon_ = positive_scalar(w, "module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y");
  expect_int(w, "module_apply_default/Encoder_en/KonaTransformer/ClipToMaxLength/Less/y", 128);
  expect_int(w, kEnc + "SparseToDense/default_value", -1);

  for (int l = 0; l < kLayers; ++l) {
    Layer& L = m.layers_[l];
    const std::string id = "Layer_" + std::to_string(l) + "/TransformerLayer/";
    const std::string own = kEnc + id, stack = kStack + id;
    const std::string kern = "module/Encoder_en/KonaTransformer/Encode/" + id;
    L.d_in = l == 0 ? 256 : kDim;
    L.heads = 4;
    L.head_dim = L.d_in / L.heads;
    const std::int64_t d = L.d_in;
    L.ln1_scale = w.floats(own + "layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat", {d});
    L.ln1_bias = w.floats(own + "layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat", {d});
    L.qkv_w = w.floats(kern + "MultiheadAttention/qkv_transform_single/kernel/part_0", {1, 1, d, 3 * d});
    L.qkv_b = w.floats(own + "MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat", {3 * d});
    L.out_w = w.floats(kern + "MultiheadAttention/output_transform_single/kernel/part_0", {1, 1, d, kDim});
    L.out_b = w.floats(own + "MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat", {kDim});
    if (l == 0) {
      L.resid_w = w.floats(own + "dense/kernel/ConcatPartitions/concat", {d, kDim});
      L.resid_b = w.floats(own + "dense/bias/ConcatPartitions/concat", {kDim});
    }
    L.ln2_scale = w.floats(own + "FFN/layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat", {kDim});
    L.ln2_bias = w.floats(own + "FFN/layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat", {kDim});
    L.ffn1_w = w.floats(stack + "FFN/conv1/Tensordot/Reshape_1", {kDim, 1536});
    L.ffn1_b = w.floats(own + "FFN/conv1/bias/ConcatPartitions/concat", {1536});
    L.ffn2_w = w.floats(stack + "FFN/conv2/Tensordot/Reshape_1", {1536, kDim});
    L.ffn2_b = w.floats(own + "FFN/conv2/bias/ConcatPartitions/concat", {kDim});
    L.q_scale = scalar_or_throw(w, stack + "MultiheadAttention/mul/y")[0];
    expect_int(w, stack + "MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/3",
               static_cast<std::int32_t>(L.head_dim));
    expect_int(w, stack + "MultiheadAttention/combine_heads/combine_last_two_dimensions/Reshape/shape/2",
               static_cast<std::int32_t>(L.d_in));
  }
  m.pool_w_ = w.floats("module/Encoder_en/hidden_layers/tanh_layer_0/weights", {kDim, kDim});
  m.pool_b_ = w.floats("module/Encoder_en/hidden_layers/tanh_layer_0/bias", {kDim});
  return m;
}

std::vector<float> UseLite::embed(std::span<const std::int32_t> all_ids, const AttentionChooser& attention,
                                  const EncodeOptions& options, std::uint64_t seed,
                                  AttentionTrace* trace, std::vector<LayerAttentionIO>* io) const {
  if (options.max_tokens < 0)
    throw Error("smyrf: encode: max_tokens = " + std::to_string(options.max_tokens) + ": must be >= 0");
  std::size_t n_keep = all_ids.size();
  if (options.max_tokens > 0) n_keep = std::min<std::size_t>(n_keep, static_cast<std::size_t>(options.max_tokens));
  const std::span<const std::int32_t> ids = all_ids.first(n_keep);
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab_)
      throw Error("smyrf: encode: ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                  ": outside the vocabulary [0, " + std::to_string(vocab_) + ")");

  // One sequence has no padding: the graph's padding id is -1 (SparseToDense's default) and
  // its mask is id > -1, so every clipped token (the unknown id 0 included) takes part, and
  // its gather/scatter of masked rows is the identity here.
  const auto n = static_cast<std::int64_t>(ids.size());

  // Input of layer 0, as the graph computes it: AddTimingSignal returns embedding + signal,
  // which is then added to the embedding once more, so x = 2 * embedding + signal, with
  // signal(p) = [sin(p * inv_timescale), cos(p * inv_timescale)] at position p.
  const std::int64_t d0 = 256, half = 128;
  std::vector<float> x(static_cast<std::size_t>(n * d0), 0.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    const float* e = embeddings_.data() + static_cast<std::size_t>(ids[static_cast<std::size_t>(i)]) * d0;
    float* r = x.data() + i * d0;
    for (std::int64_t j = 0; j < half; ++j) {
      const float angle = static_cast<float>(i) * inv_timescales_[static_cast<std::size_t>(j)];
      r[j] = e[j] + (e[j] + std::sin(angle));
      r[j + half] = e[j + half] + (e[j + half] + std::cos(angle));
    }
  }

  std::vector<float> h = std::move(x), normed, qkv, att, proj, resid, ffn;
  AttentionTrace local;
  if (io) io->assign(kLayers, LayerAttentionIO{});
  for (int l = 0; l < kLayers; ++l) {
    const Layer& L = layers_[l];
    const std::int64_t d = L.d_in, inner = L.heads * L.head_dim;
    normed.resize(static_cast<std::size_t>(n * d));
    layer_norm(h.data(), n, d, L.ln1_scale, L.ln1_bias, ln_epsilon_, normed.data());
    qkv.resize(static_cast<std::size_t>(n * 3 * inner));
    dense(normed.data(), n, d, L.qkv_w, L.qkv_b, 3 * inner, qkv.data());

    att.assign(static_cast<std::size_t>(n * inner), 0.0f);
    if (n > 0) {
      AttentionParams p;
      p.batch = 1;
      p.heads = L.heads;
      p.nq = p.nk = n;
      p.d = p.dv = L.head_dim;
      p.q = qkv.data();
      p.k = qkv.data() + inner;
      p.v = qkv.data() + 2 * inner;
      p.o = att.data();
      p.q_row_stride = p.k_row_stride = p.v_row_stride = 3 * inner;
      p.q_head_stride = p.k_head_stride = p.v_head_stride = L.head_dim;
      p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = n * 3 * inner;
      p.o_row_stride = inner;
      p.o_head_stride = L.head_dim;
      p.o_batch_stride = n * inner;
      p.scale = L.q_scale;
      p.seed = seed + static_cast<std::uint64_t>(l);
      p.num_threads = 1;
      detail::Timer t;
      const RunInfo info = smyrf::attention(p, attention(l, n), nullptr);
      local.seconds += t.seconds();
      local.scores += info.attention_scores;
      local.dense_scores += static_cast<std::size_t>(L.heads * n * n);
      local.workspace_bytes = std::max(local.workspace_bytes, info.workspace_bytes);
      local.calls += 1;
    }
    if (io) (*io)[static_cast<std::size_t>(l)] = {n, L.heads, L.head_dim, qkv, att};

    // Output projection plus the residual (projected 256 -> 512 by a dense layer in layer 0).
    proj.resize(static_cast<std::size_t>(n * kDim));
    dense(att.data(), n, inner, L.out_w, L.out_b, kDim, proj.data());
    if (!L.resid_w.empty()) {
      resid.resize(static_cast<std::size_t>(n * kDim));
      dense(h.data(), n, d, L.resid_w, L.resid_b, kDim, resid.data());
      for (std::size_t j = 0; j < proj.size(); ++j) proj[j] += resid[j];
    } else {
      for (std::size_t j = 0; j < proj.size(); ++j) proj[j] += h[j];
    }
    // Feed-forward, added to the residual stream.
    normed.resize(static_cast<std::size_t>(n * kDim));
    layer_norm(proj.data(), n, kDim, L.ln2_scale, L.ln2_bias, ln_epsilon_, normed.data());
    ffn.resize(static_cast<std::size_t>(n * 1536));
    dense(normed.data(), n, kDim, L.ffn1_w, L.ffn1_b, 1536, ffn.data());
    for (float& f : ffn) f = std::max(f, 0.0f);
    h.resize(static_cast<std::size_t>(n * kDim));
    dense(ffn.data(), n, 1536, L.ffn2_w, L.ffn2_b, kDim, h.data());
    for (std::size_t j = 0; j < h.size(); ++j) h[j] += proj[j];
  }

  // Mean over the tokens, divided by max(n, 1); then the tanh layer and L2 normalisation.
  std::vector<float> pooled(kDim, 0.0f), out(kDim);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < kDim; ++j) pooled[static_cast<std::size_t>(j)] += h[static_cast<std::size_t>(i * kDim + j)];
  const float denom = static_cast<float>(std::max<std::int64_t>(n, 1));
  for (float& v : pooled) v /= denom;
  dense(pooled.data(), 1, kDim, pool_w_, pool_b_, kDim, out.data());
  double sq = 0;
  for (float& v : out) {
    v = std::tanh(v);
    sq += static_cast<double>(v) * v;
  }
  const float inv = static_cast<float>(1.0 / std::sqrt(std::max(sq, static_cast<double>(l2_epsilon_))));
  for (float& v : out) v *= inv;
  if (trace) trace->add(local);
  return out;
}

std::vector<float> UseLite::embed_text(std::string_view text, const AttentionChooser& attention,
                                       const EncodeOptions& options) const {
  const std::vector<std::int32_t> ids = tokenizer_.encode(text);
  return embed(ids, attention, options);
}

}  // namespace smyrf::models
