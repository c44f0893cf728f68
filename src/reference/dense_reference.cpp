#include "reference/dense_reference.h"

#include <cmath>
#include <vector>

#include "common/parallel.h"
#include "common/timer.h"

namespace smyrf::detail {

namespace {

template <class T>
void reference_rows(const Problem& pr) {
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    std::vector<double> logits(static_cast<std::size_t>(pr.Nk));
    std::vector<double> out(static_cast<std::size_t>(pr.dv));
    for (std::int64_t i = 0; i < pr.Nq; ++i) {
      float* o = pr.o_row(b, h, i);
      std::fill(out.begin(), out.end(), 0.0);
      double max_logit = -INFINITY;
      bool any = false;
      if (pr.query_active(b, i)) {
        const T* q = pr.q_row<T>(b, h, i);
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          if (!pr.sees(b, i, j)) continue;
          const T* k = pr.k_row<T>(b, h, j);
          double dot = 0;
          for (std::int64_t t = 0; t < pr.d; ++t)
            dot += static_cast<double>(to_float(q[t])) * to_float(k[t]);
          logits[static_cast<std::size_t>(j)] = static_cast<double>(pr.scale) * dot + pr.key_bias(b, h, j);
          max_logit = std::max(max_logit, logits[static_cast<std::size_t>(j)]);
          any = true;
        }
      }
      if (any) {
        double denom = 0;
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          if (!pr.sees(b, i, j)) continue;
          const double p = std::exp(logits[static_cast<std::size_t>(j)] - max_logit);
          denom += p;
          const T* v = pr.v_row<T>(b, h, j);
          for (std::int64_t c = 0; c < pr.dv; ++c)
            out[static_cast<std::size_t>(c)] += p * to_float(v[c]);
        }
        for (auto& x : out) x /= denom;
      }
      for (std::int64_t c = 0; c < pr.dv; ++c) o[c] = static_cast<float>(out[static_cast<std::size_t>(c)]);
    }
  });
}

}  // namespace

RunInfo reference_forward(const Problem& pr) {
  Timer timer;
  with_input_type(pr.dtype, [&](auto tag) { reference_rows<decltype(tag)>(pr); });
  RunInfo info;
  for (std::int64_t b = 0; b < pr.B; ++b) {
    std::size_t nk = 0;  // (active query, key it sees) pairs
    for (std::int64_t i = 0; i < pr.Nq; ++i)
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        nk += pr.query_active(b, i) && pr.sees(b, i, j) ? 1 : 0;
    info.attention_scores += nk * static_cast<std::size_t>(pr.H);
  }
  info.workspace_bytes = static_cast<std::size_t>(pr.threads) *
                         static_cast<std::size_t>(pr.Nk + pr.dv) * sizeof(double);
  info.seconds_total = info.attention.seconds = timer.seconds();
  return info;
}

}  // namespace smyrf::detail
