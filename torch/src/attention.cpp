// LibTorch glue: checks at the edge, then one torch::autograd::Function whose forward calls
// smyrf::attention (float32, and bfloat16 through DType::bf16) or smyrf::attention_f64
// (float64) and whose backward calls smyrf::attention_backward (float32, bfloat16 converted to
// float32) / smyrf::attention_backward_f64. What a method supports comes from
// smyrf::capabilities(config), never from a list kept here.
#include "smyrf/torch.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include "smyrf/registry.h"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

namespace smyrf::torch {
namespace {

namespace ag = ::torch::autograd;

// ---- checks at the edge ------------------------------------------------------------------

void check_input(const at::Tensor& t, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.defined(), name, ": undefined tensor");
  TORCH_CHECK_TYPE(t.device().is_cpu(), name, ": expected a CPU tensor, got one on ", t.device());
  TORCH_CHECK_TYPE(t.layout() == at::kStrided, name, ": expected a strided (dense) tensor, got layout ",
                   t.layout());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                       t.scalar_type() == at::kBFloat16,
                   name, ": expected dtype float32, float64 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected 4 dims ", layout, ", got ", t.dim(),
                    " dims of shape ", t.sizes());
  for (const std::int64_t s : t.sizes())
    TORCH_CHECK_VALUE(s >= 1, name, ": every dimension must be >= 1, got shape ", t.sizes());
}

// Returns the mask as a contiguous uint8 [B, N] tensor (a copy when it was not one already).
c10::optional<at::Tensor> check_mask(const c10::optional<at::Tensor>& mask, const char* name,
                                     const char* layout, std::int64_t batch, std::int64_t n) {
  if (!mask.has_value() || !mask->defined()) return c10::nullopt;
  const at::Tensor& m = *mask;
  TORCH_CHECK_TYPE(m.device().is_cpu(), name, ": expected a CPU tensor, got one on ", m.device());
  TORCH_CHECK_TYPE(m.layout() == at::kStrided, name, ": expected a strided (dense) tensor, got layout ",
                   m.layout());
  TORCH_CHECK_TYPE(m.scalar_type() == at::kBool || m.scalar_type() == at::kByte, name,
                   ": expected dtype bool or uint8 (true = the token takes part), got ",
                   m.scalar_type());
  TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == batch && m.size(1) == n, name,
                    ": expected shape ", layout, " = [", batch, ", ", n, "], got ", m.sizes());
  return m.to(at::kByte).contiguous();
}

void check_options(const Options& options) {
  TORCH_CHECK_VALUE(std::isfinite(options.dropout) && options.dropout >= 0.0 && options.dropout < 1.0,
                    "dropout = ", options.dropout, ": must be in [0, 1)");
  TORCH_CHECK_VALUE(options.num_threads >= 0 && options.num_threads <= smyrf::kMaxThreads, "num_threads = ",
                    options.num_threads, ": must be >= 0 and <= ", smyrf::kMaxThreads,
                    " (0 = all threads OpenMP offers)");
  if (options.scale) {
    const double s = *options.scale;
    TORCH_CHECK_VALUE(std::isfinite(s) && std::abs(s) <= std::numeric_limits<float>::max(),
                      "scale = ", s, ": must be finite (and representable as float32)");
  }
}

std::string label(const Options& options) {
  return options.label.empty() ? std::string(smyrf::method_name(options.method)) : options.label;
}

// Learned parts: the pointers of options.method address these tensors' data.
const at::Tensor& source_of(const LearnedPart& part) {
  return part.source.defined() ? part.source : part.tensor;
}

// Whether the call needs a gradient of this part.
bool part_wants_grad(const LearnedPart& part) {
  return at::GradMode::is_enabled() && source_of(part).requires_grad();
}

