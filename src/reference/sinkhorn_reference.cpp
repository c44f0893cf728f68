// Sinkhorn sorting attention's oracle, written from the definition in
// methods/sinkhorn/sinkhorn.h: blocks, block logits, Sinkhorn normalisation in log space, the
// sorted blocks and one softmax per query, in plain loops. No random draws.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/problem.h"
#include "reference/common.h"
#include "reference/reference.h"

namespace smyrf::reference {
namespace {

using detail::Problem;
using detail::to_float;

// nb = ceil(n_k / block_size).
std::int64_t blocks(std::int64_t n_k, std::int64_t block_size) {
  return (n_k + block_size - 1) / block_size;
}

using Vec = std::vector<double>;

template <class T>
Vec row(const T* x, std::int64_t n) {
  Vec v(static_cast<std::size_t>(n));
  for (std::int64_t e = 0; e < n; ++e) v[e] = double(to_float(x[e]));
  return v;
}

template <class T>
void run(const Problem& pr, const SinkhornConfig& c, Output& out) {
  const std::int64_t Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv, bs = c.block_size;
  const std::int64_t NB = blocks(Nk, bs);
  const double ninf = -std::numeric_limits<double>::infinity();
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      std::vector<std::int64_t> qs, ks;
      for (std::int64_t i = 0; i < Nq; ++i)
        if (pr.query_active(b, i)) qs.push_back(i);
      for (std::int64_t j = 0; j < Nk; ++j)
        if (pr.key_visible(b, j)) ks.push_back(j);
      const std::int64_t nq = static_cast<std::int64_t>(qs.size()),
                         nk = static_cast<std::int64_t>(ks.size());
      if (nq == 0 || nk == 0) continue;
      const std::int64_t nb = blocks(nk, bs);
      // Key blocks (ranks) and query blocks.
      std::vector<std::vector<std::int64_t>> kb(nb), qb(nb);
      for (std::int64_t r = 0; r < nk; ++r) kb[r / bs].push_back(ks[r]);
      for (std::int64_t a = 0; a < nb; ++a)
        for (std::int64_t r = a * nq / nb; r < (a + 1) * nq / nb; ++r) qb[a].push_back(qs[r]);
      auto key_sum = [&](std::int64_t a) {
        Vec s(static_cast<std::size_t>(d), 0.0);
        for (std::int64_t j : kb[a]) {
          const Vec k = row(pr.k_row<T>(b, h, j), d);
          for (std::int64_t e = 0; e < d; ++e) s[e] += k[e];
        }
        return s;
      };
      auto key_mean = [&](std::int64_t a) {
        Vec s = key_sum(a);
        for (double& x : s) x /= double(kb[a].size());
        return s;
      };
      std::vector<Vec> L(nb, Vec(static_cast<std::size_t>(nb)));
      for (std::int64_t a = 0; a < nb; ++a)
        for (std::int64_t col = 0; col < nb; ++col) {
          double r = 0.0;
          if (c.sort_net) {
            const Vec s = key_sum(a);
            for (std::int64_t e = 0; e < d; ++e)
              r += s[e] * double(c.sort_net[(h * d + e) * NB + col]);
          } else {
            Vec qm(static_cast<std::size_t>(d), 0.0);
            if (qb[a].empty()) {
              qm = key_mean(a);
            } else {
              for (std::int64_t i : qb[a]) {
                const Vec q = row(pr.q_row<T>(b, h, i), d);
                for (std::int64_t e = 0; e < d; ++e) qm[e] += q[e] / double(qb[a].size());
              }
            }
            const Vec km = key_mean(col);
            for (std::int64_t e = 0; e < d; ++e) r += qm[e] * km[e];
            r *= double(pr.scale);
          }
          L[a][col] = r / double(c.temperature);
        }
      auto lse_of = [&](const Vec& x) {
        double m = ninf;
        for (double v : x) m = std::max(m, v);
        if (std::isinf(m)) return m;
        double s = 0.0;
        for (double v : x) s += std::exp(v - m);
        return m + std::log(s);
      };
      for (int it = 0; it < c.iterations; ++it) {
        for (std::int64_t a = 0; a < nb; ++a) {
          const double l = lse_of(L[a]);
          for (double& v : L[a]) v -= l;
        }
        for (std::int64_t col = 0; col < nb; ++col) {
          Vec column(static_cast<std::size_t>(nb));
          for (std::int64_t a = 0; a < nb; ++a) column[a] = L[a][col];
          const double l = lse_of(column);
          for (std::int64_t a = 0; a < nb; ++a) L[a][col] -= l;
        }
      }
      for (std::int64_t a = 0; a < nb; ++a) {
        if (qb[a].empty()) continue;
        // P row a, scaled by exp(-max) (the sorted rows are ratios: invariant).
        const double m = *std::max_element(L[a].begin(), L[a].end());
        Vec P(static_cast<std::size_t>(nb));
        for (std::int64_t col = 0; col < nb; ++col) P[col] = std::exp(L[a][col] - m);
        std::vector<Vec> keys, vals;
        for (std::int64_t j : kb[a]) {
          keys.push_back(row(pr.k_row<T>(b, h, j), d));
          vals.push_back(row(pr.v_row<T>(b, h, j), dv));
        }
        for (std::int64_t t = 0; t < std::min(bs, nk); ++t) {
          Vec ks_t(static_cast<std::size_t>(d), 0.0), vs_t(static_cast<std::size_t>(dv), 0.0);
          double den = 0.0;
          for (std::int64_t col = 0; col < nb; ++col) {
            if (t >= static_cast<std::int64_t>(kb[col].size())) continue;
            den += P[col];
            const Vec k = row(pr.k_row<T>(b, h, kb[col][t]), d);
            const Vec v = row(pr.v_row<T>(b, h, kb[col][t]), dv);
            for (std::int64_t e = 0; e < d; ++e) ks_t[e] += P[col] * k[e];
            for (std::int64_t e = 0; e < dv; ++e) vs_t[e] += P[col] * v[e];
          }
          if (!(den > 0.0)) continue;
          for (double& x : ks_t) x /= den;
          for (double& x : vs_t) x /= den;
          keys.push_back(ks_t);
          vals.push_back(vs_t);
        }
        for (std::int64_t i : qb[a]) {
          const Vec q = row(pr.q_row<T>(b, h, i), d);
          Vec s;
          for (const Vec& k : keys) {
            double x = 0.0;
            for (std::int64_t e = 0; e < d; ++e) x += q[e] * k[e];
            s.push_back(double(pr.scale) * x);
          }
          const double mx = *std::max_element(s.begin(), s.end());
          double z = 0.0;
          for (double x : s) z += std::exp(x - mx);
          Vec acc(static_cast<std::size_t>(dv), 0.0);
          for (std::size_t n = 0; n < s.size(); ++n)
            for (std::int64_t e = 0; e < dv; ++e) acc[e] += std::exp(s[n] - mx) / z * vals[n][e];
          const std::size_t at = static_cast<std::size_t>((b * pr.H + h) * Nq + i);
          for (std::int64_t e = 0; e < dv; ++e) out.o[at * static_cast<std::size_t>(dv) + e] = acc[e];
          out.lse[at] = mx + std::log(z);
        }
      }
    }
}

}  // namespace

Output attention(const AttentionParams& params, const SinkhornConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  detail::with_input_type(pr.dtype, [&](auto tag) { run<decltype(tag)>(pr, config, out); });
  return out;
}

}  // namespace smyrf::reference
