// Training test fixtures shared by test_train.cpp and test_backward.cpp: a problem with
// everything its backward needs, the double oracle on its float inputs, the gradient rule
// (test_train.cpp states it) and the finite-difference check of the double definition.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "smyrf/smyrf.h"
#include "test_util.h"

namespace smyrf::test {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A problem plus everything its backward needs, in the problem's (padded) layouts.
struct TrainCase {
  Problem pr;
  std::vector<float> lse, go, gq, gk, gv;
  TrainCase(std::int64_t B, std::int64_t H, std::int64_t Nq, std::int64_t Nk, std::int64_t d,
            std::int64_t dv, bool padded, std::uint64_t seed)
      : pr(B, H, Nq, Nk, d, dv, padded, seed) {
    lse.assign(static_cast<std::size_t>(B * H * Nq), 0.0f);
    go = pr.o;
    std::mt19937_64 rng(seed + 99);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto& x : go) x = n(rng);
    gq.assign(pr.q.size(), std::numeric_limits<float>::quiet_NaN());
    gk.assign(pr.k.size(), std::numeric_limits<float>::quiet_NaN());
    gv.assign(pr.v.size(), std::numeric_limits<float>::quiet_NaN());
  }
  void forward(const MethodConfig& config, int threads = 0) {
    pr.params.lse = lse.data();
    pr.params.num_threads = threads;
    attention(pr.params, config);
  }
  void backward(const MethodConfig& config, int threads = 0) {
    pr.params.num_threads = threads;
    attention_backward(pr.params, GradientParams{pr.o.data(), lse.data(), go.data(), gq.data(), gk.data(), gv.data()},
                       config);
  }
  // Addressed elements of a tensor in one of the layouts, gathered [B, H, N, width].
  std::vector<float> gather(const std::vector<float>& buf, std::int64_t n, std::int64_t width,
                            std::int64_t bs, std::int64_t hs, std::int64_t rs) const {
    std::vector<float> out;
    for (std::int64_t b = 0; b < pr.B; ++b)
      for (std::int64_t h = 0; h < pr.H; ++h)
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t c = 0; c < width; ++c) out.push_back(buf[static_cast<std::size_t>(b * bs + h * hs + i * rs + c)]);
    return out;
  }
  std::vector<float> q_layout(const std::vector<float>& b) const {
    const auto& p = pr.params;
    return gather(b, pr.Nq, pr.d, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
  }
  std::vector<float> k_layout(const std::vector<float>& b) const {
    const auto& p = pr.params;
    return gather(b, pr.Nk, pr.d, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
  }
  std::vector<float> v_layout(const std::vector<float>& b) const {
    const auto& p = pr.params;
    return gather(b, pr.Nk, pr.dv, p.v_batch_stride, p.v_head_stride, p.v_row_stride);
  }
  std::vector<float> o_layout(const std::vector<float>& b) const {
    const auto& p = pr.params;
    return gather(b, pr.Nq, pr.dv, p.o_batch_stride, p.o_head_stride, p.o_row_stride);
  }
};

inline std::vector<double> to_double(const std::vector<float>& f) { return {f.begin(), f.end()}; }

// The double oracle on the case's float inputs.
struct Oracle {
  std::vector<double> o, lse, gq, gk, gv;
  Oracle(TrainCase& c, const MethodConfig& config) {
    const auto q = to_double(c.q_layout(c.pr.q)), k = to_double(c.k_layout(c.pr.k)),
               v = to_double(c.v_layout(c.pr.v)), go = to_double(c.o_layout(c.go));
    const DoubleTensors in{q.data(), k.data(), v.data()};
    o.resize(go.size());
    lse.resize(c.lse.size());
    attention_f64(c.pr.params, in, config, o.data(), lse.data());
    gq.resize(q.size());
    gk.resize(k.size());
    gv.resize(v.size());
    attention_backward_f64(c.pr.params, in, config, o.data(), lse.data(), go.data(), gq.data(), gk.data(),
                           gv.data());
  }
};

inline double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}
inline double max_abs_err(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(double(a[i]) - b[i]);
    if (std::isnan(e)) return kInf;
    m = std::max(m, e);
  }
  return m;
}

