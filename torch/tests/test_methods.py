"""smyrf_torch.attention for every form smyrf_torch.methods() lists: values, masks, causal,
gradients, dtypes. What each test runs is read from the form's capabilities, so a form that
gains a backward (or causal, dropout, f64) is tested by it without a change here."""
import math

import pytest
import torch
from torch.autograd import gradcheck

from helpers import EPS_F32, qkv, random_masks, rel_frobenius, tolerance
import smyrf_torch
from smyrf_torch import attention

FORMS = smyrf_torch.methods()
IDS = [f["name"] for f in FORMS]

# Small settings so that every approximation is a real one on these short sequences (the
# defaults, e.g. 32-query clusters or 64-key windows, would cover them whole). Keyed by the
# canonical name, else by the method; a form not listed runs with its defaults.
SMALL = {
    "smyrf/lsh": dict(n_hashes=2, q_cluster_size=4, k_cluster_size=4),
    "smyrf/centroid": dict(q_cluster_size=4, k_cluster_size=4),
    "reformer": dict(n_hashes=2, n_buckets=4, chunk_size=4),
    "clustered": dict(n_clusters=3, hash_bits=8),
    "clustered/improved": dict(n_clusters=3, hash_bits=8, topk=4),
    "routing": dict(n_clusters=3, window=4),
    "sparse": dict(window=2, dilation=2, stride=3, summary=1, global_tokens=1, block_size=3,
                   global_blocks=1, random_blocks=1, width=4),
    "linear": dict(n_features=8),
    "compressed": dict(rank=3, stride=2, window=1),
    "informer": dict(factor=1.0),
    "sinkhorn": dict(block_size=4),
    "synthesizer": dict(hidden=5),
}


def small(form):
    return dict(SMALL.get(form["name"], SMALL.get(form["method"], {})))


def caps(form):
    return form["capabilities"]


def inputs(dtype=torch.float64, requires_grad=False, **shape):
    """q, k, v whose values are exact in float32 (and, with bf16=True, in bfloat16), so every
    dtype sees the same numbers."""
    bf16 = shape.pop("bf16", False)
    q, k, v = qkv(dtype=torch.float32, **shape)
    if bf16:
        q, k, v = (t.bfloat16().float() for t in (q, k, v))
    return tuple(t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v))


def gradients_close(a, ref, tol):
    """Relative Frobenius error within tol; a zero reference (Reformer's dK with shared_qk: K is
    not read) must be matched exactly."""
    if ref.double().norm() == 0:
        return a.double().norm() == 0
    return rel_frobenius(a, ref) <= tol


SHAPE = dict(b=2, h=2, nq=13, nk=13, d=5, dv=3, seed=11)
CROSS = dict(b=2, h=2, nq=9, nk=14, d=5, dv=3, seed=12)


def with_f64(forms):
    return [pytest.param(f, id=f["name"]) for f in forms if caps(f)["f64"]]


def with_backward(forms):
    return [pytest.param(f, id=f["name"]) for f in forms
            if caps(f)["backward"] and caps(f)["f64"]]


# ---- the list itself ---------------------------------------------------------------------

def test_methods_lists_every_form_with_its_capabilities():
    names = [f["name"] for f in FORMS]
    assert len(names) == len(set(names)) and "dense" in names and "smyrf/lsh" in names
    for f in FORMS:
        assert set(caps(f)) >= {"causal", "dropout", "backward", "causal_backward", "f64", "bf16"}
        for alias in f["aliases"] + [f["name"]]:
            assert smyrf_torch.describe(alias)["name"] == f["name"]


