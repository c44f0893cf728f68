#include "reference/train_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/parallel.h"
#include "spec/draws.h"

namespace smyrf::detail {

KeySets::KeySets(const Problem& pr) : pr_(&pr) {}

KeySets::KeySets(const Problem& pr, std::vector<std::vector<std::pair<int, std::int32_t>>> explicit_pairs)
    : pr_(&pr), explicit_(std::move(explicit_pairs)) {}

KeySets::KeySets(const Problem& pr, std::vector<std::vector<std::pair<int, std::int32_t>>> explicit_pairs,
                 std::vector<std::uint8_t> uniform)
    : pr_(&pr), explicit_(std::move(explicit_pairs)), uniform_(std::move(uniform)) {}

KeySets::KeySets(const Problem& pr, const SmyrfConfig& config,
                 const reference::SmyrfClusters& c)
    : pr_(&pr) {
  clustered_ = true;
  fallback_window_ = std::min<std::int64_t>(config.k_cluster_size, pr.Nk);
  rounds_ = c.rounds;
  k_sorted_ = c.k_sorted;
  n_clusters_ = c.n_clusters;
  k_count_.assign(c.k_count.begin(), c.k_count.end());
  const std::int64_t R = rounds_;
  query_cluster_.assign(static_cast<std::size_t>(pr.B * pr.H * R * pr.Nq), -1);
  for (std::int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    const std::int64_t b = bh / pr.H, C = c.n_clusters[static_cast<std::size_t>(b)];
    const std::int64_t nq = c.q_count[static_cast<std::size_t>(b)];
    for (std::int64_t r = 0; r < R; ++r)
      for (std::int64_t cl = 0; cl < C; ++cl)
        // Query cluster cl: sorted queries [floor(cl nq / C), floor((cl + 1) nq / C)).
        for (std::int64_t t = cl * nq / C; t < (cl + 1) * nq / C; ++t) {
          const std::int32_t i = c.q_sorted[static_cast<std::size_t>((bh * R + r) * pr.Nq + t)];
          query_cluster_[static_cast<std::size_t>((bh * R + r) * pr.Nq + i)] =
              static_cast<std::int32_t>(cl);
        }
  }
}

void KeySets::pairs(std::int64_t b, std::int64_t h, std::int64_t i,
                    std::vector<std::pair<int, std::int32_t>>& out) const {
  out.clear();
  const Problem& pr = *pr_;
  if (!pr.query_active(b, i)) return;
  if (!explicit_.empty()) {
    out = explicit_[static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i)];
    return;
  }
  if (!clustered_) {
    for (std::int64_t j = 0; j < pr.Nk; ++j)
      if (pr.sees(b, i, j)) out.emplace_back(0, static_cast<std::int32_t>(j));
    return;
  }
  const std::int64_t bh = b * pr.H + h, C = n_clusters_[static_cast<std::size_t>(b)];
  const std::int64_t nk = k_count_[static_cast<std::size_t>(b)];
  if (nk == 0) return;
  // With one cluster every round holds the same keys: round 0 only (as the forward does).
  const int rounds = C == 1 ? 1 : rounds_;
  for (int r = 0; r < rounds; ++r) {
    const std::size_t base = static_cast<std::size_t>((bh * rounds_ + r));
    const std::int64_t cl = query_cluster_[base * static_cast<std::size_t>(pr.Nq) + static_cast<std::size_t>(i)];
    // Key cluster cl: sorted keys [floor(cl nk / C), max(floor((cl + 1) nk / C), begin + 1)).
    const std::int64_t k_begin = cl * nk / C;
    const std::int64_t k_end = std::max((cl + 1) * nk / C, k_begin + 1);
    for (std::int64_t t = k_begin; t < k_end; ++t) {
      const std::int32_t j = k_sorted_[base * static_cast<std::size_t>(pr.Nk) + static_cast<std::size_t>(t)];
      if (pr.sees(b, i, j)) out.emplace_back(r, j);
    }
  }
  // Causal: nothing visible in any round -> the up to k_cluster_size nearest visible keys at
  // positions <= the query's own (SmyrfConfig's fallback).
  if (out.empty() && pr.p->causal) {
    std::vector<std::int32_t> window;
    for (std::int64_t j = pr.key_position(i);
         j >= 0 && static_cast<std::int64_t>(window.size()) < fallback_window_; --j)
      if (pr.key_visible(b, j)) window.push_back(static_cast<std::int32_t>(j));
    for (auto it = window.rbegin(); it != window.rend(); ++it) out.emplace_back(0, *it);
  }
}

