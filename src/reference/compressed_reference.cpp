// Compressed attention's oracle, written from the definitions in
// src/methods/compressed/compressed.h in plain loops: its own segment means, projections,
// softmaxes, Nystrom pseudo-inverse iteration and window sets. Shares with the fast path only
// the default Linformer projections of src/spec/draws.h.
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

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;  // rows

constexpr double kNinf = -std::numeric_limits<double>::infinity();

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t t = 0; t < a.size(); ++t) s += a[t] * b[t];
  return s;
}

// Softmax weights of q over the rows of K (scale * q . k); returns the logsumexp (-inf when
// K is empty).
double softmax(const Vec& q, const Mat& K, double scale, Vec* w) {
  w->assign(K.size(), 0.0);
  if (K.empty()) return kNinf;
  double m = kNinf;
  for (std::size_t j = 0; j < K.size(); ++j) {
    (*w)[j] = scale * dot(q, K[j]);
    m = std::max(m, (*w)[j]);
  }
  double s = 0.0;
  for (double& x : *w) {
    x = std::exp(x - m);
    s += x;
  }
  for (double& x : *w) x /= s;
  return m + std::log(s);
}

// sum_j w_j rows_j.
Vec combine(const Vec& w, const Mat& rows, std::size_t width) {
  Vec out(width, 0.0);
  for (std::size_t j = 0; j < rows.size(); ++j)
    for (std::size_t c = 0; c < width; ++c) out[c] += w[j] * rows[j][c];
  return out;
}

// Mean of rows[lo, hi) rounded to f32 (the definition's segment / window mean).
Vec mean_f32(const Mat& rows, std::int64_t lo, std::int64_t hi, std::size_t width) {
  Vec m(width, 0.0);
  for (std::int64_t t = lo; t < hi; ++t)
    for (std::size_t c = 0; c < width; ++c) m[c] += rows[static_cast<std::size_t>(t)][c];
  for (double& x : m) x = static_cast<double>(static_cast<float>(x / static_cast<double>(hi - lo)));
  return m;
}

Mat segment_means(const Mat& rows, std::int64_t rank, std::size_t width) {
  const std::int64_t n = static_cast<std::int64_t>(rows.size());
  const std::int64_t s = std::min(rank, n);
  Mat out;
  for (std::int64_t t = 0; t < s; ++t)
    out.push_back(mean_f32(rows, t * n / s, (t + 1) * n / s, width));
  return out;
}

Mat matmul(const Mat& a, const Mat& b) {
  const std::size_t n = a.size(), k = b.size(), m = b.empty() ? 0 : b[0].size();
  Mat c(n, Vec(m, 0.0));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t t = 0; t < k; ++t)
      for (std::size_t j = 0; j < m; ++j) c[i][j] += a[i][t] * b[t][j];
  return c;
}

// x I - A (A square).
Mat shifted(double x, const Mat& a) {
  Mat r = a;
  for (std::size_t i = 0; i < r.size(); ++i)
    for (std::size_t j = 0; j < r[i].size(); ++j) r[i][j] = (i == j ? x : 0.0) - a[i][j];
  return r;
}

Mat learned_rows(const float* p, std::int64_t h, std::int64_t n, std::int64_t width) {
  Mat out(static_cast<std::size_t>(n), Vec(static_cast<std::size_t>(width)));
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t c = 0; c < width; ++c)
      out[static_cast<std::size_t>(r)][static_cast<std::size_t>(c)] = p[(h * n + r) * width + c];
  return out;
}

template <class T>
Vec read_row(const T* row, std::int64_t w) {
  Vec x(static_cast<std::size_t>(w));
  for (std::int64_t t = 0; t < w; ++t) x[static_cast<std::size_t>(t)] = to_float(row[t]);
  return x;
}