# ---- forward values ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [SHAPE, CROSS], ids=["square", "cross"])
@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_forward_float32(form, shape):
    """float32 against the float64 definition (same keys, clusters, draws) under the suite's
    rule where the form has f64; otherwise against the same call with every config field
    spelled out (the form's values from methods(): the keyword path builds the form's config)
    and a single thread (results do not depend on the thread count)."""
    if shape is CROSS and not caps(form)["cross_lengths"]:
        pytest.skip("Nq != Nk not supported")
    cfg = small(form)
    q, k, v = inputs(**shape)
    o32 = attention(q.float(), k.float(), v.float(), form["name"], seed=7, **cfg)
    assert o32.dtype == torch.float32 and o32.shape == (2, 2, shape["nq"], 3)
    assert torch.isfinite(o32).all()
    if caps(form)["f64"]:
        o64 = attention(q, k, v, form["name"], seed=7, **cfg)
        assert o64.dtype == torch.float64
        assert (o32.double() - o64).abs().max().item() <= tolerance(q, k, v)
    else:
        spelled = dict(form["fields"], **cfg)
        again = attention(q.float(), k.float(), v.float(), form["method"], seed=7,
                          num_threads=1, **spelled)
        assert torch.equal(o32, again)


@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_strided_and_expanded_inputs(form):
    """Views (a transposed layout, one K/V head expanded over the heads) give the bits of their
    contiguous copies."""
    cfg = small(form)
    q, k, v = inputs(dtype=torch.float32, **SHAPE)
    qt = q.transpose(2, 3).contiguous().transpose(2, 3)
    k1, v1 = k[:, :1].expand(2, 2, 13, 5), v[:, :1].expand(2, 2, 13, 3)
    assert torch.equal(attention(qt, k1, v1, form["name"], seed=1, **cfg),
                       attention(q, k1.contiguous(), v1.contiguous(), form["name"], seed=1, **cfg))


@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_masks(form):
    """Masked queries get 0; masked keys take no part (their values do not matter); against
    float64 where the form has it."""
    if not caps(form)["masks"]:
        pytest.skip("no masks")
    cfg = small(form)
    q, k, v = inputs(dtype=torch.float32, **SHAPE)
    key_mask, query_mask = random_masks(2, 13, 13, seed=3)
    masks = dict(key_mask=key_mask, query_mask=query_mask)
    o = attention(q, k, v, form["name"], seed=5, **masks, **cfg)
    assert (o[~query_mask[:, None, :].expand(2, 2, 13)] == 0).all()
    hidden = ~key_mask[:, None, :, None]
    k2 = torch.where(hidden, torch.randn_like(k) * 3, k)
    v2 = torch.where(hidden, torch.randn_like(v) * 3, v)
    o2 = attention(q, k2, v2, form["name"], seed=5, **masks, **cfg)
    assert (o - o2).abs().max().item() <= tolerance(q, k, v)
    if caps(form)["f64"]:
        o64 = attention(q.double(), k.double(), v.double(), form["name"], seed=5, **masks, **cfg)
        assert (o.double() - o64).abs().max().item() <= tolerance(q, k, v)


@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_causal(form):
    """With causal the first query sees only the first key: O_0 = v_0 for every form (the
    fallbacks of SMYRF, routing and Reformer's self exclusion give the same; a linear map whose
    normaliser is exactly 0 gives 0); the rest against
    float64 where the form has it; refused with a ValueError naming causal otherwise."""
    cfg = small(form)
    q, k, v = inputs(dtype=torch.float32, **SHAPE)
    if not caps(form)["causal"]:
        with pytest.raises(ValueError, match=r"causal"):
            attention(q, k, v, form["name"], causal=True, **cfg)
        return
    o = attention(q, k, v, form["name"], causal=True, seed=2, **cfg)
    # ... or 0 where a feature map's normaliser is exactly 0 (DPFP's relu products can be).
    first = torch.where((o[:, :, 0] == 0).all(-1, keepdim=True), v[:, :, 0], o[:, :, 0])
    assert (first - v[:, :, 0]).abs().max().item() <= tolerance(q, k, v)
    assert not torch.allclose(o, attention(q, k, v, form["name"], seed=2, **cfg))
    if caps(form)["f64"]:
        o64 = attention(q.double(), k.double(), v.double(), form["name"], causal=True, seed=2,
                        **cfg)
        assert (o.double() - o64).abs().max().item() <= tolerance(q, k, v)


