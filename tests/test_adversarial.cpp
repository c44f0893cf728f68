// Adversarial numerics for every method config of the API (method_cases.h, plus the configs of
// adversarial_cases): degenerate inputs (zero queries or keys, identical keys, tiny and huge
// norms, scale 0, one key, one query, masks that empty whole rows, batch elements, clusters and
// blocks) and the input range check of params.check_finite (row norms and |scale| R^2 up to
// 2^32, |v| up to 2^32). Every call, whatever the case, must give finite output, exact zeros
// (lse -inf) in rows that see no key, and leave the padding of the padded output layout
// untouched; where the method has a double-precision oracle (src/reference) the output must
// match it within the tolerance derived at expect_matches_oracle, and where the answer is known
// independently (uniform weights, a single visible key, identical value rows) it must match that
// too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "method_cases.h"
#include "methods/linear/linear.h"
#include "methods/linear/linear_internal.h"
#include "methods/synthesizer/synthesizer.h"
#include "reference/reference.h"
#include "spec/draws.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();
constexpr float kSentinel = 1234.5f;  // fills O and lse before a call: what is not written keeps it
constexpr double kLimit = 4294967296.0;  // 2^32, the range rule's bound

// What the API promises about each config, for the checks that do not need an oracle.
struct Traits {
  bool all_visible = false;  // weights softmax(scale q.k) over every key it sees (mask, causal)
  bool exact_dense = false;  // reference and dense: exact softmax over every seen key
  bool convex = false;       // O is a convex combination of the V rows of the seen keys
  bool lse_nan = false;      // lse NaN (not a softmax) for rows that see a key
  bool may_miss = false;     // a row that sees keys may still get an empty set (O = 0, lse -inf)
  bool row_logits = false;   // every logit is scale q_i . k_j of input rows (no means of rows)
  int rounds = 1;            // rounds (or parts) whose multisets are merged by logsumexp
};

Traits traits(const Case& c) {
  Traits t;
  const MethodConfig& m = c.config;
  t.row_logits = std::holds_alternative<ReferenceConfig>(m) || std::holds_alternative<DenseConfig>(m) ||
                 std::holds_alternative<SmyrfConfig>(m) || std::holds_alternative<ReformerConfig>(m) ||
                 std::holds_alternative<RoutingConfig>(m) || std::holds_alternative<SparseConfig>(m) ||
                 std::holds_alternative<InformerConfig>(m);
  if (std::holds_alternative<ReferenceConfig>(m) || std::holds_alternative<DenseConfig>(m)) {
    t.all_visible = t.exact_dense = t.convex = true;
  } else if (const auto* s = std::get_if<SmyrfConfig>(&m)) {
    t.convex = true;
    t.rounds = s->n_hashes;
  } else if (const auto* r = std::get_if<ReformerConfig>(&m)) {
    // Causal: a query's chunks may hold only later keys (no fallback: empty set).
    t.convex = true;
    t.may_miss = c.causal;
    t.rounds = r->n_hashes;
  } else if (std::holds_alternative<ClusteredConfig>(m)) {
    t.convex = true;
  } else if (std::holds_alternative<RoutingConfig>(m)) {
    // Causal fallback: the key at the query's own position, which may be masked.
    t.convex = true;
    t.may_miss = c.causal;
  } else if (const auto* sp = std::get_if<SparseConfig>(&m)) {
    // strided and criss_cross: two disjoint parts merged by logsumexp (sparse.h).
    t.convex = t.may_miss = true;
    t.rounds = sp->pattern == SparsePattern::strided || sp->pattern == SparsePattern::criss_cross ? 2 : 1;
  } else if (std::holds_alternative<InformerConfig>(m)) {
    // Selected queries: softmax over every seen key; the others: the mean over them.
    t.all_visible = t.convex = true;
  } else if (std::holds_alternative<SinkhornConfig>(m) || std::holds_alternative<SynthesizerConfig>(m)) {
    t.convex = true;
  } else if (const auto* l = std::get_if<LinearConfig>(&m)) {
    // Nonnegative features give nonnegative weights; favor and rfa are signed, and dpfp's
    // normaliser can be exactly 0 (O = 0) for a query that sees keys.
    t.convex = l->map == FeatureMap::elu || l->map == FeatureMap::favor_plus ||
               l->map == FeatureMap::efficient || l->map == FeatureMap::l2;
    t.lse_nan = true;
  } else if (const auto* k = std::get_if<CompressedConfig>(&m)) {
    // Linformer's projections are signed, Nystrom's pseudo-inverse is not a convex map.
    t.convex = k->kind != Compression::linformer && k->kind != Compression::nystrom;
    t.lse_nan = k->kind == Compression::nystrom;
  }
  return t;
}

// ---- Problems ----------------------------------------------------------------------------

// B = 2, H = 2, d = 8, dv = 5, padded strides, Gaussian data, masks all ones.
Problem make(const Case& c, std::int64_t nq, std::int64_t nk, std::uint64_t seed = 5) {
  Problem pr(2, 2, nq, nk, 8, 5, /*padded=*/true, seed);
  pr.key_mask.assign(static_cast<std::size_t>(2 * nk), 1);
  pr.query_mask.assign(static_cast<std::size_t>(2 * nq), 1);
  pr.params.with_masks(pr.key_mask.data(), pr.query_mask.data());
  pr.params.causal = c.causal;
  pr.params.seed = 3;
  return pr;
}

