// Clustered attention's oracle, written from the definition in smyrf.h (ClusteredConfig):
// scalar fma chains for the hash bits, Lloyd's k-means run for every iteration (no early
// stop), centroids and softmaxes in double with every weight materialised. Shares with the
// fast path only the hyperplanes of src/spec/draws.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/problem.h"
#include "reference/common.h"
#include "reference/reference.h"
#include "spec/draws.h"

namespace smyrf::reference {
namespace {

using detail::Problem;
using detail::to_float;

// Everything the definition computes for one (b, h).
struct HeadResult {
  std::vector<std::int32_t> queries, keys;   // active query / visible key positions, ascending
  std::vector<std::uint64_t> code;           // per active query (rank)
  std::vector<int> cluster;                  // per active query (rank)
  int C = 0;
  std::vector<std::vector<double>> centroid;     // [C][d], the f32-rounded means (empty: no member)
  std::vector<std::vector<std::int32_t>> top;    // [C]: T_c positions ascending
};

template <class T>
double elem(const T* row, std::int64_t j) {
  return static_cast<double>(to_float(row[j]));
}

int hamming(std::uint64_t a, std::uint64_t b) {
  int n = 0;
  for (int t = 0; t < 64; ++t) n += static_cast<int>(((a ^ b) >> t) & 1u);
  return n;
}

template <class T>
HeadResult head_clusters(const Problem& pr, const ClusteredConfig& config, std::int64_t b,
                         std::int64_t h) {
  HeadResult r;
  for (std::int64_t i = 0; i < pr.Nq; ++i)
    if (pr.query_active(b, i)) r.queries.push_back(static_cast<std::int32_t>(i));
  for (std::int64_t j = 0; j < pr.Nk; ++j)
    if (pr.key_visible(b, j)) r.keys.push_back(static_cast<std::int32_t>(j));
  const std::int64_t nq = static_cast<std::int64_t>(r.queries.size());
  const int bits = config.hash_bits;

  // Hyperplanes w_t ~ N(0, I).
  std::vector<std::vector<double>> w(static_cast<std::size_t>(bits), std::vector<double>(static_cast<std::size_t>(pr.d)));
  for (int t = 0; t < bits; ++t)
    for (std::int64_t j = 0; j < pr.d; ++j)
      w[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)] =
          spec::clustered_hyperplane(pr.p->seed, h, t, j, pr.d);
  for (std::int32_t i : r.queries) {
    const T* q = pr.q_row<T>(b, h, i);
    std::uint64_t code = 0;
    for (int t = 0; t < bits; ++t) {
      double dot = 0.0;
      for (std::int64_t j = 0; j < pr.d; ++j)
        dot = std::fma(elem(q, j), w[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)], dot);
      if (dot > 0.0) code |= std::uint64_t{1} << t;
    }
    r.code.push_back(code);
  }
  if (nq == 0) return r;

  // Lloyd's k-means in Hamming space.
  const int C = static_cast<int>(std::min<std::int64_t>(config.n_clusters, nq));
  r.C = C;
  std::vector<std::uint64_t> cent(static_cast<std::size_t>(C));
  for (int c = 0; c < C; ++c) cent[static_cast<std::size_t>(c)] = r.code[static_cast<std::size_t>(c * nq / C)];
  auto assign = [&] {
    r.cluster.assign(static_cast<std::size_t>(nq), -1);
    for (std::int64_t t = 0; t < nq; ++t) {
      int best = -1, best_d = 1000;
      for (int c = 0; c < C; ++c) {
        const int dist = hamming(r.code[static_cast<std::size_t>(t)], cent[static_cast<std::size_t>(c)]);
        if (dist < best_d) {
          best_d = dist;
          best = c;
        }
      }
      r.cluster[static_cast<std::size_t>(t)] = best;
    }
  };
  assign();
  for (int it = 0; it < config.iterations; ++it) {
    for (int c = 0; c < C; ++c) {
      int size = 0;
      std::vector<int> ones(static_cast<std::size_t>(bits), 0);
      for (std::int64_t t = 0; t < nq; ++t) {
        if (r.cluster[static_cast<std::size_t>(t)] != c) continue;
        ++size;
        for (int bit = 0; bit < bits; ++bit)
          ones[static_cast<std::size_t>(bit)] += static_cast<int>((r.code[static_cast<std::size_t>(t)] >> bit) & 1u);
      }
      if (size == 0) continue;  // an empty cluster keeps its centroid
      std::uint64_t code = 0;
      for (int bit = 0; bit < bits; ++bit)
        if (ones[static_cast<std::size_t>(bit)] > size - ones[static_cast<std::size_t>(bit)]) code |= std::uint64_t{1} << bit;
      cent[static_cast<std::size_t>(c)] = code;
    }
    assign();
  }

