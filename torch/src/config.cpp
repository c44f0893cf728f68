// Method configs from Python keyword arguments: one field table per config (fields<C>() below,
// the C++ field names, types and, for learned parts, shapes), and the generic code that sets
// them, resolves method names against smyrf::methods() and describes the forms.
#include "config.h"

#include <torch/csrc/autograd/python_variable.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <map>
#include <sstream>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "models/variants.h"
#include "smyrf/registry.h"

namespace py = pybind11;

namespace smyrf::torch::python {
namespace {

// ---- field kinds -------------------------------------------------------------------------

// A learned part: a const float* field of the config, with its shape for a call's sizes, and
// where the library takes its gradient (grad: the float path's grad_X field; f64, f64_grad:
// the double-precision parts' fields), null where it computes none.
template <class C>
struct Learned {
  const float* C::*member;
  std::function<std::vector<std::int64_t>(const C&, const Sizes&)> shape;
  const char* layout;  // how errors spell the shape: "[H, n_clusters, d]"
  float* C::*grad = nullptr;
  std::function<void(DoubleParts&, const double*, double*)> f64 = nullptr;
};

// The double-precision value and gradient fields of a learned part (D: CompressedDoubleParts,
// SynthesizerDoubleParts, SinkhornDoubleParts or LinearDoubleParts), set in a call's DoubleParts.
template <class D>
std::function<void(DoubleParts&, const double*, double*)> f64_part(const double* D::*value, double* D::*grad) {
  return [value, grad](DoubleParts& parts, const double* v, double* g) {
    D* d = nullptr;
    if constexpr (std::is_same_v<D, CompressedDoubleParts>)
      d = &parts.compressed;
    else if constexpr (std::is_same_v<D, SynthesizerDoubleParts>)
      d = &parts.synthesizer;
    else if constexpr (std::is_same_v<D, SinkhornDoubleParts>)
      d = &parts.sinkhorn;
    else
      d = &parts.linear;
    d->*value = v;
    d->*grad = g;
  };
}

template <class E>
using Names = std::vector<std::pair<const char*, E>>;

// An enum field with the names of its values (the C++ enumerators).
template <class C, class E>
struct Choice {
  E C::*member;
  Names<E> names;
};

template <class C>
using Kind = std::variant<int C::*, float C::*, bool C::*, Choice<C, Transform>,
                          Choice<C, KeySelection>, Choice<C, SparsePattern>,
                          Choice<C, FeatureMap>, Choice<C, Compression>,
                          Choice<C, SynthesizerKind>, Learned<C>>;

template <class C>
struct Field {
  const char* name;
  Kind<C> kind;
};

const Names<Transform> kTransforms{{"xbox_plus", Transform::xbox_plus},
                                   {"xbox", Transform::xbox},
                                   {"h2_alsh", Transform::h2_alsh},
                                   {"l2_alsh", Transform::l2_alsh}};
const Names<KeySelection> kKeySelections{{"lsh", KeySelection::lsh},
                                         {"centroid", KeySelection::centroid}};
const Names<SparsePattern> kPatterns{
    {"local", SparsePattern::local},           {"dilated", SparsePattern::dilated},
    {"strided", SparsePattern::strided},       {"fixed", SparsePattern::fixed},
    {"longformer", SparsePattern::longformer}, {"bigbird", SparsePattern::bigbird},
    {"axial_rows", SparsePattern::axial_rows}, {"axial_columns", SparsePattern::axial_columns},
    {"criss_cross", SparsePattern::criss_cross}};
const Names<FeatureMap> kMaps{{"elu", FeatureMap::elu},   {"favor_plus", FeatureMap::favor_plus},
                              {"favor", FeatureMap::favor}, {"rfa", FeatureMap::rfa},
                              {"dpfp", FeatureMap::dpfp}, {"efficient", FeatureMap::efficient},
                              {"l2", FeatureMap::l2}};
const Names<Compression> kCompressions{{"linformer", Compression::linformer},
                                       {"nystrom", Compression::nystrom},
                                       {"memory_compressed", Compression::memory_compressed},
                                       {"induced_points", Compression::induced_points},
                                       {"star", Compression::star},
                                       {"global_memory", Compression::global_memory}};
const Names<SynthesizerKind> kSynthesizerKinds{{"dense", SynthesizerKind::dense},
                                               {"random", SynthesizerKind::random}};

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return b > 0 ? (a + b - 1) / b : 0; }

// ---- the field tables: one per config, in the order of its header ------------------------

template <class C>
std::vector<Field<C>> fields();

template <>
std::vector<Field<ReferenceConfig>> fields() {
  return {};
}
template <>
std::vector<Field<DenseConfig>> fields() {
  return {};
}
template <>
std::vector<Field<SmyrfConfig>> fields() {
  using C = SmyrfConfig;
  return {{"n_hashes", &C::n_hashes},
          {"q_cluster_size", &C::q_cluster_size},
          {"k_cluster_size", &C::k_cluster_size},
          {"r", &C::r},
          {"transform", Choice<C, Transform>{&C::transform, kTransforms}},
          {"alsh_m", &C::alsh_m},
          {"alsh_u", &C::alsh_u},
          {"keys", Choice<C, KeySelection>{&C::keys, kKeySelections}}};
}
template <>
std::vector<Field<ReformerConfig>> fields() {
  using C = ReformerConfig;
  return {{"n_hashes", &C::n_hashes},
          {"n_buckets", &C::n_buckets},
          {"chunk_size", &C::chunk_size},
          {"shared_qk", &C::shared_qk}};
}
template <>
std::vector<Field<ClusteredConfig>> fields() {
  using C = ClusteredConfig;
  return {{"n_clusters", &C::n_clusters},
          {"hash_bits", &C::hash_bits},
          {"iterations", &C::iterations},
          {"topk", &C::topk}};
}
template <>
std::vector<Field<RoutingConfig>> fields() {
  using C = RoutingConfig;
  return {{"n_clusters", &C::n_clusters},
          {"window", &C::window},
          {"iterations", &C::iterations},
          {"centroids",
           Learned<C>{&C::centroids,
                      [](const C& c, const Sizes& s) {
                        return std::vector<std::int64_t>{s.heads, c.n_clusters, s.d};
                      },
                      "[H, n_clusters, d]"}}};
}
template <>
std::vector<Field<SparseConfig>> fields() {
  using C = SparseConfig;
  return {{"pattern", Choice<C, SparsePattern>{&C::pattern, kPatterns}},
          {"window", &C::window},
          {"dilation", &C::dilation},
          {"stride", &C::stride},
          {"summary", &C::summary},
          {"global_tokens", &C::global_tokens},
          {"block_size", &C::block_size},
          {"global_blocks", &C::global_blocks},
          {"random_blocks", &C::random_blocks},
          {"width", &C::width}};
}
template <>
std::vector<Field<LinearConfig>> fields() {
  using C = LinearConfig;
  return {{"map", Choice<C, FeatureMap>{&C::map, kMaps}},
          {"n_features", &C::n_features},
          {"orthogonal", &C::orthogonal},
          {"rfa_sigma", &C::rfa_sigma},
          {"dpfp_nu", &C::dpfp_nu},
          {"chunk", &C::chunk},
          {"gates", Learned<C>{&C::gates,
                               [](const C&, const Sizes& s) {
                                 return std::vector<std::int64_t>{s.batch, s.heads, s.nk};
                               },
                               "[B, H, Nk]", &C::grad_gates,
                               f64_part(&LinearDoubleParts::gates, &LinearDoubleParts::grad_gates)}}};
}
template <>
std::vector<Field<CompressedConfig>> fields() {
  using C = CompressedConfig;
  const auto h_rank = [](std::int64_t Sizes::*last) {
    return [last](const C& c, const Sizes& s) {
      return std::vector<std::int64_t>{s.heads, c.rank, s.*last};
    };
  };
  using D = CompressedDoubleParts;
  return {{"kind", Choice<C, Compression>{&C::kind, kCompressions}},
          {"rank", &C::rank},
          {"projection_e", Learned<C>{&C::projection_e, h_rank(&Sizes::nk), "[H, rank, Nk]",
                                      &C::grad_projection_e, f64_part(&D::projection_e, &D::grad_projection_e)}},
          {"projection_f", Learned<C>{&C::projection_f, h_rank(&Sizes::nk), "[H, rank, Nk]",
                                      &C::grad_projection_f, f64_part(&D::projection_f, &D::grad_projection_f)}},
          {"pinv_iterations", &C::pinv_iterations},
          {"stride", &C::stride},
          {"inducing", Learned<C>{&C::inducing, h_rank(&Sizes::d), "[H, rank, d]",
                                  &C::grad_inducing, f64_part(&D::inducing, &D::grad_inducing)}},
          {"window", &C::window},
          {"memory_k", Learned<C>{&C::memory_k, h_rank(&Sizes::d), "[H, rank, d]",
                                  &C::grad_memory_k, f64_part(&D::memory_k, &D::grad_memory_k)}},
          {"memory_v", Learned<C>{&C::memory_v, h_rank(&Sizes::dv), "[H, rank, dv]",
                                  &C::grad_memory_v, f64_part(&D::memory_v, &D::grad_memory_v)}}};
}
template <>
std::vector<Field<InformerConfig>> fields() {
  using C = InformerConfig;
  return {{"factor", &C::factor}, {"top_queries", &C::top_queries}, {"sample_keys", &C::sample_keys}};
}
template <>
std::vector<Field<SinkhornConfig>> fields() {
  using C = SinkhornConfig;
  return {{"block_size", &C::block_size},
          {"iterations", &C::iterations},
          {"temperature", &C::temperature},
          {"sort_net", Learned<C>{&C::sort_net,
                                  [](const C& c, const Sizes& s) {
                                    return std::vector<std::int64_t>{s.heads, s.d,
                                                                     ceil_div(s.nk, c.block_size)};
                                  },
                                  "[H, d, ceil(Nk / block_size)]", &C::grad_sort_net,
                                  f64_part(&SinkhornDoubleParts::sort_net, &SinkhornDoubleParts::grad_sort_net)}}};
}
template <>
std::vector<Field<SynthesizerConfig>> fields() {
  using C = SynthesizerConfig;
  using D = SynthesizerDoubleParts;
  using Shape = std::function<std::vector<std::int64_t>(const C&, const Sizes&)>;
  const auto part = [](const float* C::*member, Shape shape, const char* layout, float* C::*grad,
                       const double* D::*value, double* D::*value_grad) {
    return Learned<C>{member, std::move(shape), layout, grad, f64_part(value, value_grad)};
  };
  return {{"kind", Choice<C, SynthesizerKind>{&C::kind, kSynthesizerKinds}},
          {"hidden", &C::hidden},
          {"w1", part(&C::w1, [](const C& c, const Sizes& s) { return std::vector<std::int64_t>{s.heads, s.d, c.hidden}; },
                      "[H, d, hidden]", &C::grad_w1, &D::w1, &D::grad_w1)},
          {"b1", part(&C::b1, [](const C& c, const Sizes& s) { return std::vector<std::int64_t>{s.heads, c.hidden}; },
                      "[H, hidden]", &C::grad_b1, &D::b1, &D::grad_b1)},
          {"w2", part(&C::w2, [](const C& c, const Sizes& s) { return std::vector<std::int64_t>{s.heads, c.hidden, s.nk}; },
                      "[H, hidden, Nk]", &C::grad_w2, &D::w2, &D::grad_w2)},
          {"b2", part(&C::b2, [](const C&, const Sizes& s) { return std::vector<std::int64_t>{s.heads, s.nk}; },
                      "[H, Nk]", &C::grad_b2, &D::b2, &D::grad_b2)},
          {"logits", part(&C::logits, [](const C&, const Sizes& s) { return std::vector<std::int64_t>{s.heads, s.nq, s.nk}; },
                          "[H, Nq, Nk]", &C::grad_logits, &D::logits, &D::grad_logits)}};
}

// ---- values ------------------------------------------------------------------------------

std::string type_name(py::handle h) { return py::str(py::type::of(h).attr("__name__")); }

std::string repr_of(py::handle h) { return py::repr(h); }

template <class E>
const char* name_of(const Names<E>& names, E value) {
  for (const auto& [n, e] : names)
    if (e == value) return n;
  return "?";
}

template <class E>
std::string list_names(const Names<E>& names) {
  std::string out;
  for (const auto& [n, e] : names) out += (out.empty() ? "'" : ", '") + std::string(n) + "'";
  return out;
}

// The Python value of a scalar field (tensors: None), for describe_methods() and the checks
// against a form.
template <class C>
py::object value_of(const Field<C>& field, const C& config) {
  return std::visit(
      [&](const auto& kind) -> py::object {
        using K = std::decay_t<decltype(kind)>;
        if constexpr (std::is_same_v<K, Learned<C>>) {
          return py::none();
        } else if constexpr (std::is_member_object_pointer_v<K>) {
          return py::cast(config.*kind);
        } else {
          return py::str(name_of(kind.names, config.*(kind.member)));
        }
      },
      field.kind);
}

template <class C>
void set_scalar(const Field<C>& field, C& config, py::handle value) {
  const std::string name = field.name;
  std::visit(
      [&](const auto& kind) {
        using K = std::decay_t<decltype(kind)>;
        if constexpr (std::is_same_v<K, Learned<C>>) {
          // Set by set_learned, once every scalar is known.
        } else if constexpr (std::is_same_v<K, int C::*>) {
          if (py::isinstance<py::bool_>(value) || !py::isinstance<py::int_>(value))
            throw py::type_error(name + ": expected an int, got " + type_name(value));
          const auto v = value.cast<py::int_>();
          const long long n = PyLong_AsLongLong(v.ptr());
          if (PyErr_Occurred() || n < INT_MIN || n > INT_MAX) {
            PyErr_Clear();
            throw py::value_error(name + " = " + repr_of(value) + ": must fit in a 32-bit int");
          }
          config.*kind = static_cast<int>(n);
        } else if constexpr (std::is_same_v<K, float C::*>) {
          if (py::isinstance<py::bool_>(value) ||
              !(py::isinstance<py::float_>(value) || py::isinstance<py::int_>(value)))
            throw py::type_error(name + ": expected a number, got " + type_name(value));
          config.*kind = static_cast<float>(value.cast<double>());
        } else if constexpr (std::is_same_v<K, bool C::*>) {
          if (!py::isinstance<py::bool_>(value))
            throw py::type_error(name + ": expected a bool, got " + type_name(value));
          config.*kind = value.cast<bool>();
        } else {
          if (!py::isinstance<py::str>(value))
            throw py::type_error(name + ": expected one of " + list_names(kind.names) +
                                 " (a str), got " + type_name(value));
          const std::string s = value.cast<std::string>();
          for (const auto& [n, e] : kind.names)
            if (s == n) {
              config.*(kind.member) = e;
              return;
            }
          throw py::value_error(name + " = '" + s + "': expected one of " + list_names(kind.names));
        }
      },
      field.kind);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

// A learned part: a tensor (float32, or the inputs' dtype, converted to float32: the library
// reads float32) of the shape its layout gives for this call, or None (the documented default).
// Without sizes (describe_method) a given tensor only marks the part present: the pointer is
// then a sentinel that the config, used for its capabilities alone, never dereferences.
template <class C>
void set_learned(const Field<C>& field, const Learned<C>& learned, C& config, py::handle value,
                 const Sizes* sizes_or_null, Options& options) {
  const std::string name = field.name;
  if (value.is_none()) {
    config.*(learned.member) = nullptr;
    return;
  }
  if (!THPVariable_Check(value.ptr()))
    throw py::type_error(name + ": expected a torch.Tensor or None, got " + type_name(value));
  if (sizes_or_null == nullptr) {
    static const float present = 0.0f;
    config.*(learned.member) = &present;
    return;
  }
  const Sizes& sizes = *sizes_or_null;
  const at::Tensor t = THPVariable_Unpack(value.ptr());
  TORCH_CHECK_TYPE(t.device().is_cpu(), name, ": expected a CPU tensor, got one on ", t.device());
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, name,
                   ": expected a strided (dense) tensor, got layout ", t.layout());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == sizes.dtype, name,
                   ": expected dtype float32 (or the inputs' ", sizes.dtype, "), got ",
                   t.scalar_type());
  const std::vector<std::int64_t> shape = learned.shape(config, sizes);
  TORCH_CHECK_VALUE(t.sizes().vec() == shape, name, ": expected shape ", learned.layout, " = ",
                    shape_text(shape), ", got ", t.sizes());
  at::Tensor f = t.to(at::kFloat).contiguous();
  config.*(learned.member) = f.data_ptr<float>();
  // Autograd differentiates `source`: the tensor given (a contiguous view of it in float64,
  // whose exact values the double-precision path reads).
  LearnedPart part{name, std::move(f), {}, {}, t.scalar_type() == at::kDouble ? t.contiguous() : t};
  if (learned.grad != nullptr)
    part.set_grad = [grad = learned.grad](MethodConfig& m, float* g) { std::get<C>(m).*grad = g; };
  part.set_f64 = learned.f64;
  options.learned.push_back(std::move(part));
}

