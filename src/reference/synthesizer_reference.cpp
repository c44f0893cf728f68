// Synthesizer attention's oracle, written from the definition in
// methods/synthesizer/synthesizer.h: the logits of each (b, h, i) in double (the net in plain
// loops, or R), a softmax over the visible keys and the weighted sum of V rows, in plain loops.
// Shares with the fast path only the seeded default weights of src/spec/draws.h.
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

template <class T>
void attend(const Problem& pr, const SynthesizerConfig& c, Output& out) {
  const std::int64_t H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
  const std::int64_t hidden = c.hidden;
  const std::uint64_t seed = pr.p->seed;
  auto w1 = [&](std::int64_t h, std::int64_t t, std::int64_t u) -> double {
    return c.w1 ? c.w1[(h * d + t) * hidden + u] : spec::synthesizer_default_w1(seed, h, t, u, d, hidden);
  };
  auto b1 = [&](std::int64_t h, std::int64_t u) -> double {
    return c.b1 ? c.b1[h * hidden + u] : 0.0;
  };
  auto w2 = [&](std::int64_t h, std::int64_t u, std::int64_t j) -> double {
    return c.w2 ? c.w2[(h * hidden + u) * Nk + j]
                : spec::synthesizer_default_w2(seed, h, u, j, Nk, hidden);
  };
  auto b2 = [&](std::int64_t h, std::int64_t j) -> double { return c.b2 ? c.b2[h * Nk + j] : 0.0; };
  auto R = [&](std::int64_t h, std::int64_t i, std::int64_t j) -> double {
    return c.logits ? c.logits[(h * Nq + i) * Nk + j]
                    : spec::synthesizer_default_logit(seed, h, i, j, Nk);
  };
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < Nq; ++i) {
        const std::size_t at = static_cast<std::size_t>((b * H + h) * Nq + i);
        double* o = out.o.data() + at * static_cast<std::size_t>(dv);
        if (!pr.query_active(b, i)) continue;
        // The hidden layer of the query (dense kind).
        std::vector<double> hid;
        if (c.kind == SynthesizerKind::dense) {
          const T* q = pr.q_row<T>(b, h, i);
          hid.resize(static_cast<std::size_t>(hidden));
          for (std::int64_t u = 0; u < hidden; ++u) {
            double s = b1(h, u);
            for (std::int64_t t = 0; t < d; ++t) s += double(to_float(q[t])) * w1(h, t, u);
            hid[u] = std::max(s, 0.0);
          }
        }
        std::vector<std::int64_t> keys;
        std::vector<double> logit;
        for (std::int64_t j = 0; j < Nk; ++j) {
          if (!pr.sees(b, i, j)) continue;
          double l;
          if (c.kind == SynthesizerKind::dense) {
            l = b2(h, j);
            for (std::int64_t u = 0; u < hidden; ++u) l += w2(h, u, j) * hid[u];
          } else {
            l = R(h, i, j);
          }
          keys.push_back(j);
          logit.push_back(l);
        }
        if (keys.empty()) continue;
        const double mx = *std::max_element(logit.begin(), logit.end());
        double sum = 0.0;
        for (double l : logit) sum += std::exp(l - mx);
        std::vector<double> acc(static_cast<std::size_t>(dv), 0.0);
        for (std::size_t n = 0; n < keys.size(); ++n) {
          const double w = std::exp(logit[n] - mx) / sum;
          const T* v = pr.v_row<T>(b, h, keys[n]);
          for (std::int64_t x = 0; x < dv; ++x) acc[x] += w * double(to_float(v[x]));
        }
        for (std::int64_t x = 0; x < dv; ++x) o[x] = acc[x];
        out.lse[at] = mx + std::log(sum);
      }
}

}  // namespace

Output attention(const AttentionParams& params, const SynthesizerConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  detail::with_input_type(pr.dtype, [&](auto tag) { attend<decltype(tag)>(pr, config, out); });
  return out;
}

}  // namespace smyrf::reference