  // Centroid queries: mean in double over the members in ascending positions, rounded to f32.
  r.centroid.assign(static_cast<std::size_t>(C), {});
  r.top.assign(static_cast<std::size_t>(C), {});
  for (int c = 0; c < C; ++c) {
    std::vector<double> sum(static_cast<std::size_t>(pr.d), 0.0);
    int n = 0;
    for (std::int64_t t = 0; t < nq; ++t) {
      if (r.cluster[static_cast<std::size_t>(t)] != c) continue;
      ++n;
      const T* q = pr.q_row<T>(b, h, r.queries[static_cast<std::size_t>(t)]);
      for (std::int64_t j = 0; j < pr.d; ++j) sum[static_cast<std::size_t>(j)] += elem(q, j);
    }
    if (n == 0) continue;
    for (double& x : sum) x = static_cast<double>(static_cast<float>(x / n));
    r.centroid[static_cast<std::size_t>(c)] = sum;
    // T_c: the topk visible keys of largest centroid logit, ties to the lower position.
    if (config.topk > 0 && !r.keys.empty()) {
      std::vector<std::pair<double, std::int32_t>> ranked;
      for (std::int32_t j : r.keys) {
        const T* k = pr.k_row<T>(b, h, j);
        double dot = 0.0;
        for (std::int64_t t = 0; t < pr.d; ++t) dot += sum[static_cast<std::size_t>(t)] * elem(k, t);
        ranked.push_back({static_cast<double>(pr.scale) * dot, j});
      }
      std::sort(ranked.begin(), ranked.end(), [](const auto& x, const auto& y) {
        return x.first > y.first || (x.first == y.first && x.second < y.second);
      });
      const std::size_t sel = std::min<std::size_t>(static_cast<std::size_t>(config.topk), ranked.size());
      for (std::size_t t = 0; t < sel; ++t) r.top[static_cast<std::size_t>(c)].push_back(ranked[t].second);
      std::sort(r.top[static_cast<std::size_t>(c)].begin(), r.top[static_cast<std::size_t>(c)].end());
    }
  }
  return r;
}

// softmax over `logits` in double: weights and the logsumexp.
double softmax(std::vector<double>& logits) {
  double mx = -std::numeric_limits<double>::infinity();
  for (double x : logits) mx = std::max(mx, x);
  double z = 0.0;
  for (double x : logits) z += std::exp(x - mx);
  for (double& x : logits) x = std::exp(x - mx) / z;
  return mx + std::log(z);
}

