// SMYRF's oracle: the definition of smyrf.h (SmyrfConfig) and methods/smyrf/clustering.h
// written out plainly: its own transform, scalar fma chains for the hash, a stable sort,
// explicit cluster assignment, attention and round merging in double with every round's output
// materialised. Shares with the fast path only the directions and offsets of src/spec/draws.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "reference/common.h"
#include "reference/reference.h"
#include "reference/train_reference.h"
#include "spec/draws.h"

namespace smyrf::reference {
namespace {

using detail::Problem;
using detail::to_float;

struct Token {
  float hash;
  std::int32_t position;
};

// Coordinates the transform appends (E).
int extra_dims(const SmyrfConfig& c) {
  switch (c.transform) {
    case Transform::xbox_plus: return 2;
    case Transform::xbox:
    case Transform::h2_alsh: return 1;
    case Transform::l2_alsh: return c.alsh_m;
  }
  return 0;
}

// C = max(ceil(n_q / q_cluster_size), ceil(n_k / k_cluster_size), 1).
std::int64_t cluster_count(std::int64_t n_q, std::int64_t n_k, const SmyrfConfig& c) {
  const std::int64_t cq = (n_q + c.q_cluster_size - 1) / c.q_cluster_size;
  const std::int64_t ck = (n_k + c.k_cluster_size - 1) / c.k_cluster_size;
  return std::max<std::int64_t>({cq, ck, 1});
}

// Projection on a[0, d) and squared norm, fma chains in index order.
template <class T>
void dot_and_norm(const T* x, std::int64_t d, const std::vector<double>& a, double* dot,
                  double* n2) {
  double s = 0, n = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double xj = to_float(x[j]);
    s = std::fma(xj, a[static_cast<std::size_t>(j)], s);
    n = std::fma(xj, xj, n);
  }
  *dot = s;
  *n2 = n;
}

template <class T>
double norm2(const T* x, std::int64_t d) {
  double n = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double xj = to_float(x[j]);
    n = std::fma(xj, xj, n);
  }
  return n;
}

// The hash of clustering.h: x' = [alpha x, ext_0..ext_{E-1}] (smyrf.h, Transform), then
// p = alpha dot + sum_e ext_e a[d + e] (fma chain), floor((p + offset) / r) when r > 0, rounded
// once to float.
float hash_of(const SmyrfConfig& c, bool is_query, double dot, double n2, double max_q2,
              double max_k2, const std::vector<double>& a, std::int64_t d, double offset) {
  double alpha = 1.0;
  double ext[8] = {};
  const int E = extra_dims(c);
  switch (c.transform) {
    case Transform::xbox_plus: {
      const double e = std::sqrt(std::max(0.0, max_q2 + max_k2 - n2));
      ext[0] = is_query ? 0.0 : e;
      ext[1] = is_query ? e : 0.0;
      break;
    }
    case Transform::xbox:
    case Transform::h2_alsh:
      if (is_query) {
        if (c.transform == Transform::h2_alsh)
          alpha = n2 > 0.0 ? std::sqrt(max_k2) / std::sqrt(n2) : 0.0;
      } else {
        ext[0] = std::sqrt(std::max(0.0, max_k2 - n2));
      }
      break;
    case Transform::l2_alsh:
      if (is_query) {
        alpha = n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0;
        for (int e = 0; e < E; ++e) ext[e] = 0.5;
      } else {
        alpha = max_k2 > 0.0 ? static_cast<double>(c.alsh_u) / std::sqrt(max_k2) : 0.0;
        ext[0] = alpha * alpha * n2;
        for (int e = 1; e < E; ++e) ext[e] = ext[e - 1] * ext[e - 1];
      }
      break;
  }
  double p = alpha * dot;
  for (int e = 0; e < E; ++e) p = std::fma(ext[e], a[static_cast<std::size_t>(d + e)], p);
  if (c.r > 0.0f) p = std::floor((p + offset) / static_cast<double>(c.r));
  return static_cast<float>(p);
}