# ---- gradients ---------------------------------------------------------------------------

def _variants(form):
    """(causal, dropout) settings the form's capabilities allow for its backward."""
    c = caps(form)
    out = [(False, 0.0)]
    if c["causal_backward"]:
        out.append((True, 0.0))
    if c["dropout"]:
        out.append((False, 0.3))
    if c["causal_backward"] and c["causal_dropout"]:
        out.append((True, 0.3))
    return out


@pytest.mark.parametrize("form", with_backward(FORMS))
def test_gradcheck_float64(form):
    cfg = small(form)
    for causal, dropout in _variants(form):
        for masked in (False, True):
            q, k, v = inputs(requires_grad=True, b=1, h=2, nq=7, nk=7, d=3, dv=2, seed=4)
            masks = {}
            if masked:
                km, qm = random_masks(1, 7, 7, seed=9)
                masks = dict(key_mask=km, query_mask=qm)
            fn = lambda q, k, v: attention(q, k, v, form["name"], causal=causal, dropout=dropout,
                                           training=dropout > 0, seed=13, **masks, **cfg)
            assert gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-8, rtol=1e-6), (causal, dropout,
                                                                               masked)


@pytest.mark.parametrize("form", with_backward(FORMS))
def test_float32_gradients_match_float64(form):
    cfg = small(form)
    for causal, dropout in _variants(form):
        grads = {}
        for dtype in (torch.float32, torch.float64):
            q, k, v = inputs(dtype=dtype, requires_grad=True, **SHAPE)
            o = attention(q, k, v, form["name"], causal=causal, dropout=dropout,
                          training=dropout > 0, seed=21, **cfg)
            g = torch.linspace(-1, 1, o.numel(), dtype=dtype).reshape(o.shape)
            grads[dtype] = torch.autograd.grad(o, (q, k, v), g)
        for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
            assert gradients_close(g32, g64, 1e-4), (causal, dropout)


@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_no_backward_is_refused_by_name(form):
    """A form without a backward computes under no_grad and refuses inputs that require grad
    (naming the method); forms with one return gradients."""
    cfg = small(form)
    q, k, v = inputs(dtype=torch.float32, requires_grad=True, **SHAPE)
    if caps(form)["backward"]:
        o = attention(q, k, v, form["name"], **cfg)
        o.sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()
        return
    with pytest.raises(ValueError, match=rf"method {form['name']} has no backward"):
        attention(q, k, v, form["name"], **cfg)
    with torch.no_grad():
        assert attention(q, k, v, form["name"], **cfg).shape == (2, 2, 13, 3)
    assert attention(q.detach(), k.detach(), v.detach(), form["name"], **cfg).shape == (2, 2, 13, 3)


# ---- dtypes ------------------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_bfloat16(form):
    """bf16 forward (the library's bf16 input path) against float32 on the same bf16-rounded
    values: the float32 rule plus the rounding of O to bf16 (2^-8 |O|). Backward (where the form
    has one): in float32 on the exact values, gradients rounded to bf16 (2^-8 relative)."""
    if not caps(form)["bf16"]:
        pytest.skip("no bf16 inputs")
    cfg = small(form)
    q, k, v = inputs(dtype=torch.float32, bf16=True, **SHAPE)
    o32 = attention(q, k, v, form["name"], seed=3, **cfg)
    qb, kb, vb = (t.bfloat16().requires_grad_(caps(form)["backward"]) for t in (q, k, v))
    ob = attention(qb, kb, vb, form["name"], seed=3, **cfg)
    assert ob.dtype == torch.bfloat16
    err = (ob.float() - o32).abs()
    assert (err <= tolerance(q, k, v) + 2.0**-8 * o32.abs()).all()
    if caps(form)["backward"]:
        g = torch.linspace(-1, 1, ob.numel()).reshape(ob.shape)
        gb = torch.autograd.grad(ob, (qb, kb, vb), g.bfloat16())
        q32, k32, v32 = (t.clone().requires_grad_() for t in (q, k, v))
        g32 = torch.autograd.grad(attention(q32, k32, v32, form["name"], seed=3, **cfg),
                                  (q32, k32, v32), g.bfloat16().float())
        for a, b in zip(gb, g32):
            assert a.dtype == torch.bfloat16
            assert gradients_close(a.float(), b, 2.0**-7)


