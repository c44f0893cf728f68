"""smyrf_torch.scaled_dot_product_attention against PyTorch's: the function itself where this
torch has it (2.0+), else the definition PyTorch documents for it (the same code in float64)."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import EPS_F32, qkv, tolerance
import smyrf_torch
from smyrf_torch import scaled_dot_product_attention as sdpa


def documented_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """The equivalent PyTorch's documentation gives for scaled_dot_product_attention."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(causal.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attn_bias = attn_mask + attn_bias
    weight = torch.softmax(query @ key.transpose(-2, -1) * scale_factor + attn_bias, dim=-1)
    return weight @ value


def torch_sdpa(*args, **kwargs):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(*args, **kwargs)
    return documented_sdpa(*args, **kwargs)


def padding_mask(b, nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(b, nk, generator=g) > 0.3
    keep[:, 0] = True  # every query keeps a key (PyTorch gives NaN rows, the library 0)
    return keep


# Scales exact in float32 (the library's scale is a float32): 1/sqrt(16) = 0.25 is the default.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["plain", "bool_mask", "float_mask", "causal", "scale",
                                  "causal_mask", "3d"])
def test_dense_equals_torch(dtype, case):
    """float64 within 1e-12; float32 under the suite's rule: max|O - O_ref| <= 16 eps_f32 max|V|
    (1 + L + log2 Nk), L = max |scale| sum_t |q_t k_t|."""
    nq = nk = 11
    q, k, v = qkv(b=2, h=3, nq=nq, nk=nk, d=16, dv=5, dtype=dtype, seed=1)
    keep = padding_mask(2, nk)
    kwargs, ref_kwargs = {}, {}
    if case == "bool_mask":
        kwargs["attn_mask"] = ref_kwargs["attn_mask"] = keep[:, None, None, :]
    elif case == "float_mask":
        additive = torch.zeros(2, 1, 1, nk, dtype=dtype).masked_fill(~keep[:, None, None, :],
                                                                     -math.inf)
        kwargs["attn_mask"] = ref_kwargs["attn_mask"] = additive
    elif case == "causal":
        kwargs["is_causal"] = ref_kwargs["is_causal"] = True
    elif case == "scale":
        kwargs["scale"] = ref_kwargs["scale"] = 0.375
    elif case == "causal_mask":  # PyTorch refuses both at once; the reference composes them
        kwargs = dict(attn_mask=keep[:, None, None, :], is_causal=True)
        ref_kwargs = dict(attn_mask=keep[:, None, None, :] & torch.ones(nq, nk).tril().bool())
    elif case == "3d":
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
        kwargs["attn_mask"] = keep[:, None, :]
        ref_kwargs["attn_mask"] = keep[:, None, :]
    o = sdpa(q, k, v, **kwargs)
    ref = torch_sdpa(q.double(), k.double(), v.double(),
                     **{n: (m.double() if isinstance(m, torch.Tensor) and m.is_floating_point()
                            else m) for n, m in ref_kwargs.items()})
    assert o.dtype == dtype and o.shape == ref.shape
    tol = 1e-12 if dtype == torch.float64 else tolerance(q, k, v, kwargs.get("scale"))
    assert (o.double() - ref).abs().max().item() <= tol


def test_masks_broadcast_from_one_row():
    q, k, v = qkv(b=2, h=2, nq=6, nk=7, d=4, dv=3, seed=2)
    keep = padding_mask(1, 7)
    o = sdpa(q, k, v, attn_mask=keep[0])  # [Nk]: the same keys for every batch element
    assert (o - documented_sdpa(q, k, v, attn_mask=keep[0])).abs().max().item() <= 1e-12


