#include "layers.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "common/rng.h"
#include "models/corpus.h"
#include "models/use_lite.h"
#include "models/variants.h"
#include "smyrf/smyrf.h"

namespace smyrf::cli {
namespace {

// One head's Q, K, V (rows of d floats) and its softmax scale.
struct Head {
  std::int64_t n = 0, d = 0;
  std::vector<float> q, k, v;
  float scale = 1;
};

using KeySets = std::vector<std::vector<std::int32_t>>;

// Exact softmax attention of every query over its own key set, in double.
std::vector<double> attend(const Head& h, const KeySets& keys) {
  std::vector<double> o(static_cast<std::size_t>(h.n * h.d), 0.0);
  for (std::int64_t i = 0; i < h.n; ++i) {
    const auto& ks = keys[static_cast<std::size_t>(i)];
    std::vector<double> s(ks.size());
    double mx = -INFINITY;
    for (std::size_t t = 0; t < ks.size(); ++t) {
      double x = 0;
      for (std::int64_t c = 0; c < h.d; ++c) x += double(h.q[static_cast<std::size_t>(i * h.d + c)]) * h.k[static_cast<std::size_t>(ks[t] * h.d + c)];
      s[t] = x * h.scale;
      mx = std::max(mx, s[t]);
    }
    double z = 0;
    for (double& x : s) z += (x = std::exp(x - mx));
    for (std::size_t t = 0; t < ks.size(); ++t)
      for (std::int64_t c = 0; c < h.d; ++c)
        o[static_cast<std::size_t>(i * h.d + c)] += s[t] / z * h.v[static_cast<std::size_t>(ks[t] * h.d + c)];
  }
  return o;
}

double rel_error(const std::vector<double>& a, const std::vector<double>& exact) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) num += (a[i] - exact[i]) * (a[i] - exact[i]), den += exact[i] * exact[i];
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

// Oracles: each query's exact top-k keys; a local window of k positions; content-blind
// balanced clusters (a seeded random permutation cut into clusters of k, 1 round).
KeySets top_k(const Head& h, std::int64_t k) {
  KeySets out(static_cast<std::size_t>(h.n));
  for (std::int64_t i = 0; i < h.n; ++i) {
    std::vector<std::pair<double, std::int32_t>> s;
    for (std::int64_t j = 0; j < h.n; ++j) {
      double x = 0;
      for (std::int64_t c = 0; c < h.d; ++c) x += double(h.q[static_cast<std::size_t>(i * h.d + c)]) * h.k[static_cast<std::size_t>(j * h.d + c)];
      s.emplace_back(-x * h.scale, static_cast<std::int32_t>(j));
    }
    std::sort(s.begin(), s.end());
    for (std::int64_t t = 0; t < std::min(k, h.n); ++t) out[static_cast<std::size_t>(i)].push_back(s[static_cast<std::size_t>(t)].second);
  }
  return out;
}
KeySets window(const Head& h, std::int64_t k) {
  KeySets out(static_cast<std::size_t>(h.n));
  for (std::int64_t i = 0; i < h.n; ++i) {
    const std::int64_t lo = std::clamp<std::int64_t>(i - k / 2, 0, std::max<std::int64_t>(0, h.n - k));
    for (std::int64_t j = lo; j < std::min(h.n, lo + k); ++j) out[static_cast<std::size_t>(i)].push_back(static_cast<std::int32_t>(j));
  }
  return out;
}
KeySets random_clusters(const Head& h, std::int64_t k, std::uint64_t seed) {
  std::vector<std::int32_t> qp(static_cast<std::size_t>(h.n)), kp(static_cast<std::size_t>(h.n));
  std::iota(qp.begin(), qp.end(), 0);
  std::iota(kp.begin(), kp.end(), 0);
  for (std::size_t i = qp.size(); i > 1; --i) {
    std::swap(qp[i - 1], qp[detail::random_bits(seed, 1, i) % i]);
    std::swap(kp[i - 1], kp[detail::random_bits(seed, 2, i) % i]);
  }
  const std::int64_t C = std::max<std::int64_t>(1, (h.n + k - 1) / k);
  KeySets out(static_cast<std::size_t>(h.n));
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t t = c * h.n / C; t < (c + 1) * h.n / C; ++t)
      for (std::int64_t u = c * h.n / C; u < (c + 1) * h.n / C; ++u)
        out[static_cast<std::size_t>(qp[static_cast<std::size_t>(t)])].push_back(kp[static_cast<std::size_t>(u)]);
  return out;
}

}  // namespace

