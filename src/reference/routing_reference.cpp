// Routing attention's oracle, written from the definition in smyrf.h (RoutingConfig): its own
// unit vectors, spherical k-means (every iteration, no shortcut), routing, std::stable_sort,
// chunking and a softmax per query over its key set, in plain loops. No random draws.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common/problem.h"
#include "reference/common.h"
#include "reference/reference.h"

namespace smyrf::reference {
namespace {

using detail::Problem;
using detail::to_float;

using Vec = std::vector<double>;

// Unit vector: n2 = fma chain of x_j * x_j in index order, u = x * (1 / sqrt(n2)); 0 if n2 == 0.
Vec unit_vector(const Vec& x) {
  double n2 = 0.0;
  for (double xj : x) n2 = std::fma(xj, xj, n2);
  Vec u(x.size(), 0.0);
  if (n2 > 0.0) {
    const double inv = 1.0 / std::sqrt(n2);
    for (std::size_t j = 0; j < x.size(); ++j) u[j] = x[j] * inv;
  }
  return u;
}

// Similarity: fma chain of u_j * mu_j in index order, from 0.
double similarity(const Vec& u, const Vec& mu) {
  double s = 0.0;
  for (std::size_t j = 0; j < u.size(); ++j) s = std::fma(u[j], mu[j], s);
  return s;
}

// Most similar centroid, ties to the lowest index.
std::int32_t nearest(const Vec& u, const std::vector<Vec>& mu) {
  std::int32_t best = 0;
  for (std::size_t c = 1; c < mu.size(); ++c)
    if (similarity(u, mu[c]) > similarity(u, mu[static_cast<std::size_t>(best)]))
      best = static_cast<std::int32_t>(c);
  return best;
}

// Everything the oracle derives for one (b, h).
struct HeadRoutes {
  std::vector<std::int32_t> q_pos, k_pos;  // active queries, visible keys (position order)
  std::vector<std::int32_t> q_cl, k_cl;    // their centroids
  std::vector<Vec> centroids;
  std::int64_t C = 1;
  std::vector<std::vector<std::int32_t>> chunk_q, chunk_k;
};

template <class T>
Vec row_as_double(const T* row, std::int64_t d) {
  Vec x(static_cast<std::size_t>(d));
  for (std::int64_t j = 0; j < d; ++j) x[static_cast<std::size_t>(j)] = to_float(row[j]);
  return x;
}

template <class T>
HeadRoutes route_head(const Problem& pr, const RoutingConfig& config, std::int64_t b,
                      std::int64_t h) {
  HeadRoutes r;
  const std::size_t K = static_cast<std::size_t>(config.n_clusters);
  for (std::int64_t i = 0; i < pr.Nq; ++i)
    if (pr.query_active(b, i)) r.q_pos.push_back(static_cast<std::int32_t>(i));
  for (std::int64_t j = 0; j < pr.Nk; ++j)
    if (pr.key_visible(b, j)) r.k_pos.push_back(static_cast<std::int32_t>(j));
  const std::size_t nq = r.q_pos.size(), nk = r.k_pos.size(), n = nq + nk;

  // The k-means list: active queries, then visible keys: rows X, inverse norms and unit
  // vectors U.
  std::vector<Vec> X, U;
  std::vector<double> inv_norm;
  for (std::int32_t i : r.q_pos) X.push_back(row_as_double(pr.q_row<T>(b, h, i), pr.d));
  for (std::int32_t j : r.k_pos) X.push_back(row_as_double(pr.k_row<T>(b, h, j), pr.d));
  for (const Vec& x : X) {
    U.push_back(unit_vector(x));
    double n2 = 0.0;
    for (double xj : x) n2 = std::fma(xj, xj, n2);
    inv_norm.push_back(n2 > 0.0 ? 1.0 / std::sqrt(n2) : 0.0);
  }

  std::vector<Vec>& M = r.centroids;
  if (config.centroids != nullptr) {
    for (std::size_t c = 0; c < K; ++c) {
      Vec x(static_cast<std::size_t>(pr.d));
      for (std::int64_t j = 0; j < pr.d; ++j)
        x[static_cast<std::size_t>(j)] =
            config.centroids[(static_cast<std::size_t>(h) * K + c) * static_cast<std::size_t>(pr.d) +
                             static_cast<std::size_t>(j)];
      M.push_back(unit_vector(x));
    }
  } else if (n == 0) {
    M.assign(K, Vec(static_cast<std::size_t>(pr.d), 0.0));
  } else {
    for (std::size_t c = 0; c < K; ++c) M.push_back(U[c * n / K]);
    for (int it = 0; it < config.iterations; ++it) {
      std::vector<std::int32_t> A(n);
      for (std::size_t t = 0; t < n; ++t) A[t] = nearest(U[t], M);
      for (std::size_t c = 0; c < K; ++c) {
        Vec sum(static_cast<std::size_t>(pr.d), 0.0);
        std::size_t members = 0;
        for (std::size_t t = 0; t < n; ++t)
          if (A[t] == static_cast<std::int32_t>(c)) {
            ++members;
            for (std::size_t j = 0; j < sum.size(); ++j) sum[j] = std::fma(X[t][j], inv_norm[t], sum[j]);
          }
        if (members == 0) continue;  // empty: keeps its centroid
        double n2 = 0.0;
        for (double s : sum) n2 = std::fma(s, s, n2);
        if (n2 > 0.0) M[c] = unit_vector(sum);  // a zero sum keeps its centroid too
      }
    }
  }
  for (std::size_t t = 0; t < nq; ++t) r.q_cl.push_back(nearest(U[t], M));
  for (std::size_t t = 0; t < nk; ++t) r.k_cl.push_back(nearest(U[nq + t], M));

  // Sort by (centroid, position): a stable sort of the position-ordered lists.
  std::vector<std::size_t> qo(nq), ko(nk);
  std::iota(qo.begin(), qo.end(), 0);
  std::iota(ko.begin(), ko.end(), 0);
  std::stable_sort(qo.begin(), qo.end(), [&](std::size_t x, std::size_t y) { return r.q_cl[x] < r.q_cl[y]; });
  std::stable_sort(ko.begin(), ko.end(), [&](std::size_t x, std::size_t y) { return r.k_cl[x] < r.k_cl[y]; });

  // Chunks: C = max(ceil(n_q / w), ceil(n_k / w), 1); SMYRF's cluster rule.
  const std::int64_t w = config.window;
  const std::int64_t snq = static_cast<std::int64_t>(nq), snk = static_cast<std::int64_t>(nk);
  r.C = std::max<std::int64_t>({(snq + w - 1) / w, (snk + w - 1) / w, 1});
  for (std::int64_t c = 0; c < r.C; ++c) {
    std::vector<std::int32_t> cq, ck;
    for (std::int64_t t = c * snq / r.C; t < (c + 1) * snq / r.C; ++t)
      cq.push_back(r.q_pos[qo[static_cast<std::size_t>(t)]]);
    const std::int64_t kb = c * snk / r.C;
    const std::int64_t ke = std::min(snk, std::max((c + 1) * snk / r.C, kb + 1));
    for (std::int64_t t = kb; t < ke; ++t) ck.push_back(r.k_pos[ko[static_cast<std::size_t>(t)]]);
    r.chunk_q.push_back(cq);
    r.chunk_k.push_back(ck);
  }
  return r;
}

template <class T>
std::vector<HeadRoutes> route_all(const Problem& pr, const RoutingConfig& config) {
  std::vector<HeadRoutes> all;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) all.push_back(route_head<T>(pr, config, b, h));
  return all;
}

std::vector<HeadRoutes> route_problem(const Problem& pr, const RoutingConfig& config) {
  return detail::with_input_type(pr.dtype, [&](auto tag) { return route_all<decltype(tag)>(pr, config); });
}

// Key sets per (b, h, i) from the chunks, the causal rule and its fallback.
std::vector<std::vector<std::int32_t>> sets_of(const Problem& pr, const std::vector<HeadRoutes>& all) {
  std::vector<std::vector<std::int32_t>> sets(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const HeadRoutes& r = all[static_cast<std::size_t>(b * pr.H + h)];
      for (std::size_t c = 0; c < r.chunk_q.size(); ++c)
        for (std::int32_t i : r.chunk_q[c]) {
          std::vector<std::int32_t> s;
          const std::int64_t p = i + pr.Nk - pr.Nq;
          for (std::int32_t j : r.chunk_k[c])
            if (!pr.p->causal || j <= p) s.push_back(j);
          if (pr.p->causal && s.empty() && p >= 0 && pr.key_visible(b, p))
            s.push_back(static_cast<std::int32_t>(p));
          std::sort(s.begin(), s.end());
          sets[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)] = s;
        }
    }
  return sets;
}