bool visible(const Problem& pr, std::int64_t b, std::int64_t j) {
  return pr.key_mask[static_cast<std::size_t>(b * pr.Nk + j)] != 0;
}
bool active(const Problem& pr, std::int64_t b, std::int64_t i) {
  return pr.query_mask[static_cast<std::size_t>(b * pr.Nq + i)] != 0;
}
// Query i of batch element b may see key j: the key is visible and, causal, j <= i + Nk - Nq.
bool sees(const Problem& pr, std::int64_t b, std::int64_t i, std::int64_t j) {
  return active(pr, b, i) && visible(pr, b, j) && (!pr.params.causal || j <= i + pr.Nk - pr.Nq);
}
// A row that sees no key at all: O = 0 and lse = -inf for every method.
bool dark(const Problem& pr, std::int64_t b, std::int64_t i) {
  for (std::int64_t j = 0; j < pr.Nk; ++j)
    if (sees(pr, b, i, j)) return false;
  return true;
}

// Calls fn(row, length, b, h, index) for every row of Q (tensor 0), K (1) or V (2).
void for_rows(Problem& pr, int tensor, const std::function<void(float*, std::int64_t, std::int64_t,
                                                                 std::int64_t, std::int64_t)>& fn) {
  const std::int64_t n = tensor == 0 ? pr.Nq : pr.Nk, len = tensor == 2 ? pr.dv : pr.d;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < n; ++i) {
        float* row = tensor == 0 ? pr.q_at(b, h, i) : tensor == 1 ? pr.k_at(b, h, i) : pr.v_at(b, h, i);
        fn(row, len, b, h, i);
      }
}

// Every row of the tensor scaled to Euclidean norm `norm` (its direction kept).
void set_norms(Problem& pr, int tensor, double norm) {
  for_rows(pr, tensor, [&](float* row, std::int64_t len, std::int64_t, std::int64_t, std::int64_t) {
    double n2 = 0;
    for (std::int64_t t = 0; t < len; ++t) n2 += double(row[t]) * row[t];
    for (std::int64_t t = 0; t < len; ++t) row[t] = float(row[t] * (norm / std::sqrt(n2)));
  });
}

// ---- The call, and the checks every case makes ------------------------------------------

// Every element of O's buffer outside the output rows still holds the sentinel.
void expect_padding_untouched(Problem& pr, const std::string& what) {
  std::vector<char> is_out(pr.o.size(), 0);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        std::fill_n(is_out.begin() + (pr.o_at(b, h, i) - pr.o.data()), pr.dv, 1);
  for (std::size_t x = 0; x < pr.o.size(); ++x)
    if (!is_out[x]) {
      ASSERT_EQ(std::memcmp(&pr.o[x], &kSentinel, sizeof(float)), 0) << what << ": padding " << x << " written";
    }
}

struct Output {
  std::vector<float> o, lse;  // [B, H, Nq, dv] and [B, H, Nq]
  bool ran = false;
};

// Runs the case with O (padding included) and lse filled with the sentinel, then checks: no
// exception; padding untouched; every output finite; rows that see no key exactly 0 with lse
// -inf; the lse class of the other rows (NaN for linear and Nystrom, else finite; where
// Traits::may_miss a row may get an empty set: then -inf and O = 0).
Output run_checked(Problem& pr, const Case& c, const std::string& what) {
  Output out;
  const std::size_t rows = static_cast<std::size_t>(pr.B * pr.H * pr.Nq);
  std::fill(pr.o.begin(), pr.o.end(), kSentinel);
  out.lse.assign(rows, kSentinel);
  pr.params.lse = out.lse.data();
  try {
    attention(pr.params, c.config);
  } catch (const std::exception& e) {
    pr.params.lse = nullptr;
    ADD_FAILURE() << what << ": threw " << e.what();
    return out;
  }
  pr.params.lse = nullptr;
  expect_padding_untouched(pr, what);
  out.o = pr.output();
  const Traits t = traits(c);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        const std::size_t r = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        const float* o = out.o.data() + r * static_cast<std::size_t>(pr.dv);
        const std::string row = what + " row (" + std::to_string(b) + ", " + std::to_string(h) + ", " +
                                std::to_string(i) + ")";
        bool zero = true;
        for (std::int64_t col = 0; col < pr.dv; ++col) {
          if (!std::isfinite(o[col])) {
            ADD_FAILURE() << row << " col " << col << " = " << o[col] << " from finite input";
            return out;
          }
          zero = zero && o[col] == 0.0f;
        }
        const float l = out.lse[r];
        if (dark(pr, b, i)) {
          EXPECT_TRUE(zero) << row << ": sees no key, O must be 0";
          EXPECT_TRUE(std::isinf(l) && l < 0) << row << ": sees no key, lse " << l;
        } else if (t.lse_nan) {
          EXPECT_TRUE(std::isnan(l)) << row << ": lse " << l;
        } else if (t.may_miss && std::isinf(l) && l < 0) {
          EXPECT_TRUE(zero) << row << ": empty key set, O must be 0";
        } else {
          EXPECT_TRUE(std::isfinite(l) && l != kSentinel) << row << ": lse " << l;
        }
      }
  out.ran = true;
  return out;
}

// ---- Oracles -----------------------------------------------------------------------------

double abs_scale(const Problem& pr) {
  return pr.params.scale ? std::abs(double(*pr.params.scale)) : 1.0 / std::sqrt(double(pr.d));
}

// The suite's rule (test_util.h) for vmax, logit bound L and n keys.
double rule(double vmax, double L, double n) { return 16.0 * kEps * vmax * (1.0 + L + std::log2(n + 1.0)); }

// An oracle's O as a float output holds it: rounded once to f32.
std::vector<double> rounded_output(const reference::Output& oracle) {
  const auto f = oracle.o_f32();
  return {f.begin(), f.end()};
}

// The problem's tensors as contiguous doubles, for attention_f64.
struct Doubles {
  std::vector<double> q, k, v;
  explicit Doubles(Problem& pr) {
    for_rows(pr, 0, [&](float* r, std::int64_t n, std::int64_t, std::int64_t, std::int64_t) { q.insert(q.end(), r, r + n); });
    for_rows(pr, 1, [&](float* r, std::int64_t n, std::int64_t, std::int64_t, std::int64_t) { k.insert(k.end(), r, r + n); });
    for_rows(pr, 2, [&](float* r, std::int64_t n, std::int64_t, std::int64_t, std::int64_t) { v.insert(v.end(), r, r + n); });
  }
};

