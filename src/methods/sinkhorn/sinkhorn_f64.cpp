// Sinkhorn sorting attention's double-precision definition and its exact gradient (contract:
// smyrf/methods/sinkhorn.h, "Backward"). Plain loops per (batch, head): the blocks, the block
// logits, every Sinkhorn normalisation kept, the sorted blocks and one softmax per query; for
// the backward, the chain back through the softmax, the sorted rows, the normalisations (last
// first) and the block logits. Parallel over heads, each head's batch elements in order, so the
// sort net's gradient (a sum over the batch) is added in batch order whatever the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"
#include "methods/sinkhorn/sinkhorn.h"
#include "spec/draws.h"

namespace smyrf::detail {
namespace {

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;

double logsumexp(const Vec& x) {
  double m = -std::numeric_limits<double>::infinity();
  for (double v : x) m = std::max(m, v);
  if (std::isinf(m)) return m;
  double s = 0.0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

// One (batch, head): the forward into o, lse (nullptr: not written) and, with grad_o, the
// backward added into gq, gk, gv (this (b, h)'s rows, zeroed by the caller) and gw ([d][NB],
// this head's sort-net gradient, or nullptr).
struct Head {
  const Problem& pr;
  const DoubleTensors& in;
  const SinkhornConfig& c;
  const double* W;  // this head's sort net [d][NB] in double, or nullptr
  const spec::Dropout& drop;
  std::int64_t b, h;

  void run(double* o, double* lse, const double* grad_o, double* gq, double* gk, double* gv, double* gw) const {
    const std::int64_t H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv, bs = c.block_size;
    const std::int64_t NB = sinkhorn_blocks(Nk, bs), bh = b * H + h;
    const double scale = static_cast<double>(pr.scale), temp = static_cast<double>(c.temperature);
    std::vector<std::int64_t> qs, ks;
    for (std::int64_t i = 0; i < Nq; ++i)
      if (pr.query_active(b, i)) qs.push_back(i);
    for (std::int64_t j = 0; j < Nk; ++j)
      if (pr.key_visible(b, j)) ks.push_back(j);
    const std::int64_t nq = static_cast<std::int64_t>(qs.size()), nk = static_cast<std::int64_t>(ks.size());
    if (nq == 0 || nk == 0) return;
    const std::int64_t nb = sinkhorn_blocks(nk, bs);
    const auto K = [&](std::int64_t j) { return in.k + (bh * Nk + j) * d; };
    const auto V = [&](std::int64_t j) { return in.v + (bh * Nk + j) * dv; };
    const auto Q = [&](std::int64_t i) { return in.q + (bh * Nq + i) * d; };
    std::vector<std::vector<std::int64_t>> kb(static_cast<std::size_t>(nb)), qb(static_cast<std::size_t>(nb));
    for (std::int64_t r = 0; r < nk; ++r) kb[static_cast<std::size_t>(r / bs)].push_back(ks[static_cast<std::size_t>(r)]);
    for (std::int64_t a = 0; a < nb; ++a)
      for (std::int64_t r = a * nq / nb; r < (a + 1) * nq / nb; ++r)
        qb[static_cast<std::size_t>(a)].push_back(qs[static_cast<std::size_t>(r)]);
    // Key sums and means, query means (an empty query block: its key block's mean).
    Mat ksum(static_cast<std::size_t>(nb), Vec(static_cast<std::size_t>(d), 0.0)), kmean = ksum, qmean = ksum;
    for (std::int64_t a = 0; a < nb; ++a) {
      const auto& blk = kb[static_cast<std::size_t>(a)];
      Vec& s = ksum[static_cast<std::size_t>(a)];
      for (std::int64_t j : blk)
        for (std::int64_t e = 0; e < d; ++e) s[static_cast<std::size_t>(e)] += K(j)[e];
      for (std::int64_t e = 0; e < d; ++e)
        kmean[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)] = s[static_cast<std::size_t>(e)] / double(blk.size());
    }
    for (std::int64_t a = 0; a < nb; ++a) {
      const auto& blk = qb[static_cast<std::size_t>(a)];
      Vec& m = qmean[static_cast<std::size_t>(a)];
      if (blk.empty()) {
        m = kmean[static_cast<std::size_t>(a)];
        continue;
      }
      for (std::int64_t i : blk)
        for (std::int64_t e = 0; e < d; ++e) m[static_cast<std::size_t>(e)] += Q(i)[e];
      for (double& x : m) x /= double(blk.size());
    }
    // L_0 = R / temperature, then every normalisation's output kept: stage 2 it + 1 is after
    // the rows of iteration it, 2 it + 2 after its columns.
    std::vector<Mat> L(static_cast<std::size_t>(2 * c.iterations + 1), Mat(static_cast<std::size_t>(nb), Vec(static_cast<std::size_t>(nb))));
    for (std::int64_t a = 0; a < nb; ++a)
      for (std::int64_t col = 0; col < nb; ++col) {
        double r = 0.0;
        for (std::int64_t e = 0; e < d; ++e)
          r += W != nullptr ? ksum[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)] * W[e * NB + col]
                            : qmean[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)] *
                                  kmean[static_cast<std::size_t>(col)][static_cast<std::size_t>(e)];
        if (W == nullptr) r *= scale;
        L[0][static_cast<std::size_t>(a)][static_cast<std::size_t>(col)] = r / temp;
      }
    for (int it = 0; it < c.iterations; ++it) {
      Mat x = L[static_cast<std::size_t>(2 * it)];
      for (Vec& rw : x) {
        const double l = logsumexp(rw);
        for (double& v : rw) v -= l;
      }
      L[static_cast<std::size_t>(2 * it + 1)] = x;
      for (std::int64_t col = 0; col < nb; ++col) {
        Vec column(static_cast<std::size_t>(nb));
        for (std::int64_t a = 0; a < nb; ++a) column[static_cast<std::size_t>(a)] = x[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)];
        const double l = logsumexp(column);
        for (std::int64_t a = 0; a < nb; ++a) x[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)] -= l;
      }
      L[static_cast<std::size_t>(2 * it + 2)] = x;
    }
    const Mat& Lf = L.back();
    Mat dL(static_cast<std::size_t>(nb), Vec(static_cast<std::size_t>(nb), 0.0));
    const std::int64_t rows = std::min(bs, nk);
    for (std::int64_t a = 0; a < nb; ++a) {
      const auto& qblk = qb[static_cast<std::size_t>(a)];
      if (qblk.empty()) continue;
      const Vec& la = Lf[static_cast<std::size_t>(a)];
      const double mx = *std::max_element(la.begin(), la.end());
      Vec P(static_cast<std::size_t>(nb));
      for (std::int64_t col = 0; col < nb; ++col) P[static_cast<std::size_t>(col)] = std::exp(la[static_cast<std::size_t>(col)] - mx);
      // The softmax's keys: own block (position j, dropout column j), then the sorted rows
      // (dropout column Nk + t) with their weights w over the blocks having a row t.
      struct Key {
        Vec k, v;
        std::int64_t own = -1;  // the key's position, or -1 for a sorted row
        std::int64_t t = 0;
        Vec w;  // sorted row: the weight of each block (0 where it has no row t)
      };
      std::vector<Key> keys;
      for (std::int64_t j : kb[static_cast<std::size_t>(a)])
        keys.push_back({Vec(K(j), K(j) + d), Vec(V(j), V(j) + dv), j, 0, {}});
      for (std::int64_t t = 0; t < rows; ++t) {
        double den = 0.0;
        for (std::int64_t col = 0; col < nb; ++col)
          if (t < static_cast<std::int64_t>(kb[static_cast<std::size_t>(col)].size())) den += P[static_cast<std::size_t>(col)];
        if (!(den > 0.0)) continue;
        Key key{Vec(static_cast<std::size_t>(d), 0.0), Vec(static_cast<std::size_t>(dv), 0.0), -1, t,
                Vec(static_cast<std::size_t>(nb), 0.0)};
        for (std::int64_t col = 0; col < nb; ++col) {
          if (t >= static_cast<std::int64_t>(kb[static_cast<std::size_t>(col)].size())) continue;
          const double w = P[static_cast<std::size_t>(col)] / den;
          key.w[static_cast<std::size_t>(col)] = w;
          const std::int64_t j = kb[static_cast<std::size_t>(col)][static_cast<std::size_t>(t)];
          for (std::int64_t e = 0; e < d; ++e) key.k[static_cast<std::size_t>(e)] += w * K(j)[e];
          for (std::int64_t e = 0; e < dv; ++e) key.v[static_cast<std::size_t>(e)] += w * V(j)[e];
        }
        keys.push_back(std::move(key));
      }
      const std::size_t n = keys.size();
      Mat dk(n, Vec(static_cast<std::size_t>(d), 0.0)), dvv(n, Vec(static_cast<std::size_t>(dv), 0.0));
      for (std::int64_t i : qblk) {
        const double* q = Q(i);
        Vec s(n), p(n), m(n, 1.0);
        for (std::size_t x = 0; x < n; ++x) {
          double dot = 0.0;
          for (std::int64_t e = 0; e < d; ++e) dot += q[e] * keys[x].k[static_cast<std::size_t>(e)];
          s[x] = scale * dot;
        }
        const double l = logsumexp(s);
        const std::uint64_t stream = drop.active() ? drop.row(b, h, 0, i) : 0;
        Vec oi(static_cast<std::size_t>(dv), 0.0);
        for (std::size_t x = 0; x < n; ++x) {
          p[x] = std::exp(s[x] - l);
          if (drop.active()) m[x] = double(drop.factor(stream, keys[x].own >= 0 ? keys[x].own : Nk + keys[x].t));
          for (std::int64_t e = 0; e < dv; ++e) oi[static_cast<std::size_t>(e)] += p[x] * m[x] * keys[x].v[static_cast<std::size_t>(e)];
        }
        const std::int64_t row = bh * Nq + i;
        if (o != nullptr) std::copy(oi.begin(), oi.end(), o + row * dv);
        if (lse != nullptr) lse[row] = l;
        if (grad_o == nullptr) continue;
        const double* go = grad_o + row * dv;
        double D = 0.0;
        for (std::int64_t e = 0; e < dv; ++e) D += go[e] * oi[static_cast<std::size_t>(e)];
        double* dq = gq + (bh * Nq + i) * d;
        for (std::size_t x = 0; x < n; ++x) {
          double dp = 0.0;
          for (std::int64_t e = 0; e < dv; ++e) {
            dp += go[e] * keys[x].v[static_cast<std::size_t>(e)];
            dvv[x][static_cast<std::size_t>(e)] += p[x] * m[x] * go[e];
          }
          const double ds = p[x] * (m[x] * dp - D);
          for (std::int64_t e = 0; e < d; ++e) {
            dq[e] += scale * ds * keys[x].k[static_cast<std::size_t>(e)];
            dk[x][static_cast<std::size_t>(e)] += scale * ds * q[e];
          }
        }
      }
      if (grad_o == nullptr) continue;
      for (std::size_t x = 0; x < n; ++x) {
        const Key& key = keys[x];
        if (key.own >= 0) {
          for (std::int64_t e = 0; e < d; ++e) gk[(bh * Nk + key.own) * d + e] += dk[x][static_cast<std::size_t>(e)];
          for (std::int64_t e = 0; e < dv; ++e) gv[(bh * Nk + key.own) * dv + e] += dvv[x][static_cast<std::size_t>(e)];
          continue;
        }
        for (std::int64_t col = 0; col < nb; ++col) {
          const double w = key.w[static_cast<std::size_t>(col)];
          if (key.t >= static_cast<std::int64_t>(kb[static_cast<std::size_t>(col)].size())) continue;
          const std::int64_t j = kb[static_cast<std::size_t>(col)][static_cast<std::size_t>(key.t)];
          double g = 0.0;
          for (std::int64_t e = 0; e < d; ++e) {
            gk[(bh * Nk + j) * d + e] += w * dk[x][static_cast<std::size_t>(e)];
            g += dk[x][static_cast<std::size_t>(e)] * (K(j)[e] - key.k[static_cast<std::size_t>(e)]);
          }
          for (std::int64_t e = 0; e < dv; ++e) {
            gv[(bh * Nk + j) * dv + e] += w * dvv[x][static_cast<std::size_t>(e)];
            g += dvv[x][static_cast<std::size_t>(e)] * (V(j)[e] - key.v[static_cast<std::size_t>(e)]);
          }
          dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)] += w * g;
        }
      }
    }
    if (grad_o == nullptr) return;
    // Back through the normalisations: L' = L - lse(L) over a row (column) gives
    // dL = dL' - exp(L') * sum of dL' over that row (column).
    for (int it = c.iterations - 1; it >= 0; --it) {
      const Mat& after_cols = L[static_cast<std::size_t>(2 * it + 2)];
      for (std::int64_t col = 0; col < nb; ++col) {
        double s = 0.0;
        for (std::int64_t a = 0; a < nb; ++a) s += dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)];
        for (std::int64_t a = 0; a < nb; ++a)
          dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)] -= std::exp(after_cols[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)]) * s;
      }
      const Mat& after_rows = L[static_cast<std::size_t>(2 * it + 1)];
      for (std::int64_t a = 0; a < nb; ++a) {
        double s = 0.0;
        for (std::int64_t col = 0; col < nb; ++col) s += dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)];
        for (std::int64_t col = 0; col < nb; ++col)
          dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)] -= std::exp(after_rows[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)]) * s;
      }
    }
    // dR = dL / temperature, through the block logits.
    for (Vec& rw : dL)
      for (double& x : rw) x /= temp;
    if (W != nullptr) {
      for (std::int64_t a = 0; a < nb; ++a) {
        Vec dsum(static_cast<std::size_t>(d), 0.0);
        for (std::int64_t e = 0; e < d; ++e)
          for (std::int64_t col = 0; col < nb; ++col) {
            const double r = dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)];
            dsum[static_cast<std::size_t>(e)] += W[e * NB + col] * r;
            if (gw != nullptr) gw[e * NB + col] += ksum[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)] * r;
          }
        for (std::int64_t j : kb[static_cast<std::size_t>(a)])
          for (std::int64_t e = 0; e < d; ++e) gk[(bh * Nk + j) * d + e] += dsum[static_cast<std::size_t>(e)];
      }
      return;
    }
    Mat dkm(static_cast<std::size_t>(nb), Vec(static_cast<std::size_t>(d), 0.0));
    for (std::int64_t a = 0; a < nb; ++a) {
      Vec dqm(static_cast<std::size_t>(d), 0.0);
      for (std::int64_t col = 0; col < nb; ++col) {
        const double r = scale * dL[static_cast<std::size_t>(a)][static_cast<std::size_t>(col)];
        for (std::int64_t e = 0; e < d; ++e) {
          dqm[static_cast<std::size_t>(e)] += r * kmean[static_cast<std::size_t>(col)][static_cast<std::size_t>(e)];
          dkm[static_cast<std::size_t>(col)][static_cast<std::size_t>(e)] += r * qmean[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)];
        }
      }
      const auto& qblk = qb[static_cast<std::size_t>(a)];
      if (qblk.empty()) {
        for (std::int64_t e = 0; e < d; ++e) dkm[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)] += dqm[static_cast<std::size_t>(e)];
        continue;
      }
      for (std::int64_t i : qblk)
        for (std::int64_t e = 0; e < d; ++e) gq[(bh * Nq + i) * d + e] += dqm[static_cast<std::size_t>(e)] / double(qblk.size());
    }
    for (std::int64_t a = 0; a < nb; ++a) {
      const auto& blk = kb[static_cast<std::size_t>(a)];
      for (std::int64_t j : blk)
        for (std::int64_t e = 0; e < d; ++e) gk[(bh * Nk + j) * d + e] += dkm[static_cast<std::size_t>(a)][static_cast<std::size_t>(e)] / double(blk.size());
    }
  }
};

