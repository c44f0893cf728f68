#include "reference/smyrf_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "api/dispatch.h"
#include "api/validate.h"

namespace smyrf::reference {
namespace {

struct Token {
  float hash;
  std::int32_t position;
};

// Squared norm and projection on `a` (stride `lanes`), fma chains in index order.
template <class T>
void dot_and_norm(const T* x, std::int64_t d, const double* a, std::size_t lanes, double* dot,
                  double* n2) {
  double s = 0, n = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double xj = detail::to_float(x[j]);
    s = std::fma(xj, a[static_cast<std::size_t>(j) * lanes], s);
    n = std::fma(xj, xj, n);
  }
  *dot = s;
  *n2 = n;
}

template <class T>
double norm2(const T* x, std::int64_t d) {
  double dot, n2;
  const double zero = 0.0;
  // A direction of zeros with stride 0 leaves only the norm.
  dot_and_norm(x, d, &zero, 0, &dot, &n2);
  return n2;
}

}  // namespace

namespace {

template <class T>
detail::ClusterLists clusters_as(const AttentionParams& params, const SmyrfConfig& config) {
  const detail::Problem pr = detail::check_call(params, config);
  const int R = config.n_hashes;
  const std::size_t lanes = detail::projection_lanes(R, detail::transform_extra_dims(config));
  const std::int64_t dims = pr.d + detail::transform_extra_dims(config);

  detail::ClusterLists c;
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
    c.n_clusters.push_back(detail::cluster_count(nq, nk, config));
  }

  std::vector<double> a(static_cast<std::size_t>(dims) * lanes);
  std::vector<double> offsets(static_cast<std::size_t>(R));
  for (std::int64_t h = 0; h < pr.H; ++h) {
    detail::make_directions(config, params.seed, h, pr.d, lanes, a.data(), offsets.data());
    for (std::int64_t b = 0; b < pr.B; ++b) {
      detail::NormStats st;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i)) st.max_q2 = std::max(st.max_q2, norm2(pr.q_row<T>(b, h, i), pr.d));
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (pr.key_visible(b, j)) st.max_k2 = std::max(st.max_k2, norm2(pr.k_row<T>(b, h, j), pr.d));
      for (int r = 0; r < R; ++r) {
        const double* ar = a.data() + r;
        const double* a_ext = ar + static_cast<std::size_t>(pr.d) * lanes;
        for (int side = 0; side < 2; ++side) {
          const bool is_query = side == 0;
          const std::int64_t N = is_query ? pr.Nq : pr.Nk;
          std::vector<Token> tokens;
          for (std::int64_t i = 0; i < N; ++i) {
            if (is_query ? !pr.query_active(b, i) : !pr.key_visible(b, i)) continue;
            double dot, n2;
            dot_and_norm(is_query ? pr.q_row<T>(b, h, i) : pr.k_row<T>(b, h, i), pr.d, ar, lanes, &dot,
                         &n2);
            if (is_query && pr.scale < 0.0f) dot = -dot;
            tokens.push_back({detail::hash_value(config, is_query, dot, n2, st, a_ext, lanes,
                                                 offsets[static_cast<std::size_t>(r)]),
                              static_cast<std::int32_t>(i)});
          }
          // Stable: equal hashes keep ascending positions.
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

template <class T>
void attention_as(const AttentionParams& params, const SmyrfConfig& config) {
  const detail::Problem pr = detail::validate_params(params);
  const detail::ClusterLists cl = smyrf_clusters(params, config);
  const int R = cl.rounds;
  const std::size_t dv = static_cast<std::size_t>(pr.dv);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::int64_t nq = cl.q_count[static_cast<std::size_t>(b)];
      const std::int64_t nk = cl.k_count[static_cast<std::size_t>(b)];
      const std::int64_t C = cl.n_clusters[static_cast<std::size_t>(b)];
      // Per round: each query's output and logsumexp.
      std::vector<double> out(static_cast<std::size_t>(R * pr.Nq) * dv, 0.0);
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
              dot += static_cast<double>(detail::to_float(q[j])) * detail::to_float(k[j]);
            logits.push_back(static_cast<double>(pr.scale) * dot);
          }
          const double mx = *std::max_element(logits.begin(), logits.end());
          double denom = 0;
          double* o = out.data() + (static_cast<std::size_t>(r * pr.Nq + qi)) * dv;
          for (std::int64_t u = k_begin; u < k_end; ++u) {
            const double p = std::exp(logits[static_cast<std::size_t>(u - k_begin)] - mx);
            denom += p;
            const T* v = pr.v_row<T>(b, h, ks[u]);
            for (std::size_t c = 0; c < dv; ++c) o[c] += p * detail::to_float(v[c]);
          }
          for (std::size_t c = 0; c < dv; ++c) o[c] /= denom;
          lse[static_cast<std::size_t>(r * pr.Nq + qi)] = mx + std::log(denom);
        }
      }
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        float* orow = pr.o_row(b, h, i);
        std::fill_n(orow, dv, 0.0f);
        if (!pr.query_active(b, i) || nk == 0) continue;
        double mx = -INFINITY;
        for (int r = 0; r < R; ++r) mx = std::max(mx, lse[static_cast<std::size_t>(r * pr.Nq + i)]);
        double wsum = 0;
        std::vector<double> acc(dv, 0.0);
        for (int r = 0; r < R; ++r) {
          const double w = std::exp(lse[static_cast<std::size_t>(r * pr.Nq + i)] - mx);
          wsum += w;
          const double* o = out.data() + static_cast<std::size_t>(r * pr.Nq + i) * dv;
          for (std::size_t c = 0; c < dv; ++c) acc[c] += w * o[c];
        }
        for (std::size_t c = 0; c < dv; ++c) orow[c] = static_cast<float>(acc[c] / wsum);
      }
    }
}

