// Golden bits: every method config of tests/method_cases.h (and a few more) on fixed inputs, at
// 1, 2 and 7 threads, f32 and bf16, with lse, dropout, backward and the double entries, plus the
// integer results of the inspection hooks (clusters, buckets, routes, key sets). Each result is
// a 64-bit FNV-1a hash of its bits, or the error text when the call refuses; all of it is
// compared with tests/data/golden/method_bits.txt. A refactoring that changes one output bit,
// one cluster or one error message fails here.
//
// The file is per SIMD target and compiler (float results depend on the vector width the
// kernels run at, and clang contracts a * b + c into fused multiply-adds where g++ in ISO mode
// does not): a build whose target and compiler have no section skips with a message. Regenerate (only
// for an intended change of behaviour, and say so in the commit):
//   SMYRF_WRITE_GOLDEN=1 ./build/tests/test_golden
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "api/inspect.h"
#include "method_cases.h"
#include "methods/clustered/clustered.h"
#include "methods/reformer/reformer.h"
#include "methods/routing/routing.h"
#include "methods/smyrf/clustering.h"
#include "methods/smyrf/forward.h"
#include "methods/sparse/sparse.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

const std::string kGoldenPath = std::string(SMYRF_SOURCE_DIR) + "/tests/data/golden/method_bits.txt";

struct Hash {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void bytes(const void* p, std::size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) {
      h ^= c[i];
      h *= 0x100000001b3ull;
    }
  }
  template <class T>
  Hash& add(const std::vector<T>& v) {
    const std::uint64_t n = v.size();
    bytes(&n, sizeof n);
    if (!v.empty()) bytes(v.data(), v.size() * sizeof(T));
    return *this;
  }
  template <class T>
  Hash& add(const std::vector<std::vector<T>>& v) {
    for (const auto& x : v) add(x);
    return *this;
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

// Results: key -> value, in insertion order of the keys' names.
using Results = std::map<std::string, std::string>;

template <class Fn>
std::string result_of(Fn&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    return std::string("error: ") + e.what();
  }
}

// The problem of test_determinism: padded strides, masks, Nq != Nk.
Problem make_problem(bool causal) {
  Problem pr(2, 3, 45, 53, 12, 10, /*padded=*/true, 7);
  pr.random_masks(3, 0.85, 0.9);
  pr.params.causal = causal;
  pr.params.seed = 11;
  return pr;
}

std::vector<Case> golden_cases() {
  std::vector<Case> c = cases();
  c.push_back({"smyrf_r", SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 6, .r = 0.5f}, false,
               true});
  c.push_back({"smyrf_xbox", SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8,
                                         .transform = Transform::xbox}, false, true});
  c.push_back({"smyrf_l2alsh", SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8,
                                           .transform = Transform::l2_alsh}, false, true});
  c.push_back({"smyrf_h2alsh", SmyrfConfig{.n_hashes = 2, .q_cluster_size = 8, .k_cluster_size = 8,
                                           .transform = Transform::h2_alsh}, false, true});
  c.push_back({"longformer", SparseConfig{.pattern = SparsePattern::longformer, .window = 3, .global_tokens = 2}});
  c.push_back({"strided_causal", SparseConfig{.pattern = SparsePattern::strided, .window = 4, .stride = 5}, true});
  c.push_back({"favor_iid", LinearConfig{.map = FeatureMap::favor_plus, .n_features = 24, .orthogonal = false},
               false, true});
  c.push_back({"l2", LinearConfig{.map = FeatureMap::l2}});
  c.push_back({"synthesizer_dense", SynthesizerConfig{.kind = SynthesizerKind::dense, .hidden = 8}, false, true});
  return c;
}

// The f32 forward (O and lse) at `threads`.
std::string forward_bits(Problem& pr, const MethodConfig& config, int threads) {
  std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
  pr.params.lse = lse.data();
  pr.params.num_threads = threads;
  std::fill(pr.o.begin(), pr.o.end(), 0.0f);
  const std::string r = result_of([&] {
    attention(pr.params, config);
    return Hash{}.add(pr.output()).add(lse).hex();
  });
  pr.params.lse = nullptr;
  return r;
}