// Synthesizer: the rule with L bounding every synthesised logit (test_synthesizer.cpp): random,
// max |R_ij|; dense (biases 0 by default), |logit_ij| <= sum_u |w2_uj| |relu(h_u)| with
// |h_u| <= a_u = sum_t |q_t w1_tu|, bounded here by the largest a_u over the (b, h) queries.
double synthesizer_logit_bound(Problem& pr, const SynthesizerConfig& c) {
  const std::uint64_t seed = pr.params.seed;
  const std::int64_t hid = c.hidden;
  double L = 0;
  for (std::int64_t h = 0; h < pr.H; ++h) {
    if (c.kind == SynthesizerKind::random) {
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        for (std::int64_t j = 0; j < pr.Nk; ++j)
          L = std::max(L, std::abs(double(spec::synthesizer_default_logit(seed, h, i, j, pr.Nk))));
      continue;
    }
    std::vector<double> amax(static_cast<std::size_t>(hid), 0.0);
    for (std::int64_t b = 0; b < pr.B; ++b)
      for (std::int64_t i = 0; i < pr.Nq; ++i)
        for (std::int64_t u = 0; u < hid; ++u) {
          double a = 0;
          for (std::int64_t t = 0; t < pr.d; ++t)
            a += std::abs(pr.q_at(b, h, i)[t] * double(spec::synthesizer_default_w1(seed, h, t, u, pr.d, hid)));
          amax[static_cast<std::size_t>(u)] = std::max(amax[static_cast<std::size_t>(u)], a);
        }
    for (std::int64_t j = 0; j < pr.Nk; ++j) {
      double s = 0;
      for (std::int64_t u = 0; u < hid; ++u)
        s += amax[static_cast<std::size_t>(u)] * std::abs(double(spec::synthesizer_default_w2(seed, h, u, j, pr.Nk, hid)));
      L = std::max(L, s);
    }
  }
  return L;
}

// Compressed: the bound of test_compressed.cpp with every logit bound taken by Hoelder,
// |scale| sum_t |q_t k_t| <= |scale| |q|_1 max_t |k_t| (never smaller, so still a bound): final
// attention rule(max|V_f|, |scale| max|q|_1 max|K_f|, synthetic rows + window), plus for the
// kinds with a first stage r1v + 2 max|V_f| |scale| max|q|_1 r1k (Nystrom: amplify * r1v),
// r1k = rule(max|K|, L1, n_k), r1v = rule(max|V|, L1, n_k), L1 = |scale| max|stage row|_1 max|K|.
double compressed_bound(Problem& pr, const CompressedConfig& c, const reference::Output& ref) {
  const double scale = abs_scale(pr);
  const bool window = c.kind == Compression::star || c.kind == Compression::global_memory;
  double tol = 0;
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h) {
      const std::size_t bh = static_cast<std::size_t>(b * pr.H + h);
      double vmax = 0, kmax = 0, q1 = 0, s1 = 0, vf = 0, kf = 0;
      std::int64_t nk = 0;
      for (std::int64_t j = 0; j < pr.Nk; ++j) {
        if (!visible(pr, b, j)) continue;
        ++nk;
        for (std::int64_t t = 0; t < pr.d; ++t) kmax = std::max(kmax, double(std::abs(pr.k_at(b, h, j)[t])));
        for (std::int64_t t = 0; t < pr.dv; ++t) vmax = std::max(vmax, double(std::abs(pr.v_at(b, h, j)[t])));
      }
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        if (!active(pr, b, i)) continue;
        double n1 = 0;
        for (std::int64_t t = 0; t < pr.d; ++t) n1 += std::abs(double(pr.q_at(b, h, i)[t]));
        q1 = std::max(q1, n1);
      }
      for (double x : ref.keys[bh]) kf = std::max(kf, std::abs(x));
      for (double x : ref.values[bh]) vf = std::max(vf, std::abs(x));
      if (window) {
        kf = std::max(kf, kmax);
        vf = std::max(vf, vmax);
      }
      const auto& S = ref.stage_queries[bh];
      for (std::size_t s = 0; s < S.size(); s += static_cast<std::size_t>(pr.d)) {
        double n1 = 0;
        for (std::int64_t t = 0; t < pr.d; ++t) n1 += std::abs(S[s + static_cast<std::size_t>(t)]);
        s1 = std::max(s1, n1);
      }
      const double synthetic = double(ref.keys[bh].size()) / double(pr.d);
      double b_tol = rule(vf, scale * q1 * kf, synthetic + (window ? 2.0 * c.window + 1.0 : 0.0));
      if (!S.empty()) {
        const double L1 = scale * s1 * kmax;
        const double r1v = rule(vmax, L1, double(nk)), r1k = rule(kmax, L1, double(nk));
        b_tol += c.kind == Compression::nystrom ? ref.amplify[bh] * r1v : r1v + 2.0 * vf * scale * q1 * r1k;
      }
      tol = std::max(tol, b_tol);
    }
  return tol;
}