template <class C>
std::string list_fields(const std::vector<Field<C>>& table) {
  if (table.empty()) return "none";
  std::string out;
  for (const Field<C>& f : table) out += (out.empty() ? "" : ", ") + std::string(f.name);
  return out;
}

// Starts from `start` (a form's example, or the config's defaults when `free`), then sets the
// scalar fields, then the learned parts (whose shapes read the scalars).
template <class C>
C build(const C& start, bool free, const std::string& label, const py::dict& kwargs,
        const Sizes* sizes, Options& options) {
  const std::vector<Field<C>> table = fields<C>();
  const auto find = [&](const std::string& key) -> const Field<C>* {
    for (const Field<C>& f : table)
      if (key == f.name) return &f;
    return nullptr;
  };
  C config = start;
  std::vector<std::pair<const Field<C>*, py::handle>> given;
  for (const auto& [k, value] : kwargs) {
    const std::string key = py::str(k);
    const Field<C>* field = find(key);
    if (field == nullptr)
      throw py::type_error("method " + label + ": unknown config field '" + key +
                           "'; valid fields: " + list_fields(table));
    given.emplace_back(field, value);
  }
  for (const auto& [field, value] : given) {
    set_scalar(*field, config, value);
    // An enum the form fixes (its example differs from the defaults there) must keep its value:
    // "linear/favor_plus" with map='elu' is a contradiction, not a choice.
    const bool is_enum = !std::holds_alternative<int C::*>(field->kind) &&
                         !std::holds_alternative<float C::*>(field->kind) &&
                         !std::holds_alternative<bool C::*>(field->kind) &&
                         !std::holds_alternative<Learned<C>>(field->kind);
    if (!free && is_enum) {
      const py::object fixed = value_of(*field, start);
      static const C defaults{};
      if (!fixed.equal(value_of(*field, defaults)) && !fixed.equal(value_of(*field, config)))
        throw py::value_error(std::string(field->name) + " = " + repr_of(value) + ": method " + label +
                              " fixes " + field->name + " = " + repr_of(fixed) + "; pass method='" +
                              smyrf::method_name(MethodConfig(C{})) + "' to choose " +
                              field->name + " freely");
    }
  }
  for (const auto& [field, value] : given)
    if (const auto* learned = std::get_if<Learned<C>>(&field->kind))
      set_learned(*field, *learned, config, value, sizes, options);
  return config;
}