def test_grouped_query_attention():
    """enable_gqa: query head h reads key head h // (H / Hk), as PyTorch 2.5 defines it."""
    q, _, _ = qkv(b=2, h=6, nq=5, nk=7, d=4, dv=3, seed=5, requires_grad=True)
    _, k, v = qkv(b=2, h=2, nq=5, nk=7, d=4, dv=3, seed=6, requires_grad=True)
    o = sdpa(q, k, v, enable_gqa=True)
    ref = documented_sdpa(q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1))
    assert (o - ref).abs().max().item() <= 1e-12
    grads = torch.autograd.grad(o.sum(), (k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (k, v))
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max().item() <= 1e-12
    with pytest.raises(ValueError, match=r"^enable_gqa = True: the key and value heads \(2, 2\) "
                                         r"must be equal and divide the query heads \(5\)"):
        sdpa(q[:, :5], k, v, enable_gqa=True)


def test_dropout_is_training_mode_dropout_seeded_by_torch():
    q, k, v = qkv(b=1, h=2, nq=9, nk=9, d=4, dv=3, dtype=torch.float32, seed=3)
    torch.manual_seed(0)
    a = sdpa(q, k, v, dropout_p=0.4)
    torch.manual_seed(0)
    b = sdpa(q, k, v, dropout_p=0.4)
    assert torch.equal(a, b) and not torch.equal(a, sdpa(q, k, v))
    assert torch.equal(sdpa(q, k, v, dropout_p=0.4, seed=5),
                       smyrf_torch.attention(q, k, v, dropout=0.4, training=True, seed=5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_additive_per_key_bias_and_alibi_equal_torch(dtype):
    """A floating-point attn_mask with finite per-(batch, head, key) values (and -inf masked
    keys) is the library's key bias: equal to PyTorch's sdpa with that mask, in float64 to 1e-12
    and float32 under the rule with L widened by max|bias|; gradients too. ALiBi slopes with
    is_causal equal PyTorch's sdpa with the explicit bias -slope * (i - j)."""
    nq = nk = 11
    q, k, v = qkv(b=2, h=3, nq=nq, nk=nk, d=16, dv=5, dtype=dtype, seed=5, requires_grad=True)
    g = torch.Generator().manual_seed(6)
    bias = (torch.randn(2, 3, 1, nk, generator=g) * 2).to(dtype)  # exact in float32, as the library takes it
    bias[:, :, :, 3] = -math.inf  # a masked key, every head
    o = sdpa(q, k, v, attn_mask=bias)
    ref = torch_sdpa(q, k, v, attn_mask=bias)
    bmax = bias[torch.isfinite(bias)].abs().max().item()
    tol = 1e-12 if dtype == torch.float64 else tolerance(q, k, v) + 16 * EPS_F32 * v.abs().max().item() * bmax
    assert (o - ref).abs().max().item() <= tol
    go = torch.randn(o.shape, generator=g).to(dtype)
    grads = torch.autograd.grad(o, (q, k, v), go)
    ref_grads = torch.autograd.grad(ref, (q, k, v), go)
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max().item() <= (1e-11 if dtype == torch.float64 else 1e-4)
    slopes = torch.tensor([0.5, 0.25, 0.125], dtype=dtype)
    pos = torch.arange(nk, dtype=dtype)
    explicit = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).clamp(min=0)
    explicit = explicit.masked_fill(torch.ones(nq, nk, dtype=torch.bool).triu(1), -math.inf)
    o = sdpa(q, k, v, is_causal=True, alibi_slopes=slopes)
    ref = torch_sdpa(q, k, v, attn_mask=explicit.expand(2, 3, nq, nk))
    assert (o - ref).abs().max().item() <= (1e-12 if dtype == torch.float64 else 1e-5)


def test_other_methods_and_gradients():
    q, k, v = qkv(b=1, h=2, nq=9, nk=9, d=4, dv=3, seed=4, requires_grad=True)
    o = sdpa(q, k, v, is_causal=True, method="smyrf/lsh", n_hashes=2, q_cluster_size=3,
             k_cluster_size=3, seed=3)
    assert torch.equal(o, smyrf_torch.attention(q, k, v, "smyrf/lsh", causal=True, n_hashes=2,
                                                q_cluster_size=3, k_cluster_size=3, seed=3))
    o.sum().backward()
    assert q.grad is not None


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(attn_mask=torch.ones(2, 1, 5, 6, dtype=torch.bool)), ValueError,
     r"^attn_mask: shape \[2, 1, 5, 6\]: the library's masks are per key"),
    (dict(attn_mask=torch.ones(2, 3, 1, 6, dtype=torch.bool)), ValueError,
     r"^attn_mask: shape \[2, 3, 1, 6\]: the library's masks are per key"),
    (dict(attn_mask=torch.full((2, 1, 1, 6), math.nan)), ValueError,
     r"^attn_mask: value nan unsupported: additive masks must be finite \(a key bias\) or -inf"),
    (dict(attn_mask=torch.zeros(2, 3, 1, 6).index_fill_(1, torch.tensor([1]), -math.inf)),
     ValueError, r"^attn_mask: -inf entries that differ between heads"),
    (dict(attn_mask=torch.full((2, 1, 1, 6), 0.5), method="linear"), ValueError,
     r"params\.key_bias: linear attention has no additive key bias"),
    (dict(attn_mask=torch.zeros(2, 1, 1, 6, dtype=torch.int32)), TypeError,
     r"^attn_mask: expected dtype bool or a floating-point"),
    (dict(attn_mask=torch.ones(1, 1, 1, 1, 6, dtype=torch.bool)), ValueError,
     r"^attn_mask: shape \[1, 1, 1, 1, 6\] has more dims"),
    (dict(attn_mask=[True]), TypeError, r"^attn_mask: expected a torch\.Tensor"),
    (dict(bias=torch.zeros(4, 6)), ValueError, r"^key_bias: expected a shape broadcastable to \[B, H, Nk\]"),
    (dict(alibi_slopes=torch.zeros(3)), ValueError, r"^alibi_slopes: need causal=True"),
    (dict(alibi_slopes=torch.zeros(3, requires_grad=True), is_causal=True), ValueError,
     r"^is_causal = True with Nq = 5 != Nk = 6"),
    (dict(dropout_p=1.0), ValueError, r"^dropout_p = 1\.0: must be in \[0, 1\)"),
    (dict(dropout_p="x"), TypeError, r"^dropout_p: expected a number"),
    (dict(is_causal=1), TypeError, r"^is_causal: expected a bool"),
    (dict(method="nope"), ValueError, r"^method = 'nope': unknown"),
    (dict(n_hash=3, method="smyrf"), TypeError, r"unknown config field 'n_hash'"),
])
def test_errors(kwargs, error, pattern):
    q, k, v = qkv(b=2, h=3, nq=5, nk=6, d=4, dv=3)
    with pytest.raises(error, match=pattern):
        sdpa(q, k, v, **kwargs)


def test_causal_with_cross_lengths_is_refused():
    q, k, v = qkv(b=1, h=1, nq=4, nk=6, d=4, dv=3)
    with pytest.raises(ValueError, match=r"^is_causal = True with Nq = 4 != Nk = 6"):
        sdpa(q, k, v, is_causal=True)
    with pytest.raises(ValueError, match=r"^query, key, value: expected the same number of dims"):
        sdpa(q[0], k, v)
    with pytest.raises(ValueError, match=r"^query: expected 4 dims"):
        sdpa(q[0, 0], k[0, 0], v[0, 0])