// The case's output against its double oracle (computed from the float buffers, which hold the
// same values as the bf16 ones when the problem is in bf16). Tolerances:
//   * softmax methods over scale q.k (reference, dense, SMYRF, Reformer, clustered, routing,
//     sparse, Informer, Sinkhorn): the suite's rule, Problem::tolerance(n), with n = 2 rounds Nk
//     bounding every multiset (rounds x keys; Sinkhorn's 2 block_size rows), L over all (q, k)
//     pairs (Sinkhorn's sorted rows and clustered's centroid queries are convex combinations of
//     key or query rows: their logits obey the same bound). exact_logits: every logit
//     q_i . k_j and every difference of two is exact in float (LargeNormsExactLogits), so the
//     rule's L term is 0 for the one-round methods whose logits are such products
//     (Traits::row_logits; clustered's centroid queries and Sinkhorn's sorted rows are means,
//     their logits are not). Rounds are merged by each round's float logsumexp: at |logit|
//     ~ 2^32 a round's log(count) is below half an ulp of it (2^8), so the merge weights carry
//     errors of order eps L, the rule's L term itself (SMYRF, Reformer, strided and criss_cross
//     keep it).
//   * synthesizer: the rule with L of synthesizer_logit_bound.
//   * linear: test_linear.cpp's rule per row, max|V| (eps c + 2^-30 c (1 + c) + F), c the
//     oracle's cond, F = (kLinearKeyTask + m + 8) 2^-24 cond_abs non-causal (0 causal).
//   * compressed: compressed_bound.
// A wrong key set, mask or merge gives errors of the order of max|V|, far above these (except
// where the logits are so large that the rule's bound itself exceeds max|V|: LargeNorms).
void expect_matches_oracle(Problem& pr, const Case& c, const Output& out, const std::string& what,
                           bool exact_logits = false) {
  if (!out.ran) return;
  const DType dtype = pr.params.dtype;
  pr.use_f32();
  const double vmax = max_abs_v(pr);
  const double n = 2.0 * traits(c).rounds * double(pr.Nk);
  const double softmax_tol = exact_logits && traits(c).row_logits && traits(c).rounds == 1 ? rule(vmax, 0.0, n) : pr.tolerance(static_cast<std::int64_t>(n));
  std::vector<double> ref;
  double tol = softmax_tol;
  std::vector<double> row_tol;  // per query row, where the rule is per row
  const MethodConfig& m = c.config;
  if (std::holds_alternative<ReferenceConfig>(m) || std::holds_alternative<DenseConfig>(m) ||
      (std::holds_alternative<SmyrfConfig>(m) && c.causal)) {
    // attention_f64 (explicit key sets in double) is independent of the reference method's
    // forward, and is the causal SMYRF oracle (test_causal.cpp).
    Doubles dd(pr);
    ref.resize(out.o.size());
    std::vector<double> lse(out.lse.size());
    const MethodConfig oracle_config =
        std::holds_alternative<SmyrfConfig>(m) ? m : MethodConfig{ReferenceConfig{}};
    attention_f64(pr.params, {dd.q.data(), dd.k.data(), dd.v.data()}, oracle_config, ref.data(), lse.data());
  } else if (const auto* s = std::get_if<SmyrfConfig>(&m)) {
    ref = rounded_output(reference::attention(pr.params, *s));
  } else if (const auto* r = std::get_if<ReformerConfig>(&m)) {
    ref = reference::attention(pr.params, *r).o;
  } else if (const auto* cl = std::get_if<ClusteredConfig>(&m)) {
    ref = rounded_output(reference::attention(pr.params, *cl));
  } else if (const auto* ro = std::get_if<RoutingConfig>(&m)) {
    ref = rounded_output(reference::attention(pr.params, *ro));
  } else if (const auto* sp = std::get_if<SparseConfig>(&m)) {
    ref = reference::attention(pr.params, *sp).o;
  } else if (const auto* in = std::get_if<InformerConfig>(&m)) {
    ref = rounded_output(reference::attention(pr.params, *in));
  } else if (const auto* sk = std::get_if<SinkhornConfig>(&m)) {
    ref = rounded_output(reference::attention(pr.params, *sk));
  } else if (const auto* sy = std::get_if<SynthesizerConfig>(&m)) {
    ref = rounded_output(reference::attention(pr.params, *sy));
    tol = rule(vmax, synthesizer_logit_bound(pr, *sy), double(pr.Nk));
  } else if (const auto* li = std::get_if<LinearConfig>(&m)) {
    const reference::Output lr = reference::attention(pr.params, *li);
    ref = lr.o;
    const double m_features = double(detail::linear_feature_count(*li, pr.d));
    for (std::size_t r = 0; r < lr.cond.size(); ++r) {
      const double cond = std::max(lr.cond[r], 1.0);
      const double f = c.causal ? 0.0 : (double(detail::kLinearKeyTask) + m_features + 8.0) * 0x1.0p-24 * lr.cond_abs[r];
      row_tol.push_back(std::max(vmax, 1e-30) * (kEps * cond + 0x1.0p-30 * cond * (1.0 + cond) + f));
    }
  } else if (const auto* co = std::get_if<CompressedConfig>(&m)) {
    const reference::Output cr = reference::attention(pr.params, *co);
    ref = cr.o;
    tol = compressed_bound(pr, *co, cr);
  }
  if (dtype == DType::bf16) pr.use_bf16();
  ASSERT_EQ(ref.size(), out.o.size()) << what;
  for (std::size_t x = 0; x < ref.size(); ++x) {
    const double t = row_tol.empty() ? tol : row_tol[x / static_cast<std::size_t>(pr.dv)];
    const double err = std::abs(double(out.o[x]) - ref[x]);
    ASSERT_LE(err, t) << what << " element " << x << ": " << out.o[x] << " vs oracle " << ref[x];
  }
}

// ---- Independent answers -----------------------------------------------------------------

