"""Every method form through one differentiable function, and a scaled_dot_product_attention.

    attention(q, k, v, method="smyrf/lsh", n_hashes=4, q_cluster_size=32, k_cluster_size=32)
    scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, method="dense")
    methods()                    # every form with its capabilities, fields and learned parts
    describe("linear", map="favor_plus")   # what a name and config amount to
    variant("performer:0.25", n=1024)     # a budgeted variant spec as method + config

Method names, dtypes and errors: torch/README.md.
"""
import math
import numbers

import torch

from . import _C

_INT32_MAX = 2**31 - 1


def _int_arg(name, value, lo, hi, why):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value}: {why}")
    return int(value)


def _number_arg(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    return float(value)


def _bool_arg(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def _tensor_arg(name, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{' or None' if optional else ''}, "
                        f"got {type(value).__name__}")
    return value


def _seed_arg(seed):
    return _int_arg("seed", seed, 0, 2**64 - 1, "must be in [0, 2^64)")


def draw_seed():
    """One seed from torch's default generator: reproducible under torch.manual_seed."""
    return int(torch.randint(0, 2**63 - 1, (1,)).item())


def methods():
    """Every method form, in registration order: dicts with
    name          the canonical name to pass as `method` ("linear/favor_plus", "dense")
    method, form  the library's method name and form name
    aliases       other names accepted for the form (unique form names, `smyrf bench` spec names)
    config, specs, summary   as smyrf::methods() gives them
    capabilities  causal, dropout, causal_dropout, backward, causal_backward, f64, bf16, masks,
                  cross_lengths, broadcast, learned, seeded (of the form's default config)
    fields        each scalar config field (C++ name) with the form's value (enums as str)
    learned       each learned part (a tensor field) with its shape, e.g. "[H, rank, Nk]"
    learned_grad  the learned parts the library differentiates (a tensor given for one of them
                  that requires grad gets its gradient; the others are refused then)
    """
    return _C.methods()


def describe(method, **config):
    """What `method` with `config` amounts to, without a call: the same keys as one entry of
    methods() (name, method, capabilities, fields, learned), for this config: capabilities can
    depend on fields (e.g. causal for compressed/global_memory needs memory_k and memory_v)."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected a str, got {type(method).__name__}")
    return _C.describe(method, config)


def variant(spec, n):
    """A variant spec of `smyrf bench` / `smyrf eval` set up for sequences of n tokens, as
    `smyrf` sizes it from an attention-memory budget F ("local:0.25", "performer:0.25",
    "smyrf:2:0.25", "linformer:0.25"; the list: src/models/variants.h or README): a dict with
    spec, label ("local 25%"), exact (exact attention at this length), method, capabilities,
    fields (every scalar field's value) and learned (layouts). Run it with
    attention(q, k, v, d["method"], **d["fields"]) or nn.Attention(d["method"], **d["fields"]).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a str, got {type(spec).__name__}")
    return _C.variant(spec, _int_arg("n", n, 1, 2**62, "must be >= 1"))


def attention(q, k, v, method="dense", *, causal=False, key_mask=None, query_mask=None,
              dropout=0., training=False, seed=0, scale=None, num_threads=0, **config):
    """Attention by any method form, differentiable w.r.t. q, k, v where the form has a backward.

    q [B, H, Nq, d], k [B, H, Nk, d], v [B, H, Nk, dv]: CPU tensors of one dtype: float32 (the
    fast kernels), float64 (the double-precision definition; forms with capability f64) or
    bfloat16 (the library's bf16 input path; backward in float32 on the exact float32 values,
    gradients rounded to bfloat16). Returns O [B, H, Nq, dv] in the inputs' dtype.

    method: a name from methods() ("smyrf/lsh", "sparse/bigbird", ...), an alias, or a method
    name alone ("linear": its config's defaults, every field free). **config sets the config's
    fields by their C++ names (enums by name as str; learned parts as tensors, in float32 or
    the inputs' dtype: those in describe(method)["learned_grad"] are differentiated when they
    require grad, the others must not require it). causal: query i sees keys
    j <= i + Nk - Nq. key_mask [B, Nk], query_mask [B, Nq]: bool/uint8, True = takes part.
    Dropout on the attention weights only when training. seed: every random choice (hashes,
    random features, dropout masks). scale: softmax scale (default 1/sqrt(d), as float32).
    """
    if not isinstance(method, str):
        raise TypeError(f"method: expected a str, got {type(method).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor_arg(name, t)
    _tensor_arg("key_mask", key_mask, optional=True)
    _tensor_arg("query_mask", query_mask, optional=True)
    return _C.attention(
        q, k, v, method, config, _bool_arg("causal", causal), key_mask, query_mask,
        _number_arg("dropout", dropout), _bool_arg("training", training), _seed_arg(seed),
        None if scale is None else _number_arg("scale", scale),
        _int_arg("num_threads", num_threads, 0, 1024, "must be >= 0 and <= 1024"))


def attention_info(q, k, v, method="dense", *, causal=False, seed=0, num_threads=0, **config):
    """What one forward of attention(q, k, v, method, **config) does, run without grad:
    a dict with attention_scores (score entries computed, all rounds: Nq * Nk per (batch, head)
    for dense; the attention memory the budgets of variant() are stated in), workspace_bytes
    (scratch beyond the call's tensors) and seconds. float32 or bfloat16 inputs."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected a str, got {type(method).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor_arg(name, t)
    if q.dtype == torch.float64:
        raise TypeError("q: attention_info takes float32 or bfloat16 inputs (the float64 "
                        "definition reports nothing)")
    return _C.attention_info(q, k, v, method, config, _bool_arg("causal", causal),
                             _seed_arg(seed),
                             _int_arg("num_threads", num_threads, 0, 1024,
                                      "must be >= 0 and <= 1024"))


def routing_update_centroids(q, k, centroids, *, decay=0.999, window=64, key_mask=None,
                             query_mask=None, causal=False, num_threads=0):
    """Routing attention's online k-means step (the Routing Transformer trains its centroids by
    this moving average, not by a gradient: the routes are constants of attention's gradient).
    q [B, H, Nq, d], k [B, H, Nk, d] (the call's queries and keys, routed as attention routes
    them), centroids [H, n_clusters, d]: returns the new centroids, unit(decay * mu + (1 - decay)
    * the mean of each centroid's members' unit vectors) (a centroid without members keeps its
    row). decay in [0, 1] (the paper's lambda, 0.999 in its experiments); window: the routing
    window (it plays no part in the update, only in the checks attention() makes)."""
    for name, t in (("q", q), ("k", k), ("centroids", centroids)):
        _tensor_arg(name, t)
    return _C.routing_update_centroids(
        q, k, centroids, _number_arg("decay", decay),
        _int_arg("window", window, 1, _INT32_MAX, "must be >= 1"),
        _tensor_arg("key_mask", key_mask, optional=True),
        _tensor_arg("query_mask", query_mask, optional=True), _bool_arg("causal", causal),
        _int_arg("num_threads", num_threads, 0, 1024, "must be >= 0 and <= 1024"))


# ---- scaled_dot_product_attention ----------------------------------------------------------

_PER_KEY = ("the library's masks are per key: attn_mask must broadcast to [B, 1, 1, Nk] "
            "(True / 0 = attend, False / -inf = masked)")


def _key_mask_from_attn_mask(attn_mask, batch, nk, ndim):
    """attn_mask -> bool [B, Nk] key mask (True = attend), or ValueError when it is not one."""
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor or None, got "
                        f"{type(attn_mask).__name__}")
    shape = list(attn_mask.shape)
    if attn_mask.dim() > ndim:
        raise ValueError(f"attn_mask: shape {shape} has more dims than the inputs ({ndim})")
    # As [B, H, Nq, Nk]: the inputs' batch dims (3-D inputs have no head dim).
    m = attn_mask.reshape([1] * (ndim - attn_mask.dim()) + shape)
    if ndim == 3:
        m = m.unsqueeze(1)
    b, h, nq, k_len = m.shape
    if h != 1 or nq != 1 or b not in (1, batch) or k_len not in (1, nk):
        raise ValueError(f"attn_mask: shape {shape}: {_PER_KEY}; per query-key masks are not "
                         "supported")
    if attn_mask.dtype == torch.bool:
        keep = m
    elif attn_mask.is_floating_point():
        keep = m == 0
        bad = ~(keep | (m == -math.inf))
        if bool(bad.any()):
            raise ValueError(f"attn_mask: value {m[bad][0].item()!r} unsupported: additive masks "
                             f"must be 0 or -inf; {_PER_KEY}; general additive biases are not "
                             "supported")
    else:
        raise TypeError(f"attn_mask: expected dtype bool or a floating-point additive mask, got "
                        f"{attn_mask.dtype}")
    return keep.reshape(b, k_len).expand(batch, nk)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *,
                                 method="dense", seed=None, num_threads=0, bias=None,
                                 alibi_slopes=None, **config):
    """torch.nn.functional.scaled_dot_product_attention computed by the library.

    query [B, H, Nq, d] (or [B, Nq, d]), key [B, H, Nk, d], value [B, H, Nk, dv] -> [B, H, Nq,
    dv]. attn_mask: bool (True = take part) or additive (0 / -inf) broadcastable to
    [B, 1, 1, Nk] (per key; anything else raises ValueError). dropout_p > 0: dropout in
    training mode, seeded by `seed` or, when None, by a draw from torch's default generator.
    is_causal: query i sees keys j <= i; needs Nq == Nk (PyTorch aligns the causal mask at the
    top left, the library at the bottom right: attention(..., causal=True)). scale: default
    1/sqrt(d), rounded to float32. enable_gqa: key/value heads Hk dividing the query heads H,
    query head h reading key head h // (H / Hk) (PyTorch 2.5's grouped-query attention).
    method and **config: as for attention(). bias and
    alibi_slopes are not supported yet (ValueError when given).
    """
    if bias is not None:
        raise ValueError("bias: an additive per-key bias is not supported yet by the library")
    if alibi_slopes is not None:
        raise ValueError("alibi_slopes: ALiBi slopes are not supported yet by the library")
    for name, t in (("query", query), ("key", key), ("value", value)):
        _tensor_arg(name, t)
        if t.dim() not in (3, 4):
            raise ValueError(f"{name}: expected 4 dims [B, H, N, d] or 3 dims [B, N, d], got shape "
                             f"{list(t.shape)}")
    if not query.dim() == key.dim() == value.dim():
        raise ValueError(f"query, key, value: expected the same number of dims, got "
                         f"{query.dim()}, {key.dim()}, {value.dim()}")
    dropout_p = _number_arg("dropout_p", dropout_p)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p = {dropout_p!r}: must be in [0, 1)")
    is_causal = _bool_arg("is_causal", is_causal)
    ndim = query.dim()
    q, k, v = (t.unsqueeze(1) if ndim == 3 else t for t in (query, key, value))
    if _bool_arg("enable_gqa", enable_gqa) and k.shape[1] != q.shape[1]:
        if q.shape[1] % k.shape[1] or k.shape[1] != v.shape[1]:
            raise ValueError(f"enable_gqa = True: the key and value heads ({k.shape[1]}, "
                             f"{v.shape[1]}) must be equal and divide the query heads "
                             f"({q.shape[1]})")
        # Repeated rows, not stride-0 views: the backward needs one gradient per element,
        # and autograd sums the copies' gradients into each key head.
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if is_causal and q.shape[2] != k.shape[2]:
        raise ValueError(f"is_causal = True with Nq = {q.shape[2]} != Nk = {k.shape[2]}: PyTorch "
                         "aligns the causal mask at the top left (j <= i), the library at the "
                         "bottom right (j <= i + Nk - Nq); use smyrf_torch.attention(..., "
                         "causal=True) for the latter")
    key_mask = (None if attn_mask is None
                else _key_mask_from_attn_mask(attn_mask, q.shape[0], k.shape[2], ndim))
    if seed is None:
        seeded = dropout_p > 0 or describe(method, **config)["capabilities"]["seeded"]
        seed = draw_seed() if seeded else 0
    out = attention(q, k, v, method, causal=is_causal, key_mask=key_mask, dropout=dropout_p,
                    training=dropout_p > 0, seed=seed, scale=scale, num_threads=num_threads,
                    **config)
    return out.squeeze(1) if ndim == 3 else out