void check_learned(const Options& options) {
  for (const LearnedPart& part : options.learned) {
    const std::string& name = part.name;
    const at::Tensor& t = part.tensor;
    TORCH_CHECK_VALUE(t.defined(), name, ": undefined tensor");
    TORCH_CHECK_TYPE(t.device().is_cpu(), name, ": expected a CPU tensor, got one on ", t.device());
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name,
                     ": expected dtype float32 (the library reads learned parts as float32), got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.is_contiguous(), name, ": expected a contiguous tensor");
    if (part.source.defined())
      TORCH_CHECK_VALUE(part.source.sizes() == t.sizes() && part.source.is_floating_point(),
                        name, ": source of shape ", part.source.sizes(), " and dtype ",
                        part.source.scalar_type(), " does not match the float32 values' shape ",
                        t.sizes());
    // A part without a gradient in the library: refusing beats a silent zero.
    TORCH_CHECK_VALUE(!(part_wants_grad(part) && !part.set_grad), name,
                      ": requires grad, but the library computes no gradient for the learned "
                      "part ", name, " of ", label(options),
                      " yet; pass it detached (e.g. as a buffer) or call under torch.no_grad()");
  }
}

// The refusals that depend on the call (dtype, grad) rather than on the config alone; the
// library refuses the rest itself (causal, dropout) with smyrf::Error naming the parameter.
void check_capabilities(const Options& options, at::ScalarType dtype, bool wants_grad) {
  const Capabilities caps = smyrf::capabilities(options.method);
  TORCH_CHECK_VALUE(!(dtype == at::kDouble && !caps.f64), "q, k, v: dtype float64 needs the "
                    "double-precision path, and method ", label(options), " has none; use "
                    "float32 or bfloat16");
  TORCH_CHECK_VALUE(!(dtype == at::kBFloat16 && !caps.bf16), "q, k, v: dtype bfloat16: method ",
                    label(options), " has no bf16 input path; use float32");
  TORCH_CHECK_VALUE(!(wants_grad && !caps.backward), "method ", label(options),
                    " has no backward; call it under torch.no_grad() or on tensors that do not "
                    "require grad");
  TORCH_CHECK_VALUE(!(wants_grad && options.causal && !caps.causal_backward), "causal = true: method ",
                    label(options), " has no causal backward; call it under torch.no_grad() or "
                    "on tensors that do not require grad");
}

// ---- the call ----------------------------------------------------------------------------

// Scratch memory reused by the calls of one thread (smyrf::Workspace is not thread-safe).
Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

// Sizes, masks and options of a call on contiguous q, k, v; the data pointers are set by the
// caller (the float64 entry points read none of them).
AttentionParams make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& key_mask, const at::Tensor& query_mask,
                            const Options& options) {
  AttentionParams p = AttentionParams::contiguous(q.size(0), q.size(1), q.size(2), k.size(2),
                                                  q.size(3), v.size(3), nullptr, nullptr,
                                                  nullptr, nullptr);
  p.with_masks(key_mask.defined() ? key_mask.data_ptr<std::uint8_t>() : nullptr,
               query_mask.defined() ? query_mask.data_ptr<std::uint8_t>() : nullptr);
  if (options.scale) p.scale = static_cast<float>(*options.scale);
  p.seed = options.seed;
  p.num_threads = options.num_threads;
  p.dropout = options.training ? static_cast<float>(options.dropout) : 0.0f;
  p.causal = options.causal;
  if (options.key_bias.defined()) {
    const at::Tensor& kb = options.key_bias;
    TORCH_CHECK_TYPE(kb.scalar_type() == at::kFloat && kb.device().is_cpu() && kb.is_contiguous(),
                     "key_bias: expected a contiguous CPU float32 tensor");
    TORCH_CHECK_VALUE(kb.dim() == 3 && kb.size(0) == q.size(0) && kb.size(1) == q.size(1) && kb.size(2) == k.size(2),
                      "key_bias: expected shape [B, H, Nk] = [", q.size(0), ", ", q.size(1), ", ", k.size(2),
                      "], got ", kb.sizes());
    p.key_bias = kb.data_ptr<float>();
    p.key_bias_batch_stride = kb.stride(0);
    p.key_bias_head_stride = kb.stride(1);
  }
  return p;
}