void method_results(const Case& c, Results& out) {
  const std::string n = c.name + "/";
  for (int t : {1, 2, 7}) {
    Problem pr = make_problem(c.causal);
    out[n + "f32/t" + std::to_string(t)] = forward_bits(pr, c.config, t);
  }
  {
    Problem pr = make_problem(c.causal);
    pr.use_bf16();
    out[n + "bf16/t2"] = forward_bits(pr, c.config, 2);
  }
  {
    Problem pr = make_problem(c.causal);
    pr.params.dropout = 0.25f;
    out[n + "dropout/t2"] = forward_bits(pr, c.config, 2);
  }
  {  // backward at 1 and 7 threads, from the forward's O and lse
    for (int t : {1, 7}) {
      Problem pr = make_problem(c.causal);
      std::vector<float> lse(static_cast<std::size_t>(pr.B * pr.H * pr.Nq));
      out[n + "backward/t" + std::to_string(t)] = result_of([&] {
        pr.params.lse = lse.data();
        pr.params.num_threads = t;
        attention(pr.params, c.config);
        std::vector<float> go(pr.o.size()), gq(pr.q.size(), 0.0f), gk(pr.k.size(), 0.0f),
            gv(pr.v.size(), 0.0f);
        std::mt19937_64 rng(5);
        std::normal_distribution<float> g(0.0f, 1.0f);
        for (auto& x : go) x = g(rng);
        GradientParams gp{pr.o.data(), lse.data(), go.data(), gq.data(), gk.data(), gv.data()};
        attention_backward(pr.params, gp, c.config);
        return Hash{}.add(gq).add(gk).add(gv).hex();
      });
    }
  }
  {  // the double-precision entries (forward and backward)
    Problem pr = make_problem(c.causal);
    const std::int64_t B = pr.B, H = pr.H, Nq = pr.Nq, Nk = pr.Nk, d = pr.d, dv = pr.dv;
    std::vector<double> q, k, v;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        for (std::int64_t i = 0; i < Nq; ++i) q.insert(q.end(), pr.q_at(b, h, i), pr.q_at(b, h, i) + d);
        for (std::int64_t j = 0; j < Nk; ++j) k.insert(k.end(), pr.k_at(b, h, j), pr.k_at(b, h, j) + d);
        for (std::int64_t j = 0; j < Nk; ++j) v.insert(v.end(), pr.v_at(b, h, j), pr.v_at(b, h, j) + dv);
      }
    std::vector<double> o(static_cast<std::size_t>(B * H * Nq * dv)), lse(static_cast<std::size_t>(B * H * Nq));
    out[n + "f64/forward"] = result_of([&] {
      attention_f64(pr.params, {q.data(), k.data(), v.data()}, c.config, o.data(), lse.data());
      return Hash{}.add(o).add(lse).hex();
    });
    out[n + "f64/backward"] = result_of([&] {
      attention_f64(pr.params, {q.data(), k.data(), v.data()}, c.config, o.data(), lse.data());
      std::vector<double> go(o.size()), gq(q.size()), gk(k.size()), gv(v.size());
      for (std::size_t i = 0; i < go.size(); ++i) go[i] = std::sin(0.37 * static_cast<double>(i));
      attention_backward_f64(pr.params, {q.data(), k.data(), v.data()}, c.config, o.data(), lse.data(),
                             go.data(), gq.data(), gk.data(), gv.data());
      return Hash{}.add(gq).add(gk).add(gv).hex();
    });
  }
  // The integer results of the inspection hooks.
  Problem pr = make_problem(c.causal);
  const std::string key = n + "integers";
  if (const auto* s = std::get_if<SmyrfConfig>(&c.config)) {
    if (s->keys == KeySelection::centroid) {
      out[key] = result_of([&] { return Hash{}.add(detail::centroid_keys(pr.params, *s)).hex(); });
    } else {
      out[key] = result_of([&] {
        const detail::ClusterLists cl = detail::compute_clusters(pr.params, *s);
        return Hash{}.add(cl.q_sorted).add(cl.k_sorted).add(cl.q_count).add(cl.k_count).add(cl.n_clusters).hex();
      });
    }
  } else if (const auto* r = std::get_if<ReformerConfig>(&c.config)) {
    out[key] = result_of([&] {
      const detail::ReformerBuckets rb = detail::reformer_buckets(pr.params, *r);
      return Hash{}.add(rb.q_bucket).add(rb.k_bucket).add(rb.q_sorted).add(rb.k_sorted).add(rb.q_count)
          .add(rb.k_count).add(rb.n_chunks).hex();
    });
  } else if (const auto* cc = std::get_if<ClusteredConfig>(&c.config)) {
    out[key] = result_of([&] {
      const detail::ClusteredInspection ci = detail::clustered_inspect(pr.params, *cc);
      return Hash{}.add(ci.codes).add(ci.cluster).add(ci.n_clusters).add(ci.top_keys).hex();
    });
  } else if (const auto* rc = std::get_if<RoutingConfig>(&c.config)) {
    out[key] = result_of([&] {
      const detail::RoutingRoutes rr = detail::routing_routes(pr.params, *rc);
      return Hash{}.add(rr.q_cluster).add(rr.k_cluster).add(rr.n_chunks).add(rr.chunk_queries)
          .add(rr.chunk_keys).hex();
    });
  } else if (const auto* sc = std::get_if<SparseConfig>(&c.config)) {
    out[key] = result_of([&] {
      Hash hash;
      for (std::int64_t b = 0; b < pr.B; ++b)
        for (std::int64_t h = 0; h < pr.H; ++h) hash.add(detail::sparse_visible_keys(pr.params, *sc, b, h));
      return hash.hex();
    });
  }
}

