// The backward of every key-set method with one (the forms whose Capabilities::backward is set;
// dense and SMYRF's lsh form have their own tests in test_train.cpp): for each case,
//   - the double-precision definition (attention_backward_f64, over the method's own key sets,
//     its discrete choices held constant) against central finite differences of attention_f64;
//   - the f32 backward against it under the gradient rule of test_train.cpp, with masks,
//     padded strides, causal where the method has a causal backward, and dropout;
//   - the same bits at 1, 2 and 7 threads;
//   - every registered form with a backward has a case here (a form that gains a backward
//     without a test fails BackwardCases.CoverEveryFormWithABackward).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ostream>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "reference/reference.h"
#include "smyrf/registry.h"
#include "smyrf/smyrf.h"
#include "test_util.h"
#include "train_util.h"

namespace smyrf::test {
namespace {

struct BackwardCase {
  std::string form;  // "<method>/<form>" of smyrf::methods()
  MethodConfig config;
  std::int64_t max_keys = 0;  // an upper bound of the keys per query (the rule's n_keys)
  // Clustered attention: the f32 path and the oracle round the centroid query to f32; the
  // double definition keeps the exact mean (DoubleDefinitionIsTheOracle's rounding rule).
  bool rounded_centroid = false;
};

std::vector<BackwardCase> backward_cases() {
  auto sparse = [](SparsePattern p, SparseConfig c) {
    c.pattern = p;
    return MethodConfig{c};
  };
  return {
      {"sparse/local", sparse(SparsePattern::local, {.window = 3}), 7},
      {"sparse/dilated", sparse(SparsePattern::dilated, {.window = 2, .dilation = 3}), 5},
      {"sparse/strided", sparse(SparsePattern::strided, {.window = 2, .stride = 5}), 16},
      {"sparse/fixed", sparse(SparsePattern::fixed, {.stride = 6, .summary = 2}), 20},
      {"sparse/longformer", sparse(SparsePattern::longformer, {.window = 2, .global_tokens = 2}), 48},
      {"sparse/bigbird", sparse(SparsePattern::bigbird, {.block_size = 6, .global_blocks = 1, .random_blocks = 2}), 48},
      {"sparse/axial_rows", sparse(SparsePattern::axial_rows, {.width = 6}), 6},
      {"sparse/axial_columns", sparse(SparsePattern::axial_columns, {.width = 6}), 8},
      {"sparse/criss_cross", sparse(SparsePattern::criss_cross, {.width = 6}), 14},
      {"reformer/reformer", ReformerConfig{.n_hashes = 2, .n_buckets = 8, .chunk_size = 6}, 24},
      {"reformer/reformer (separate keys)",
       ReformerConfig{.n_hashes = 3, .n_buckets = 4, .chunk_size = 7, .shared_qk = false}, 42},
      {"smyrf/lsh (causal)", SmyrfConfig{.n_hashes = 3, .q_cluster_size = 6, .k_cluster_size = 6}, 18},
      {"routing/routing", RoutingConfig{.n_clusters = 4, .window = 9}, 9},
      {"smyrf/centroid",
       SmyrfConfig{.n_hashes = 1, .q_cluster_size = 6, .k_cluster_size = 8, .keys = KeySelection::centroid}, 8},
      {"clustered/clustered", ClusteredConfig{.n_clusters = 5, .hash_bits = 8, .iterations = 3}, 150, true},
      {"clustered/improved", ClusteredConfig{.n_clusters = 5, .hash_bits = 8, .iterations = 3, .topk = 6}, 150, true},
      {"clustered/improved (every key)", ClusteredConfig{.n_clusters = 4, .hash_bits = 6, .topk = 200}, 150, true},
      {"informer/informer", InformerConfig{.top_queries = 7, .sample_keys = 5}, 150},
      {"informer/informer (default u)", InformerConfig{.factor = 2.0f}, 150},
      {"reformer/reformer (one chunk)", ReformerConfig{.n_hashes = 2, .n_buckets = 4, .chunk_size = 400}, 300},
  };
}

void PrintTo(const BackwardCase& c, std::ostream* os) { *os << c.form; }

// Reformer's shared_qk does not read K: its dK is zero.
bool reads_k(const BackwardCase& c) {
  const auto* r = std::get_if<ReformerConfig>(&c.config);
  return r == nullptr || !r->shared_qk;
}

// "<method>/<form>", without a parenthesised variant.
std::string form_of(const BackwardCase& c) { return c.form.substr(0, c.form.find(" (")); }

std::string case_name(const BackwardCase& c) {
  std::string n;
  for (char ch : c.form)
    if (std::isalnum(static_cast<unsigned char>(ch))) n += ch;
    else if (!n.empty() && n.back() != '_') n += '_';
  while (!n.empty() && n.back() == '_') n.pop_back();
  return n;
}

class Backward : public ::testing::TestWithParam<BackwardCase> {};

// The shift of a logit when the centroid query (a mean of query rows) is rounded to f32: at
// most delta = 2^-24 |scale| max_i ||q_i||_1 max_j ||k_j||_inf. Each softmax weight then moves
// by a factor within exp(+-2 delta), so O by at most 4 delta max|V| and lse by 2 delta (improved
// clustered: m_c and the member weights move by the same factors).
double centroid_rounding_delta(const TrainCase& c) {
  const std::vector<float> q = c.q_layout(c.pr.q), k = c.k_layout(c.pr.k);
  double q1 = 0, kinf = 0;
  for (std::size_t row = 0; row * static_cast<std::size_t>(c.pr.d) < q.size(); ++row) {
    double n = 0;
    for (std::int64_t t = 0; t < c.pr.d; ++t) n += std::abs(double(q[row * static_cast<std::size_t>(c.pr.d) + static_cast<std::size_t>(t)]));
    q1 = std::max(q1, n);
  }
  for (float x : k) kinf = std::max(kinf, double(std::abs(x)));
  const double scale = c.pr.params.scale ? std::abs(double(*c.pr.params.scale)) : 1.0 / std::sqrt(double(c.pr.d));
  return std::ldexp(1.0, -24) * scale * q1 * kinf;
}

// The double definition's forward is the method's independent oracle (reference/): the key sets
// the fast path's groups give the backward are the method's exact ones.
TEST_P(Backward, DoubleDefinitionIsTheOracle) {
  const BackwardCase& bc = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !capabilities(bc.config).causal_backward) continue;
    TrainCase c(2, 2, 36, capabilities(bc.config).cross_lengths ? 40 : 36, 8, 6, true, 51);
    c.pr.random_masks(52, 0.85, 0.9);
    c.pr.params.causal = causal;
    const Oracle f64(c, bc.config);
    const reference::Output ref = std::visit([&](const auto& cfg) { return reference::attention(c.pr.params, cfg); },
                                             bc.config);
    const double delta = bc.rounded_centroid ? centroid_rounding_delta(c) : 0.0;
    double v_max = 1;
    for (float x : c.v_layout(c.pr.v)) v_max = std::max(v_max, double(std::abs(x)));
    ASSERT_EQ(ref.o.size(), f64.o.size());
    for (std::size_t x = 0; x < ref.o.size(); ++x)
      ASSERT_NEAR(f64.o[x], ref.o[x], 1e-12 + 4 * delta * v_max) << bc.form << " o " << x;
    for (std::size_t x = 0; x < ref.lse.size(); ++x) {
      if (std::isinf(ref.lse[x])) {
        ASSERT_EQ(f64.lse[x], ref.lse[x]) << bc.form << " lse " << x;
      } else {
        ASSERT_NEAR(f64.lse[x], ref.lse[x], 1e-12 * (1 + std::abs(ref.lse[x])) + 2 * delta) << bc.form << " lse " << x;
      }
    }
  }
}