// ---- names -------------------------------------------------------------------------------

std::string canonical(const MethodInfo& m) {
  return m.form == m.name ? m.name : m.name + "/" + m.form;
}

// The head of a variant spec: "performer:F" -> "performer", "dpfp[:NU]" -> "dpfp".
std::string spec_head(const std::string& spec) { return spec.substr(0, spec.find_first_of(":[")); }

// What a name selects: a form (index into methods()) or a method's default config.
struct Target {
  const MethodInfo* form = nullptr;  // nullptr: the defaults of `config`'s method, fields free
  MethodConfig config;
  std::string label;
};

// name -> target, built once: canonical names, method names (the defaults), unique form names
// and spec heads; an earlier kind of name wins over a later one.
const std::map<std::string, Target>& targets() {
  static const std::map<std::string, Target> all = [] {
    std::map<std::string, Target> out;
    const auto& forms = smyrf::methods();
    for (const MethodInfo& m : forms) out.emplace(canonical(m), Target{&m, m.example, canonical(m)});
    for (const MethodInfo& m : forms) {
      if (out.count(m.name)) continue;
      // The default config of the method: the alternative of MethodConfig holding m.example.
      MethodConfig defaults = std::visit(
          [](const auto& c) { return MethodConfig(std::decay_t<decltype(c)>{}); }, m.example);
      out.emplace(m.name, Target{nullptr, defaults, m.name});
    }
    std::map<std::string, int> uses;
    for (const MethodInfo& m : forms) {
      ++uses[m.form];
      for (const std::string& s : m.specs)
        if (spec_head(s) != m.form) ++uses[spec_head(s)];
    }
    for (const MethodInfo& m : forms) {
      std::vector<std::string> aliases{m.form};
      for (const std::string& s : m.specs) aliases.push_back(spec_head(s));
      for (const std::string& a : aliases)
        if (uses[a] == 1 && !out.count(a)) out.emplace(a, Target{&m, m.example, canonical(m)});
    }
    return out;
  }();
  return all;
}