def test_bfloat16_dropout_runs_on_float32_copies():
    q, k, v = inputs(dtype=torch.float32, bf16=True, requires_grad=True, **SHAPE)
    o32 = attention(q, k, v, dropout=0.3, training=True, seed=8)
    qb, kb, vb = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    ob = attention(qb, kb, vb, dropout=0.3, training=True, seed=8)
    assert torch.equal(ob, o32.bfloat16())
    ob.sum().backward()
    assert qb.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("form", [f for f in FORMS if not caps(f)["f64"]],
                         ids=[f["name"] for f in FORMS if not caps(f)["f64"]])
def test_float64_without_f64_is_refused_by_name(form):
    q, k, v = inputs(**SHAPE)
    with pytest.raises(ValueError, match=rf"dtype float64 .*method {form['name']} has none"):
        attention(q, k, v, form["name"], **small(form))


def test_learned_parts_in_the_inputs_dtype_and_gradcheck_around_them():
    """A learned part may come in the inputs' dtype (read as float32); given parts are constants
    of the gradient, so gradcheck holds with them (routing with given centroids, causal)."""
    q, k, v = inputs(requires_grad=True, b=1, h=2, nq=8, nk=8, d=4, dv=3, seed=6)
    centroids = torch.randn(2, 3, 4, dtype=torch.float64).float().double()
    fn = lambda q, k, v, c: attention(q, k, v, "routing", n_clusters=3, window=3, centroids=c,
                                      causal=True)
    assert torch.equal(fn(q, k, v, centroids), fn(q, k, v, centroids.float()))
    assert gradcheck(lambda q, k, v: fn(q, k, v, centroids), (q, k, v), eps=1e-6, atol=1e-8,
                     rtol=1e-6)


VARIANTS = ["dense", "local:0.25", "smyrf:2:0.25", "smyrf-c:0.25", "reformer:2:0.25",
            "clustered:0.25", "iclustered:0.25", "routing:0.25", "bigbird:0.25",
            "performer:0.25", "rfa:0.25", "linear", "linformer:0.25", "nystrom:0.25", "mca:0.25",
            "isab:0.25", "gmat:0.25", "informer:0.25"]


@pytest.mark.parametrize("spec", VARIANTS)
def test_variant_runs_and_its_memory_is_its_budget(spec):
    """variant(spec, n) gives a method and fields that attention() takes; attention_info counts
    the scores of that forward: the budget's fraction of n^2 (within what rounding and the
    sequence's edges cost), and the same output as attention()."""
    n, h = 96, 2
    v = smyrf_torch.variant(spec, n)
    assert v["spec"] == spec and v["exact"] == (spec == "dense")
    q, k, vv = (t.float() for t in inputs(b=1, h=h, nq=n, nk=n, d=8, dv=8, seed=2))
    o = attention(q, k, vv, v["method"], seed=3, **v["fields"])
    assert o.shape == (1, h, n, 8) and torch.isfinite(o).all()
    info = smyrf_torch.attention_info(q, k, vv, v["method"], seed=3, **v["fields"])
    fraction = info["attention_scores"] / (h * n * n)
    if spec == "dense":
        assert fraction == 1.0
    elif spec != "linear":  # fixed-size maps: no budget (m = d per query and key)
        assert 0.15 <= fraction <= 0.35, (spec, fraction)
    assert info["workspace_bytes"] >= 0 and info["seconds"] >= 0