// Keeps the Options of a forward call for its backward (AutogradContext stores IValues).
struct SavedOptions : ::torch::CustomClassHolder {
  explicit SavedOptions(Options o) : options(std::move(o)) {}
  Options options;
  std::vector<bool> learned_grad;  // per learned part: whether its source requires grad
};

// The double-precision parts of a float64 call's learned parts (those with set_f64 whose
// source is float64), with gradient pointers into `grads` when given; the config's f64 pointer
// set to `parts` when any is.
MethodConfig with_f64_parts(const Options& options, DoubleParts& parts,
                            std::vector<at::Tensor>* grads) {
  MethodConfig method = options.method;
  bool any = false;
  for (std::size_t i = 0; i < options.learned.size(); ++i) {
    const LearnedPart& part = options.learned[i];
    if (!part.set_f64 || !part.source.defined() || part.source.scalar_type() != at::kDouble)
      continue;
    double* grad = grads && (*grads)[i].defined() ? (*grads)[i].data_ptr<double>() : nullptr;
    part.set_f64(parts, part.source.data_ptr<double>(), grad);
    any = true;
  }
  if (auto* c = std::get_if<CompressedConfig>(&method); c != nullptr && any) c->f64 = &parts.compressed;
  if (auto* c = std::get_if<SynthesizerConfig>(&method); c != nullptr && any) c->f64 = &parts.synthesizer;
  if (auto* c = std::get_if<LinearConfig>(&method); c != nullptr && any) c->f64 = &parts.linear;
  if (auto* c = std::get_if<SinkhornConfig>(&method); c != nullptr && any) c->f64 = &parts.sinkhorn;
  return method;
}

struct AttentionFunction : public ag::Function<AttentionFunction> {
  // q, k, v: checked; masks: contiguous uint8 or absent. Masks are tensor arguments so that
  // autograd sees them, but they get no gradient. learned: each options.learned part's source
  // (what autograd differentiates), in order.
  static at::Tensor forward(ag::AutogradContext* ctx, const at::Tensor& q_in,
                            const at::Tensor& k_in, const at::Tensor& v_in,
                            const c10::optional<at::Tensor>& key_mask,
                            const c10::optional<at::Tensor>& query_mask, at::TensorList learned,
                            const Options& options) {
    std::vector<bool> learned_grad;
    for (const at::Tensor& t : learned) learned_grad.push_back(t.requires_grad());
    const at::ScalarType dtype = q_in.scalar_type();
    // The library's bf16 path has no dropout; the exact float32 copies give the same values.
    const bool bf16_as_f32 =
        dtype == at::kBFloat16 && options.training && options.dropout > 0.0;
    const auto prepare = [&](const at::Tensor& t) {
      return bf16_as_f32 ? t.to(at::kFloat).contiguous() : t.contiguous();
    };
    const at::Tensor q = prepare(q_in), k = prepare(k_in), v = prepare(v_in);
    const at::Tensor km = key_mask.value_or(at::Tensor()), qm = query_mask.value_or(at::Tensor());
    AttentionParams p = make_params(q, k, v, km, qm, options);
    // O and lse in float32 for float32 and bfloat16 inputs (the library writes float O).
    const at::TensorOptions out_options =
        q.options().dtype(dtype == at::kDouble ? at::kDouble : at::kFloat);
    at::Tensor o = at::empty({p.batch, p.heads, p.nq, p.dv}, out_options);
    at::Tensor lse = at::empty({p.batch, p.heads, p.nq}, out_options);
    if (q.scalar_type() == at::kBFloat16) {
      p.dtype = DType::bf16;
      p.q = q.data_ptr<at::BFloat16>();
      p.k = k.data_ptr<at::BFloat16>();
      p.v = v.data_ptr<at::BFloat16>();
      p.o = o.data_ptr<float>();
      p.lse = lse.data_ptr<float>();
      const RunInfo info = smyrf::attention(p, options.method, &thread_workspace());
      if (options.info) *options.info = info;
    } else if (q.scalar_type() == at::kFloat) {
      p.q = q.data_ptr<float>();
      p.k = k.data_ptr<float>();
      p.v = v.data_ptr<float>();
      p.o = o.data_ptr<float>();
      p.lse = lse.data_ptr<float>();
      const RunInfo info = smyrf::attention(p, options.method, &thread_workspace());
      if (options.info) *options.info = info;
    } else {
      DoubleParts parts;
      smyrf::attention_f64(p, DoubleTensors{q.data_ptr<double>(), k.data_ptr<double>(),
                                            v.data_ptr<double>()},
                           with_f64_parts(options, parts, nullptr), o.data_ptr<double>(),
                           lse.data_ptr<double>());
    }
    ctx->save_for_backward({q, k, v, o, lse, km, qm});
    ctx->saved_data["bf16"] = dtype == at::kBFloat16;
    // The options hold the learned parts' tensors: they stay alive until the backward.
    auto saved_options = c10::make_intrusive<SavedOptions>(options);
    saved_options->learned_grad = std::move(learned_grad);
    ctx->saved_data["options"] = at::IValue::make_capsule(std::move(saved_options));
    return dtype == at::kBFloat16 ? o.to(at::kBFloat16) : o;
  }