TEST_P(Backward, DoubleDefinitionMatchesFiniteDifferences) {
  const BackwardCase& bc = GetParam();
  for (bool causal : {false, true}) {
    if (causal && !capabilities(bc.config).causal_backward) continue;
    FdCase c(1, 2, 36, 36, 5, 4, 31);
    c.params.causal = causal;
    c.check(bc.config, (bc.form + (causal ? " causal" : "")).c_str(), reads_k(bc));
  }
}

TEST_P(Backward, DoubleDefinitionWithDropoutMatchesFiniteDifferences) {
  const BackwardCase& bc = GetParam();
  if (!capabilities(bc.config).dropout) GTEST_SKIP() << bc.form << " has no dropout";
  FdCase c(1, 1, 36, 36, 4, 4, 32);
  c.params.dropout = 0.3f;
  c.params.seed = 9;
  c.check(bc.config, (bc.form + " dropout").c_str(), reads_k(bc));
}

TEST_P(Backward, FloatMatchesTheDoubleDefinition) {
  const BackwardCase& bc = GetParam();
  const Capabilities caps = capabilities(bc.config);
  struct Shape {
    std::int64_t B, H, Nq, Nk, d, dv;
  };
  for (const Shape& s : {Shape{2, 2, 36, 36, 8, 6}, Shape{1, 3, 150, 150, 16, 16}, Shape{2, 1, 40, 30, 12, 9}}) {
    if (s.Nq != s.Nk && !caps.cross_lengths) continue;
    for (bool causal : {false, true}) {
      if (causal && !caps.causal_backward) continue;
      for (float dropout : {0.0f, 0.25f}) {
        if (dropout > 0.0f && !(causal ? caps.causal_dropout : caps.dropout)) continue;
        TrainCase c(s.B, s.H, s.Nq, s.Nk, s.d, s.dv, true, static_cast<std::uint64_t>(s.Nq * 5 + s.H));
        c.pr.random_masks(static_cast<std::uint64_t>(s.Nk), 0.85, 0.9);
        c.pr.params.causal = causal;
        c.pr.params.dropout = dropout;
        c.pr.params.seed = 12;
        const std::string what = bc.form + " " + std::to_string(s.Nq) + "x" + std::to_string(s.Nk) +
                                 (causal ? " causal" : "") + (dropout > 0 ? " dropout" : "");
        expect_gradients_match(c, bc.config, std::min(bc.max_keys, s.Nk), what.c_str(), reads_k(bc));
      }
    }
  }
}