namespace {

// One query row: scores of its pairs, logsumexp and the dropout factors.
struct Row {
  std::vector<std::pair<int, std::int32_t>> pairs;
  std::vector<double> p;       // softmax weights exp(s - lse), before dropout
  std::vector<double> factor;  // dropout factor of each pair (1 without dropout)
  double lse = -std::numeric_limits<double>::infinity();
  bool uniform = false;        // logits the constant 0 (KeySets::uniform)

  void compute(const DoubleProblem& dp, const KeySets& sets, const spec::Dropout& drop,
               std::int64_t b, std::int64_t h, std::int64_t i, const double* lse_given) {
    const Problem& pr = *dp.pr;
    sets.pairs(b, h, i, pairs);
    const std::size_t n = pairs.size();
    p.assign(n, 0.0);
    factor.assign(n, 1.0);
    lse = -std::numeric_limits<double>::infinity();
    uniform = sets.uniform(b, h, i);
    if (n == 0) return;
    const double* q = dp.q + ((b * pr.H + h) * pr.Nq + i) * pr.d;
    double mx = -std::numeric_limits<double>::infinity();
    for (std::size_t e = 0; e < n; ++e) {
      const double* k = dp.k + ((b * pr.H + h) * pr.Nk + pairs[e].second) * pr.d;
      double dot = 0;
      if (!uniform)
        for (std::int64_t t = 0; t < pr.d; ++t) dot += q[t] * k[t];
      p[e] = static_cast<double>(pr.scale) * dot + (uniform ? 0.0 : pr.key_bias(b, h, pairs[e].second));
      mx = std::max(mx, p[e]);
    }
    double sum = 0;
    for (std::size_t e = 0; e < n; ++e) sum += std::exp(p[e] - mx);
    lse = lse_given != nullptr ? *lse_given : mx + std::log(sum);
    for (std::size_t e = 0; e < n; ++e) {
      p[e] = std::exp(p[e] - lse);
      if (drop.active() && !uniform)
        factor[e] = drop.factor(drop.row(b, h, pairs[e].first, i), pairs[e].second);
    }
  }
};

}  // namespace

void sets_forward(const DoubleProblem& dp, const KeySets& sets, double* o, double* lse) {
  const Problem& pr = *dp.pr;
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    Row row;
    for (std::int64_t i = 0; i < pr.Nq; ++i) {
      row.compute(dp, sets, drop, b, h, i, nullptr);
      double* out = o + (bh * pr.Nq + i) * pr.dv;
      std::fill(out, out + pr.dv, 0.0);
      for (std::size_t e = 0; e < row.pairs.size(); ++e) {
        const double w = row.p[e] * row.factor[e];
        const double* v = dp.v + (bh * pr.Nk + row.pairs[e].second) * pr.dv;
        for (std::int64_t c = 0; c < pr.dv; ++c) out[c] += w * v[c];
      }
      if (lse != nullptr) lse[bh * pr.Nq + i] = row.lse;
    }
  });
}

void sets_backward(const DoubleProblem& dp, const KeySets& sets, const double* o,
                   const double* lse, const double* grad_o, double* grad_q, double* grad_k,
                   double* grad_v) {
  const Problem& pr = *dp.pr;
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  std::fill_n(grad_q, pr.B * pr.H * pr.Nq * pr.d, 0.0);
  std::fill_n(grad_k, pr.B * pr.H * pr.Nk * pr.d, 0.0);
  std::fill_n(grad_v, pr.B * pr.H * pr.Nk * pr.dv, 0.0);
  // One task per (b, h): its key gradients are summed over its queries in order.
  parallel_for(pr.B * pr.H, pr.threads, [&](std::int64_t bh) {
    const std::int64_t b = bh / pr.H, h = bh % pr.H;
    Row row;
    for (std::int64_t i = 0; i < pr.Nq; ++i) {
      const double* l = lse + bh * pr.Nq + i;
      if (!std::isfinite(*l)) continue;  // masked query or no visible key: zero gradients
      row.compute(dp, sets, drop, b, h, i, l);
      const double* go = grad_o + (bh * pr.Nq + i) * pr.dv;
      const double* out = o + (bh * pr.Nq + i) * pr.dv;
      double D = 0;
      for (std::int64_t c = 0; c < pr.dv; ++c) D += go[c] * out[c];
      const double* q = dp.q + (bh * pr.Nq + i) * pr.d;
      double* gq = grad_q + (bh * pr.Nq + i) * pr.d;
      for (std::size_t e = 0; e < row.pairs.size(); ++e) {
        const std::int64_t j = row.pairs[e].second;
        const double* k = dp.k + (bh * pr.Nk + j) * pr.d;
        const double* v = dp.v + (bh * pr.Nk + j) * pr.dv;
        double* gk = grad_k + (bh * pr.Nk + j) * pr.d;
        double* gv = grad_v + (bh * pr.Nk + j) * pr.dv;
        double dpe = 0;
        for (std::int64_t c = 0; c < pr.dv; ++c) dpe += go[c] * v[c];
        dpe *= row.factor[e];
        const double w = row.p[e] * row.factor[e];
        for (std::int64_t c = 0; c < pr.dv; ++c) gv[c] += w * go[c];
        if (row.uniform) continue;  // constant logits: nothing flows to Q or K
        const double ds = row.p[e] * (dpe - D) * static_cast<double>(pr.scale);
        for (std::int64_t t = 0; t < pr.d; ++t) {
          gq[t] += ds * k[t];
          gk[t] += ds * q[t];
        }
      }
    }
  });
}