// Methods whose weights are softmax(scale q.k) over every seen key (reference, dense,
// Informer), on a problem whose logits are all equal per query row: O is the mean of V over the
// seen keys and, when the logits are 0, lse = log(number of seen keys). Tolerance: the rule
// (Problem::tolerance(Nk)); lse within that over max|V| plus 4 eps |lse|.
void expect_uniform_weights(Problem& pr, const Case& c, const Output& out, const std::string& what,
                            bool zero_logits) {
  if (!out.ran || !traits(c).all_visible) return;
  const double tol = pr.tolerance();
  const double vmax = std::max(max_abs_v(pr), 1e-30);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        std::vector<double> mean(static_cast<std::size_t>(pr.dv), 0.0);
        double n = 0;
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          if (!sees(pr, b, i, j)) continue;
          n += 1;
          for (std::int64_t col = 0; col < pr.dv; ++col) mean[static_cast<std::size_t>(col)] += pr.v_at(b, h, j)[col];
        }
        if (n == 0) continue;  // run_checked: exact zeros
        const std::size_t r = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        for (std::int64_t col = 0; col < pr.dv; ++col)
          ASSERT_NEAR(out.o[r * static_cast<std::size_t>(pr.dv) + static_cast<std::size_t>(col)],
                      mean[static_cast<std::size_t>(col)] / n, tol)
              << what << " mean of V, row " << r << " col " << col;
        if (zero_logits) {
          ASSERT_NEAR(out.lse[r], std::log(n), tol / vmax + 4 * kEps * std::log(n)) << what << " lse row " << r;
        }
      }
}

// Every V row of each (b, h) set to one row: a convex combination of them is that row. Rows that
// see keys must get it (Traits::may_miss: it, or 0 for an empty key set), to within rounding of
// the weights' normalisation, 16 eps max|V| (2 + log2(n + 1)) with n = 2 rounds Nk.
void expect_constant_values_kept(Problem& pr, const Case& c, const std::string& what) {
  const Traits t = traits(c);
  if (!t.convex) return;
  std::mt19937_64 rng(77);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> rows(static_cast<std::size_t>(pr.B * pr.H * pr.dv));
  for (auto& x : rows) x = g(rng);
  for_rows(pr, 2, [&](float* row, std::int64_t len, std::int64_t b, std::int64_t h, std::int64_t) {
    std::copy_n(rows.begin() + (b * pr.H + h) * len, len, row);
  });
  const DType dtype = pr.params.dtype;
  if (dtype == DType::bf16) pr.use_bf16();  // V rows rounded to bf16 in both buffers
  for_rows(pr, 2, [&](float* row, std::int64_t len, std::int64_t b, std::int64_t h, std::int64_t) {
    std::copy_n(row, len, rows.begin() + (b * pr.H + h) * len);
  });
  const Output out = run_checked(pr, c, what + " constant V");
  if (!out.ran) return;
  const double tol = 16.0 * kEps * max_abs_v(pr) * (2.0 + std::log2(2.0 * t.rounds * pr.Nk + 1.0));
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        if (dark(pr, b, i)) continue;
        const std::size_t r = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        const float* o = out.o.data() + r * static_cast<std::size_t>(pr.dv);
        if (t.may_miss && std::isinf(out.lse[r])) continue;  // empty set: zeros, run_checked
        for (std::int64_t col = 0; col < pr.dv; ++col)
          ASSERT_NEAR(o[col], rows[static_cast<std::size_t>((b * pr.H + h) * pr.dv + col)], tol)
              << what << " constant V, row (" << b << ", " << h << ", " << i << ") col " << col;
      }
}

// ---- The cases ---------------------------------------------------------------------------

// The shared list (method_cases.h) plus the configs whose numerics differ in ways it does not
// reach: SMYRF's other transforms (divisions by the largest norms) and E2LSH buckets, the other
// sparse patterns, the remaining feature maps (l2 divides by the row norm), routing without
// k-means iterations, few hash bits, the other synthesizer kinds, a sharp Sinkhorn temperature
// and Informer's default sample sizes.
std::vector<Case> adversarial_cases() {
  std::vector<Case> c = cases();
  auto smyrf = [](Transform t, float r) {
    return SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8, .r = r, .transform = t};
  };
  c.push_back({"smyrf_xbox", smyrf(Transform::xbox, 0.0f), false, true});
  c.push_back({"smyrf_h2_alsh", smyrf(Transform::h2_alsh, 0.0f), false, true});
  c.push_back({"smyrf_l2_alsh", smyrf(Transform::l2_alsh, 0.0f), false, true});
  c.push_back({"smyrf_e2lsh_causal", smyrf(Transform::xbox_plus, 0.5f), true, true});
  auto sparse = [](SparsePattern p) {
    return SparseConfig{.pattern = p, .window = 2, .dilation = 2, .stride = 6, .summary = 2, .global_tokens = 2,
                        .width = 6};
  };
  c.push_back({"local", sparse(SparsePattern::local)});
  c.push_back({"local_causal", sparse(SparsePattern::local), true});
  c.push_back({"dilated", sparse(SparsePattern::dilated)});
  c.push_back({"strided", sparse(SparsePattern::strided)});
  c.push_back({"fixed", sparse(SparsePattern::fixed)});
  c.push_back({"longformer", sparse(SparsePattern::longformer)});
  c.push_back({"axial_rows", sparse(SparsePattern::axial_rows)});
  c.push_back({"axial_columns", sparse(SparsePattern::axial_columns)});
  c.push_back({"criss_cross_causal", sparse(SparsePattern::criss_cross), true});
  c.push_back({"l2", LinearConfig{.map = FeatureMap::l2}});
  c.push_back({"l2_causal", LinearConfig{.map = FeatureMap::l2, .chunk = 4}, true});
  c.push_back({"rfa", LinearConfig{.map = FeatureMap::rfa, .n_features = 24}, false, true});
  c.push_back({"favor_causal", LinearConfig{.map = FeatureMap::favor, .n_features = 24, .chunk = 5}, true, true});
  c.push_back({"dpfp_causal", LinearConfig{.map = FeatureMap::dpfp, .dpfp_nu = 1, .chunk = 6}, true});
  c.push_back({"routing_no_kmeans", RoutingConfig{.n_clusters = 5, .window = 8, .iterations = 0}});
  c.push_back({"clustered_3_bits", ClusteredConfig{.n_clusters = 4, .hash_bits = 3, .iterations = 2}, false, true});
  c.push_back({"synthesizer_dense", SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 8}, false, true});
  c.push_back({"synthesizer_random_causal", SynthesizerConfig{.kind = SynthesizerKind::random}, true, true});
  c.push_back({"sinkhorn_sharp", SinkhornConfig{.block_size = 5, .iterations = 3, .temperature = 0.05f}});
  c.push_back({"informer_default_causal", InformerConfig{}, true, true});
  c.push_back({"nystrom_no_iterations", CompressedConfig{.kind = Compression::nystrom, .rank = 3, .pinv_iterations = 0}});
  return c;
}