template <class T>
void attend(const Problem& pr, const std::vector<std::vector<std::int32_t>>& sets, Output& result) {
  const double ninf = -std::numeric_limits<double>::infinity();
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::vector<std::int32_t>& s = sets[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)];
        const std::size_t at = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        double lse = ninf;
        std::vector<double> out(static_cast<std::size_t>(pr.dv), 0.0);
        if (!s.empty()) {
          const T* q = pr.q_row<T>(b, h, i);
          std::vector<double> logit;
          double mx = ninf;
          for (std::int32_t j : s) {
            const T* k = pr.k_row<T>(b, h, j);
            double dot = 0.0;
            for (std::int64_t t = 0; t < pr.d; ++t)
              dot += static_cast<double>(to_float(q[t])) * static_cast<double>(to_float(k[t]));
            logit.push_back(static_cast<double>(pr.scale) * dot);
            mx = std::max(mx, logit.back());
          }
          double sum = 0.0;
          for (std::size_t u = 0; u < s.size(); ++u) {
            const double wgt = std::exp(logit[u] - mx);
            sum += wgt;
            const T* v = pr.v_row<T>(b, h, s[u]);
            for (std::int64_t c = 0; c < pr.dv; ++c)
              out[static_cast<std::size_t>(c)] += wgt * static_cast<double>(to_float(v[c]));
          }
          for (double& x : out) x /= sum;
          lse = mx + std::log(sum);
        }
        for (std::int64_t c = 0; c < pr.dv; ++c)
          result.o[at * static_cast<std::size_t>(pr.dv) + static_cast<std::size_t>(c)] = out[static_cast<std::size_t>(c)];
        result.lse[at] = lse;
      }
}

}  // namespace