// The float forward's lse against the double definition's: -inf where it is -inf, else within
// 1e-4 relative.
inline void expect_lse_matches(const std::vector<float>& got, const std::vector<double>& want,
                               const std::string& what) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      EXPECT_TRUE(std::isinf(got[i]) && got[i] < 0) << what << " lse " << i;
    } else {
      EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + std::abs(want[i]))) << what << " lse " << i;
    }
  }
}

// A training call that must throw smyrf::Error whose text holds `field`: the double definition
// (f64_call) or the f32 forward with `forward_config` then the backward with `config`.
inline void expect_training_error(TrainCase& tc, const MethodConfig& forward_config, const MethodConfig& config,
                                  const std::string& field, bool f64_call) {
  try {
    if (f64_call) {
      const Oracle ref(tc, config);
    } else {
      tc.forward(forward_config);
      tc.backward(config);
    }
    ADD_FAILURE() << "no error for " << field;
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find(field), std::string::npos) << err.what();
  }
}

// The gradient rule above; returns the three errors / tolerances (each must be <= 1).
// k_read = false: a method that does not read K (Reformer's shared_qk), whose dK is zero.
// extra_logits: a widening of the logit range L the data does not show (an additive key bias's).
inline void expect_gradients_match(TrainCase& c, const MethodConfig& config, std::int64_t n_keys,
                            const char* what, bool k_read = true, double extra_logits = 0.0) {
  c.forward(config);
  c.backward(config);
  const Oracle ref(c, config);
  double go_max = 0, v_max = 0;
  for (float x : c.o_layout(c.go)) go_max = std::max(go_max, double(std::abs(x)));
  for (float x : c.v_layout(c.pr.v)) v_max = std::max(v_max, double(std::abs(x)));
  // tolerance() is 16 eps max|V| (1 + L + log2(n+1)): rescale to the gradient rule.
  const double widen = 16.0 * std::numeric_limits<float>::epsilon() * extra_logits;
  const double base = c.pr.tolerance(n_keys) / (16.0 * std::max(v_max, 1e-30)) * 16.0 + widen;
  struct Item {
    const char* name;
    std::vector<float> got;
    const std::vector<double>* ref;
  };
  const Item items[] = {{"dQ", c.q_layout(c.gq), &ref.gq}, {"dK", c.k_layout(c.gk), &ref.gk}, {"dV", c.v_layout(c.gv), &ref.gv}};
  for (const Item& it : items) {
    const double tol = base * std::max(max_abs(*it.ref), go_max * v_max);
    const double err = max_abs_err(it.got, *it.ref);
    EXPECT_LE(err, tol) << what << " " << it.name << " max|ref| " << max_abs(*it.ref);
    // With one key the softmax is constant: dQ and dK vanish.
    if ((n_keys > 1 || it.name[1] == 'V') && (k_read || it.name[1] != 'K')) {
      EXPECT_GT(max_abs(*it.ref), 0.0) << what << " " << it.name;
    }
    if (std::getenv("SMYRF_TEST_VERBOSE")) std::printf("%s %s err/tol %.3g\n", what, it.name, err / tol);
  }
  // The forward's O and lse against the oracle too.
  EXPECT_LE(max_abs_err(c.o_layout(c.pr.o), ref.o), c.pr.tolerance(n_keys) + widen * v_max) << what << " O";
  expect_lse_matches(c.lse, ref.lse, what);
}

// Central differences of loss() (a function of x) with step h, element by element, against the
// gradient g, each within tol; x is restored.
template <class Loss>
void expect_matches_central_differences(std::vector<double>& x, const std::vector<double>& g, const Loss& loss,
                                        double h, double tol, const std::string& what) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    ASSERT_NEAR(g[i], (up - down) / (2 * h), tol) << what << "[" << i << "]";
  }
}