template <class T>
void run(const Problem& pr, const CompressedConfig& c, Output& out) {
  const double scale = pr.scale;
  const std::size_t d = static_cast<std::size_t>(pr.d), dv = static_cast<std::size_t>(pr.dv);
  const std::int64_t rank = c.rank;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::size_t bh = static_cast<std::size_t>(b * pr.H + h);
      std::vector<std::int64_t> qpos, kpos;
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (pr.query_active(b, i)) qpos.push_back(i);
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (pr.key_visible(b, j)) kpos.push_back(j);
      Mat Q, K, V;  // active queries, visible keys and values, in position order
      for (std::int64_t i : qpos) Q.push_back(read_row(pr.q_row<T>(b, h, i), pr.d));
      for (std::int64_t j : kpos) {
        K.push_back(read_row(pr.k_row<T>(b, h, j), pr.d));
        V.push_back(read_row(pr.v_row<T>(b, h, j), pr.dv));
      }
      const std::size_t nq = Q.size(), nk = K.size();
      Mat Ks, Vs, stage;    // synthetic rows; first-stage queries
      bool window = false;  // star, global_memory: plus the real keys within the window
      double amplify = 1.0;
      Vec w;
      switch (c.kind) {
        case Compression::linformer: {
          if (nk == 0) break;
          for (std::int64_t r = 0; r < rank; ++r) {
            Vec kr(d, 0.0), vr(dv, 0.0);
            for (std::size_t t = 0; t < nk; ++t) {
              const std::int64_t j = kpos[t];
              float e_draw, f_draw;  // the default entries (definition piece)
              spec::linformer_projection(pr.p->seed, h, r, j, rank, &e_draw, &f_draw);
              const double e =
                  c.projection_e != nullptr ? c.projection_e[(h * rank + r) * pr.Nk + j] : e_draw;
              const double f =
                  c.projection_f != nullptr ? c.projection_f[(h * rank + r) * pr.Nk + j] : f_draw;
              for (std::size_t x = 0; x < d; ++x) kr[x] += e * K[t][x];
              for (std::size_t x = 0; x < dv; ++x) vr[x] += f * V[t][x];
            }
            Ks.push_back(kr);
            Vs.push_back(vr);
          }
          break;
        }
        case Compression::memory_compressed: {
          const std::int64_t n = static_cast<std::int64_t>(nk);
          for (std::int64_t lo = 0; lo < n; lo += c.stride) {
            const std::int64_t hi = std::min(n, lo + c.stride);
            Ks.push_back(mean_f32(K, lo, hi, d));
            Vs.push_back(mean_f32(V, lo, hi, dv));
          }
          break;
        }
        case Compression::nystrom: {
          if (nk == 0 || nq == 0) break;
          const Mat Qt = segment_means(Q, rank, d), Kt = segment_means(K, rank, d);
          const std::size_t mq = Qt.size(), mk = Kt.size();
          Mat A2(mq), A3(mq);
          for (std::size_t a = 0; a < mq; ++a) {
            softmax(Qt[a], Kt, scale, &A2[a]);
            softmax(Qt[a], K, scale, &A3[a]);
          }
          double max_row = 0.0, max_col = 0.0;
          for (std::size_t i = 0; i < mq; ++i) {
            double s = 0.0;
            for (std::size_t j = 0; j < mk; ++j) s += std::abs(A2[i][j]);
            max_row = std::max(max_row, s);
          }
          for (std::size_t j = 0; j < mk; ++j) {
            double s = 0.0;
            for (std::size_t i = 0; i < mq; ++i) s += std::abs(A2[i][j]);
            max_col = std::max(max_col, s);
          }
          Mat Z(mk, Vec(mq));
          for (std::size_t i = 0; i < mk; ++i)
            for (std::size_t j = 0; j < mq; ++j) Z[i][j] = A2[j][i] / (max_row * max_col);
          for (int it = 0; it < c.pinv_iterations; ++it) {
            const Mat AZ = matmul(A2, Z);
            const Mat inner = shifted(15.0, matmul(AZ, shifted(7.0, AZ)));
            Mat next = matmul(Z, shifted(13.0, matmul(AZ, inner)));
            for (Vec& row : next)
              for (double& x : row) x *= 0.25;
            Z = next;
          }
          const Mat W = matmul(Z, matmul(A3, V));
          for (const Vec& row : Z) {
            double s = 0.0;
            for (double x : row) s += std::abs(x);
            amplify = std::max(amplify, s);
          }
          Ks = Kt;
          Vs = W;
          stage = Qt;
          break;
        }
        case Compression::global_memory: {
          window = true;
          if (c.memory_k != nullptr) {
            Ks = learned_rows(c.memory_k, h, rank, pr.d);
            Vs = learned_rows(c.memory_v, h, rank, pr.dv);
          } else {
            Ks = segment_means(K, rank, d);
            Vs = segment_means(V, rank, dv);
          }
          break;
        }
        case Compression::star: {
          window = true;
          if (nk == 0 || nq == 0) break;
          const Vec qr = mean_f32(Q, 0, static_cast<std::int64_t>(nq), d);
          softmax(qr, K, scale, &w);
          Ks.push_back(combine(w, K, d));
          Vs.push_back(combine(w, V, dv));
          stage.push_back(qr);
          break;
        }
        case Compression::induced_points: {
          if (nk == 0) break;
          const Mat I = c.inducing != nullptr ? learned_rows(c.inducing, h, rank, pr.d)
                                              : segment_means(K, rank, d);
          for (const Vec& row : I) {
            softmax(row, K, scale, &w);
            Ks.push_back(combine(w, K, d));
            Vs.push_back(combine(w, V, dv));
          }
          stage = I;
          break;
        }
      }
      out.keys[bh] = {};
      out.values[bh] = {};
      for (const Vec& r : Ks) out.keys[bh].insert(out.keys[bh].end(), r.begin(), r.end());
      for (const Vec& r : Vs) out.values[bh].insert(out.values[bh].end(), r.begin(), r.end());
      for (const Vec& r : stage)
        out.stage_queries[bh].insert(out.stage_queries[bh].end(), r.begin(), r.end());
      out.amplify[bh] = amplify;

      // Each active query: softmax over its window keys (if any) and the synthetic rows.
      for (std::size_t t = 0; t < nq; ++t) {
        const std::int64_t i = qpos[t];
        Mat keys = Ks, values = Vs;
        if (window) {
          const std::int64_t p = pr.key_position(i);
          for (std::size_t u = 0; u < nk; ++u) {
            const std::int64_t j = kpos[u];
            if (std::abs(p - j) > c.window) continue;
            if (pr.p->causal && j > p) continue;
            keys.push_back(K[u]);
            values.push_back(V[u]);
          }
        }
        const double l = softmax(Q[t], keys, scale, &w);
        const Vec o = combine(w, values, dv);
        const std::size_t row = bh * static_cast<std::size_t>(pr.Nq) + static_cast<std::size_t>(i);
        for (std::size_t x = 0; x < dv; ++x) out.o[row * dv + x] = keys.empty() ? 0.0 : o[x];
        out.lse[row] = l;
        if (c.kind == Compression::nystrom && nk > 0)
          out.lse[row] = std::numeric_limits<double>::quiet_NaN();
      }
    }
}

}  // namespace

Output attention(const AttentionParams& params, const CompressedConfig& config) {
  const Problem pr = detail::reference_problem(params, config);
  Output out = detail::reference_output(pr);
  const std::size_t BH = static_cast<std::size_t>(pr.B * pr.H);
  out.keys.resize(BH);
  out.values.resize(BH);
  out.stage_queries.resize(BH);
  out.amplify.assign(BH, 1.0);
  detail::with_input_type(pr.dtype, [&](auto tag) { run<decltype(tag)>(pr, config, out); });
  return out;
}

}  // namespace smyrf::reference