template <class T>
SmyrfClusters clusters_as(const Problem& pr, const SmyrfConfig& config) {
  const int R = config.n_hashes;
  const std::int64_t dims = pr.d + extra_dims(config);
  SmyrfClusters c;
  c.B = pr.B;
  c.H = pr.H;
  c.Nq = pr.Nq;
  c.Nk = pr.Nk;
  c.rounds = R;
  c.q_sorted.assign(static_cast<std::size_t>(pr.B * pr.H * R * pr.Nq), -1);
  c.k_sorted.assign(static_cast<std::size_t>(pr.B * pr.H * R * pr.Nk), -1);
  for (std::int64_t b = 0; b < pr.B; ++b) {
    std::int32_t nq = 0, nk = 0;
    for (std::int64_t i = 0; i < pr.Nq; ++i) nq += pr.query_active(b, i) ? 1 : 0;
    for (std::int64_t j = 0; j < pr.Nk; ++j) nk += pr.key_visible(b, j) ? 1 : 0;
    c.q_count.push_back(nq);
    c.k_count.push_back(nk);
    c.n_clusters.push_back(cluster_count(nq, nk, config));
  }
  for (std::int64_t h = 0; h < pr.H; ++h) {
    // a_r[t] for t < d + E and b_r of every round.
    std::vector<std::vector<double>> a(static_cast<std::size_t>(R));
    std::vector<double> offsets(static_cast<std::size_t>(R));
    for (int r = 0; r < R; ++r) {
      for (std::int64_t t = 0; t < dims; ++t)
        a[static_cast<std::size_t>(r)].push_back(spec::smyrf_direction(pr.p->seed, h, r, t));
      offsets[static_cast<std::size_t>(r)] = spec::smyrf_offset(pr.p->seed, h, r, config.r);
    }
    for (std::int64_t b = 0; b < pr.B; ++b) {
      double max_q2 = 0, max_k2 = 0;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i)) max_q2 = std::max(max_q2, norm2(pr.q_row<T>(b, h, i), pr.d));
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (pr.key_visible(b, j)) max_k2 = std::max(max_k2, norm2(pr.k_row<T>(b, h, j), pr.d));
      for (int r = 0; r < R; ++r) {
        const std::vector<double>& ar = a[static_cast<std::size_t>(r)];
        for (int side = 0; side < 2; ++side) {
          const bool is_query = side == 0;
          const std::int64_t N = is_query ? pr.Nq : pr.Nk;
          std::vector<Token> tokens;
          for (std::int64_t i = 0; i < N; ++i) {
            if (is_query ? !pr.query_active(b, i) : !pr.key_visible(b, i)) continue;
            double dot, n2;
            dot_and_norm(is_query ? pr.q_row<T>(b, h, i) : pr.k_row<T>(b, h, i), pr.d, ar, &dot,
                         &n2);
            if (is_query && pr.scale < 0.0f) dot = -dot;
            tokens.push_back({hash_of(config, is_query, dot, n2, max_q2, max_k2, ar, pr.d,
                                      offsets[static_cast<std::size_t>(r)]),
                              static_cast<std::int32_t>(i)});
          }
          // Stable: equal hashes keep ascending positions (-0 == +0).
          std::stable_sort(tokens.begin(), tokens.end(),
                           [](const Token& x, const Token& y) { return x.hash < y.hash; });
          std::vector<std::int32_t>& dst = is_query ? c.q_sorted : c.k_sorted;
          const std::size_t base = static_cast<std::size_t>(((b * pr.H + h) * R + r) * N);
          for (std::size_t t = 0; t < tokens.size(); ++t) dst[base + t] = tokens[t].position;
        }
      }
    }
  }
  return c;
}