void run(const Problem& pr, const DoubleTensors& in, const SinkhornConfig& c, double* o, double* lse,
         const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
  const std::int64_t NB = sinkhorn_blocks(Nk, c.block_size);
  const spec::Dropout drop(pr.p->dropout, pr.p->seed);
  const double* w64 = c.f64 != nullptr ? c.f64->sort_net : nullptr;
  double* gw64 = c.f64 != nullptr ? c.f64->grad_sort_net : nullptr;
  parallel_for(H, pr.threads, [&](std::int64_t h) {
    std::vector<double> W;
    if (c.sort_net != nullptr)
      for (std::int64_t x = 0; x < d * NB; ++x)
        W.push_back(w64 != nullptr ? w64[h * d * NB + x] : double(c.sort_net[h * d * NB + x]));
    std::vector<double> gw(W.size(), 0.0);
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t bh = b * H + h;
      if (o != nullptr) std::fill_n(o + bh * Nq * dv, Nq * dv, 0.0);
      if (lse != nullptr) std::fill_n(lse + bh * Nq, Nq, -std::numeric_limits<double>::infinity());
      if (grad_o != nullptr) {
        std::fill_n(grad_q + bh * Nq * d, Nq * d, 0.0);
        std::fill_n(grad_k + bh * Nk * d, Nk * d, 0.0);
        std::fill_n(grad_v + bh * Nk * dv, Nk * dv, 0.0);
      }
      const Head head{pr, in, c, W.empty() ? nullptr : W.data(), drop, b, h};
      head.run(o, lse, grad_o, grad_q, grad_k, grad_v, gw.empty() ? nullptr : gw.data());
    }
    if (grad_o != nullptr && gw64 != nullptr) std::copy(gw.begin(), gw.end(), gw64 + h * d * NB);
  });
}

}  // namespace

void sinkhorn_forward_f64(const Problem& pr, const DoubleTensors& in, const SinkhornConfig& config, double* o,
                          double* lse) {
  run(pr, in, config, o, lse, nullptr, nullptr, nullptr, nullptr);
}

void sinkhorn_backward_f64(const Problem& pr, const DoubleTensors& in, const SinkhornConfig& config,
                           const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  if (config.grad_sort_net != nullptr)
    fail("SinkhornConfig.grad_sort_net", ptr_str(config.grad_sort_net),
         "written by attention_backward; attention_backward_f64 writes SinkhornConfig.f64->grad_sort_net: must be "
         "nullptr");
  run(pr, in, config, nullptr, nullptr, grad_o, grad_q, grad_k, grad_v);
}

}  // namespace smyrf::detail
