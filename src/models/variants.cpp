#include "models/variants.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace smyrf::models {
namespace {

[[noreturn]] void bad(std::string_view spec, const std::string& why) {
  throw Error("smyrf: attention variant '" + std::string(spec) + "': " + why +
              " (expected dense, smyrf:H:F, smyrf:HxC or smyrf-c:F[:Q])");
}

int parse_int(std::string_view spec, std::string_view s, const char* what) {
  std::size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(std::string(s), &used);
  } catch (const std::exception&) {
    bad(spec, std::string(what) + " is not an integer");
  }
  if (used != s.size() || v < 1) bad(spec, std::string(what) + " must be an integer >= 1");
  return v;
}

// F of a spec: a number in (0, 1].
double parse_budget(std::string_view spec, std::string_view s) {
  const std::string f(s);
  std::size_t used = 0;
  double budget = 0;
  try {
    budget = std::stod(f, &used);
  } catch (const std::exception&) {
    bad(spec, "F is not a number");
  }
  if (used != f.size() || !(budget > 0 && budget <= 1)) bad(spec, "F must be in (0, 1]");
  return budget;
}

}  // namespace

std::int64_t AttentionVariant::cluster_for(std::int64_t n) const {
  switch (kind) {
    case Kind::dense: return 0;
    case Kind::smyrf_fixed: return cluster;
    case Kind::smyrf_budget:
      return std::max<std::int64_t>(1, std::llround(budget * static_cast<double>(n) / n_hashes));
    case Kind::smyrf_centroid:
      return std::max<std::int64_t>(1, std::llround(budget * static_cast<double>(n)) - (n + cluster - 1) / cluster);
  }
  return 0;
}

bool AttentionVariant::exact_at(std::int64_t n) const {
  if (kind == Kind::smyrf_centroid) return cluster_for(n) >= n;
  return kind == Kind::dense || cluster_for(n) >= n;
}

MethodConfig AttentionVariant::config_for(std::int64_t n) const {
  if (kind == Kind::dense) return DenseConfig{};
  SmyrfConfig c;
  c.n_hashes = n_hashes;
  c.q_cluster_size = c.k_cluster_size = static_cast<int>(std::min<std::int64_t>(cluster_for(n), 1 << 30));
  if (kind == Kind::smyrf_centroid) {
    c.keys = KeySelection::centroid;
    c.q_cluster_size = cluster;
  }
  return c;
}

std::string AttentionVariant::label() const {
  char buf[64];
  switch (kind) {
    case Kind::dense: return "dense";
    case Kind::smyrf_fixed: std::snprintf(buf, sizeof buf, "smyrf %dx%d", n_hashes, cluster); break;
    case Kind::smyrf_budget:
      std::snprintf(buf, sizeof buf, "smyrf %d x %g%%", n_hashes, budget * 100);
      break;
    case Kind::smyrf_centroid:
      std::snprintf(buf, sizeof buf, "smyrf-c/%d %g%%", cluster, budget * 100);
      break;
  }
  return buf;
}

AttentionVariant parse_variant(std::string_view spec) {
  AttentionVariant v;
  v.spec = std::string(spec);
  if (spec == "dense") return v;
  if (spec.substr(0, 8) == "smyrf-c:") {
    v.kind = AttentionVariant::Kind::smyrf_centroid;
    v.n_hashes = 1;
    v.cluster = 16;
    std::string_view rest = spec.substr(8);
    const std::size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      v.cluster = parse_int(spec, rest.substr(colon + 1), "Q");
      rest = rest.substr(0, colon);
    }
    v.budget = parse_budget(spec, rest);
    return v;
  }
  if (spec.substr(0, 6) != "smyrf:") bad(spec, "unknown method");
  const std::string_view rest = spec.substr(6);
  if (const std::size_t colon = rest.find(':'); colon != std::string_view::npos) {
    v.kind = AttentionVariant::Kind::smyrf_budget;
    v.n_hashes = parse_int(spec, rest.substr(0, colon), "H");
    v.budget = parse_budget(spec, rest.substr(colon + 1));
    return v;
  }
  const std::size_t x = rest.find('x');
  if (x == std::string_view::npos) bad(spec, "missing ':' or 'x'");
  v.kind = AttentionVariant::Kind::smyrf_fixed;
  v.n_hashes = parse_int(spec, rest.substr(0, x), "H");
  v.cluster = parse_int(spec, rest.substr(x + 1), "C");
  return v;
}

}  // namespace smyrf::models
