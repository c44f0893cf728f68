#include "methods_table.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "smyrf/registry.h"

namespace smyrf::cli {
namespace {

// The capabilities by name, in the order the table prints them.
std::vector<std::pair<const char*, bool>> fields(const Capabilities& c) {
  return {{"causal", c.causal},
          {"dropout", c.dropout},
          {"causal_dropout", c.causal_dropout},
          {"backward", c.backward},
          {"causal_backward", c.causal_backward},
          {"f64", c.f64},
          {"bf16", c.bf16},
          {"masks", c.masks},
          {"cross_lengths", c.cross_lengths},
          {"broadcast", c.broadcast},
          {"learned", c.learned},
          {"seeded", c.seeded},
          {"key_bias", c.key_bias}};
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

}  // namespace

int run_methods(bool json) {
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const MethodInfo& m : methods()) {
      nlohmann::json o = {{"name", m.name}, {"form", m.form}, {"config", m.config},
                          {"specs", m.specs}, {"summary", m.summary}};
      for (const auto& [name, value] : fields(m.caps)) o[name] = value;
      if (!m.caps.backward) o["no_backward"] = m.no_backward;
      out.push_back(o);
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-12s %-18s", "method", "form");
  for (const auto& [name, value] : fields(Capabilities{})) std::printf(" %s", name);
  std::printf("  specs\n");
  for (const MethodInfo& m : methods()) {
    std::printf("%-12s %-18s", m.name.c_str(), m.form.c_str());
    for (const auto& [name, value] : fields(m.caps))
      std::printf(" %*s", static_cast<int>(std::string(name).size()), value ? "yes" : "-");
    std::printf("  %s\n", join(m.specs).c_str());
  }
  std::printf("\nWithout a backward pass:\n");
  for (const MethodInfo& m : methods())
    if (!m.caps.backward) std::printf("  %s/%s: %s\n", m.name.c_str(), m.form.c_str(), m.no_backward.c_str());
  return 0;
}

}  // namespace smyrf::cli