def test_variant_follows_the_length():
    assert smyrf_torch.variant("local:0.25", 400)["fields"]["window"] == 50
    assert smyrf_torch.variant("local:0.25", 800)["fields"]["window"] == 100
    assert smyrf_torch.variant("smyrf:2:0.5", 128)["fields"]["q_cluster_size"] == 32
    assert smyrf_torch.variant("smyrf:2:0.5", 128)["label"] == "smyrf 2 x 50%"


def test_variant_and_attention_info_errors_name_the_argument():
    with pytest.raises(ValueError, match="nosuch"):
        smyrf_torch.variant("nosuch:0.25", 64)
    with pytest.raises(ValueError, match="n = 0"):
        smyrf_torch.variant("local:0.25", 0)
    with pytest.raises(TypeError, match="spec"):
        smyrf_torch.variant(3, 64)
    q, k, v = inputs(b=1, h=1, nq=8, nk=8, d=4, dv=4, seed=1)
    with pytest.raises(TypeError, match="float64"):
        smyrf_torch.attention_info(q, k, v, "dense")


# ---- gradients of learned parts --------------------------------------------------------------

# (method, fields and call options, parts given): every form whose learned parts the library
# differentiates (describe()["learned_grad"]; test_every_differentiable_part_has_a_case checks
# the list is whole).
LEARNED_CASES = [
    ("compressed", dict(kind="linformer", rank=3), ("projection_e", "projection_f")),
    ("compressed", dict(kind="induced_points", rank=3), ("inducing",)),
    ("compressed", dict(kind="global_memory", rank=3, window=1), ("memory_k", "memory_v")),
    ("synthesizer", dict(kind="dense", hidden=5), ("w1", "b1", "w2", "b2")),
    ("synthesizer", dict(kind="random"), ("logits",)),
    ("linear", dict(map="rfa", n_features=8, causal=True), ("gates",)),
    ("sinkhorn", dict(block_size=3, iterations=4), ("sort_net",)),
]
LEARNED_IDS = [f"{c[0]}-{c[1].get('kind', c[1].get('map', c[2][0]))}" for c in LEARNED_CASES]
B, H, N, D, DV, RANK, HIDDEN = 2, 2, 9, 4, 3, 3, 5


def learned_parts(names, dtype, seed=11):
    g = torch.Generator().manual_seed(seed)
    shapes = dict(projection_e=(H, RANK, N), projection_f=(H, RANK, N), inducing=(H, RANK, D),
                  memory_k=(H, RANK, D), memory_v=(H, RANK, DV), w1=(H, D, HIDDEN),
                  b1=(H, HIDDEN), w2=(H, HIDDEN, N), b2=(H, N), logits=(H, N, N), gates=(B, H, N),
                  sort_net=(H, D, 3))
    # Values exact in float32, so the float32 and float64 calls see the same numbers; gates
    # in [0.05, 0.95].
    draw = lambda n: (torch.rand(*shapes[n], generator=g) * 0.9 + 0.05 if n == "gates"
                      else torch.randn(*shapes[n], generator=g) * 0.5)
    return {n: draw(n).to(dtype).requires_grad_() for n in names}


def learned_call(method, fields, q, k, v, parts):
    return attention(q, k, v, method, **fields, **parts)


def test_every_differentiable_part_has_a_case():
    for f in FORMS:
        names = set(smyrf_torch.describe(f["name"])["learned_grad"])
        covered = {n for m, _, ns in LEARNED_CASES if m == f["method"] for n in ns}
        assert names <= covered, (f["name"], names - covered)