const Target& resolve(const std::string& method) {
  const auto& all = targets();
  const auto it = all.find(method);
  if (it != all.end()) return it->second;
  std::string names;
  for (const MethodInfo& m : smyrf::methods()) names += (names.empty() ? "" : ", ") + canonical(m);
  throw py::value_error("method = '" + method + "': unknown; expected one of " + names +
                        " (or a method name, a unique form name or a variant spec's name: see "
                        "smyrf_torch.methods())");
}

py::dict capabilities_dict(const Capabilities& c) {
  py::dict d;
  d["causal"] = c.causal;
  d["dropout"] = c.dropout;
  d["causal_dropout"] = c.causal_dropout;
  d["backward"] = c.backward;
  d["causal_backward"] = c.causal_backward;
  d["f64"] = c.f64;
  d["bf16"] = c.bf16;
  d["masks"] = c.masks;
  d["cross_lengths"] = c.cross_lengths;
  d["broadcast"] = c.broadcast;
  d["learned"] = c.learned;
  d["seeded"] = c.seeded;
  d["key_bias"] = c.key_bias;
  return d;
}

// method, capabilities, fields (scalar values) and learned (layouts) of `config` into d.
void fill_description(const MethodConfig& config, py::dict& d);

}  // namespace

void build_method(const std::string& method, const py::dict& kwargs, const Sizes& sizes,
                  Options& options) {
  const Target& target = resolve(method);
  options.label = target.label;
  options.learned.clear();
  options.method = std::visit(
      [&](const auto& start) {
        return MethodConfig(build(start, target.form == nullptr, target.label, kwargs, &sizes, options));
      },
      target.config);
}