// Round by round: each query's softmax over its key cluster, then the merge by logsumexp.
template <class T>
void attention_as(const Problem& pr, const SmyrfClusters& cl, Output& out) {
  const int R = cl.rounds;
  const std::size_t dv = static_cast<std::size_t>(pr.dv);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::int64_t nq = cl.q_count[static_cast<std::size_t>(b)];
      const std::int64_t nk = cl.k_count[static_cast<std::size_t>(b)];
      const std::int64_t C = cl.n_clusters[static_cast<std::size_t>(b)];
      // Per round: each query's output and logsumexp.
      std::vector<double> rounds_o(static_cast<std::size_t>(R * pr.Nq) * dv, 0.0);
      std::vector<double> lse(static_cast<std::size_t>(R * pr.Nq), -INFINITY);
      for (int r = 0; r < R; ++r) {
        const std::size_t base = static_cast<std::size_t>((b * pr.H + h) * R + r);
        const std::int32_t* qs = cl.q_sorted.data() + base * static_cast<std::size_t>(pr.Nq);
        const std::int32_t* ks = cl.k_sorted.data() + base * static_cast<std::size_t>(pr.Nk);
        for (std::int64_t t = 0; t < nq && nk > 0; ++t) {
          // The cluster of sorted position t: the i with floor(i nq / C) <= t < floor((i+1) nq / C).
          std::int64_t cluster = 0;
          while ((cluster + 1) * nq / C <= t) ++cluster;
          const std::int64_t k_begin = cluster * nk / C;
          const std::int64_t k_end = std::max((cluster + 1) * nk / C, k_begin + 1);
          const std::int32_t qi = qs[t];
          const T* q = pr.q_row<T>(b, h, qi);
          std::vector<double> logits;
          for (std::int64_t u = k_begin; u < k_end; ++u) {
            const T* k = pr.k_row<T>(b, h, ks[u]);
            double dot = 0;
            for (std::int64_t j = 0; j < pr.d; ++j)
              dot += static_cast<double>(to_float(q[j])) * to_float(k[j]);
            logits.push_back(static_cast<double>(pr.scale) * dot);
          }
          const double mx = *std::max_element(logits.begin(), logits.end());
          double denom = 0;
          double* o = rounds_o.data() + (static_cast<std::size_t>(r * pr.Nq + qi)) * dv;
          for (std::int64_t u = k_begin; u < k_end; ++u) {
            const double p = std::exp(logits[static_cast<std::size_t>(u - k_begin)] - mx);
            denom += p;
            const T* v = pr.v_row<T>(b, h, ks[u]);
            for (std::size_t c = 0; c < dv; ++c) o[c] += p * to_float(v[c]);
          }
          for (std::size_t c = 0; c < dv; ++c) o[c] /= denom;
          lse[static_cast<std::size_t>(r * pr.Nq + qi)] = mx + std::log(denom);
        }
      }
      // With one cluster every round holds the same keys: the multiset is counted once.
      const int merged = C == 1 ? 1 : R;
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        if (!pr.query_active(b, i) || nk == 0) continue;
        const std::size_t row = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        double mx = -INFINITY;
        for (int r = 0; r < merged; ++r) mx = std::max(mx, lse[static_cast<std::size_t>(r * pr.Nq + i)]);
        double wsum = 0;
        std::vector<double> acc(dv, 0.0);
        for (int r = 0; r < merged; ++r) {
          const double w = std::exp(lse[static_cast<std::size_t>(r * pr.Nq + i)] - mx);
          wsum += w;
          const double* o = rounds_o.data() + static_cast<std::size_t>(r * pr.Nq + i) * dv;
          for (std::size_t c = 0; c < dv; ++c) acc[c] += w * o[c];
        }
        for (std::size_t c = 0; c < dv; ++c) out.o[row * dv + c] = acc[c] / wsum;
        out.lse[row] = mx + std::log(wsum);
      }
    }
}