TEST_P(Backward, MaskedTokensGetZeroGradients) {
  const BackwardCase& bc = GetParam();
  TrainCase c(2, 2, 36, 36, 8, 8, true, 41);
  c.pr.random_masks(42, 0.6, 0.7);
  c.forward(bc.config);
  c.backward(bc.config);
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t h = 0; h < 2; ++h) {
      // A masked query's Q row has no gradient, unless it is also a visible key built from that
      // row (shared_qk).
      for (std::int64_t i = 0; i < 36; ++i)
        if (!c.pr.query_mask[static_cast<std::size_t>(b * 36 + i)] &&
            (reads_k(bc) || !c.pr.key_mask[static_cast<std::size_t>(b * 36 + i)])) {
          const float* g = c.gq.data() + (c.pr.q_at(b, h, i) - c.pr.q.data());
          for (int t = 0; t < 8; ++t) ASSERT_EQ(g[t], 0.0f) << bc.form;
        }
      for (std::int64_t j = 0; j < 36; ++j)
        if (!c.pr.key_mask[static_cast<std::size_t>(b * 36 + j)]) {
          const float* g = c.gk.data() + (c.pr.k_at(b, h, j) - c.pr.k.data());
          const float* w = c.gv.data() + (c.pr.v_at(b, h, j) - c.pr.v.data());
          for (int t = 0; t < 8; ++t) ASSERT_EQ(g[t], 0.0f) << bc.form;
          for (int t = 0; t < 8; ++t) ASSERT_EQ(w[t], 0.0f) << bc.form;
        }
    }
  for (float x : c.q_layout(c.gq)) ASSERT_FALSE(std::isnan(x)) << bc.form;
}

TEST_P(Backward, SameBitsForEveryThreadCount) {
  const BackwardCase& bc = GetParam();
  for (float dropout : {0.0f, 0.2f}) {
    if (dropout > 0.0f && !capabilities(bc.config).dropout) continue;
    std::vector<float> first[4];
    for (int threads : {1, 2, 7}) {
      TrainCase c(2, 3, 150, 150, 16, 16, false, 5);
      c.pr.params.dropout = dropout;
      c.pr.params.seed = 77;
      c.forward(bc.config, threads);
      c.backward(bc.config, threads);
      const std::vector<float> got[4] = {c.pr.o, c.gq, c.gk, c.gv};
      for (int t = 0; t < 4; ++t) {
        if (threads == 1) first[t] = got[t];
        EXPECT_TRUE(bitwise_equal(first[t], got[t])) << bc.form << " tensor " << t << " threads " << threads;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, Backward, ::testing::ValuesIn(backward_cases()),
                         [](const ::testing::TestParamInfo<BackwardCase>& info) { return case_name(info.param); });

TEST(BackwardCases, CoverEveryFormWithABackward) {
  std::set<std::string> covered;
  for (const BackwardCase& c : backward_cases()) {
    EXPECT_TRUE(capabilities(c.config).backward) << c.form << " has a case but no backward";
    EXPECT_TRUE(capabilities(c.config).f64) << c.form << " has a backward but no double definition";
    covered.insert(form_of(c));
  }
  // Dense, the reference method and SMYRF's lsh form: test_train.cpp.
  const std::set<std::string> elsewhere = {"reference/reference", "dense/dense", "smyrf/lsh"};
  for (const MethodInfo& m : methods()) {
    const std::string form = m.name + "/" + m.form;
    // Feature-map attention: test_linear_backward.cpp; compressed attention, Sinkhorn and the
    // Synthesizer (learned parts, not a softmax over key sets of the inputs):
    // test_compressed_backward.cpp, test_sinkhorn_backward.cpp, test_synthesizer_backward.cpp.
    if (!m.caps.backward || elsewhere.count(form) != 0 || m.name == "linear" || m.name == "compressed" ||
        m.name == "synthesizer" || m.name == "sinkhorn")
      continue;
    EXPECT_TRUE(covered.count(form) != 0) << form << " has a backward but no case in test_backward.cpp";
  }
}

}  // namespace
}  // namespace smyrf::test
