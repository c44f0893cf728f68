// Compressed attention's double-precision definition and its exact gradient (every kind but
// nystrom; contract: smyrf/methods/compressed.h, "Backward"). Plain loops per (batch, head):
// the synthesised rows in double (no f32 roundings: a rounding has no derivative), each query's
// softmax over its synthetic rows and window keys, then the chain back through the synthesis.
// Parallel over heads, each head's batch elements in order, so the learned parts' gradients
// (sums over the batch) are added in batch order whatever the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"
#include "methods/compressed/compressed.h"
#include "spec/draws.h"

namespace smyrf::detail {
namespace {

constexpr double kNinf = -std::numeric_limits<double>::infinity();

using Rows = std::vector<const double*>;
using GradRows = std::vector<double*>;

double dot(const double* a, const double* b, std::int64_t n) {
  double s = 0.0;
  for (std::int64_t t = 0; t < n; ++t) s += a[t] * b[t];
  return s;
}

// Softmax weights w of scale q . keys_j; returns the logsumexp (-inf without keys).
double softmax(const double* q, const Rows& keys, std::int64_t d, double scale, std::vector<double>& w) {
  w.assign(keys.size(), 0.0);
  if (keys.empty()) return kNinf;
  double m = kNinf;
  for (std::size_t j = 0; j < keys.size(); ++j) {
    w[j] = scale * dot(q, keys[j], d);
    m = std::max(m, w[j]);
  }
  double s = 0.0;
  for (double& x : w) {
    x = std::exp(x - m);
    s += x;
  }
  for (double& x : w) x /= s;
  return m + std::log(s);
}

// out = sum_j w_j values_j.
void combine(const std::vector<double>& w, const Rows& values, std::int64_t width, double* out) {
  std::fill_n(out, width, 0.0);
  for (std::size_t j = 0; j < values.size(); ++j)
    for (std::int64_t c = 0; c < width; ++c) out[c] += w[j] * values[j][c];
}

// The softmax backward of one query row given its weights w (P) and output o:
// D = dO . O, dS_j = P_j (dO . V_j - D); dV_j += P_j dO, dq += scale dS_j K_j,
// dK_j += scale dS_j q. dq may be nullptr.
void softmax_backward(const double* q, const Rows& keys, const Rows& values, const std::vector<double>& w,
                      const double* o, const double* go, std::int64_t d, std::int64_t dv, double scale,
                      double* dq, const GradRows& dkeys, const GradRows& dvalues) {
  const double D = dot(go, o, dv);
  for (std::size_t j = 0; j < keys.size(); ++j) {
    const double ds = w[j] * (dot(go, values[j], dv) - D);
    for (std::int64_t c = 0; c < dv; ++c) dvalues[j][c] += w[j] * go[c];
    if (dq != nullptr)
      for (std::int64_t c = 0; c < d; ++c) dq[c] += scale * ds * keys[j][c];
    for (std::int64_t c = 0; c < d; ++c) dkeys[j][c] += scale * ds * q[c];
  }
}

// Mean of rows[lo, hi) into out (double, no rounding).
void mean(const Rows& rows, std::int64_t lo, std::int64_t hi, std::int64_t width, double* out) {
  std::fill_n(out, width, 0.0);
  for (std::int64_t t = lo; t < hi; ++t)
    for (std::int64_t c = 0; c < width; ++c) out[c] += rows[static_cast<std::size_t>(t)][c];
  for (std::int64_t c = 0; c < width; ++c) out[c] /= static_cast<double>(hi - lo);
}

// dRows[lo, hi) += g / (hi - lo): the gradient of a mean.
void mean_backward(const GradRows& drows, std::int64_t lo, std::int64_t hi, std::int64_t width, const double* g) {
  const double n = static_cast<double>(hi - lo);
  for (std::int64_t t = lo; t < hi; ++t)
    for (std::int64_t c = 0; c < width; ++c) drows[static_cast<std::size_t>(t)][c] += g[c] / n;
}

// A learned part [H, rank, width]: the double values when given, else the floats widened.
struct Learned {
  const float* f = nullptr;
  const double* d = nullptr;
  double at(std::int64_t i) const { return d != nullptr ? d[i] : static_cast<double>(f[i]); }
};

// The double-precision computation; grad_o == nullptr: forward only (o, lse). Otherwise
// the gradients (gq, gk, gv and the learned parts' f64->grad_*) and not o / lse.
void run(const Problem& pr, const DoubleTensors& in, const CompressedConfig& c, double* o_out, double* lse_out,
         const double* grad_o, double* gq, double* gk, double* gv) {
  const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
  const double scale = pr.scale;
  const bool backward = grad_o != nullptr;
  const CompressedDoubleParts none;
  const CompressedDoubleParts& f64 = c.f64 != nullptr ? *c.f64 : none;
  const Learned E{c.projection_e, f64.projection_e}, F{c.projection_f, f64.projection_f};
  const Learned I{c.inducing, f64.inducing}, MK{c.memory_k, f64.memory_k}, MV{c.memory_v, f64.memory_v};
  const std::int64_t rank = c.rank;
  const bool windowed = c.kind == Compression::star || c.kind == Compression::global_memory;
  if (backward) {
    std::fill_n(gq, B * H * Nq * d, 0.0);
    std::fill_n(gk, B * H * Nk * d, 0.0);
    std::fill_n(gv, B * H * Nk * dv, 0.0);
  } else {
    std::fill_n(o_out, B * H * Nq * dv, 0.0);
    if (lse_out != nullptr) std::fill_n(lse_out, B * H * Nq, kNinf);
  }
  parallel_for(H, pr.threads, [&](std::int64_t h) {
    // The learned parts' gradients of this head, overwritten.
    auto zero = [&](double* g, std::int64_t width) {
      if (backward && g != nullptr) std::fill_n(g + h * rank * width, rank * width, 0.0);
    };
    zero(f64.grad_projection_e, Nk);
    zero(f64.grad_projection_f, Nk);
    zero(f64.grad_inducing, d);
    zero(f64.grad_memory_k, d);
    zero(f64.grad_memory_v, dv);
    std::vector<double> w, wi, o(static_cast<std::size_t>(dv)), ks, vs, iq, ilse, dks, dvs, diq;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t bh = b * H + h;
      std::vector<std::int64_t> qpos, kpos;
      for (std::int64_t i = 0; i < Nq; ++i)
        if (pr.query_active(b, i)) qpos.push_back(i);
      for (std::int64_t j = 0; j < Nk; ++j)
        if (pr.key_visible(b, j)) kpos.push_back(j);
      const std::int64_t nq = static_cast<std::int64_t>(qpos.size()), nk = static_cast<std::int64_t>(kpos.size());
      Rows K, V;
      GradRows dK, dV;
      for (std::int64_t j : kpos) {
        K.push_back(in.k + (bh * Nk + j) * d);
        V.push_back(in.v + (bh * Nk + j) * dv);
        if (backward) {
          dK.push_back(gk + (bh * Nk + j) * d);
          dV.push_back(gv + (bh * Nk + j) * dv);
        }
      }
      // ---- Synthesis: M rows ks [M, d], vs [M, dv]; star and induced_points keep their
      // inner queries iq [M, d] and the inner softmax's lse.
      std::int64_t M = 0;
      switch (c.kind) {
        case Compression::linformer:
          M = nk > 0 ? rank : 0;
          ks.assign(static_cast<std::size_t>(M * d), 0.0);
          vs.assign(static_cast<std::size_t>(M * dv), 0.0);
          for (std::int64_t r = 0; r < M; ++r)
            for (std::int64_t t = 0; t < nk; ++t) {
              const std::int64_t j = kpos[static_cast<std::size_t>(t)], at = (h * rank + r) * Nk + j;
              float e_draw = 0.0f, f_draw = 0.0f;
              if (E.f == nullptr || F.f == nullptr) spec::linformer_projection(pr.p->seed, h, r, j, rank, &e_draw, &f_draw);
              const double e = E.f != nullptr ? E.at(at) : e_draw, f = F.f != nullptr ? F.at(at) : f_draw;
              for (std::int64_t x = 0; x < d; ++x) ks[static_cast<std::size_t>(r * d + x)] += e * K[static_cast<std::size_t>(t)][x];
              for (std::int64_t x = 0; x < dv; ++x) vs[static_cast<std::size_t>(r * dv + x)] += f * V[static_cast<std::size_t>(t)][x];
            }
          break;
        case Compression::memory_compressed:
          M = (nk + c.stride - 1) / c.stride;
          ks.assign(static_cast<std::size_t>(M * d), 0.0);
          vs.assign(static_cast<std::size_t>(M * dv), 0.0);
          for (std::int64_t t = 0; t < M; ++t) {
            const std::int64_t lo = t * c.stride, hi = std::min(nk, lo + c.stride);
            mean(K, lo, hi, d, ks.data() + t * d);
            mean(V, lo, hi, dv, vs.data() + t * dv);
          }
          break;
        case Compression::global_memory:
          if (MK.f != nullptr) {
            M = rank;
            ks.resize(static_cast<std::size_t>(M * d));
            vs.resize(static_cast<std::size_t>(M * dv));
            for (std::int64_t x = 0; x < M * d; ++x) ks[static_cast<std::size_t>(x)] = MK.at(h * rank * d + x);
            for (std::int64_t x = 0; x < M * dv; ++x) vs[static_cast<std::size_t>(x)] = MV.at(h * rank * dv + x);
          } else {
            M = segment_count(rank, nk);
            ks.assign(static_cast<std::size_t>(M * d), 0.0);
            vs.assign(static_cast<std::size_t>(M * dv), 0.0);
            for (std::int64_t t = 0; t < M; ++t) {
              mean(K, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, ks.data() + t * d);
              mean(V, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), dv, vs.data() + t * dv);
            }
          }
          break;
        case Compression::star:
        case Compression::induced_points: {
          const bool star = c.kind == Compression::star;
          if (star) {
            M = nq > 0 && nk > 0 ? 1 : 0;
            iq.assign(static_cast<std::size_t>(M * d), 0.0);
            if (M > 0) {
              Rows Q;
              for (std::int64_t i : qpos) Q.push_back(in.q + (bh * Nq + i) * d);
              mean(Q, 0, nq, d, iq.data());
            }
          } else if (I.f != nullptr) {
            M = nk > 0 ? rank : 0;
            iq.resize(static_cast<std::size_t>(M * d));
            for (std::int64_t x = 0; x < M * d; ++x) iq[static_cast<std::size_t>(x)] = I.at(h * rank * d + x);
          } else {
            M = segment_count(rank, nk);
            iq.assign(static_cast<std::size_t>(M * d), 0.0);
            for (std::int64_t t = 0; t < M; ++t)
              mean(K, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, iq.data() + t * d);
          }
          ks.assign(static_cast<std::size_t>(M * d), 0.0);
          vs.assign(static_cast<std::size_t>(M * dv), 0.0);
          ilse.assign(static_cast<std::size_t>(M), kNinf);
          for (std::int64_t r = 0; r < M; ++r) {
            ilse[static_cast<std::size_t>(r)] = softmax(iq.data() + r * d, K, d, scale, wi);
            combine(wi, K, d, ks.data() + r * d);
            combine(wi, V, dv, vs.data() + r * dv);
          }
          break;
        }
        case Compression::nystrom:
          break;  // refused by the capabilities
      }
      dks.assign(static_cast<std::size_t>(M * d), 0.0);
      dvs.assign(static_cast<std::size_t>(M * dv), 0.0);
      // ---- Attention: each active query over the M rows and (star, global_memory) its window.
      for (std::int64_t i : qpos) {
        Rows keys, values;
        GradRows dkeys, dvalues;
        for (std::int64_t r = 0; r < M; ++r) {
          keys.push_back(ks.data() + r * d);
          values.push_back(vs.data() + r * dv);
          dkeys.push_back(dks.data() + r * d);
          dvalues.push_back(dvs.data() + r * dv);
        }
        if (windowed) {
          const std::int64_t p = pr.key_position(i);
          for (std::int64_t t = 0; t < nk; ++t) {
            const std::int64_t j = kpos[static_cast<std::size_t>(t)];
            if (std::abs(p - j) > c.window || (pr.p->causal && j > p)) continue;
            keys.push_back(K[static_cast<std::size_t>(t)]);
            values.push_back(V[static_cast<std::size_t>(t)]);
            if (backward) {
              dkeys.push_back(dK[static_cast<std::size_t>(t)]);
              dvalues.push_back(dV[static_cast<std::size_t>(t)]);
            }
          }
        }
        if (keys.empty()) continue;  // O = 0, lse = -inf, no gradient
        const double* q = in.q + (bh * Nq + i) * d;
        const double l = softmax(q, keys, d, scale, w);
        combine(w, values, dv, o.data());
        if (!backward) {
          std::copy(o.begin(), o.end(), o_out + (bh * Nq + i) * dv);
          if (lse_out != nullptr) lse_out[bh * Nq + i] = l;
          continue;
        }
        softmax_backward(q, keys, values, w, o.data(), grad_o + (bh * Nq + i) * dv, d, dv, scale,
                         gq + (bh * Nq + i) * d, dkeys, dvalues);
      }
      if (!backward || M == 0) continue;
      // ---- The chain through the synthesis.
      switch (c.kind) {
        case Compression::linformer:
          for (std::int64_t r = 0; r < M; ++r)
            for (std::int64_t t = 0; t < nk; ++t) {
              const std::int64_t j = kpos[static_cast<std::size_t>(t)], at = (h * rank + r) * Nk + j;
              float e_draw = 0.0f, f_draw = 0.0f;
              if (E.f == nullptr || F.f == nullptr) spec::linformer_projection(pr.p->seed, h, r, j, rank, &e_draw, &f_draw);
              const double e = E.f != nullptr ? E.at(at) : e_draw, f = F.f != nullptr ? F.at(at) : f_draw;
              const double* dkr = dks.data() + r * d;
              const double* dvr = dvs.data() + r * dv;
              for (std::int64_t x = 0; x < d; ++x) dK[static_cast<std::size_t>(t)][x] += e * dkr[x];
              for (std::int64_t x = 0; x < dv; ++x) dV[static_cast<std::size_t>(t)][x] += f * dvr[x];
              if (f64.grad_projection_e != nullptr) f64.grad_projection_e[at] += dot(dkr, K[static_cast<std::size_t>(t)], d);
              if (f64.grad_projection_f != nullptr) f64.grad_projection_f[at] += dot(dvr, V[static_cast<std::size_t>(t)], dv);
            }
          break;
        case Compression::memory_compressed:
          for (std::int64_t t = 0; t < M; ++t) {
            const std::int64_t lo = t * c.stride, hi = std::min(nk, lo + c.stride);
            mean_backward(dK, lo, hi, d, dks.data() + t * d);
            mean_backward(dV, lo, hi, dv, dvs.data() + t * dv);
          }
          break;
        case Compression::global_memory:
          if (MK.f != nullptr) {
            if (f64.grad_memory_k != nullptr)
              for (std::int64_t x = 0; x < M * d; ++x) f64.grad_memory_k[h * rank * d + x] += dks[static_cast<std::size_t>(x)];
            if (f64.grad_memory_v != nullptr)
              for (std::int64_t x = 0; x < M * dv; ++x) f64.grad_memory_v[h * rank * dv + x] += dvs[static_cast<std::size_t>(x)];
          } else {
            for (std::int64_t t = 0; t < M; ++t) {
              mean_backward(dK, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, dks.data() + t * d);
              mean_backward(dV, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), dv, dvs.data() + t * dv);
            }
          }
          break;
        case Compression::star:
        case Compression::induced_points: {
          // The inner softmax (queries iq, keys K) with values K (rows ks) and V (rows vs).
          diq.assign(static_cast<std::size_t>(M * d), 0.0);
          for (std::int64_t r = 0; r < M; ++r) {
            const double* qr = iq.data() + r * d;
            softmax(qr, K, d, scale, wi);
            softmax_backward(qr, K, K, wi, ks.data() + r * d, dks.data() + r * d, d, d, scale, diq.data() + r * d, dK, dK);
            softmax_backward(qr, K, V, wi, vs.data() + r * dv, dvs.data() + r * dv, d, dv, scale, diq.data() + r * d, dK, dV);
          }
          if (c.kind == Compression::star) {
            for (std::int64_t i : qpos)
              for (std::int64_t x = 0; x < d; ++x) gq[(bh * Nq + i) * d + x] += diq[static_cast<std::size_t>(x)] / static_cast<double>(nq);
          } else if (I.f != nullptr) {
            if (f64.grad_inducing != nullptr)
              for (std::int64_t x = 0; x < M * d; ++x) f64.grad_inducing[h * rank * d + x] += diq[static_cast<std::size_t>(x)];
          } else {
            for (std::int64_t t = 0; t < M; ++t)
              mean_backward(dK, segment_begin(t, nk, M), segment_begin(t + 1, nk, M), d, diq.data() + t * d);
          }
          break;
        }
        case Compression::nystrom:
          break;
      }
    }
  });
}

}  // namespace

void compressed_forward_f64(const Problem& pr, const DoubleTensors& in, const CompressedConfig& config, double* o,
                            double* lse) {
  run(pr, in, config, o, lse, nullptr, nullptr, nullptr, nullptr);
}

void compressed_backward_f64(const Problem& pr, const DoubleTensors& in, const CompressedConfig& config,
                             const double* grad_o, double* grad_q, double* grad_k, double* grad_v) {
  // The float gradients belong to attention_backward; this call writes f64->grad_*.
  const std::pair<const char*, const float*> float_grads[] = {{"grad_projection_e", config.grad_projection_e},
                                                              {"grad_projection_f", config.grad_projection_f},
                                                              {"grad_inducing", config.grad_inducing},
                                                              {"grad_memory_k", config.grad_memory_k},
                                                              {"grad_memory_v", config.grad_memory_v}};
  for (const auto& [name, p] : float_grads)
    if (p != nullptr)
      fail(std::string("CompressedConfig.") + name, ptr_str(p),
           std::string("written by attention_backward; attention_backward_f64 writes CompressedConfig.f64->") + name +
               ": must be nullptr");
  run(pr, in, config, nullptr, nullptr, grad_o, grad_q, grad_k, grad_v);
}

}  // namespace smyrf::detail
