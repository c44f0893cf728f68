// The registrations (smyrf::methods(), smyrf::capabilities()) are the truth about every method:
// each form's capabilities are checked against what a call actually does, every variant spec a
// form names parses, and the README's method table equals the registry (so it cannot drift).
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "models/variants.h"
#include "smyrf/registry.h"
#include "test_util.h"

namespace smyrf::test {
namespace {

const std::string kReadme = std::string(SMYRF_SOURCE_DIR) + "/README.md";

// The README table's rows as the registry writes them.
std::string yes(bool b) { return b ? "yes" : "—"; }
std::vector<std::string> expected_rows() {
  std::vector<std::string> rows;
  for (const MethodInfo& m : methods()) {
    std::string specs;
    for (const std::string& s : m.specs) specs += (specs.empty() ? "`" : ", `") + s + "`";
    const Capabilities& c = m.caps;
    rows.push_back("| " + m.name + " | " + m.form + " | `" + m.config + "` | " + yes(c.causal) + " | " +
                   yes(c.dropout) + " | " + yes(c.backward) + " | " + yes(c.causal_backward) + " | " +
                   yes(c.f64) + " | " + yes(c.bf16) + " | " + yes(c.learned) + " | " + yes(c.seeded) + " | " +
                   yes(c.key_bias) + " | " + specs + " |");
  }
  return rows;
}

// The README's lines that start with `prefix` between the line holding `begin` and the line
// holding `end`.
std::vector<std::string> readme_lines(const std::string& begin, const std::string& end, const std::string& prefix) {
  std::ifstream in(kReadme);
  EXPECT_TRUE(in) << kReadme;
  std::vector<std::string> rows;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.find(begin) != std::string::npos) inside = true;
    else if (inside && line.find(end) != std::string::npos) break;
    else if (inside && line.rfind(prefix, 0) == 0) rows.push_back(line);
  }
  return rows;
}

TEST(Registry, ReadmeMethodTableEqualsTheRegistrations) {
  std::vector<std::string> rows;
  for (const std::string& r : readme_lines("<!-- methods table", "<!-- end methods table", "| "))
    if (r.rfind("| method |", 0) != 0) rows.push_back(r);
  const std::vector<std::string> want = expected_rows();
  std::string table;
  for (const std::string& r : want) table += r + "\n";
  EXPECT_EQ(rows, want) << "README.md's methods table differs from the registrations; it should read:\n" << table;
}

// The README's list of the forms without a backward, each with its reason, as the registry
// gives it (every such form has a reason, never an empty one).
TEST(Registry, ReadmeListsEveryFormWithoutABackwardAndWhy) {
  std::vector<std::string> want;
  for (const MethodInfo& m : methods()) {
    EXPECT_EQ(m.no_backward.empty(), m.caps.backward) << m.name << "/" << m.form;
    if (!m.caps.backward) want.push_back("- `" + m.name + "/" + m.form + "`: " + m.no_backward);
  }
  const std::vector<std::string> rows = readme_lines("<!-- no-backward list", "<!-- end no-backward list", "- `");
  std::string list;
  for (const std::string& r : want) list += r + "\n";
  EXPECT_EQ(rows, want) << "README.md's list of forms without a backward differs; it should read:\n" << list;
}

TEST(Registry, NamesFormsAndSpecsAreUniqueAndEveryMethodIsListed) {
  std::set<std::string> forms, specs, names;
  for (const MethodInfo& m : methods()) {
    EXPECT_TRUE(forms.insert(m.name + "/" + m.form).second) << m.name << "/" << m.form;
    for (const std::string& s : m.specs) EXPECT_TRUE(specs.insert(s).second) << s;
    EXPECT_EQ(m.name, method_name(m.example));
    names.insert(m.name);
  }
  EXPECT_EQ(names.size(), std::variant_size_v<MethodConfig>);
}

// A spec template as a concrete spec: H -> 2, F -> 0.25, HxC -> 2x16, optional [:X] dropped.
std::string concrete(std::string s) {
  s = std::regex_replace(s, std::regex(R"(\[:[A-Z]+\])"), "");
  s = std::regex_replace(s, std::regex(R"(HxC)"), "2x16");
  s = std::regex_replace(s, std::regex(R"(:H:)"), ":2:");
  s = std::regex_replace(s, std::regex(R"(:F$)"), ":0.25");
  return s;
}

TEST(Registry, EverySpecParsesToItsMethod) {
  for (const MethodInfo& m : methods())
    for (const std::string& s : m.specs) {
      const std::string spec = concrete(s);
      if (m.name == "reference") continue;  // bench --methods only, not a variant
      const models::AttentionVariant v = models::parse_variant(spec);
      EXPECT_EQ(method_name(v.config_for(256)), m.name) << spec;
    }
}

// Runs fn and reports whether it succeeded; an error must be smyrf::Error.
template <class Fn>
bool works(Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const Error&) {
    return false;
  }
}

// Each form's capabilities are what the calls do.
TEST(Registry, CapabilitiesAreWhatTheCallsDo) {
  for (const MethodInfo& m : methods()) {
    SCOPED_TRACE(m.name + "/" + m.form);
    const MethodConfig& c = m.example;
    EXPECT_EQ(capabilities(c).causal, m.caps.causal);
    auto problem = [] {
      Problem pr(1, 2, 40, 40, 8, 8);
      pr.params.seed = 3;
      return pr;
    };
    {
      Problem pr = problem();
      EXPECT_TRUE(works([&] { attention(pr.params, c); }));
    }
    {
      Problem pr = problem();
      pr.params.causal = true;
      EXPECT_EQ(works([&] { attention(pr.params, c); }), m.caps.causal);
    }
    {
      Problem pr = problem();
      pr.params.dropout = 0.1f;
      EXPECT_EQ(works([&] { attention(pr.params, c); }), m.caps.dropout);
    }
    {
      Problem pr = problem();
      pr.use_bf16();
      EXPECT_EQ(works([&] { attention(pr.params, c); }), m.caps.bf16);
    }
    {
      Problem pr = problem();
      Problem cross(1, 2, 24, 40, 8, 8);
      EXPECT_EQ(works([&] { attention(cross.params, c); }), m.caps.cross_lengths);
    }
    for (bool causal : {false, true}) {
      Problem pr = problem();
      pr.params.causal = causal;
      std::vector<float> lse(80), go(pr.o.size(), 1.0f), gq(pr.q.size()), gk(pr.k.size()), gv(pr.v.size());
      const bool ok = works([&] {
        pr.params.lse = lse.data();
        attention(pr.params, c);
        attention_backward(pr.params, {pr.o.data(), lse.data(), go.data(), gq.data(), gk.data(), gv.data()}, c);
      });
      EXPECT_EQ(ok, m.caps.backward && (!causal || m.caps.causal_backward)) << "causal " << causal;
    }
    {
      Problem pr = problem();
      std::vector<double> q(pr.B * pr.H * pr.Nq * pr.d, 0.5), k(q.size(), 0.25), v(q.size(), 1.0), o(v.size()),
          lse(80);
      EXPECT_EQ(works([&] { attention_f64(pr.params, {q.data(), k.data(), v.data()}, c, o.data(), lse.data()); }),
                m.caps.f64);
    }
    if (m.caps.seeded) {  // long enough that no form degenerates to exact attention
      Problem pr(1, 2, 400, 400, 8, 8);
      const auto a = pr.run(c);
      pr.params.seed = 4;
      EXPECT_FALSE(bitwise_equal(a, pr.run(c))) << "seeded, but the seed plays no part";
    }
  }
}

}  // namespace
}  // namespace smyrf::test
