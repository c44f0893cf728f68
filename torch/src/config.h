// Method configs from Python: a method name and keyword arguments -> smyrf::MethodConfig, with
// the learned parts' tensors checked against the call's sizes. The extension's only knowledge
// of the configs' fields lives in config.cpp (one table per config); what each method can do
// comes from smyrf::methods() / smyrf::capabilities().
#pragma once

#include <pybind11/pybind11.h>

#include <ATen/core/Tensor.h>
#include <cstdint>
#include <string>

#include "smyrf/torch.h"

namespace smyrf::torch::python {

// The sizes of a call (q [B, H, Nq, d], v [B, H, Nk, dv]) and its dtype: learned parts are
// shaped by them and may come in the inputs' dtype (converted to float32).
struct Sizes {
  std::int64_t batch = 0, heads = 0, nq = 0, nk = 0, d = 0, dv = 0;
  at::ScalarType dtype = at::kFloat;
};

// Sets options.method, options.learned and options.label from `method` and `fields`
// (a dict: C++ field name -> value). Names (see methods()): "name/form" ("linear/favor_plus";
// "name" alone where the form is the method's only or eponymous one: "dense", "clustered"),
// the method name alone ("linear": its config's defaults, every field free), a unique form name
// ("favor_plus") or the head of a variant spec of `smyrf bench` ("performer", "smyrf-c").
// Errors: ValueError for an unknown method (listing the names), TypeError for an unknown field
// (listing the method's fields) or a value of the wrong type, ValueError for a value out of
// range, an enum name that does not exist, a field that contradicts the form, or a learned
// part of the wrong shape; TypeError for a learned part's dtype or device.
void build_method(const std::string& method, const pybind11::dict& fields, const Sizes& sizes,
                  Options& options);

// What `method` with `fields` amounts to, without a call: a dict (name: the canonical name,
// method, capabilities of the built config, fields: every scalar field's value, learned: each
// learned part's layout). Learned parts count as present when a tensor is given (not checked:
// no sizes). The same errors as build_method for names and values.
pybind11::dict describe_method(const std::string& method, const pybind11::dict& fields);

// A variant spec of `smyrf bench` / `smyrf eval` ("local:0.25", "performer:0.25", "smyrf:2:0.25")
// set up for sequences of n tokens: a dict (spec, label, exact: exact attention at this length,
// method, capabilities, fields, learned as describe_method gives them). attention(q, k, v,
// method=d["method"], **d["fields"]) runs it. ValueError naming the spec when it is malformed.
pybind11::dict describe_variant(const std::string& spec, std::int64_t n);

// Every registered form: a list of dicts (name, method, form, aliases, config, specs, summary,
// capabilities, fields with the form's values, learned parts with their shapes).
pybind11::list describe_methods();

}  // namespace smyrf::torch::python