class Adversarial : public ::testing::TestWithParam<Case> {};

// Degenerate logits (all equal per query row), in f32 and bf16: the generic checks, the oracle,
// uniform weights for the methods that attend to every seen key, and constant V rows kept.
enum class Degenerate { zero_queries, zero_keys, identical_keys };

void degenerate_case(const Case& c, Degenerate kind, bool bf16) {
  const std::string what = c.name + (bf16 ? " bf16" : " f32");
  Problem pr = make(c, 37, 40);
  // A few masked keys and queries, so that the means run over a proper subset.
  for (std::int64_t j = 3; j < pr.Nk; j += 7) pr.key_mask[static_cast<std::size_t>(j)] = 0;
  for (std::int64_t i = 5; i < pr.Nq; i += 9) pr.query_mask[static_cast<std::size_t>(pr.Nq + i)] = 0;
  if (kind == Degenerate::zero_queries) set_norms(pr, 0, 0.0);
  if (kind == Degenerate::zero_keys) set_norms(pr, 1, 0.0);
  if (kind == Degenerate::identical_keys)
    for_rows(pr, 1, [&](float* row, std::int64_t len, std::int64_t b, std::int64_t h, std::int64_t j) {
      if (j > 0) std::copy_n(pr.k_at(b, h, 0), len, row);
    });
  if (bf16) pr.use_bf16();
  const Output out = run_checked(pr, c, what);
  expect_matches_oracle(pr, c, out, what);
  expect_uniform_weights(pr, c, out, what, kind != Degenerate::identical_keys);
  expect_constant_values_kept(pr, c, what);
}

TEST_P(Adversarial, ZeroQueries) {
  degenerate_case(GetParam(), Degenerate::zero_queries, false);
  degenerate_case(GetParam(), Degenerate::zero_queries, true);
}

TEST_P(Adversarial, ZeroKeys) {
  degenerate_case(GetParam(), Degenerate::zero_keys, false);
  degenerate_case(GetParam(), Degenerate::zero_keys, true);
}

TEST_P(Adversarial, IdenticalKeys) {
  degenerate_case(GetParam(), Degenerate::identical_keys, false);
  degenerate_case(GetParam(), Degenerate::identical_keys, true);
}

// Row norms 1e-30 (squared norms underflow in float) with one denormal element per row: logits
// of order 1e-60, so the weights are uniform as with zero inputs. DPFP's features are of degree 2
// in the row, its kernel values of order 1e-120: only a double computation keeps them.
TEST_P(Adversarial, TinyNormsAndDenormals) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  set_norms(pr, 0, 1e-30);
  set_norms(pr, 1, 1e-30);
  for (int tensor : {0, 1})
    for_rows(pr, tensor, [&](float* row, std::int64_t len, std::int64_t, std::int64_t, std::int64_t i) {
      row[i % len] = (i % 2 ? -1 : 1) * 1e-40f;
    });
  ASSERT_NE(std::fpclassify(pr.q_at(0, 0, 0)[0]), FP_NORMAL);
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name);
  expect_uniform_weights(pr, c, out, c.name, true);
  expect_constant_values_kept(pr, c, c.name);
}

// Norms 2^15 and |scale| R^2 = 3.75 * 2^30 < 2^32 (accepted by the range check): one-hot rows
// +-2^15 e_a, so that every q.k is 0 or +-2^30 and every scaled logit 0 or +-3.75 * 2^30, exact
// in float, as are their differences: the softmax is uniform over the seen keys of largest
// logit, every other weight exp(-3.75 * 2^30) = 0. The oracle comparison then needs no logit
// term (expect_matches_oracle's exact_logits) for the softmax methods; reference and dense are
// also checked against that mean.
TEST_P(Adversarial, LargeNormsExactLogits) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  std::mt19937_64 rng(19);
  std::uniform_int_distribution<std::int64_t> axis(0, pr.d - 1);
  for (int tensor : {0, 1})
    for_rows(pr, tensor, [&](float* row, std::int64_t len, std::int64_t, std::int64_t, std::int64_t) {
      std::fill_n(row, len, 0.0f);
      const std::int64_t a = axis(rng);
      row[a] = (rng() & 1) ? 32768.0f : -32768.0f;
    });
  pr.params.scale = 3.75f;
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name, /*exact_logits=*/true);
  if (!out.ran || !traits(c).exact_dense) return;
  const double tol = rule(max_abs_v(pr), 0.0, double(pr.Nk));
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        std::vector<double> logit(static_cast<std::size_t>(pr.Nk), -std::numeric_limits<double>::infinity());
        double best = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < pr.Nk; ++j) {
          if (!sees(pr, b, i, j)) continue;
          double s = 0;
          for (std::int64_t t = 0; t < pr.d; ++t) s += double(pr.q_at(b, h, i)[t]) * pr.k_at(b, h, j)[t];
          logit[static_cast<std::size_t>(j)] = 3.75 * s;
          best = std::max(best, 3.75 * s);
        }
        std::vector<double> mean(static_cast<std::size_t>(pr.dv), 0.0);
        double n = 0;
        for (std::int64_t j = 0; j < pr.Nk; ++j)
          if (logit[static_cast<std::size_t>(j)] == best) {
            n += 1;
            for (std::int64_t col = 0; col < pr.dv; ++col) mean[static_cast<std::size_t>(col)] += pr.v_at(b, h, j)[col];
          }
        const std::size_t r = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        for (std::int64_t col = 0; col < pr.dv; ++col)
          ASSERT_NEAR(out.o[r * static_cast<std::size_t>(pr.dv) + static_cast<std::size_t>(col)],
                      n > 0 ? mean[static_cast<std::size_t>(col)] / n : 0.0, tol)
              << c.name << " row " << r;
      }
}