Results all_results() {
  Results r;
  for (const Case& c : golden_cases()) method_results(c, r);
  return r;
}

TEST(Golden, EveryMethodsBitsMatchTheCommittedFile) {
  const Results now = all_results();
#if defined(__clang__)
  const std::string target = simd_target() + " clang";
#else
  const std::string target = simd_target() + " gcc";
#endif
  if (std::getenv("SMYRF_WRITE_GOLDEN") != nullptr) {
    // Keep the other targets' sections, replace this one's.
    std::map<std::string, std::vector<std::string>> sections;
    std::ifstream in(kGoldenPath);
    std::string line, section;
    while (std::getline(in, line)) {
      if (line.rfind("[", 0) == 0) section = line.substr(1, line.size() - 2);
      else if (!section.empty() && !line.empty()) sections[section].push_back(line);
    }
    std::vector<std::string>& mine = sections[target];
    mine.clear();
    for (const auto& [k, v] : now) mine.push_back(k + " " + v);
    std::ofstream o(kGoldenPath);
    o << "# Golden bits of every method config (tests/test_golden.cpp), per SIMD target.\n";
    for (const auto& [s, lines] : sections) {
      o << "[" << s << "]\n";
      for (const auto& l : lines) o << l << "\n";
    }
    GTEST_SKIP() << "wrote " << now.size() << " golden results for " << target << " to " << kGoldenPath;
  }
  std::ifstream in(kGoldenPath);
  ASSERT_TRUE(in) << "no golden file " << kGoldenPath;
  Results want;
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    if (section != target) continue;
    const std::size_t sp = line.find(' ');
    want[line.substr(0, sp)] = line.substr(sp + 1);
  }
  if (want.empty()) GTEST_SKIP() << "no golden section for " << target;
  int mismatches = 0;
  for (const auto& [k, v] : want) {
    const auto it = now.find(k);
    if (it == now.end()) {
      ADD_FAILURE() << k << ": no longer computed";
      ++mismatches;
    } else if (it->second != v) {
      ADD_FAILURE() << k << ":\n  golden: " << v << "\n  now:    " << it->second;
      ++mismatches;
    }
  }
  for (const auto& [k, v] : now)
    if (!want.count(k)) ADD_FAILURE() << k << ": not in the golden file (" << v << ")";
  EXPECT_EQ(mismatches, 0);
}

// The golden results are not vacuous: different methods and different seeds hash differently,
// and the thread counts agree with each other.
TEST(Golden, ResultsDistinguishMethodsAndAgreeAcrossThreads) {
  Results r;
  const std::vector<Case> cs = golden_cases();
  for (const Case& c : {cs[1], cs[3]}) method_results(c, r);
  EXPECT_NE(r["dense/f32/t1"], r["smyrf/f32/t1"]);
  EXPECT_EQ(r["smyrf/f32/t1"], r["smyrf/f32/t7"]);
  EXPECT_EQ(r["dense/f32/t1"], r["dense/f32/t2"]);
  EXPECT_EQ(r["dense/backward/t1"], r["dense/backward/t7"]);
  EXPECT_EQ(r["smyrf/integers"].rfind("error", 0), std::string::npos);
}

}  // namespace
}  // namespace smyrf::test
