// Feature-map ("linear") attention's oracle, written from the definitions in
// methods/linear/linear.h: features per row, the kernel a_ij = phi_q . phi_k summed directly
// over each query's visible keys (causal: j <= p), the gated RFA recurrence step by step,
// efficient attention as rho_q^T (rho_k^T V). Shares only the random-feature draw
// (src/spec/draws.h) with the fast path.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "reference/common.h"
#include "reference/reference.h"
#include "spec/draws.h"

namespace smyrf::reference {

namespace {

double element(const void* base, DType dtype, std::int64_t at) {
  if (dtype == DType::f32) return static_cast<const float*>(base)[at];
  const std::uint32_t bits = static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(base)[at])
                             << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<double> row(const void* base, DType dtype, std::int64_t offset, std::int64_t n) {
  std::vector<double> x(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < n; ++t)
    x[static_cast<std::size_t>(t)] = element(base, dtype, offset + t);
  return x;
}

std::vector<double> unit(std::vector<double> x) {
  double n2 = 0;
  for (double v : x) n2 += v * v;
  const double n = std::sqrt(n2);
  for (double& v : x) v = n > 0 ? v / n : 0.0;
  return x;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t t = 0; t < a.size(); ++t) s += a[t] * b[t];
  return s;
}

// Fills out.o, cond, cond_abs and saw from p's inputs (any strides, f32 or bf16) and masks.
void run(const AttentionParams& p, const LinearConfig& config, Output& out) {
  const std::int64_t B = p.batch, H = p.heads, Nq = p.nq, Nk = p.nk, d = p.d, dv = p.dv;
  // The scale as the API edge resolves it: the default 1/sqrt(d) rounded to float.
  const double scale =
      p.scale ? double(*p.scale) : double(static_cast<float>(1.0 / std::sqrt(double(d))));
  const FeatureMap map = config.map;
  const std::int64_t mf = config.n_features;
  const std::int64_t dirs = map == FeatureMap::favor_plus ? mf : mf / 2;
  out.cond.assign(static_cast<std::size_t>(B * H * Nq), 0.0);
  out.cond_abs.assign(static_cast<std::size_t>(B * H * Nq), 0.0);
  out.saw.assign(static_cast<std::size_t>(B * H * Nq), 0);
  auto key_visible = [&](std::int64_t b, std::int64_t j) {
    return p.key_mask == nullptr || p.key_mask[b * p.key_mask_batch_stride + j] != 0;
  };
  auto query_active = [&](std::int64_t b, std::int64_t i) {
    return p.query_mask == nullptr || p.query_mask[b * p.query_mask_batch_stride + i] != 0;
  };
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      auto qrow = [&](std::int64_t i) {
        return row(p.q, p.dtype, b * p.q_batch_stride + h * p.q_head_stride + i * p.q_row_stride,
                   d);
      };
      auto krow = [&](std::int64_t j) {
        return row(p.k, p.dtype, b * p.k_batch_stride + h * p.k_head_stride + j * p.k_row_stride,
                   d);
      };
      auto vrow = [&](std::int64_t j) {
        return row(p.v, p.dtype, b * p.v_batch_stride + h * p.v_head_stride + j * p.v_row_stride,
                   dv);
      };
      // The directions w_r (rows of W), rfa: divided by sigma.
      std::vector<std::vector<double>> w;
      if (map == FeatureMap::favor_plus || map == FeatureMap::favor || map == FeatureMap::rfa) {
        const std::vector<double> flat =
            spec::linear_random_features(p.seed, h, dirs, d, config.orthogonal);
        for (std::int64_t r = 0; r < dirs; ++r) {
          std::vector<double> wr(flat.begin() + r * d, flat.begin() + (r + 1) * d);
          if (map == FeatureMap::rfa)
            for (double& x : wr) x /= double(config.rfa_sigma);
          w.push_back(wr);
        }
      }
      std::vector<std::int64_t> keys;
      for (std::int64_t j = 0; j < Nk; ++j)
        if (key_visible(b, j)) keys.push_back(j);
      const double sq = std::sqrt(std::abs(scale));
      auto xq = [&](std::vector<double> x) {
        for (double& v : x) v *= (scale < 0 ? -sq : sq);
        return x;
      };
      auto xk = [&](std::vector<double> x) {
        for (double& v : x) v *= sq;
        return x;
      };
      // Key stabiliser c (favor_plus, favor) and per-feature key softmax terms (efficient).
      double ck = -std::numeric_limits<double>::infinity();
      std::vector<double> kmax(static_cast<std::size_t>(d),
                               -std::numeric_limits<double>::infinity());
      std::vector<double> ksum(static_cast<std::size_t>(d), 0.0);
      for (std::int64_t j : keys) {
        const std::vector<double> x = xk(krow(j));
        if (map == FeatureMap::favor_plus)
          for (std::int64_t r = 0; r < dirs; ++r) ck = std::max(ck, dot(w[r], x) - dot(x, x) / 2);
        if (map == FeatureMap::favor) ck = std::max(ck, dot(x, x) / 2);
        if (map == FeatureMap::efficient) {
          const std::vector<double> k = krow(j);
          for (std::int64_t f = 0; f < d; ++f) kmax[f] = std::max(kmax[f], k[f]);
        }
      }
      if (map == FeatureMap::efficient)
        for (std::int64_t j : keys) {
          const std::vector<double> k = krow(j);
          for (std::int64_t f = 0; f < d; ++f) ksum[f] += std::exp(k[f] - kmax[f]);
        }
      auto phi = [&](const std::vector<double>& raw, bool query) {
        std::vector<double> f;
        switch (map) {
          case FeatureMap::elu:
            for (double x : raw) f.push_back(x > 0 ? x + 1 : std::exp(x));
            break;
          case FeatureMap::favor_plus: {
            const std::vector<double> x = query ? xq(raw) : xk(raw);
            std::vector<double> u;
            for (std::int64_t r = 0; r < dirs; ++r) u.push_back(dot(w[r], x) - dot(x, x) / 2);
            const double c = query ? *std::max_element(u.begin(), u.end()) : ck;
            for (double ur : u) f.push_back(std::exp(ur - c) / std::sqrt(double(dirs)));
            break;
          }
          case FeatureMap::favor: {
            const std::vector<double> x = query ? xq(raw) : xk(raw);
            const double c = query ? dot(x, x) / 2 : ck;
            const double e = std::exp(dot(x, x) / 2 - c) / std::sqrt(double(dirs));
            for (std::int64_t r = 0; r < dirs; ++r) f.push_back(e * std::sin(dot(w[r], x)));
            for (std::int64_t r = 0; r < dirs; ++r) f.push_back(e * std::cos(dot(w[r], x)));
            break;
          }
          case FeatureMap::rfa: {
            const std::vector<double> x = unit(raw);
            for (std::int64_t r = 0; r < dirs; ++r)
              f.push_back(std::sin(dot(w[r], x)) / std::sqrt(double(dirs)));
            for (std::int64_t r = 0; r < dirs; ++r)
              f.push_back(std::cos(dot(w[r], x)) / std::sqrt(double(dirs)));
            break;
          }
          case FeatureMap::dpfp: {
            std::vector<double> r(static_cast<std::size_t>(2 * d));
            for (std::int64_t t = 0; t < d; ++t) {
              r[t] = std::max(raw[t], 0.0);
              r[d + t] = std::max(-raw[t], 0.0);
            }
            for (int nu = 1; nu <= config.dpfp_nu; ++nu)
              for (std::int64_t i = 0; i < 2 * d; ++i) f.push_back(r[i] * r[(i + nu) % (2 * d)]);
            break;
          }
          case FeatureMap::efficient:
            if (query) {
              const double mx = *std::max_element(raw.begin(), raw.end());
              double s = 0;
              for (double x : raw) s += std::exp(x - mx);
              for (double x : raw) f.push_back(std::exp(x - mx) / s);
            } else {
              for (std::int64_t t = 0; t < d; ++t)
                f.push_back(std::exp(raw[t] - kmax[t]) / ksum[t]);
            }
            break;
          case FeatureMap::l2: {
            f.push_back(1.0);
            for (double x : unit(raw)) f.push_back(x);
            break;
          }
        }
        return f;
      };
      std::vector<std::vector<double>> kf, vv;
      for (std::int64_t j : keys) {
        kf.push_back(phi(krow(j), false));
        vv.push_back(vrow(j));
      }
      const float* g = config.gates != nullptr ? config.gates + (b * H + h) * Nk : nullptr;
      // sum_j |phi_k(k_j)_r| over the visible keys (for cond_abs).
      std::vector<double> kabs(kf.empty() ? 0 : kf[0].size(), 0.0);
      for (const auto& f : kf)
        for (std::size_t r = 0; r < f.size(); ++r) kabs[r] += std::abs(f[r]);
      auto abs_mass = [&](const std::vector<double>& qf) {
        double a = 0;
        for (std::size_t r = 0; r < kabs.size(); ++r) a += std::abs(qf[r]) * kabs[r];
        return a;
      };
      for (std::int64_t i = 0; i < Nq; ++i) {
        const std::size_t at = static_cast<std::size_t>((b * H + h) * Nq + i);
        if (!query_active(b, i)) continue;
        const std::int64_t pos = i + Nk - Nq;
        const std::vector<double> qf = phi(qrow(i), true);
        if (map == FeatureMap::efficient) {
          if (keys.empty()) continue;
          // O = rho_q^T (rho_k^T V), no division.
          for (std::int64_t c = 0; c < dv; ++c) {
            double o = 0;
            for (std::int64_t f = 0; f < d; ++f) {
              double m = 0;
              for (std::size_t jj = 0; jj < keys.size(); ++jj) m += kf[jj][f] * vv[jj][c];
              o += qf[f] * m;
            }
            out.o[at * dv + c] = o;
          }
          out.cond[at] = 1.0;
          out.cond_abs[at] = abs_mass(qf);
          out.saw[at] = 1;
          continue;
        }
        std::vector<double> num(static_cast<std::size_t>(dv), 0.0);
        double den = 0, abs_sum = 0;
        bool saw = false;
        for (std::size_t jj = 0; jj < keys.size(); ++jj) {
          const std::int64_t j = keys[jj];
          if (p.causal && j > pos) continue;
          saw = true;
          double a = dot(qf, kf[jj]);
          if (g != nullptr) {  // gated weight (1 - g_j) prod over later visible keys t <= pos
            a *= 1.0 - double(g[j]);
            for (std::size_t tt = jj + 1; tt < keys.size() && keys[tt] <= pos; ++tt)
              a *= double(g[keys[tt]]);
          }
          den += a;
          abs_sum += std::abs(a);
          for (std::int64_t c = 0; c < dv; ++c) num[c] += a * vv[jj][c];
        }
        out.saw[at] = saw ? 1 : 0;
        if (!saw || den == 0) continue;
        for (std::int64_t c = 0; c < dv; ++c) out.o[at * dv + c] = num[c] / den;
        out.cond[at] = abs_sum / std::abs(den);
        if (!p.causal) out.cond_abs[at] = abs_mass(qf) / std::abs(den);
      }
    }
}

}  // namespace

Output attention(const AttentionParams& params, const LinearConfig& config) {
  const detail::Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  run(params, config, out);
  // No softmax: NaN for every query that sees a key.
  for (std::size_t at = 0; at < out.lse.size(); ++at)
    if (out.saw[at]) out.lse[at] = std::numeric_limits<double>::quiet_NaN();
  return out;
}

}  // namespace smyrf::reference