// At the range rule's limits: Gaussian directions with norms 2^15 (1 - 2^-12), scale 3.99
// (|scale| R^2 just under 2^32) and every |v| = 2^32 exactly (at most 2^32 is allowed). No
// oracle bound is meaningful at these logits (the rule's L ~ 2^32); the generic checks apply.
TEST_P(Adversarial, LargeNormsAtTheLimit) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  set_norms(pr, 0, 32768.0 * (1.0 - 0x1.0p-12));
  set_norms(pr, 1, 32768.0 * (1.0 - 0x1.0p-12));
  for_rows(pr, 2, [&](float* row, std::int64_t len, std::int64_t, std::int64_t, std::int64_t) {
    for (std::int64_t t = 0; t < len; ++t) row[t] = row[t] < 0 ? -4294967296.0f : 4294967296.0f;
  });
  pr.params.scale = 3.99f;
  run_checked(pr, c, c.name);
}

// Scale 0 (and -0, whose sign bit a "negative scale" branch may read): every logit 0 whatever
// Q and K (Gaussian here).
TEST_P(Adversarial, ZeroScale) {
  const Case& c = GetParam();
  for (float scale : {0.0f, -0.0f}) {
    const std::string what = c.name + (std::signbit(scale) ? " scale -0" : " scale 0");
    Problem pr = make(c, 37, 40);
    pr.params.scale = scale;
    const Output out = run_checked(pr, c, what);
    expect_matches_oracle(pr, c, out, what);
    expect_uniform_weights(pr, c, out, what, true);
    expect_constant_values_kept(pr, c, what);
  }
}

// Rows that see exactly one visible key get that key's V row (convex methods: every weight on
// it; Traits::may_miss: it, or 0 where the method leaves the set empty); within rounding of the
// normalisation, the rule with n = 2 rounds.
void expect_single_key_value(Problem& pr, const Case& c, const Output& out, const std::string& what) {
  const Traits t = traits(c);
  if (!out.ran || !t.convex) return;
  const double tol = rule(max_abs_v(pr), 0.0, 2.0 * t.rounds);
  for (std::int64_t b = 0; b < pr.B; ++b)
    for (std::int64_t h = 0; h < pr.H; ++h)
      for (std::int64_t i = 0; i < pr.Nq; ++i) {
        std::int64_t key = -1, count = 0;
        for (std::int64_t j = 0; j < pr.Nk; ++j)
          if (sees(pr, b, i, j)) key = j, ++count;
        if (count != 1) continue;
        const std::size_t r = static_cast<std::size_t>((b * pr.H + h) * pr.Nq + i);
        if (t.may_miss && std::isinf(out.lse[r])) continue;
        for (std::int64_t col = 0; col < pr.dv; ++col)
          ASSERT_NEAR(out.o[r * static_cast<std::size_t>(pr.dv) + static_cast<std::size_t>(col)],
                      pr.v_at(b, h, key)[col], tol)
              << what << " row (" << b << ", " << h << ", " << i << ") sees only key " << key;
      }
}

// Nk = 1 with every cluster, bucket, block and landmark count of the configs above 1.
TEST_P(Adversarial, SingleKey) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 1);
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name);
  expect_single_key_value(pr, c, out, c.name);
}

TEST_P(Adversarial, SingleQuery) {
  const Case& c = GetParam();
  Problem pr = make(c, 1, 40);
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name);
  Problem one = make(c, 1, 1);
  const Output out1 = run_checked(one, c, c.name + " 1x1");
  expect_matches_oracle(one, c, out1, c.name + " 1x1");
  expect_single_key_value(one, c, out1, c.name + " 1x1");
}

// Masked query rows (every third, plus a run of them) and a batch element whose every key is
// masked: those rows get exact zeros and lse -inf (run_checked), the others match the oracle.
TEST_P(Adversarial, MaskedRowsAndKeylessBatchElement) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  for (std::int64_t i = 0; i < pr.Nq; ++i)
    if (i % 3 == 1 || (i >= 20 && i < 30)) pr.query_mask[static_cast<std::size_t>(i)] = 0;
  std::fill_n(pr.key_mask.begin() + pr.Nk, pr.Nk, 0);
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name);
}

// Masks that empty whole clusters, buckets and blocks: one visible key per batch element (at
// position 17 in b = 0, 0 in b = 1), then a contiguous half of the keys masked (the second half
// in b = 0, the first in b = 1) with the first half of the queries of b = 1 masked.
TEST_P(Adversarial, OneVisibleKey) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  std::fill(pr.key_mask.begin(), pr.key_mask.end(), 0);
  pr.key_mask[17] = 1;
  pr.key_mask[static_cast<std::size_t>(pr.Nk)] = 1;
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name);
  expect_single_key_value(pr, c, out, c.name);
}

TEST_P(Adversarial, HalfOfTheKeysMasked) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  for (std::int64_t j = 0; j < pr.Nk; ++j) {
    pr.key_mask[static_cast<std::size_t>(j)] = j < pr.Nk / 2;
    pr.key_mask[static_cast<std::size_t>(pr.Nk + j)] = j >= pr.Nk / 2;
  }
  for (std::int64_t i = 0; i < pr.Nq / 2; ++i) pr.query_mask[static_cast<std::size_t>(pr.Nq + i)] = 0;
  const Output out = run_checked(pr, c, c.name);
  expect_matches_oracle(pr, c, out, c.name);
}