py::dict describe_method(const std::string& method, const py::dict& kwargs) {
  const Target& target = resolve(method);
  Options options;
  const MethodConfig config = std::visit(
      [&](const auto& start) {
        return MethodConfig(build(start, target.form == nullptr, target.label, kwargs, nullptr, options));
      },
      target.config);
  py::dict d;
  d["name"] = target.label;
  fill_description(config, d);
  return d;
}

py::dict describe_variant(const std::string& spec, std::int64_t n) {
  if (n < 1) throw py::value_error("n = " + std::to_string(n) + ": must be >= 1");
  const smyrf::models::AttentionVariant variant = [&] {
    try {
      return smyrf::models::parse_variant(spec);
    } catch (const smyrf::Error& e) {
      throw py::value_error(e.what());
    }
  }();
  const MethodConfig config = variant.config_for(n);
  py::dict d;
  d["spec"] = spec;
  d["label"] = variant.label();
  d["exact"] = variant.exact_at(n);
  fill_description(config, d);
  return d;
}

namespace {

void fill_description(const MethodConfig& config, py::dict& d) {
  d["method"] = smyrf::method_name(config);
  d["capabilities"] = capabilities_dict(smyrf::capabilities(config));
  py::dict values, learned;
  py::list learned_grad;
  std::visit(
      [&](const auto& c) {
        using C = std::decay_t<decltype(c)>;
        for (const Field<C>& f : fields<C>()) {
          if (const auto* l = std::get_if<Learned<C>>(&f.kind)) {
            learned[f.name] = l->layout;
            if (l->grad != nullptr) learned_grad.append(f.name);
          }
          else
            values[f.name] = value_of(f, c);
        }
      },
      config);
  d["fields"] = values;
  d["learned"] = learned;
  d["learned_grad"] = learned_grad;
}

}  // namespace

py::list describe_methods() {
  std::map<const MethodInfo*, std::vector<std::string>> aliases;
  for (const auto& [name, target] : targets())
    if (target.form != nullptr && name != canonical(*target.form)) aliases[target.form].push_back(name);
  py::list out;
  for (const MethodInfo& m : smyrf::methods()) {
    py::dict d;
    d["name"] = canonical(m);
    d["method"] = m.name;
    d["form"] = m.form;
    d["aliases"] = aliases[&m];
    d["config"] = m.config;
    d["specs"] = m.specs;
    d["summary"] = m.summary;
    fill_description(m.example, d);
    d["method"] = m.name;
    d["capabilities"] = capabilities_dict(m.caps);
    out.append(d);
  }
  return out;
}

}  // namespace smyrf::torch::python