DoubleCopy::DoubleCopy(const Problem& pr) {
  q.resize(static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.d));
  k.resize(static_cast<std::size_t>(pr.B * pr.H * pr.Nk * pr.d));
  v.resize(static_cast<std::size_t>(pr.B * pr.H * pr.Nk * pr.dv));
  with_input_type(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t b = 0; b < pr.B; ++b)
      for (std::int64_t h = 0; h < pr.H; ++h) {
        const std::int64_t bh = b * pr.H + h;
        for (std::int64_t i = 0; i < pr.Nq; ++i)
          for (std::int64_t t = 0; t < pr.d; ++t)
            q[static_cast<std::size_t>((bh * pr.Nq + i) * pr.d + t)] = to_float(pr.q_row<T>(b, h, i)[t]);
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          for (std::int64_t t = 0; t < pr.d; ++t)
            k[static_cast<std::size_t>((bh * pr.Nk + j) * pr.d + t)] = to_float(pr.k_row<T>(b, h, j)[t]);
          for (std::int64_t t = 0; t < pr.dv; ++t)
            v[static_cast<std::size_t>((bh * pr.Nk + j) * pr.dv + t)] = to_float(pr.v_row<T>(b, h, j)[t]);
        }
      }
  });
}

void reference_train_forward(const Problem& pr) {
  const DoubleCopy in(pr);
  const KeySets sets(pr);
  std::vector<double> o(static_cast<std::size_t>(pr.B * pr.H * pr.Nq * pr.dv));
  std::vector<double> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  sets_forward(in.view(pr), sets, o.data(), lse.data());
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::int64_t row = (b * pr.H + h) * pr.Nq + i;
        for (std::int64_t c = 0; c < pr.dv; ++c)
          pr.o_row(b, h, i)[c] = static_cast<float>(o[static_cast<std::size_t>(row * pr.dv + c)]);
        if (pr.p->lse != nullptr) pr.p->lse[row] = static_cast<float>(lse[static_cast<std::size_t>(row)]);
      }
}

void reference_backward(const Problem& pr, const GradientParams& g) {
  const DoubleCopy in(pr);
  const KeySets sets(pr);
  const AttentionParams& p = *pr.p;
  const std::size_t nq = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::vector<double> o(nq * static_cast<std::size_t>(pr.dv)), go(o.size()), lse(nq);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::int64_t row = (b * pr.H + h) * pr.Nq + i;
        const std::int64_t off = b * p.o_batch_stride + h * p.o_head_stride + i * p.o_row_stride;
        for (std::int64_t c = 0; c < pr.dv; ++c) {
          o[static_cast<std::size_t>(row * pr.dv + c)] = g.o[off + c];
          go[static_cast<std::size_t>(row * pr.dv + c)] = g.grad_o[off + c];
        }
        lse[static_cast<std::size_t>(row)] = g.lse[row];
      }
  std::vector<double> gq(in.q.size()), gk(in.k.size()), gv(in.v.size());
  sets_backward(in.view(pr), sets, o.data(), lse.data(), go.data(), gq.data(), gk.data(), gv.data());
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::int64_t bh = b * pr.H + h;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        for (std::int64_t t = 0; t < pr.d; ++t)
          g.grad_q[b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride + t] =
              static_cast<float>(gq[static_cast<std::size_t>((bh * pr.Nq + i) * pr.d + t)]);
      for (std::int64_t j = 0; j < pr.Nk; ++j) {
        for (std::int64_t t = 0; t < pr.d; ++t)
          g.grad_k[b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride + t] =
              static_cast<float>(gk[static_cast<std::size_t>((bh * pr.Nk + j) * pr.d + t)]);
        for (std::int64_t t = 0; t < pr.dv; ++t)
          g.grad_v[b * p.v_batch_stride + h * p.v_head_stride + j * p.v_row_stride + t] =
              static_cast<float>(gv[static_cast<std::size_t>((bh * pr.Nk + j) * pr.dv + t)]);
      }
    }
}

}  // namespace smyrf::detail