// After a backward with masks: masked queries have dQ = 0, masked keys dK = dV = 0, and every
// gradient is finite.
inline void expect_masked_tokens_have_zero_gradients(const TrainCase& tc, const std::string& what) {
  const Problem& pr = tc.pr;
  const auto at = [](const std::vector<float>& g, const std::vector<float>& x, const float* row) {
    return g.data() + (row - x.data());
  };
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        if (!pr.query_mask.empty() && !pr.query_mask[static_cast<std::size_t>(b * pr.Nq + i)]) {
          const float* g = at(tc.gq, pr.q, const_cast<Problem&>(pr).q_at(b, h, i));
          for (std::int64_t t = 0; t < pr.d; ++t) ASSERT_EQ(g[t], 0.0f) << what << " dQ";
        }
      for (std::int64_t j = 0; j < pr.Nk; ++j)
        if (!pr.key_mask.empty() && !pr.key_mask[static_cast<std::size_t>(b * pr.Nk + j)]) {
          const float* gk = at(tc.gk, pr.k, const_cast<Problem&>(pr).k_at(b, h, j));
          const float* gv = at(tc.gv, pr.v, const_cast<Problem&>(pr).v_at(b, h, j));
          for (std::int64_t t = 0; t < pr.d; ++t) ASSERT_EQ(gk[t], 0.0f) << what << " dK";
          for (std::int64_t t = 0; t < pr.dv; ++t) ASSERT_EQ(gv[t], 0.0f) << what << " dV";
        }
    }
  for (const auto& buf : {tc.q_layout(tc.gq), tc.k_layout(tc.gk), tc.v_layout(tc.gv)})
    for (float x : buf) ASSERT_TRUE(std::isfinite(x)) << what;
}

// ---------------------------------------------------------------------------------------
// The double oracle against finite differences of the double forward.

struct FdCase {
  std::int64_t B, H, Nq, Nk, d, dv;
  std::vector<double> q, k, v, go;
  std::vector<std::uint8_t> km, qm;
  AttentionParams params;
  FdCase(std::int64_t B_, std::int64_t H_, std::int64_t Nq_, std::int64_t Nk_, std::int64_t d_, std::int64_t dv_,
         std::uint64_t seed)
      : B(B_), H(H_), Nq(Nq_), Nk(Nk_), d(d_), dv(dv_) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n(0.0, 1.0);
    auto fill = [&](std::vector<double>& x, std::int64_t count) {
      x.resize(static_cast<std::size_t>(count));
      for (auto& e : x) e = n(rng);
    };
    fill(q, B * H * Nq * d);
    fill(k, B * H * Nk * d);
    fill(v, B * H * Nk * dv);
    fill(go, B * H * Nq * dv);
    params.batch = B;
    params.heads = H;
    params.nq = Nq;
    params.nk = Nk;
    params.d = d;
    params.dv = dv;
  }
  double loss(const MethodConfig& config) {
    std::vector<double> o(go.size());
    attention_f64(params, {q.data(), k.data(), v.data()}, config, o.data(), nullptr);
    double l = 0;
    for (std::size_t i = 0; i < o.size(); ++i) l += o[i] * go[i];
    return l;
  }
  void check(const MethodConfig& config, const char* what, bool k_read = true) {
    std::vector<double> o(go.size()), lse(static_cast<std::size_t>(B * H * Nq));
    attention_f64(params, {q.data(), k.data(), v.data()}, config, o.data(), lse.data());
    std::vector<double> gq(q.size()), gk(k.size()), gv(v.size());
    attention_backward_f64(params, {q.data(), k.data(), v.data()}, config, o.data(), lse.data(), go.data(),
                           gq.data(), gk.data(), gv.data());
    const double h = 1e-6;
    int checked = 0;
    for (auto [x, g, name] : {std::tuple{&q, &gq, "dQ"}, std::tuple{&k, &gk, "dK"}, std::tuple{&v, &gv, "dV"}}) {
      double gmax = 0;
      for (double e : *g) gmax = std::max(gmax, std::abs(e));
      if (k_read || name[1] != 'K') {
        EXPECT_GT(gmax, 1e-3) << what << " " << name;
      }
      for (std::size_t i = 0; i < x->size(); ++i) {
        const double keep = (*x)[i];
        (*x)[i] = keep + h;
        const double up = loss(config);
        (*x)[i] = keep - h;
        const double down = loss(config);
        (*x)[i] = keep;
        const double fd = (up - down) / (2 * h);
        EXPECT_NEAR((*g)[i], fd, 1e-6 * (1 + gmax)) << what << " " << name << "[" << i << "]";
        ++checked;
      }
    }
    EXPECT_GT(checked, 0);
  }
};

}  // namespace smyrf::test
