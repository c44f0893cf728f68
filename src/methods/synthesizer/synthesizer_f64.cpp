// Synthesizer attention's double-precision definition and its exact gradient (contract:
// smyrf/methods/synthesizer.h, "Backward"). Plain loops per (batch, head, query): the logits in
// double (the net of the query, or R), the softmax over the visible keys with the dropout
// factors, and, for the backward, the chain back through the softmax and the net. Parallel over
// heads, each head's batch elements in order, so the learned parts' gradients (sums over the
// batch) are added in batch order whatever the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"
#include "methods/synthesizer/synthesizer.h"
#include "spec/draws.h"

namespace smyrf::detail {
namespace {

// A learned part's values in double: f64's when given, else the floats given, else the draw.
template <class Draw>
std::vector<double> part_values(const double* f64, const float* f32, std::int64_t n, Draw draw) {
  std::vector<double> x(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    x[static_cast<std::size_t>(i)] = f64 != nullptr ? f64[i] : f32 != nullptr ? double(f32[i]) : draw(i);
  return x;
}

struct Weights {
  std::vector<double> w1, b1, w2, b2, logits;
};

Weights weights(const Problem& pr, const SynthesizerConfig& c) {
  const SynthesizerDoubleParts none;
  const SynthesizerDoubleParts& x = c.f64 != nullptr ? *c.f64 : none;
  const std::int64_t H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, hid = c.hidden;
  const std::uint64_t seed = pr.p->seed;
  Weights w;
  if (c.kind == SynthesizerKind::dense) {
    w.w1 = part_values(x.w1, c.w1, H * d * hid, [&](std::int64_t n) {
      const std::int64_t h = n / (d * hid), t = n / hid % d, u = n % hid;
      return double(spec::synthesizer_default_w1(seed, h, t, u, d, hid));
    });
    w.b1 = part_values(x.b1, c.b1, H * hid, [](std::int64_t) { return 0.0; });
    w.w2 = part_values(x.w2, c.w2, H * hid * Nk, [&](std::int64_t n) {
      const std::int64_t h = n / (hid * Nk), u = n / Nk % hid, j = n % Nk;
      return double(spec::synthesizer_default_w2(seed, h, u, j, Nk, hid));
    });
    w.b2 = part_values(x.b2, c.b2, H * Nk, [](std::int64_t) { return 0.0; });
  } else {
    w.logits = part_values(x.logits, c.logits, H * Nq * Nk, [&](std::int64_t n) {
      const std::int64_t h = n / (Nq * Nk), i = n / Nk % Nq, j = n % Nk;
      return double(spec::synthesizer_default_logit(seed, h, i, j, Nk));
    });
  }
  return w;
}

// Forward (o, lse; either may be nullptr) and, with grad_o, the backward into grad_q, grad_k,
// grad_v and c.f64->grad_* (contiguous layouts).
void run(const Problem& pr, const DoubleTensors& in, const SynthesizerConfig& c, double* o, double* lse,
         const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv, hid = c.hidden;
  const bool dense = c.kind == SynthesizerKind::dense;
  const Weights w = weights(pr, c);
  const SynthesizerDoubleParts none;
  const SynthesizerDoubleParts& g64 = c.f64 != nullptr ? *c.f64 : none;
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  const double ninf = -std::numeric_limits<double>::infinity();
  parallel_for(H, pr.threads, [&](std::int64_t h) {
    // This head's learned-part gradients, summed over the batch in order.
    std::vector<double> dw1(dense ? static_cast<std::size_t>(d * hid) : 0), db1(dense ? static_cast<std::size_t>(hid) : 0),
        dw2(dense ? static_cast<std::size_t>(hid * Nk) : 0), db2(dense ? static_cast<std::size_t>(Nk) : 0),
        dr(dense ? 0 : static_cast<std::size_t>(Nq * Nk));
    std::vector<double> a(static_cast<std::size_t>(hid)), ga(static_cast<std::size_t>(hid)), logit, p, mfac,
        oi(static_cast<std::size_t>(dv));
    std::vector<std::int64_t> keys;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t bh = b * H + h;
      if (grad_o != nullptr) {
        std::fill_n(grad_q + bh * Nq * d, Nq * d, 0.0);
        std::fill_n(grad_k + bh * Nk * d, Nk * d, 0.0);
        std::fill_n(grad_v + bh * Nk * dv, Nk * dv, 0.0);
      }
      for (std::int64_t i = 0; i < Nq; ++i) {
        const std::int64_t row = bh * Nq + i;
        if (o != nullptr) std::fill_n(o + row * dv, dv, 0.0);
        if (lse != nullptr) lse[row] = ninf;
        if (!pr.query_active(b, i)) continue;
        const double* q = in.q + row * d;
        if (dense)
          for (std::int64_t u = 0; u < hid; ++u) {
            double s = w.b1[static_cast<std::size_t>(h * hid + u)];
            for (std::int64_t t = 0; t < d; ++t) s += q[t] * w.w1[static_cast<std::size_t>((h * d + t) * hid + u)];
            a[static_cast<std::size_t>(u)] = std::max(s, 0.0);
          }
        keys.clear();
        logit.clear();
        for (std::int64_t j = 0; j < Nk; ++j) {
          if (!pr.sees(b, i, j)) continue;
          double l;
          if (dense) {
            l = w.b2[static_cast<std::size_t>(h * Nk + j)];
            for (std::int64_t u = 0; u < hid; ++u)
              l += w.w2[static_cast<std::size_t>((h * hid + u) * Nk + j)] * a[static_cast<std::size_t>(u)];
          } else {
            l = w.logits[static_cast<std::size_t>((h * Nq + i) * Nk + j)];
          }
          keys.push_back(j);
          logit.push_back(l);
        }
        if (keys.empty()) continue;
        const double mx = *std::max_element(logit.begin(), logit.end());
        double sum = 0.0;
        for (double l : logit) sum += std::exp(l - mx);
        const std::uint64_t stream = drop.active() ? drop.row(b, h, 0, i) : 0;
        p.resize(keys.size());
        mfac.resize(keys.size());
        std::fill(oi.begin(), oi.end(), 0.0);
        for (std::size_t n = 0; n < keys.size(); ++n) {
          p[n] = std::exp(logit[n] - mx) / sum;
          mfac[n] = drop.active() ? double(drop.factor(stream, keys[n])) : 1.0;
          const double* v = in.v + (bh * Nk + keys[n]) * dv;
          for (std::int64_t x = 0; x < dv; ++x) oi[static_cast<std::size_t>(x)] += p[n] * mfac[n] * v[x];
        }
        if (o != nullptr) std::copy(oi.begin(), oi.end(), o + row * dv);
        if (lse != nullptr) lse[row] = mx + std::log(sum);
        if (grad_o == nullptr) continue;
        // The backward of this row.
        const double* go = grad_o + row * dv;
        double D = 0.0;
        for (std::int64_t x = 0; x < dv; ++x) D += go[x] * oi[static_cast<std::size_t>(x)];
        std::fill(ga.begin(), ga.end(), 0.0);
        for (std::size_t n = 0; n < keys.size(); ++n) {
          const std::int64_t j = keys[n];
          const double* v = in.v + (bh * Nk + j) * dv;
          double* gv = grad_v + (bh * Nk + j) * dv;
          double dp = 0.0;
          for (std::int64_t x = 0; x < dv; ++x) {
            dp += go[x] * v[x];
            gv[x] += p[n] * mfac[n] * go[x];
          }
          const double ds = p[n] * (mfac[n] * dp - D);
          if (!dense) {
            dr[static_cast<std::size_t>(i * Nk + j)] += ds;
            continue;
          }
          db2[static_cast<std::size_t>(j)] += ds;
          for (std::int64_t u = 0; u < hid; ++u) {
            dw2[static_cast<std::size_t>(u * Nk + j)] += ds * a[static_cast<std::size_t>(u)];
            ga[static_cast<std::size_t>(u)] += ds * w.w2[static_cast<std::size_t>((h * hid + u) * Nk + j)];
          }
        }
        if (!dense) continue;
        double* gq = grad_q + row * d;
        for (std::int64_t u = 0; u < hid; ++u) {
          const double gu = a[static_cast<std::size_t>(u)] > 0.0 ? ga[static_cast<std::size_t>(u)] : 0.0;
          db1[static_cast<std::size_t>(u)] += gu;
          for (std::int64_t t = 0; t < d; ++t) {
            gq[t] += w.w1[static_cast<std::size_t>((h * d + t) * hid + u)] * gu;
            dw1[static_cast<std::size_t>(t * hid + u)] += q[t] * gu;
          }
        }
      }
    }
    if (grad_o == nullptr) return;
    const auto put = [](double* out, const std::vector<double>& x, std::int64_t at) {
      if (out != nullptr) std::copy(x.begin(), x.end(), out + at);
    };
    put(g64.grad_w1, dw1, h * d * hid);
    put(g64.grad_b1, db1, h * hid);
    put(g64.grad_w2, dw2, h * hid * Nk);
    put(g64.grad_b2, db2, h * Nk);
    put(g64.grad_logits, dr, h * Nq * Nk);
  });
}

}  // namespace

void synthesizer_forward_f64(const Problem& pr, const DoubleTensors& in, const SynthesizerConfig& config,
                             double* o, double* lse) {
  run(pr, in, config, o, lse, nullptr, nullptr, nullptr, nullptr);
}

void synthesizer_backward_f64(const Problem& pr, const DoubleTensors& in, const SynthesizerConfig& config,
                              const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  // The float gradients belong to attention_backward; this call writes f64->grad_*.
  const std::pair<const char*, const float*> float_grads[] = {{"grad_w1", config.grad_w1},
                                                              {"grad_b1", config.grad_b1},
                                                              {"grad_w2", config.grad_w2},
                                                              {"grad_b2", config.grad_b2},
                                                              {"grad_logits", config.grad_logits}};
  for (const auto& [name, p] : float_grads)
    if (p != nullptr)
      fail(std::string("SynthesizerConfig.") + name, ptr_str(p),
           std::string("written by attention_backward; attention_backward_f64 writes SynthesizerConfig.f64->") +
               name + ": must be nullptr");
  run(pr, in, config, nullptr, nullptr, grad_o, grad_q, grad_k, grad_v);
}

}  // namespace smyrf::detail
