"""smyrf_attention / dense_attention on [B, H, N, d] tensors: values, gradients, seeds."""
import pytest
import torch
from torch.autograd import gradcheck

from helpers import qkv, random_masks, rel_frobenius, tolerance, torch_attention
from smyrf_torch import dense_attention, smyrf_attention

SMYRF = dict(n_hashes=3, q_cluster_size=4, k_cluster_size=4)

# (name, function, keyword arguments): the methods and settings every property runs over.
CASES = [
    ("dense", dense_attention, {}),
    ("dense-dropout", dense_attention, dict(dropout=0.3, training=True, seed=5)),
    ("smyrf", smyrf_attention, dict(SMYRF, seed=3)),
    ("smyrf-r", smyrf_attention, dict(SMYRF, r=0.5, seed=4)),
    ("smyrf-dropout", smyrf_attention, dict(SMYRF, dropout=0.25, training=True, seed=6)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_float32_forward_matches_float64_reference(name, fn, kw, masked):
    """float32 (fast kernels) against float64 (the library's double-precision reference, same
    clusters and dropout masks) under the suite's tolerance rule."""
    q, k, v = qkv(b=2, h=3, nq=33, nk=29, d=8, dv=5, seed=1)
    masks = dict(zip(("key_mask", "query_mask"), random_masks(2, 33, 29))) if masked else {}
    o32 = fn(q.float(), k.float(), v.float(), scale=0.6, **masks, **kw)
    o64 = fn(q, k, v, scale=0.6, **masks, **kw)
    assert o32.dtype == torch.float32 and o64.dtype == torch.float64
    assert o32.shape == (2, 3, 33, 5)
    assert (o32.double() - o64).abs().max().item() <= tolerance(q, k, v, 0.6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_equals_plain_torch_softmax_attention(dtype):
    q, k, v = qkv(b=2, h=2, nq=20, nk=17, d=6, dv=4, dtype=dtype, seed=2)
    key_mask, query_mask = random_masks(2, 20, 17, seed=2)
    for scale in (None, 0.3, -0.8):
        o = dense_attention(q, k, v, scale=scale, key_mask=key_mask, query_mask=query_mask)
        ref = torch_attention(q, k, v, scale, key_mask, query_mask)
        tol = 1e-12 if dtype == torch.float64 else tolerance(q, k, v, scale)
        assert (o.double() - ref).abs().max().item() <= tol


def test_smyrf_with_clusters_covering_the_sequence_is_dense():
    q, k, v = qkv(b=2, h=2, nq=20, nk=16, d=8, dv=8, dtype=torch.float32, seed=3)
    o = smyrf_attention(q, k, v, n_hashes=4, q_cluster_size=20, k_cluster_size=16, seed=9)
    assert torch.equal(o, dense_attention(q, k, v))


def test_smyrf_with_small_clusters_is_not_dense():
    q, k, v = qkv(b=1, h=2, nq=64, nk=64, d=8, dv=8, seed=3)
    o = smyrf_attention(q, k, v, n_hashes=1, q_cluster_size=8, k_cluster_size=8)
    assert (o - dense_attention(q, k, v)).abs().max().item() > 1e-3


# ---- gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_gradcheck_float64(name, fn, kw, masked):
    """Finite differences against the backward. SMYRF's clusters and the dropout masks are
    functions of the inputs and the seed, constant under the tiny perturbations."""
    q, k, v = qkv(b=2, h=2, nq=9, nk=8, d=4, dv=3, seed=4, requires_grad=True)
    masks = dict(zip(("key_mask", "query_mask"), random_masks(2, 9, 8, seed=4))) if masked else {}
    assert gradcheck(lambda q, k, v: fn(q, k, v, scale=0.9, **masks, **kw), (q, k, v))


@pytest.mark.parametrize("name,fn,kw", CASES, ids=IDS)
def test_float32_gradients_match_float64(name, fn, kw):
    """Rule: relative Frobenius error of each float32 gradient against float64 <= 1e-4."""
    q, k, v = qkv(b=2, h=2, nq=40, nk=36, d=16, dv=8, seed=5)
    w = torch.randn(2, 2, 40, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    key_mask, query_mask = random_masks(2, 40, 36, seed=5)

    def grads(dtype):
        inputs = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        o = fn(*inputs, key_mask=key_mask, query_mask=query_mask, **kw)
        return torch.autograd.grad((o * w.to(dtype)).sum(), inputs)

    for name_, g32, g64 in zip(("dq", "dk", "dv"), grads(torch.float32), grads(torch.float64)):
        assert g32.dtype == torch.float32
        assert rel_frobenius(g32, g64) <= 1e-4, name_


def test_masked_tokens_get_zero_output_and_zero_gradients():
    q, k, v = qkv(b=2, h=2, nq=12, nk=12, d=4, dv=4, dtype=torch.float32, requires_grad=True)
    key_mask, query_mask = random_masks(2, 12, 12, seed=7)
    o = smyrf_attention(q, k, v, **SMYRF, key_mask=key_mask, query_mask=query_mask)
    assert o.detach()[~query_mask[:, None, :, None].expand_as(o)].abs().max() == 0
    o.sum().backward()
    assert q.grad[~query_mask[:, None, :, None].expand_as(q)].abs().max() == 0
    assert k.grad[~key_mask[:, None, :, None].expand_as(k)].abs().max() == 0
    assert v.grad[~key_mask[:, None, :, None].expand_as(v)].abs().max() == 0


def test_noncontiguous_and_expanded_inputs():
    """Strided inputs are copied to contiguous ones; an expanded (stride-0) K/V head gets the
    sum of the per-head gradients from autograd."""
    q, _, _ = qkv(b=2, h=3, nq=10, nk=10, d=4, dv=4, dtype=torch.float64, seed=8)
    k1 = torch.randn(2, 1, 10, 4, dtype=torch.float64, requires_grad=True)
    v1 = torch.randn(2, 1, 10, 4, dtype=torch.float64, requires_grad=True)
    q_t = q.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()  # column-major rows
    o = dense_attention(q_t, k1.expand(2, 3, 10, 4), v1.expand(2, 3, 10, 4))
    ref = torch_attention(q, k1.expand(2, 3, 10, 4), v1.expand(2, 3, 10, 4))
    assert (o - ref).abs().max().item() <= 1e-12
    assert gradcheck(lambda k1, v1: dense_attention(q, k1.expand(2, 3, 10, 4), v1.expand(2, 3, 10, 4)),
                     (k1, v1))


def test_double_backward_raises():
    """Differentiable once: create_graph=True works, differentiating the gradients throws."""
    q, k, v = qkv(b=1, h=1, nq=5, nk=5, d=4, dv=4, requires_grad=True)
    (gq,) = torch.autograd.grad(dense_attention(q, k, v).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        gq.sum().backward()


def test_no_graph_without_grad():
    q, k, v = qkv(requires_grad=True)
    with torch.no_grad():
        assert dense_attention(q, k, v).grad_fn is None
    assert dense_attention(q, k, v).grad_fn is not None


# ---- seeds and dropout --------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(SMYRF), dict(SMYRF, dropout=0.2, training=True)])
def test_same_seed_same_bits_other_seed_other_result(kw):
    q, k, v = qkv(b=2, h=2, nq=32, nk=32, d=8, dv=8, dtype=torch.float32, seed=10)
    a = smyrf_attention(q, k, v, seed=123, **kw)
    assert torch.equal(a, smyrf_attention(q, k, v, seed=123, **kw))
    assert torch.equal(a, smyrf_attention(q, k, v, seed=123, num_threads=1, **kw))
    assert not torch.equal(a, smyrf_attention(q, k, v, seed=124, **kw))


def test_dropout_only_in_training_and_unbiased():
    q, k, _ = qkv(b=1, h=4, nq=256, nk=256, d=8, dv=1, dtype=torch.float32, seed=11)
    v = torch.ones(1, 4, 256, 1)
    assert torch.equal(dense_attention(q, k, v, dropout=0.5, seed=1), dense_attention(q, k, v))
    o = dense_attention(q, k, v, dropout=0.5, training=True, seed=1)
    # Each output is the sum of the kept weights / (1 - p): not 1 per row, 1 on average.
    assert (o - 1).abs().max().item() > 0.05
    assert abs(o.mean().item() - 1) < 0.05
    assert not torch.equal(o, dense_attention(q, k, v, dropout=0.5, training=True, seed=2))


def test_key_bias_and_alibi_through_attention():
    """attention(key_bias=..., alibi_slopes=...): the float64 definition equals plain torch with
    the bias added to the scores, gradcheck passes with the bias a constant, float32 matches
    float64 under the rule widened by max|bias|; SMYRF with whole clusters equals dense with
    the bias; a form without a key bias refuses it by name, and so do a bias that requires grad
    and ALiBi without causal."""
    from helpers import EPS_F32
    from smyrf_torch import attention
    q, k, v = qkv(b=2, h=3, nq=9, nk=12, d=4, dv=3, seed=8)
    g = torch.Generator().manual_seed(9)
    bias = (torch.randn(2, 1, 12, generator=g) * 2).float().double()  # exact in float32
    o64 = attention(q, k, v, "dense", key_bias=bias)
    s = q @ k.transpose(-1, -2) / 2.0 + bias[:, :, None, :]
    assert (o64 - torch.softmax(s, -1) @ v).abs().max().item() <= 1e-12
    o32 = attention(q.float(), k.float(), v.float(), "dense", key_bias=bias.float())
    tol = tolerance(q, k, v) + 16 * EPS_F32 * v.abs().max().item() * bias.abs().max().item()
    assert (o32.double() - o64).abs().max().item() <= tol
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    assert gradcheck(lambda a, b, c: attention(a, b, c, "dense", key_bias=bias, causal=True),
                     (qg, kg, vg), eps=1e-6, atol=1e-8, rtol=1e-6)
    slopes = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64)
    o = attention(q, k, v, "dense", causal=True, alibi_slopes=slopes)
    pos = torch.arange(12, dtype=torch.float64)
    qpos = pos[3:]  # the 9 queries face the last 9 keys
    explicit = -slopes[:, None, None] * (qpos[:, None] - pos[None, :])
    s = (q @ k.transpose(-1, -2) / 2.0 + explicit).masked_fill(pos[None, :] > qpos[:, None], -float("inf"))
    assert (o - torch.softmax(s, -1) @ v).abs().max().item() <= 1e-12
    with pytest.raises(ValueError, match=r"params\.key_bias: linear attention has no additive key bias"):
        attention(q.float(), k.float(), v.float(), "linear", key_bias=bias.float())
    # A key-set form honours it: SMYRF with whole clusters is dense attention, bias included.
    whole = dict(n_hashes=1, q_cluster_size=9, k_cluster_size=12)
    assert (attention(q, k, v, "smyrf/lsh", key_bias=bias, **whole) - o64).abs().max().item() <= 1e-12
    with pytest.raises(ValueError, match=r"^key_bias: requires grad"):
        attention(q, k, v, "dense", key_bias=bias.clone().requires_grad_())
    with pytest.raises(ValueError, match=r"^alibi_slopes: need causal=True"):
        attention(q, k, v, "dense", alibi_slopes=slopes)
    with pytest.raises(ValueError, match=r"^alibi_slopes: expected shape \[H\] = \[3\]"):
        attention(q, k, v, "dense", causal=True, alibi_slopes=slopes[:2])