// ---- The range rule of params.check_finite ----------------------------------------------

// Out of range in unmasked rows: rejected before O is written, the message naming the tensor
// and element (expect_config_error checks that O is untouched).
TEST_P(Adversarial, RangeRejectsHugeQueryRow) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  std::fill_n(pr.q_at(1, 0, 5), pr.d, 1e30f / std::sqrt(8.0f));
  expect_config_error(pr, c.config, "params.q[1, 0, 5]");
  expect_config_error(pr, c.config, "above 2^32");
}

TEST_P(Adversarial, RangeRejectsHugeKeyRow) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  pr.k_at(0, 1, 7)[3] = -1e30f;
  expect_config_error(pr, c.config, "params.k[0, 1, 7]");
  expect_config_error(pr, c.config, "above 2^32");
}

TEST_P(Adversarial, RangeRejectsHugeValue) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  pr.v_at(1, 1, 3)[2] = 1e30f;
  expect_config_error(pr, c.config, "params.v[1, 1, 3, 2]");
  expect_config_error(pr, c.config, "above 2^32");
  pr.v_at(1, 1, 3)[2] = 4294967296.0f * (1.0f + 0x1.0p-23f);  // the next float above 2^32
  expect_config_error(pr, c.config, "params.v[1, 1, 3, 2]");
}

TEST_P(Adversarial, RangeRejectsHugeScale) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  set_norms(pr, 0, 1.0);
  set_norms(pr, 1, 1.0);
  pr.params.scale = 1e30f;
  expect_config_error(pr, c.config, "params.scale");
  expect_config_error(pr, c.config, "2^32");
  // Just above the bound: R = 2^15 exactly, |scale| R^2 = 4.01 * 2^30.
  std::fill_n(pr.q_at(0, 0, 0), pr.d, 0.0f);
  pr.q_at(0, 0, 0)[0] = 32768.0f;
  pr.params.scale = 4.01f;
  ASSERT_GT(4.01f * 1073741824.0, kLimit);
  expect_config_error(pr, c.config, "params.scale");
}

// The same values in masked rows are not read: accepted, and the output bits are those of the
// problem with ordinary values there. Scale 1e30 with every unmasked Q and K row zero: R = 0,
// so |scale| R^2 = 0 is accepted too.
TEST_P(Adversarial, RangeIgnoresMaskedRows) {
  const Case& c = GetParam();
  Problem pr = make(c, 37, 40);
  pr.query_mask[5] = 0;
  pr.key_mask[7] = 0;
  pr.key_mask[static_cast<std::size_t>(pr.Nk + 3)] = 0;
  const Output plain = run_checked(pr, c, c.name + " plain");
  for (std::int64_t h = 0; h < pr.H; ++h) {
    std::fill_n(pr.q_at(0, h, 5), pr.d, 1e30f);
    std::fill_n(pr.k_at(0, h, 7), pr.d, -1e30f);
    std::fill_n(pr.v_at(1, h, 3), pr.dv, 1e30f);
  }
  const Output huge = run_checked(pr, c, c.name + " huge masked rows");
  EXPECT_TRUE(bitwise_equal(plain.o, huge.o)) << c.name;

  Problem z = make(c, 37, 40);
  for_rows(z, 0, [&](float* row, std::int64_t len, std::int64_t b, std::int64_t, std::int64_t i) {
    if (!(b == 0 && i == 5)) std::fill_n(row, len, 0.0f);
  });
  for_rows(z, 1, [&](float* row, std::int64_t len, std::int64_t b, std::int64_t, std::int64_t j) {
    if (!(b == 1 && j == 9)) std::fill_n(row, len, 0.0f);
  });
  z.query_mask[5] = 0;
  z.key_mask[static_cast<std::size_t>(z.Nk + 9)] = 0;
  z.params.scale = 1e30f;
  const Output out = run_checked(z, c, c.name + " scale 1e30, R = 0");
  expect_matches_oracle(z, c, out, c.name + " scale 1e30, R = 0");
  expect_uniform_weights(z, c, out, c.name + " scale 1e30, R = 0", true);
}

// With check_finite = false out-of-range inputs (and non-finite ones) are not rejected and must
// not crash (values unspecified): the call returns and writes nothing outside O's rows.
TEST_P(Adversarial, UncheckedOutOfRangeReturns) {
  const Case& c = GetParam();
  for (int variant = 0; variant < 4; ++variant) {
    Problem pr = make(c, 37, 40);
    pr.params.check_finite = false;
    if (variant == 0) {
      set_norms(pr, 0, 1e30);
      set_norms(pr, 1, 1e30);
    }
    if (variant == 1)
      for_rows(pr, 2, [&](float* row, std::int64_t len, std::int64_t, std::int64_t, std::int64_t) {
        for (std::int64_t t = 0; t < len; ++t) row[t] *= 1e30f;
      });
    if (variant == 2) pr.params.scale = 1e30f;
    if (variant == 3) {
      pr.q_at(0, 1, 4)[2] = std::numeric_limits<float>::quiet_NaN();
      pr.k_at(1, 0, 6)[0] = std::numeric_limits<float>::infinity();
      pr.v_at(1, 1, 9)[1] = -std::numeric_limits<float>::infinity();
    }
    std::fill(pr.o.begin(), pr.o.end(), kSentinel);
    std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
    pr.params.lse = lse.data();
    EXPECT_NO_THROW(attention(pr.params, c.config)) << c.name << " variant " << variant;
    pr.params.lse = nullptr;
    expect_padding_untouched(pr, c.name + " unchecked, variant " + std::to_string(variant));
  }
}

INSTANTIATE_TEST_SUITE_P(EveryMethod, Adversarial, ::testing::ValuesIn(adversarial_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace smyrf::test