// KeySelection::centroid written out: active queries in position order, cut into clusters of
// q_cluster_size; mean query in double (summed in query order); its inner product with every
// visible key in double; the k_cluster_size best by (score desc, position asc); exact softmax.
template <class T>
std::vector<std::vector<std::int32_t>> centroid_as(const AttentionParams& params, const SmyrfConfig& config,
                                                    bool write_output) {
  const detail::Problem pr = detail::check_call(params, config);
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  std::vector<std::vector<std::int32_t>> selections;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      std::vector<std::int32_t> qs, ks;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i)) qs.push_back(static_cast<std::int32_t>(i));
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (pr.key_visible(b, j)) ks.push_back(static_cast<std::int32_t>(j));
      if (write_output)
        for (std::int64_t i = 0; i < pr.Nq; ++i) std::fill_n(pr.o_row(b, h, i), dv, 0.0f);
      const std::size_t qc = static_cast<std::size_t>(config.q_cluster_size);
      for (std::size_t g0 = 0; g0 < qs.size() && !ks.empty(); g0 += qc) {
        const std::size_t g1 = std::min(qs.size(), g0 + qc);
        std::vector<double> centroid(d, 0.0);
        for (std::size_t i = g0; i < g1; ++i)
          for (std::size_t c = 0; c < d; ++c) centroid[c] += static_cast<double>(detail::to_float(pr.q_row<T>(b, h, qs[i])[c]));
        std::vector<std::pair<double, std::int32_t>> scored;
        for (std::int32_t j : ks) {
          double s = 0;
          for (std::size_t c = 0; c < d; ++c) s += centroid[c] * static_cast<double>(detail::to_float(pr.k_row<T>(b, h, j)[c]));
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
        if (!write_output) continue;
        for (std::size_t i = g0; i < g1; ++i) {
          const T* q = pr.q_row<T>(b, h, qs[i]);
          std::vector<double> logits;
          for (std::int32_t j : sel) {
            double dot = 0;
            for (std::size_t c = 0; c < d; ++c)
              dot += static_cast<double>(detail::to_float(q[c])) * detail::to_float(pr.k_row<T>(b, h, j)[c]);
            logits.push_back(static_cast<double>(pr.scale) * dot);
          }
          const double mx = *std::max_element(logits.begin(), logits.end());
          double denom = 0;
          std::vector<double> o(dv, 0.0);
          for (std::size_t u = 0; u < sel.size(); ++u) {
            const double p = std::exp(logits[u] - mx);
            denom += p;
            for (std::size_t c = 0; c < dv; ++c) o[c] += p * detail::to_float(pr.v_row<T>(b, h, sel[u])[c]);
          }
          float* orow = pr.o_row(b, h, qs[i]);
          for (std::size_t c = 0; c < dv; ++c) orow[c] = static_cast<float>(o[c] / denom);
        }
      }
    }
  return selections;
}

}  // namespace

std::vector<std::vector<std::int32_t>> centroid_selections(const AttentionParams& params,
                                                           const SmyrfConfig& config) {
  return detail::with_input_type(params.dtype, [&](auto tag) { return centroid_as<decltype(tag)>(params, config, false); });
}

detail::ClusterLists smyrf_clusters(const AttentionParams& params, const SmyrfConfig& config) {
  return detail::with_input_type(params.dtype, [&](auto tag) {
    return clusters_as<decltype(tag)>(params, config);
  });
}

void smyrf_attention(const AttentionParams& params, const SmyrfConfig& config) {
  if (config.keys == KeySelection::centroid) {
    detail::with_input_type(params.dtype, [&](auto tag) { centroid_as<decltype(tag)>(params, config, true); });
    return;
  }
  detail::with_input_type(params.dtype, [&](auto tag) { attention_as<decltype(tag)>(params, config); });
}

}  // namespace smyrf::reference
