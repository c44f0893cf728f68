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


def _key_bias(q, k, key_bias, alibi_slopes, causal):
    """The call's additive per-key bias [B, H, Nk] in float32 (None without one): key_bias
    broadcast to [B, H, Nk], plus ALiBi's slope_h * j (its causal form)."""
    if key_bias is None and alibi_slopes is None:
        return None
    b, h, nk = q.shape[0], q.shape[1], k.shape[2]
    total = torch.zeros(b, h, nk, dtype=torch.float32)
    if key_bias is not None:
        _tensor_arg("key_bias", key_bias)
        if key_bias.requires_grad and torch.is_grad_enabled():
            raise ValueError("key_bias: requires grad, but the library computes no gradient for "
                             "the key bias (a constant); detach it")
        try:
            total = total + key_bias.detach().to(torch.float32).expand(b, h, nk)
        except RuntimeError:
            raise ValueError(f"key_bias: expected a shape broadcastable to [B, H, Nk] = "
                             f"[{b}, {h}, {nk}], got {list(key_bias.shape)}") from None
    if alibi_slopes is not None:
        _tensor_arg("alibi_slopes", alibi_slopes)
        if not causal:
            raise ValueError("alibi_slopes: need causal=True (ALiBi's bias -slope * (i - j) is "
                             "a per-key bias slope * j only where each query sees keys j <= i; "
                             "pass key_bias for another per-key bias)")
        if tuple(alibi_slopes.shape) != (h,):
            raise ValueError(f"alibi_slopes: expected shape [H] = [{h}], got "
                             f"{list(alibi_slopes.shape)}")
        if alibi_slopes.requires_grad and torch.is_grad_enabled():
            raise ValueError("alibi_slopes: requires grad, but the library computes no gradient "
                             "for the slopes (constants); detach them")
        pos = torch.arange(nk, dtype=torch.float64)
        total = total + (alibi_slopes.detach().to(torch.float64)[:, None] * pos).to(torch.float32)
    return total.contiguous()


def attention(q, k, v, method="dense", *, causal=False, key_mask=None, query_mask=None,
              dropout=0., training=False, seed=0, scale=None, num_threads=0, key_bias=None,
              alibi_slopes=None, **config):
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
    key_bias: an additive per-key bias broadcastable to [B, H, Nk] (score + key_bias[b, h, j];
    rounded to float32; a constant: it must not require grad); alibi_slopes [H]: ALiBi (Press et
    al. 2022) in its causal form, the per-key bias slope_h * j (needs causal=True; O as with
    -slope_h * (i - j), lse including the bias as given); both only for forms whose capabilities
    say key_bias (dense, reference, SMYRF's LSH form, Reformer, routing, the sparse patterns), a
    ValueError naming the method otherwise.
    """
    if not isinstance(method, str):
        raise TypeError(f"method: expected a str, got {type(method).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor_arg(name, t)
    _tensor_arg("key_mask", key_mask, optional=True)
    _tensor_arg("query_mask", query_mask, optional=True)
    causal = _bool_arg("causal", causal)
    bias = _key_bias(q, k, key_bias, alibi_slopes, causal)
    return _C.attention(
        q, k, v, method, config, causal, key_mask, query_mask,
        _number_arg("dropout", dropout), _bool_arg("training", training), _seed_arg(seed),
        None if scale is None else _number_arg("scale", scale),
        _int_arg("num_threads", num_threads, 0, 1024, "must be >= 0 and <= 1024"), bias)


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


def _attn_mask_parts(attn_mask, batch, heads, nk, ndim):
    """attn_mask -> (bool [B, Nk] key mask or None, float32 [B, H, Nk] key bias or None), or
    ValueError when it is not a per-key mask: bool (True = attend) broadcastable to
    [B, 1, 1, Nk]; floating-point broadcastable to [B, H, 1, Nk], its -inf entries a key mask
    (the same for every head) and its finite entries an additive key bias."""
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
    float_mask = attn_mask.is_floating_point()
    if (nq != 1 or b not in (1, batch) or k_len not in (1, nk)
            or h not in ((1, heads) if float_mask else (1,))):
        raise ValueError(f"attn_mask: shape {shape}: {_PER_KEY}; per query-key masks are not "
                         "supported")
    if attn_mask.dtype == torch.bool:
        return m.reshape(b, k_len).expand(batch, nk), None
    if not float_mask:
        raise TypeError(f"attn_mask: expected dtype bool or a floating-point additive mask, got "
                        f"{attn_mask.dtype}")
    m = m.reshape(b, h, k_len)
    masked = m == -math.inf
    bad = ~(masked | torch.isfinite(m))
    if bool(bad.any()):
        raise ValueError(f"attn_mask: value {m[bad][0].item()!r} unsupported: additive masks "
                         "must be finite (a key bias) or -inf (a masked key)")
    keep = None
    if bool(masked.any()):
        if h != 1 and not bool((masked == masked[:, :1]).all()):
            raise ValueError("attn_mask: -inf entries that differ between heads: a masked key is "
                             "masked for every head (the library's key mask is [B, Nk])")
        keep = (~masked[:, 0]).expand(batch, nk)
    bias = torch.where(masked, torch.zeros((), dtype=m.dtype), m)
    if not bool((bias != 0).any()):
        return keep, None
    return keep, bias.to(torch.float32).expand(batch, heads, nk)


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
    method and **config: as for attention(). A floating-point attn_mask may also carry an
    additive per-key bias (finite entries, broadcastable to [B, H, 1, Nk]; -inf entries are the
    key mask); bias (broadcastable to [B, H, Nk]) and alibi_slopes [H] (with is_causal) are
    attention()'s key_bias and alibi_slopes; a bias needs a form whose capabilities say
    key_bias.
    """
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
    key_mask, mask_bias = ((None, None) if attn_mask is None
                           else _attn_mask_parts(attn_mask, q.shape[0], q.shape[1], k.shape[2],
                                                 ndim))
    if mask_bias is not None:
        bias = mask_bias if bias is None else mask_bias + _tensor_arg("bias", bias)
    if seed is None:
        seeded = dropout_p > 0 or describe(method, **config)["capabilities"]["seeded"]
        seed = draw_seed() if seeded else 0
    out = attention(q, k, v, method, causal=is_causal, key_mask=key_mask, dropout=dropout_p,
                    training=dropout_p > 0, seed=seed, scale=scale, num_threads=num_threads,
                    key_bias=bias, alibi_slopes=alibi_slopes, **config)
    return out.squeeze(1) if ndim == 3 else out