// KeySelection::centroid written out: active queries in position order, cut into clusters of
// q_cluster_size; mean query in double (summed in query order); its inner product with every
// visible key in double; the k_cluster_size best by (score desc, position asc); exact softmax.
template <class T>
std::vector<std::vector<std::int32_t>> centroid_as(const Problem& pr, const SmyrfConfig& config,
                                                   Output* out) {
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  std::vector<std::vector<std::int32_t>> selections;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      std::vector<std::int32_t> qs, ks;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i)) qs.push_back(static_cast<std::int32_t>(i));
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (pr.key_visible(b, j)) ks.push_back(static_cast<std::int32_t>(j));
      const std::size_t qc = static_cast<std::size_t>(config.q_cluster_size);
      for (std::size_t g0 = 0; g0 < qs.size() && !ks.empty(); g0 += qc) {
        const std::size_t g1 = std::min(qs.size(), g0 + qc);
        std::vector<double> centroid(d, 0.0);
        for (std::size_t i = g0; i < g1; ++i)
          for (std::size_t c = 0; c < d; ++c) centroid[c] += static_cast<double>(to_float(pr.q_row<T>(b, h, qs[i])[c]));
        std::vector<std::pair<double, std::int32_t>> scored;
        for (std::int32_t j : ks) {
          double s = 0;
          for (std::size_t c = 0; c < d; ++c) s += centroid[c] * static_cast<double>(to_float(pr.k_row<T>(b, h, j)[c]));
          scored.emplace_back(pr.scale < 0 ? -s : s, j);
        }
        std::sort(scored.begin(), scored.end(), [](const auto& x, const auto& y) {
          return x.first > y.first || (x.first == y.first && x.second < y.second);
        });
        std::vector<std::int32_t> sel;
        for (std::size_t t = 0; t < std::min<std::size_t>(scored.size(), static_cast<std::size_t>(config.k_cluster_size)); ++t)
          sel.push_back(scored[t].second);
        std::sort(sel.begin(), sel.end());
        selections.push_back(sel);
        if (out == nullptr) continue;
        for (std::size_t i = g0; i < g1; ++i) {
          const T* q = pr.q_row<T>(b, h, qs[i]);
          std::vector<double> logits;
          for (std::int32_t j : sel) {
            double dot = 0;
            for (std::size_t c = 0; c < d; ++c)
              dot += static_cast<double>(to_float(q[c])) * to_float(pr.k_row<T>(b, h, j)[c]);
            logits.push_back(static_cast<double>(pr.scale) * dot);
          }
          const double mx = *std::max_element(logits.begin(), logits.end());
          double denom = 0;
          std::vector<double> o(dv, 0.0);
          for (std::size_t u = 0; u < sel.size(); ++u) {
            const double p = std::exp(logits[u] - mx);
            denom += p;
            for (std::size_t c = 0; c < dv; ++c) o[c] += p * to_float(pr.v_row<T>(b, h, sel[u])[c]);
          }
          const std::size_t row = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + qs[i]);
          for (std::size_t c = 0; c < dv; ++c) out->o[row * dv + c] = o[c] / denom;
          out->lse[row] = mx + std::log(denom);
        }
      }
    }
  return selections;
}

SmyrfClusters clusters_of(const Problem& pr, const SmyrfConfig& config) {
  return detail::with_input_type(pr.dtype, [&](auto tag) { return clusters_as<decltype(tag)>(pr, config); });
}

// The (round, key) multisets of the definition as train_reference.h's key sets (the softmax
// over the multiset with the dropout factors).
detail::KeySets key_sets_of(const Problem& pr, const SmyrfConfig& config) {
  if (config.q_cluster_size >= pr.Nq && config.k_cluster_size >= pr.Nk) return detail::KeySets(pr);
  const SmyrfClusters c = clusters_of(pr, config);
  return detail::KeySets(pr, config, c);
}

}  // namespace

SmyrfClusters clusters(const AttentionParams& params, const SmyrfConfig& config) {
  return clusters_of(detail::reference_problem(params, config), config);
}

std::vector<std::vector<std::int32_t>> selections(const AttentionParams& params,
                                                  const SmyrfConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  return detail::with_input_type(pr.dtype, [&](auto tag) { return centroid_as<decltype(tag)>(pr, config, nullptr); });
}

Output attention(const AttentionParams& params, const SmyrfConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  if (config.keys == KeySelection::centroid) {
    Output out = detail::reference_output(pr);
    detail::with_input_type(pr.dtype, [&](auto tag) { centroid_as<decltype(tag)>(pr, config, &out); });
    return out;
  }
  if (params.dropout > 0.0f || params.causal) return detail::sets_attention(pr, key_sets_of(pr, config));
  Output out = detail::reference_output(pr);
  const SmyrfClusters cl = clusters_of(pr, config);
  detail::with_input_type(pr.dtype, [&](auto tag) { attention_as<decltype(tag)>(pr, cl, out); });
  return out;
}

Gradients attention_backward(const AttentionParams& params, const std::vector<double>& grad_o,
                             const SmyrfConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  if (config.keys != KeySelection::lsh)
    throw Error("smyrf: SmyrfConfig.keys = centroid: has no backward");
  return detail::sets_attention_backward(pr, key_sets_of(pr, config), grad_o);
}

}  // namespace smyrf::reference
