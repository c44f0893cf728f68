// The Python extension smyrf_torch._C: attention (every method form, configured by keyword),
// methods(), and the older smyrf_attention and dense_attention, on torch tensors through the
// autograd-aware glue of smyrf/torch.h. The package smyrf_torch wraps and re-exports them.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <string>

#include "config.h"
#include "smyrf/torch.h"

namespace py = pybind11;

namespace {

c10::optional<at::Tensor> to_c10(const std::optional<at::Tensor>& t) {
  return t ? c10::optional<at::Tensor>(*t) : c10::nullopt;
}

at::Tensor run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               smyrf::MethodConfig method, double dropout, bool training, std::uint64_t seed,
               const std::optional<at::Tensor>& key_mask,
               const std::optional<at::Tensor>& query_mask, std::optional<double> scale,
               int num_threads) {
  smyrf::torch::Options options;
  options.method = method;
  options.dropout = dropout;
  options.training = training;
  options.seed = seed;
  options.num_threads = num_threads;
  options.scale = scale;
  return smyrf::torch::attention(q, k, v, options, to_c10(key_mask), to_c10(query_mask));
}

// The options of a call by method name and config (learned parts shaped by q, k, v, which are
// checked first).
smyrf::torch::Options call_options(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const std::string& method, const py::dict& config, bool causal,
                                   std::uint64_t seed, int num_threads) {
  smyrf::torch::check_inputs(q, k, v);
  smyrf::torch::python::Sizes sizes{q.size(0), q.size(1), q.size(2),    k.size(2),
                                    q.size(3), v.size(3), q.scalar_type()};
  smyrf::torch::Options options;
  smyrf::torch::python::build_method(method, config, sizes, options);
  options.causal = causal;
  options.seed = seed;
  options.num_threads = num_threads;
  return options;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "smyrf attention on torch tensors (CPU, float32 or float64, autograd-aware)";

  // Errors keep their kind and lose the C++ backtrace that c10::Error::what() appends.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    } catch (const smyrf::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def(
      "attention",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::string& method,
         const py::dict& config, bool causal, const std::optional<at::Tensor>& key_mask,
         const std::optional<at::Tensor>& query_mask, double dropout, bool training,
         std::uint64_t seed, std::optional<double> scale, int num_threads,
         const std::optional<at::Tensor>& key_bias) {
        smyrf::torch::Options options =
            call_options(q, k, v, method, config, causal, seed, num_threads);
        options.dropout = dropout;
        options.training = training;
        options.scale = scale;
        if (key_bias) options.key_bias = *key_bias;
        py::gil_scoped_release release;
        return smyrf::torch::attention(q, k, v, options, to_c10(key_mask), to_c10(query_mask));
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("method"), py::arg("config"),
      py::arg("causal"), py::arg("key_mask"), py::arg("query_mask"), py::arg("dropout"),
      py::arg("training"), py::arg("seed"), py::arg("scale"), py::arg("num_threads"),
      py::arg("key_bias") = py::none(),
      "Attention by any method form; see smyrf_torch.attention (which checks the scalars).");

  m.def(
      "attention_info",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::string& method,
         const py::dict& config, bool causal, std::uint64_t seed, int num_threads) {
        smyrf::torch::Options options =
            call_options(q, k, v, method, config, causal, seed, num_threads);
        smyrf::RunInfo info;
        options.info = &info;
        {
          py::gil_scoped_release release;
          at::NoGradGuard no_grad;
          (void)smyrf::torch::attention(q.detach(), k.detach(), v.detach(), options);
        }
        py::dict d;
        d["attention_scores"] = info.attention_scores;
        d["workspace_bytes"] = info.workspace_bytes;
        d["seconds"] = info.seconds_total;
        return d;
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("method"), py::arg("config"),
      py::arg("causal"), py::arg("seed"), py::arg("num_threads"),
      "One forward (no grad) and what it did; see smyrf_torch.attention_info.");

  m.def(
      "routing_update_centroids",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& centroids, double decay, int window,
         const std::optional<at::Tensor>& key_mask, const std::optional<at::Tensor>& query_mask, bool causal,
         int num_threads) {
        TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && q.size(0) == k.size(0) && q.size(1) == k.size(1) &&
                              q.size(3) == k.size(3),
                          "q, k: expected [B, H, Nq, d] and [B, H, Nk, d], got ", q.sizes(), " and ", k.sizes());
        TORCH_CHECK_VALUE(centroids.dim() == 3 && centroids.size(0) == q.size(1) && centroids.size(2) == q.size(3),
                          "centroids: expected [H, n_clusters, d] = [", q.size(1), ", n_clusters, ", q.size(3),
                          "], got ", centroids.sizes());
        const at::Tensor qf = q.detach().to(at::kFloat).contiguous(), kf = k.detach().to(at::kFloat).contiguous();
        const at::Tensor cf = centroids.detach().to(at::kFloat).contiguous();
        auto mask = [](const std::optional<at::Tensor>& given) {
          return given ? std::optional<at::Tensor>(given->to(at::kByte).contiguous()) : std::nullopt;
        };
        const std::optional<at::Tensor> km = mask(key_mask), qm = mask(query_mask);
        at::Tensor out = at::empty_like(cf);
        smyrf::AttentionParams p = smyrf::AttentionParams::contiguous(
            q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), q.size(3), qf.data_ptr<float>(),
            kf.data_ptr<float>(), kf.data_ptr<float>(), nullptr);
        p.with_masks(km ? km->data_ptr<std::uint8_t>() : nullptr, qm ? qm->data_ptr<std::uint8_t>() : nullptr);
        p.causal = causal;
        p.num_threads = num_threads;
        smyrf::RoutingConfig config;
        config.n_clusters = static_cast<int>(cf.size(1));
        config.window = window;
        config.centroids = cf.data_ptr<float>();
        {
          py::gil_scoped_release release;
          smyrf::routing_update_centroids(p, config, static_cast<float>(decay), out.data_ptr<float>());
        }
        return out.to(centroids.scalar_type());
      },
      py::arg("q"), py::arg("k"), py::arg("centroids"), py::arg("decay"), py::arg("window"),
      py::arg("key_mask") = py::none(), py::arg("query_mask") = py::none(), py::arg("causal") = false,
      py::arg("num_threads") = 0,
      "Routing attention's online k-means step (smyrf::routing_update_centroids): the new centroids.");

  m.def("describe", &smyrf::torch::python::describe_method, py::arg("method"), py::arg("config"),
        "What a method name and config amount to: canonical name, capabilities, field values.");

  m.def("variant", &smyrf::torch::python::describe_variant, py::arg("spec"), py::arg("n"),
        "A variant spec (\"local:0.25\") set up for n tokens: method and field values.");

  m.def("methods", &smyrf::torch::python::describe_methods,
        "Every method form with its capabilities, config fields and learned parts.");

  m.def(
      "smyrf_attention",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int n_hashes,
         int q_cluster_size, int k_cluster_size, double r, double dropout, bool training,
         std::uint64_t seed, const std::optional<at::Tensor>& key_mask,
         const std::optional<at::Tensor>& query_mask, std::optional<double> scale,
         int num_threads) {
        smyrf::SmyrfConfig config;
        config.n_hashes = n_hashes;
        config.q_cluster_size = q_cluster_size;
        config.k_cluster_size = k_cluster_size;
        config.r = static_cast<float>(r);
        return run(q, k, v, config, dropout, training, seed, key_mask, query_mask, scale,
                   num_threads);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_hashes") = 8,
      py::arg("q_cluster_size") = 32, py::arg("k_cluster_size") = 32, py::arg("r") = 0.0,
      py::arg("dropout") = 0.0, py::arg("training") = false, py::arg("seed") = 0,
      py::arg("key_mask") = py::none(), py::arg("query_mask") = py::none(),
      py::arg("scale") = py::none(), py::arg("num_threads") = 0,
      py::call_guard<py::gil_scoped_release>(),
      R"doc(SMYRF attention (asymmetric LSH, balanced clusters), differentiable w.r.t. q, k, v.

q [B, H, Nq, d], k [B, H, Nk, d], v [B, H, Nk, dv]: CPU tensors of one dtype, float32 (the
library's fast kernels) or float64 (its double-precision reference); returns [B, H, Nq, dv].
n_hashes rounds of clusters of q_cluster_size queries and k_cluster_size keys; r: E2LSH bucket
width (0 = order tokens by the projection itself). Dropout on the attention weights only when
training; the dropout masks and the hashing are a function of seed. key_mask [B, Nk],
query_mask [B, Nq]: bool/uint8, True = the token takes part (masked queries get 0).
scale: softmax scale, default 1/sqrt(d). num_threads: 0 = all OpenMP threads.)doc");

  m.def(
      "dense_attention",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double dropout,
         bool training, std::uint64_t seed, const std::optional<at::Tensor>& key_mask,
         const std::optional<at::Tensor>& query_mask, std::optional<double> scale,
         int num_threads) {
        return run(q, k, v, smyrf::DenseConfig{}, dropout, training, seed, key_mask, query_mask,
                   scale, num_threads);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("dropout") = 0.0,
      py::arg("training") = false, py::arg("seed") = 0, py::arg("key_mask") = py::none(),
      py::arg("query_mask") = py::none(), py::arg("scale") = py::none(),
      py::arg("num_threads") = 0, py::call_guard<py::gil_scoped_release>(),
      R"doc(Exact softmax attention (flash-style kernel), differentiable w.r.t. q, k, v.

Same tensors, masks, dropout, seed, scale and num_threads as smyrf_attention.)doc");
}