@pytest.mark.parametrize("method,fields,names", LEARNED_CASES, ids=LEARNED_IDS)
def test_learned_parts_gradcheck_in_float64(method, fields, names):
    q, k, v = inputs(requires_grad=True, b=B, h=H, nq=N, nk=N, d=D, dv=DV, seed=4)
    parts = learned_parts(names, torch.float64)
    assert set(names) <= set(smyrf_torch.describe(method)["learned_grad"])

    def fn(q, k, v, *ps):
        return learned_call(method, fields, q, k, v, dict(zip(names, ps)))
    assert gradcheck(fn, (q, k, v, *parts.values()), eps=1e-6, atol=1e-8, rtol=1e-6)


def learned_rule(t):
    """The C++ suite's per-element rule for float32 sums (tests/test_compressed_backward.cpp:
    8 eps (1 + log2(n + 1)) relative to the largest value, n the longest reduction: here every
    query of the batch times every key, B N N), in Frobenius norm: the error's norm is at most
    sqrt(numel) times its largest element."""
    n = B * N * N
    return 8 * EPS_F32 * (1 + math.log2(n + 1)) * math.sqrt(t.numel())


@pytest.mark.parametrize("method,fields,names", LEARNED_CASES, ids=LEARNED_IDS)
def test_learned_parts_float32_gradients_match_float64(method, fields, names):
    """The float32 backward's learned-part gradients against the double-precision definition's,
    relative in Frobenius norm under learned_rule."""
    grads = {}
    for dtype in (torch.float64, torch.float32):
        q, k, v = (t.to(dtype).requires_grad_() for t in
                   inputs(b=B, h=H, nq=N, nk=N, d=D, dv=DV, seed=4))
        parts = learned_parts(names, dtype)
        o = learned_call(method, fields, q, k, v, parts)
        g = torch.Generator().manual_seed(2)
        o.backward(torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype))
        for n, t in parts.items():
            assert t.grad is not None and t.grad.dtype == dtype, n
        grads[dtype] = {n: t.grad for n, t in parts.items()}
    for n in names:
        ref = grads[torch.float64][n]
        assert rel_frobenius(grads[torch.float32][n], ref) <= learned_rule(ref), n


def test_learned_parts_without_a_gradient_are_refused_by_name():
    q, k, v = inputs(b=1, h=2, nq=8, nk=8, d=4, dv=3, seed=6)
    centroids = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="centroids: requires grad.*routing"):
        attention(q, k, v, "routing", n_clusters=3, window=3, centroids=centroids)
    assert smyrf_torch.describe("routing")["learned_grad"] == []


def test_module_holds_differentiable_parts_as_parameters():
    torch.manual_seed(0)
    m = smyrf_torch.nn.CompressedLinformerAttention(num_heads=H, seq_len=N, rank=RANK)
    assert {n for n, _ in m.named_parameters()} == {"projection_e", "projection_f"}
    q, k, v = (t.float() for t in inputs(b=B, h=H, nq=N, nk=N, d=D, dv=DV, seed=4))
    m(q, k, v).sum().backward()
    assert m.projection_e.grad is not None and m.projection_e.grad.abs().sum() > 0
    # A part whose library default is parameter-free, drawn on request: Sinkhorn's sort net.
    s = smyrf_torch.nn.SinkhornAttention(sort_net="init", num_heads=H, head_dim=D, seq_len=N,
                                         block_size=3)
    assert [n for n, _ in s.named_parameters()] == ["sort_net"]
    assert s.sort_net.shape == (H, D, 3) and s.sort_net.abs().max() <= 1 / math.sqrt(D)
    s(q, k, v).sum().backward()
    assert s.sort_net.grad is not None and s.sort_net.grad.abs().sum() > 0
    assert list(smyrf_torch.nn.SinkhornAttention(block_size=3).named_parameters()) == []
    with pytest.raises(ValueError, match='sort_net="init": dense draws no sort_net'):
        smyrf_torch.nn.DenseAttention(sort_net="init")
    r = smyrf_torch.nn.RoutingAttention(n_clusters=3, window=3, centroids=torch.randn(2, 3, 4))
    assert list(r.named_parameters()) == [] and "centroids" in dict(r.named_buffers())
