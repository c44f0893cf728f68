#include "models/variants.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <utility>

namespace smyrf::models {
namespace {

[[noreturn]] void bad(std::string_view spec, const std::string& why) {
  throw Error("smyrf: attention variant '" + std::string(spec) + "': " + why +
              " (expected dense, smyrf:H:F, smyrf:HxC, smyrf-c:F[:Q], reformer:H:F, clustered:F, "
              "iclustered:F[:K], routing:F, local:F, dilated:F[:R], strided:F, fixed:F, "
              "longformer:F[:G], bigbird:F, axial-rows:F, axial-cols:F, criss-cross:F, performer:F, "
              "favor:F, rfa:F, linear, l2, efficient, dpfp[:NU], linformer:F, nystrom:F, mca:F, "
              "isab:F, star:F, gmat:F, informer:F, sinkhorn:F, synthesizer-dense or "
              "synthesizer-random)");
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

// "F" or "F:X": the budget and the optional integer X (0 when absent).
std::pair<double, int> budget_and_int(std::string_view spec, std::string_view rest, const char* what) {
  const std::size_t colon = rest.find(':');
  if (colon == std::string_view::npos) return {parse_budget(spec, rest), 0};
  return {parse_budget(spec, rest.substr(0, colon)), parse_int(spec, rest.substr(colon + 1), what)};
}

int at_least(double x, int lo) {
  return static_cast<int>(std::max<double>(lo, std::min<double>(std::llround(x), 1 << 30)));
}

// The sparse patterns by spec name.
constexpr std::pair<const char*, SparsePattern> kPatterns[] = {
    {"local", SparsePattern::local},          {"dilated", SparsePattern::dilated},
    {"strided", SparsePattern::strided},      {"fixed", SparsePattern::fixed},
    {"longformer", SparsePattern::longformer}, {"bigbird", SparsePattern::bigbird},
    {"axial-rows", SparsePattern::axial_rows}, {"axial-cols", SparsePattern::axial_columns},
    {"criss-cross", SparsePattern::criss_cross}};

// Feature maps: those with a budget (random features) and the fixed-size ones.
constexpr std::pair<const char*, FeatureMap> kMaps[] = {
    {"performer", FeatureMap::favor_plus}, {"favor", FeatureMap::favor}, {"rfa", FeatureMap::rfa},
    {"linear", FeatureMap::elu},           {"l2", FeatureMap::l2},       {"efficient", FeatureMap::efficient},
    {"dpfp", FeatureMap::dpfp}};
bool map_has_budget(FeatureMap m) {
  return m == FeatureMap::favor_plus || m == FeatureMap::favor || m == FeatureMap::rfa;
}

constexpr std::pair<const char*, Compression> kCompressions[] = {
    {"linformer", Compression::linformer}, {"nystrom", Compression::nystrom},
    {"mca", Compression::memory_compressed}, {"isab", Compression::induced_points},
    {"star", Compression::star},           {"gmat", Compression::global_memory}};

template <class E, std::size_t N>
const char* name_of(const std::pair<const char*, E> (&table)[N], E e) {
  for (const auto& [name, value] : table)
    if (value == e) return name;
  return "?";
}

const char* pattern_name(SparsePattern p) {
  for (const auto& [name, pattern] : kPatterns)
    if (pattern == p) return name;
  return "?";
}

}  // namespace

std::int64_t AttentionVariant::cluster_for(std::int64_t n) const {
  switch (kind) {
    case Kind::smyrf_fixed: return cluster;
    case Kind::smyrf_budget:
      return std::max<std::int64_t>(1, std::llround(budget * static_cast<double>(n) / n_hashes));
    case Kind::smyrf_centroid:
      return std::max<std::int64_t>(1, std::llround(budget * static_cast<double>(n)) - (n + cluster - 1) / cluster);
    default: return 0;
  }
}

bool AttentionVariant::exact_at(std::int64_t n) const {
  const MethodConfig c = config_for(n);
  if (kind == Kind::dense) return true;
  if (kind == Kind::smyrf_centroid) return cluster_for(n) >= n;  // every query sees every key
  if (const auto* s = std::get_if<SmyrfConfig>(&c)) return s->k_cluster_size >= n && s->q_cluster_size >= n;
  if (const auto* r = std::get_if<ReformerConfig>(&c)) return 2 * static_cast<std::int64_t>(r->chunk_size) >= n;  // <= 2 chunks
  if (const auto* r = std::get_if<RoutingConfig>(&c)) return r->window >= n;
  if (const auto* i = std::get_if<ClusteredConfig>(&c)) return i->topk >= n;
  if (const auto* m = std::get_if<CompressedConfig>(&c))
    return m->kind == Compression::memory_compressed && m->stride == 1;
  if (const auto* i = std::get_if<InformerConfig>(&c)) return i->top_queries >= n;
  if (const auto* s = std::get_if<SinkhornConfig>(&c)) return s->block_size >= n;
  if (const auto* s = std::get_if<SparseConfig>(&c)) {
    switch (s->pattern) {
      case SparsePattern::local: return s->window >= n - 1;
      case SparsePattern::longformer: return s->window >= n - 1 || s->global_tokens >= n;
      case SparsePattern::axial_rows: return s->width >= n;
      default: return false;
    }
  }
  return false;
}

MethodConfig AttentionVariant::config_for(std::int64_t n) const {
  const double N = static_cast<double>(n), keys = budget * N;  // keys per query
  switch (kind) {
    case Kind::dense: return DenseConfig{};
    case Kind::smyrf_budget:
    case Kind::smyrf_fixed:
    case Kind::smyrf_centroid: {
      SmyrfConfig c;
      c.n_hashes = n_hashes;
      c.q_cluster_size = c.k_cluster_size = static_cast<int>(std::min<std::int64_t>(cluster_for(n), 1 << 30));
      if (kind == Kind::smyrf_centroid) {
        c.keys = KeySelection::centroid;
        c.q_cluster_size = cluster;
      }
      return c;
    }
    case Kind::reformer: {
      ReformerConfig c;
      c.n_hashes = n_hashes;
      c.chunk_size = at_least(keys / (2.0 * n_hashes), 1);
      c.n_buckets = 2 * at_least(N / c.chunk_size / 2.0, 1);
      c.shared_qk = false;
      return c;
    }
    case Kind::clustered: {
      ClusteredConfig c;
      c.n_clusters = at_least(keys, 1);
      return c;
    }
    case Kind::iclustered: {
      ClusteredConfig c;
      c.topk = std::min(cluster, at_least(keys / 2.0, 1));
      c.n_clusters = at_least(keys - c.topk, 1);
      return c;
    }
    case Kind::routing: {
      RoutingConfig c;
      c.window = at_least(keys, 1);
      c.n_clusters = at_least(N / c.window, 1);
      return c;
    }
    case Kind::sparse: {
      SparseConfig c;
      c.pattern = pattern;
      c.window = at_least((keys - 1.0) / 2.0, 0);
      switch (pattern) {
        case SparsePattern::dilated: c.dilation = cluster; break;
        case SparsePattern::strided:
          c.stride = at_least(std::ceil(std::sqrt(N)), 1);
          c.window = at_least((keys - N / c.stride - 1.0) / 2.0, 0);
          break;
        case SparsePattern::fixed:
          c.stride = at_least(keys / 2.0, 1);
          c.summary = std::min(c.stride, at_least(keys / 2.0 * c.stride / N, 1));
          break;
        case SparsePattern::longformer:
          c.global_tokens = cluster;
          c.window = at_least((keys - 1.0 - cluster) / 2.0, 0);
          break;
        case SparsePattern::bigbird:
          c.block_size = at_least(keys / 8.0, 1);
          c.global_blocks = 1;
          c.random_blocks = 4;
          break;
        case SparsePattern::axial_rows: c.width = at_least(keys, 1); break;
        case SparsePattern::axial_columns: c.width = at_least(1.0 / budget, 1); break;
        case SparsePattern::criss_cross: {
          // width + N / width - 1 = keys: the larger root, or sqrt(N) when keys is too few.
          const double b = keys + 1.0, disc = b * b - 4.0 * N;
          c.width = at_least(disc >= 0 ? (b + std::sqrt(disc)) / 2.0 : std::sqrt(N), 1);
          break;
        }
        default: break;
      }
      return c;
    }
    case Kind::linear: {
      LinearConfig c;
      c.map = map;
      if (map == FeatureMap::favor_plus) c.n_features = at_least(keys / 2.0, 1);
      if (map == FeatureMap::favor || map == FeatureMap::rfa) c.n_features = 2 * at_least(keys / 4.0, 1);
      if (map == FeatureMap::dpfp) c.dpfp_nu = cluster;
      return c;
    }
    case Kind::compressed: {
      CompressedConfig c;
      c.kind = compression;
      switch (compression) {
        case Compression::linformer: c.rank = at_least(keys, 1); break;
        case Compression::nystrom: c.rank = at_least(keys / 2.0, 1); break;
        case Compression::induced_points: c.rank = at_least(keys / 3.0, 1); break;
        case Compression::memory_compressed: c.stride = at_least(1.0 / budget, 1); break;
        case Compression::star: c.window = at_least((keys - 2.0) / 2.0, 0); break;
        case Compression::global_memory:
          c.rank = at_least(keys / 2.0, 1);
          c.window = at_least((keys / 2.0 - 1.0) / 2.0, 0);
          break;
      }
      return c;
    }
    case Kind::informer: {
      InformerConfig c;
      c.top_queries = at_least(keys / 2.0, 1);
      c.sample_keys = at_least(keys / 2.0, 1);
      return c;
    }
    case Kind::sinkhorn: {
      SinkhornConfig c;
      c.block_size = at_least(keys / 2.0, 1);
      return c;
    }
    case Kind::synthesizer: {
      SynthesizerConfig c;
      c.kind = synthesizer;
      return c;
    }
  }
  return DenseConfig{};
}

bool AttentionVariant::has_budget() const {
  switch (kind) {
    case Kind::dense:
    case Kind::smyrf_fixed:
    case Kind::synthesizer: return false;
    case Kind::linear: return map_has_budget(map);
    default: return true;
  }
}

std::string AttentionVariant::label() const {
  char buf[64];
  const double pct = budget * 100;
  switch (kind) {
    case Kind::dense: return "dense";
    case Kind::smyrf_fixed: std::snprintf(buf, sizeof buf, "smyrf %dx%d", n_hashes, cluster); break;
    case Kind::smyrf_budget: std::snprintf(buf, sizeof buf, "smyrf %d x %g%%", n_hashes, pct); break;
    case Kind::smyrf_centroid: std::snprintf(buf, sizeof buf, "smyrf-c/%d %g%%", cluster, pct); break;
    case Kind::reformer: std::snprintf(buf, sizeof buf, "reformer %d x %g%%", n_hashes, pct); break;
    case Kind::clustered: std::snprintf(buf, sizeof buf, "clustered %g%%", pct); break;
    case Kind::iclustered: std::snprintf(buf, sizeof buf, "i-clustered/%d %g%%", cluster, pct); break;
    case Kind::routing: std::snprintf(buf, sizeof buf, "routing %g%%", pct); break;
    case Kind::sparse: std::snprintf(buf, sizeof buf, "%s %g%%", pattern_name(pattern), pct); break;
    case Kind::linear:
      if (map == FeatureMap::dpfp) std::snprintf(buf, sizeof buf, "dpfp/%d", cluster);
      else if (map_has_budget(map)) std::snprintf(buf, sizeof buf, "%s %g%%", name_of(kMaps, map), pct);
      else std::snprintf(buf, sizeof buf, "%s", name_of(kMaps, map));
      break;
    case Kind::compressed:
      std::snprintf(buf, sizeof buf, "%s %g%%", name_of(kCompressions, compression), pct);
      break;
    case Kind::informer: std::snprintf(buf, sizeof buf, "informer %g%%", pct); break;
    case Kind::sinkhorn: std::snprintf(buf, sizeof buf, "sinkhorn %g%%", pct); break;
    case Kind::synthesizer:
      return synthesizer == SynthesizerKind::dense ? "synthesizer-dense" : "synthesizer-random";
  }
  return buf;
}

AttentionVariant parse_variant(std::string_view spec) {
  AttentionVariant v;
  v.spec = std::string(spec);
  if (spec == "dense") return v;
  if (spec == "synthesizer-dense" || spec == "synthesizer-random") {
    v.kind = AttentionVariant::Kind::synthesizer;
    v.synthesizer = spec == "synthesizer-dense" ? SynthesizerKind::dense : SynthesizerKind::random;
    return v;
  }
  {
    const std::string_view head = spec.substr(0, spec.find(':'));
    for (const auto& [name, map] : kMaps) {
      if (head != name) continue;
      v.kind = AttentionVariant::Kind::linear;
      v.map = map;
      v.cluster = 1;
      if (head.size() == spec.size()) {
        if (map_has_budget(map)) bad(spec, "missing ':F'");
        return v;
      }
      const std::string_view rest = spec.substr(head.size() + 1);
      if (map == FeatureMap::dpfp) v.cluster = parse_int(spec, rest, "NU");
      else if (map_has_budget(map)) v.budget = parse_budget(spec, rest);
      else bad(spec, "takes no budget (its size is fixed by d)");
      return v;
    }
  }
  const std::size_t colon = spec.find(':');
  if (colon == std::string_view::npos) bad(spec, "missing ':'");
  const std::string_view method = spec.substr(0, colon), rest = spec.substr(colon + 1);
  if (method == "smyrf-c") {
    v.kind = AttentionVariant::Kind::smyrf_centroid;
    v.n_hashes = 1;
    const auto [f, q] = budget_and_int(spec, rest, "Q");
    v.budget = f;
    v.cluster = q > 0 ? q : 16;
    return v;
  }
  if (method == "smyrf" || method == "reformer") {
    if (const std::size_t c2 = rest.find(':'); c2 != std::string_view::npos) {
      v.kind = method == "smyrf" ? AttentionVariant::Kind::smyrf_budget : AttentionVariant::Kind::reformer;
      v.n_hashes = parse_int(spec, rest.substr(0, c2), "H");
      v.budget = parse_budget(spec, rest.substr(c2 + 1));
      return v;
    }
    const std::size_t x = rest.find('x');
    if (method == "reformer" || x == std::string_view::npos) bad(spec, "missing ':' or 'x'");
    v.kind = AttentionVariant::Kind::smyrf_fixed;
    v.n_hashes = parse_int(spec, rest.substr(0, x), "H");
    v.cluster = parse_int(spec, rest.substr(x + 1), "C");
    return v;
  }
  if (method == "clustered" || method == "routing") {
    v.kind = method == "clustered" ? AttentionVariant::Kind::clustered : AttentionVariant::Kind::routing;
    v.budget = parse_budget(spec, rest);
    return v;
  }
  if (method == "iclustered") {
    v.kind = AttentionVariant::Kind::iclustered;
    const auto [f, k] = budget_and_int(spec, rest, "K");
    v.budget = f;
    v.cluster = k > 0 ? k : 32;
    return v;
  }
  for (const auto& [name, compression] : kCompressions) {
    if (method != name) continue;
    v.kind = AttentionVariant::Kind::compressed;
    v.compression = compression;
    v.budget = parse_budget(spec, rest);
    return v;
  }
  if (method == "informer" || method == "sinkhorn") {
    v.kind = method == "informer" ? AttentionVariant::Kind::informer : AttentionVariant::Kind::sinkhorn;
    v.budget = parse_budget(spec, rest);
    return v;
  }
  for (const auto& [name, pattern] : kPatterns) {
    if (method != name) continue;
    v.kind = AttentionVariant::Kind::sparse;
    v.pattern = pattern;
    const bool takes_int = pattern == SparsePattern::dilated || pattern == SparsePattern::longformer;
    const auto [f, x] = takes_int ? budget_and_int(spec, rest, pattern == SparsePattern::dilated ? "R" : "G")
                                  : std::pair<double, int>{parse_budget(spec, rest), 0};
    v.budget = f;
    v.cluster = x > 0 ? x : (pattern == SparsePattern::dilated ? 2 : 1);
    return v;
  }
  bad(spec, "unknown method");
}

}  // namespace smyrf::models