Routes routes(const AttentionParams& params, const RoutingConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  const std::vector<HeadRoutes> all = route_problem(pr, config);
  Routes out;
  out.B = pr.B;
  out.H = pr.H;
  out.Nq = pr.Nq;
  out.Nk = pr.Nk;
  out.K = config.n_clusters;
  out.d = pr.d;
  out.q_cluster.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nq), -1);
  out.k_cluster.assign(static_cast<std::size_t>(pr.B * pr.H * pr.Nk), -1);
  for (std::int64_t b = 0; b < pr.B; ++b) out.n_chunks.push_back(all[static_cast<std::size_t>(b * pr.H)].C);
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    const HeadRoutes& r = all[static_cast<std::size_t>(bh)];
    for (std::size_t t = 0; t < r.q_pos.size(); ++t)
      out.q_cluster[static_cast<std::size_t>(bh * pr.Nq + r.q_pos[t])] = r.q_cl[t];
    for (std::size_t t = 0; t < r.k_pos.size(); ++t)
      out.k_cluster[static_cast<std::size_t>(bh * pr.Nk + r.k_pos[t])] = r.k_cl[t];
    for (const Vec& mu : r.centroids) out.centroids.insert(out.centroids.end(), mu.begin(), mu.end());
    for (std::size_t c = 0; c < r.chunk_q.size(); ++c) {
      out.chunk_queries.push_back(r.chunk_q[c]);
      out.chunk_keys.push_back(r.chunk_k[c]);
    }
  }
  return out;
}

std::vector<std::vector<std::int32_t>> key_sets(const AttentionParams& params,
                                                const RoutingConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  return sets_of(pr, route_problem(pr, config));
}

Output attention(const AttentionParams& params, const RoutingConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  const auto sets = sets_of(pr, route_problem(pr, config));
  Output out = detail::reference_output(pr);
  detail::with_input_type(pr.dtype, [&](auto tag) { attend<decltype(tag)>(pr, sets, out); });
  return out;
}

}  // namespace smyrf::reference