int run_layers(const LayersOptions& o) {
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::vector<models::AttentionVariant> variants;
  for (const std::string& s : o.variants) variants.push_back(models::parse_variant(s));
  const models::Corpus corpus = models::load_corpus(o.corpus, models::parse_mail_text(o.mail_text));
  const models::UseLite model = models::UseLite::load(o.model);
  // Every k-th text, so the sample spans the corpus (groups are stored in order).
  std::vector<std::size_t> docs;
  const std::size_t step = std::max<std::size_t>(1, corpus.docs.size() / std::max<std::size_t>(1, o.limit));
  for (std::size_t i = 0; i < corpus.docs.size() && docs.size() < o.limit; i += step) docs.push_back(i);

  std::vector<std::string> names;
  for (const auto& v : variants) names.push_back(v.label());
  names.insert(names.end(), {"exact top-k", "local window", "random clusters"});
  // err[doc][layer][name] summed over heads; heads[doc][layer].
  std::vector<std::array<std::map<std::string, double>, 2>> err(docs.size());
  std::vector<std::array<int, 2>> heads(docs.size(), {0, 0});
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::int64_t t = 0; t < static_cast<std::int64_t>(docs.size()); ++t) {
    const auto ids = model.tokenizer().encode(corpus.docs[docs[static_cast<std::size_t>(t)]].text);
    std::vector<models::LayerAttentionIO> io;
    model.embed(ids, [](int, std::int64_t) { return MethodConfig{DenseConfig{}}; }, {o.max_tokens}, 0, nullptr, &io);
    for (int l = 0; l < 2; ++l) {
      const models::LayerAttentionIO& L = io[static_cast<std::size_t>(l)];
      const std::int64_t inner = L.heads * L.head_dim, n = L.n;
      const std::int64_t k = std::max<std::int64_t>(1, std::llround(o.budget * static_cast<double>(n)));
      for (std::int64_t hh = 0; hh < L.heads; ++hh) {
        Head h{n, L.head_dim, {}, {}, {}, 1.0f / std::sqrt(static_cast<float>(L.head_dim))};
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t c = 0; c < L.head_dim; ++c) {
            const std::size_t at = static_cast<std::size_t>(i * 3 * inner + hh * L.head_dim + c);
            h.q.push_back(L.qkv[at]);
            h.k.push_back(L.qkv[at + static_cast<std::size_t>(inner)]);
            h.v.push_back(L.qkv[at + 2 * static_cast<std::size_t>(inner)]);
          }
        KeySets all(static_cast<std::size_t>(n));
        for (auto& a : all) {
          a.resize(static_cast<std::size_t>(n));
          std::iota(a.begin(), a.end(), 0);
        }
        const std::vector<double> exact = attend(h, all);
        auto& e = err[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)];
        for (const auto& v : variants) {
          std::vector<float> out(static_cast<std::size_t>(n * h.d));
          AttentionParams p = AttentionParams::contiguous(1, 1, n, n, h.d, h.d, h.q.data(), h.k.data(), h.v.data(), out.data());
          p.scale = h.scale;
          p.num_threads = 1;
          p.seed = o.seed + static_cast<std::uint64_t>(t * 16 + l * 4 + hh);
          smyrf::attention(p, v.config_for(n));
          e[v.label()] += rel_error(std::vector<double>(out.begin(), out.end()), exact);
        }
        e["exact top-k"] += rel_error(attend(h, top_k(h, k)), exact);
        e["local window"] += rel_error(attend(h, window(h, k)), exact);
        e["random clusters"] += rel_error(attend(h, random_clusters(h, k, o.seed + static_cast<std::uint64_t>(t))), exact);
        heads[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)] += 1;
      }
    }
  }
  std::printf("smyrf layers: relative error of each layer's attention output on dense-captured inputs\n");
  std::printf("(%zu texts, clip %lld tokens; oracles at k = budget %.3g x N keys per query: exact top-k of each query,\n"
              " a local window of k positions, one round of content-blind balanced clusters of k)\n",
              docs.size(), static_cast<long long>(o.max_tokens), o.budget);
  std::printf("%-22s %10s %10s\n", "attention", "layer 0", "layer 1");
  for (const std::string& name : names) {
    double s[2] = {0, 0};
    for (std::size_t t = 0; t < docs.size(); ++t)
      for (int l = 0; l < 2; ++l) s[l] += err[t][static_cast<std::size_t>(l)][name] / std::max(1, heads[t][static_cast<std::size_t>(l)]);
    std::printf("%-22s %10.3f %10.3f\n", name.c_str(), s[0] / static_cast<double>(docs.size()), s[1] / static_cast<double>(docs.size()));
  }
  return 0;
}

}  // namespace smyrf::cli
