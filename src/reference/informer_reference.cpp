// Informer ProbSparse attention's oracle, written from the definition in
// methods/informer/informer.h: per (b, h) the samples, the measurement, a full sort of the
// eligible queries, exact softmax rows and uniform means, in plain loops. Shares with the fast
// path only the sample index of src/spec/draws.h.
#include <algorithm>
#include <cmath>
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

// ceil(factor ln n) as an integer (0 for n = 0), clamped to n.
std::int64_t factor_log(float factor, std::int64_t n) {
  const double f =
      n > 0 ? std::ceil(static_cast<double>(factor) * std::log(static_cast<double>(n))) : 0.0;
  return std::min<std::int64_t>(n, static_cast<std::int64_t>(std::min(f, 1e18)));
}
// U: sample_keys, or min(n_k, ceil(factor ln n_k)), at least 1.
std::int64_t samples(const InformerConfig& c, std::int64_t n_k) {
  if (c.sample_keys > 0) return c.sample_keys;
  return std::max<std::int64_t>(factor_log(c.factor, n_k), 1);
}
// u before the cap: min(top_queries, n_q), or min(n_q, ceil(factor ln n_q)).
std::int64_t top(const InformerConfig& c, std::int64_t n_q) {
  if (c.top_queries > 0) return std::min<std::int64_t>(c.top_queries, n_q);
  return factor_log(c.factor, n_q);
}
// The measurement's score: fma chain in double over the d elements in index order, then
// fma(double(scale), x, +0).
template <class T>
double sample_score(const T* q, const T* k, std::int64_t d, float scale) {
  double x = 0.0;
  for (std::int64_t e = 0; e < d; ++e)
    x = std::fma(static_cast<double>(to_float(q[e])), static_cast<double>(to_float(k[e])), x);
  return std::fma(static_cast<double>(scale), x, 0.0);
}

template <class T>
std::vector<std::vector<std::int32_t>> run(const Problem& pr, const InformerConfig& c, Output* out) {
  std::vector<std::vector<std::int32_t>> selected;
  const std::int64_t Nq = pr.Nq, Nk = pr.Nk, dv = pr.dv;
  const double ninf = -std::numeric_limits<double>::infinity();
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      std::vector<std::int64_t> active, visible;
      for (std::int64_t i = 0; i < Nq; ++i)
        if (pr.query_active(b, i)) active.push_back(i);
      for (std::int64_t j = 0; j < Nk; ++j)
        if (pr.key_visible(b, j)) visible.push_back(j);
      const std::int64_t n_q = static_cast<std::int64_t>(active.size());
      const std::int64_t n_k = static_cast<std::int64_t>(visible.size());
      const std::int64_t U = samples(c, n_k);
      // S_i and M_i of every active query.
      std::vector<std::vector<std::int64_t>> seen(static_cast<std::size_t>(Nq));
      std::vector<std::pair<double, std::int64_t>> ranked;  // (-M, position) of eligible queries
      for (std::int64_t i : active) {
        for (std::int64_t j : visible)
          if (pr.sees(b, i, j)) seen[i].push_back(j);
        const std::int64_t count = static_cast<std::int64_t>(seen[i].size());
        if (count == 0) continue;
        double mx = ninf, sum = 0.0;
        for (std::int64_t t = 0; t < U; ++t) {
          const std::int64_t j = seen[i][spec::informer_sample_index(pr.p->seed, i, t, count)];
          const double s =
              sample_score(pr.q_row<T>(b, h, i), pr.k_row<T>(b, h, j), pr.d, pr.scale);
          mx = std::max(mx, s);
          sum += s;
        }
        ranked.push_back({-(mx - sum / static_cast<double>(U)), i});
      }
      std::sort(ranked.begin(), ranked.end());
      const std::int64_t u =
          std::min<std::int64_t>(top(c, n_q), static_cast<std::int64_t>(ranked.size()));
      std::vector<char> exact(static_cast<std::size_t>(Nq), 0);
      std::vector<std::int32_t> sel;
      for (std::int64_t t = 0; t < u; ++t) {
        exact[ranked[t].second] = 1;
        sel.push_back(static_cast<std::int32_t>(ranked[t].second));
      }
      std::sort(sel.begin(), sel.end());
      selected.push_back(sel);
      if (out == nullptr) continue;
      for (std::int64_t i = 0; i < Nq; ++i) {
        const std::size_t row = static_cast<std::size_t>((b * pr.H + h) * Nq + i);
        double* o = out->o.data() + row * static_cast<std::size_t>(dv);
        double* lse = out->lse.data() + row;
        if (!pr.query_active(b, i) || seen[i].empty()) continue;
        std::vector<double> acc(static_cast<std::size_t>(dv), 0.0);
        const double count = static_cast<double>(seen[i].size());
        if (exact[i]) {
          std::vector<double> s;
          for (std::int64_t j : seen[i]) {
            double x = 0.0;
            const T* q = pr.q_row<T>(b, h, i);
            const T* k = pr.k_row<T>(b, h, j);
            for (std::int64_t e = 0; e < pr.d; ++e)
              x += double(to_float(q[e])) * double(to_float(k[e]));
            s.push_back(double(pr.scale) * x);
          }
          const double mx = *std::max_element(s.begin(), s.end());
          double z = 0.0;
          for (double x : s) z += std::exp(x - mx);
          for (std::size_t n = 0; n < s.size(); ++n) {
            const T* v = pr.v_row<T>(b, h, seen[i][n]);
            for (std::int64_t x = 0; x < dv; ++x)
              acc[x] += std::exp(s[n] - mx) / z * double(to_float(v[x]));
          }
          *lse = mx + std::log(z);
        } else {
          for (std::int64_t j : seen[i]) {
            const T* v = pr.v_row<T>(b, h, j);
            for (std::int64_t x = 0; x < dv; ++x) acc[x] += double(to_float(v[x])) / count;
          }
          *lse = std::log(count);
        }
        for (std::int64_t x = 0; x < dv; ++x) o[x] = acc[x];
      }
    }
  return selected;
}

}  // namespace

Output attention(const AttentionParams& params, const InformerConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  detail::with_input_type(pr.dtype, [&](auto tag) { run<decltype(tag)>(pr, config, &out); });
  return out;
}

std::vector<std::vector<std::int32_t>> exact_queries(const AttentionParams& params,
                                                     const InformerConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  return detail::with_input_type(pr.dtype, [&](auto tag) { return run<decltype(tag)>(pr, config, nullptr); });
}

}  // namespace smyrf::reference