template <class T>
void attention_as(const Problem& pr, const ClusteredConfig& config, Output& result) {
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const HeadResult r = head_clusters<T>(pr, config, b, h);
      if (r.keys.empty()) continue;
      const std::size_t nk = r.keys.size();
      auto score = [&](const std::vector<double>& q, std::int32_t j) {
        const T* k = pr.k_row<T>(b, h, j);
        double dot = 0.0;
        for (std::int64_t t = 0; t < pr.d; ++t) dot += q[static_cast<std::size_t>(t)] * elem(k, t);
        return static_cast<double>(pr.scale) * dot;
      };
      for (int c = 0; c < r.C; ++c) {
        const std::vector<double>& qbar = r.centroid[static_cast<std::size_t>(c)];
        if (qbar.empty()) continue;
        // The centroid's attention A_c over every visible key.
        std::vector<double> A(nk);
        for (std::size_t j = 0; j < nk; ++j) A[j] = score(qbar, r.keys[j]);
        const double lse_c = softmax(A);
        const std::vector<std::int32_t>& top = r.top[static_cast<std::size_t>(c)];
        std::vector<char> in_top(nk, 0);
        double mass = 0.0;
        for (std::size_t j = 0; j < nk; ++j)
          if (std::binary_search(top.begin(), top.end(), r.keys[j])) {
            in_top[j] = 1;
            mass += A[j];
          }
        for (std::size_t t = 0; t < r.queries.size(); ++t) {
          if (r.cluster[t] != c) continue;
          const std::int32_t i = r.queries[t];
          std::vector<double> o(static_cast<std::size_t>(pr.dv), 0.0);
          double lse = lse_c;
          for (std::size_t j = 0; j < nk; ++j) {
            if (in_top[j]) continue;
            const T* v = pr.v_row<T>(b, h, r.keys[j]);
            for (std::int64_t col = 0; col < pr.dv; ++col) o[static_cast<std::size_t>(col)] += A[j] * elem(v, col);
          }
          if (config.topk > 0) {
            std::vector<double> qi(static_cast<std::size_t>(pr.d));
            const T* q = pr.q_row<T>(b, h, i);
            for (std::int64_t x = 0; x < pr.d; ++x) qi[static_cast<std::size_t>(x)] = elem(q, x);
            std::vector<double> p;
            for (std::int32_t j : top) p.push_back(score(qi, j));
            lse = softmax(p) - std::log(mass);
            for (std::size_t u = 0; u < top.size(); ++u) {
              const T* v = pr.v_row<T>(b, h, top[u]);
              for (std::int64_t col = 0; col < pr.dv; ++col)
                o[static_cast<std::size_t>(col)] += mass * p[u] * elem(v, col);
            }
          }
          const std::size_t at = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
          for (std::int64_t col = 0; col < pr.dv; ++col)
            result.o[at * static_cast<std::size_t>(pr.dv) + static_cast<std::size_t>(col)] = o[static_cast<std::size_t>(col)];
          result.lse[at] = lse;
        }
      }
    }
}

}  // namespace

ClusteredClusters clusters(const AttentionParams& params, const ClusteredConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  ClusteredClusters out;
  out.B = pr.B;
  out.H = pr.H;
  out.Nq = pr.Nq;
  out.Nk = pr.Nk;
  out.max_clusters = std::min<std::int64_t>(config.n_clusters, pr.Nq);
  out.codes.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), 0);
  out.cluster.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), -1);
  out.top_keys.assign(static_cast<std::size_t>(pr.B * pr.H * out.max_clusters), {});
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const HeadResult r = detail::with_input_type(pr.dtype, [&](auto tag) {
        return head_clusters<decltype(tag)>(pr, config, b, h);
      });
      if (h == 0) out.n_clusters.push_back(r.C);
      const std::size_t bh = static_cast<std::size_t>(b * pr.H + h);
      for (std::size_t t = 0; t < r.queries.size(); ++t) {
        const std::size_t at = bh * static_cast<std::size_t>(pr.Nq) + static_cast<std::size_t>(r.queries[t]);
        out.codes[at] = r.code[t];
        if (!r.cluster.empty()) out.cluster[at] = r.cluster[t];
      }
      for (int c = 0; c < r.C; ++c)
        out.top_keys[bh * static_cast<std::size_t>(out.max_clusters) + static_cast<std::size_t>(c)] =
            r.top[static_cast<std::size_t>(c)];
    }
  return out;
}

Output attention(const AttentionParams& params, const ClusteredConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  detail::with_input_type(pr.dtype, [&](auto tag) { attention_as<decltype(tag)>(pr, config, out); });
  return out;
}

}  // namespace smyrf::reference
