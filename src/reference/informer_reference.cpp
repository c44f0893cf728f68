#include "reference/informer_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "api/dispatch.h"
#include "common/problem.h"
#include "methods/informer/informer.h"

namespace smyrf::detail {
namespace {

template <class T>
std::vector<std::vector<std::int32_t>> run(const Problem& pr, const InformerConfig& c, bool write) {
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
      const std::int64_t U = informer_samples(c, n_k);
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
          const std::int64_t j = seen[i][informer_sample_index(pr.p->seed, i, t, count)];
          const double s =
              informer_score(pr.q_row<T>(b, h, i), pr.k_row<T>(b, h, j), pr.d, pr.scale);
          mx = std::max(mx, s);
          sum += s;
        }
        ranked.push_back({-(mx - sum / static_cast<double>(U)), i});
      }
      std::sort(ranked.begin(), ranked.end());
      const std::int64_t u =
          std::min<std::int64_t>(informer_top(c, n_q), static_cast<std::int64_t>(ranked.size()));
      std::vector<char> exact(static_cast<std::size_t>(Nq), 0);
      std::vector<std::int32_t> sel;
      for (std::int64_t t = 0; t < u; ++t) {
        exact[ranked[t].second] = 1;
        sel.push_back(static_cast<std::int32_t>(ranked[t].second));
      }
      std::sort(sel.begin(), sel.end());
      selected.push_back(sel);
      if (!write) continue;
      for (std::int64_t i = 0; i < Nq; ++i) {
        float* o = pr.o_row(b, h, i);
        float* lse = pr.p->lse ? pr.p->lse + (b * pr.H + h) * Nq + i : nullptr;
        std::fill_n(o, dv, 0.0f);
        if (lse) *lse = -std::numeric_limits<float>::infinity();
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
          if (lse) *lse = static_cast<float>(mx + std::log(z));
        } else {
          for (std::int64_t j : seen[i]) {
            const T* v = pr.v_row<T>(b, h, j);
            for (std::int64_t x = 0; x < dv; ++x) acc[x] += double(to_float(v[x])) / count;
          }
          if (lse) *lse = static_cast<float>(std::log(count));
        }
        for (std::int64_t x = 0; x < dv; ++x) o[x] = static_cast<float>(acc[x]);
      }
    }
  return selected;
}

}  // namespace

void informer_reference_attention(const AttentionParams& params, const InformerConfig& config) {
  const Problem pr = check_call(params, config);
  with_input_type(pr.dtype, [&](auto tag) { run<decltype(tag)>(pr, config, true); });
}

std::vector<std::vector<std::int32_t>> informer_reference_selected(const AttentionParams& params,
                                                                   const InformerConfig& config) {
  const Problem pr = check_call(params, config);
  return with_input_type(pr.dtype, [&](auto tag) { return run<decltype(tag)>(pr, config, false); });
}

}  // namespace smyrf::detail