  static ag::variable_list backward(ag::AutogradContext* ctx, ag::variable_list grad_outputs) {
    const ag::variable_list saved = ctx->get_saved_variables();
    const at::Tensor &o = saved[3], &lse = saved[4];
    // bfloat16 inputs: the backward runs in float32 on their exact float32 values.
    const bool bf16 = ctx->saved_data["bf16"].toBool();
    const auto as_compute = [&](const at::Tensor& t) {
      return t.scalar_type() == at::kBFloat16 ? t.to(at::kFloat).contiguous() : t;
    };
    const at::Tensor q = as_compute(saved[0]), k = as_compute(saved[1]), v = as_compute(saved[2]);
    const auto* saved_options =
        c10::static_intrusive_pointer_cast<SavedOptions>(ctx->saved_data["options"].toCapsule())
            .get();
    const Options& options = saved_options->options;
    const at::Tensor grad_o = grad_outputs[0].to(o.scalar_type()).contiguous();
    at::Tensor grad_q = at::empty_like(q), grad_k = at::empty_like(k), grad_v = at::empty_like(v);
    // The learned parts' gradients, in the compute dtype (written whole by the library).
    const std::size_t n_learned = options.learned.size();
    std::vector<at::Tensor> grad_learned(n_learned);
    for (std::size_t i = 0; i < n_learned; ++i)
      if (saved_options->learned_grad[i] && options.learned[i].set_grad)
        grad_learned[i] = at::empty(options.learned[i].tensor.sizes(), q.options());
    AttentionParams p = make_params(q, k, v, saved[5], saved[6], options);
    if (q.scalar_type() == at::kFloat) {
      p.q = q.data_ptr<float>();
      p.k = k.data_ptr<float>();
      p.v = v.data_ptr<float>();
      p.o = o.data_ptr<float>();  // read only here: the forward output
      MethodConfig method = options.method;
      for (std::size_t i = 0; i < n_learned; ++i)
        if (grad_learned[i].defined())
          options.learned[i].set_grad(method, grad_learned[i].data_ptr<float>());
      smyrf::attention_backward(
          p,
          GradientParams{o.data_ptr<float>(), lse.data_ptr<float>(), grad_o.data_ptr<float>(),
                         grad_q.data_ptr<float>(), grad_k.data_ptr<float>(),
                         grad_v.data_ptr<float>()},
          method, &thread_workspace());
    } else {
      // A part without a float64 source (or set_f64) has no double-precision gradient here.
      for (std::size_t i = 0; i < n_learned; ++i) {
        const LearnedPart& part = options.learned[i];
        if (grad_learned[i].defined() &&
            !(part.set_f64 && part.source.defined() && part.source.scalar_type() == at::kDouble))
          TORCH_CHECK_VALUE(false, part.name, ": a float64 call differentiates learned parts "
                            "given in float64 only; got ", source_of(part).scalar_type());
      }
      DoubleParts parts;
      smyrf::attention_backward_f64(
          p, DoubleTensors{q.data_ptr<double>(), k.data_ptr<double>(), v.data_ptr<double>()},
          with_f64_parts(options, parts, &grad_learned), o.data_ptr<double>(),
          lse.data_ptr<double>(), grad_o.data_ptr<double>(), grad_q.data_ptr<double>(),
          grad_k.data_ptr<double>(), grad_v.data_ptr<double>());
    }
    ag::variable_list grads{grad_q, grad_k, grad_v};
    if (bf16)
      for (at::Tensor& g : grads) g = g.to(at::kBFloat16);
    for (std::size_t i = 0; i < n_learned; ++i)
      if (grad_learned[i].defined())
        grads.push_back(grad_learned[i].to(source_of(options.learned[i]).scalar_type()));
    // Differentiable once: when the graph of this backward is being recorded
    // (create_graph=True), the gradients are returned attached to a node that throws if
    // anything differentiates through them (never silently treated as constants).
    if (at::GradMode::is_enabled()) {
      for (at::Tensor& g : grads) g.requires_grad_(true);
      const auto n = static_cast<int>(grads.size());
      grads = (*std::make_shared<ag::DelayedError>(
          "smyrf::torch::attention is differentiable once: no double backward", n))(
          std::move(grads));
    }
    // One entry per forward argument: q, k, v, key_mask, query_mask, each learned part,
    // options.
    ag::variable_list out{grads[0], grads[1], grads[2], at::Tensor(), at::Tensor()};
    for (std::size_t i = 0, next = 3; i < n_learned; ++i)
      out.push_back(grad_learned[i].defined() ? grads[next++] : at::Tensor());
    out.push_back(at::Tensor());
    return out;
  }
};

}  // namespace

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_input(q, "q", "[B, H, Nq, d]");
  check_input(k, "k", "[B, H, Nk, d]");
  check_input(v, "v", "[B, H, Nk, dv]");
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                   "q, k, v: expected one dtype, got ", q.scalar_type(), ", ", k.scalar_type(),
                   ", ", v.scalar_type());
  TORCH_CHECK_VALUE(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3),
                    "k: shape ", k.sizes(), " does not match q's ", q.sizes(),
                    ": batch, heads and head dim d must agree");
  TORCH_CHECK_VALUE(v.size(0) == k.size(0) && v.size(1) == k.size(1) && v.size(2) == k.size(2),
                    "v: shape ", v.sizes(), " does not match k's ", k.sizes(),
                    ": batch, heads and key length Nk must agree");
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const Options& options, const c10::optional<at::Tensor>& key_mask,
                     const c10::optional<at::Tensor>& query_mask) {
  check_inputs(q, k, v);
  const auto km = check_mask(key_mask, "key_mask", "[B, Nk]", q.size(0), k.size(2));
  const auto qm = check_mask(query_mask, "query_mask", "[B, Nq]", q.size(0), q.size(2));
  check_options(options);
  check_learned(options);
  bool wants_grad =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  std::vector<at::Tensor> sources;
  for (const LearnedPart& part : options.learned) {
    sources.push_back(source_of(part));
    wants_grad = wants_grad || part_wants_grad(part);
  }
  check_capabilities(options, q.scalar_type(), wants_grad);
  return AttentionFunction::apply(q, k, v, km, qm, at::TensorList(sources), options);
}

}  // namespace smyrf::torch
