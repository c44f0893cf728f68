"""Every edge error raises with a message naming the argument and the problem."""
import pytest
import torch

from helpers import qkv
from smyrf_torch import SmyrfAttention, attention, dense_attention, smyrf_attention

Q, K, V = qkv(b=2, h=2, nq=6, nk=5, d=4, dv=3, dtype=torch.float32)


@pytest.mark.parametrize("fn", [dense_attention, smyrf_attention])
@pytest.mark.parametrize("args,kwargs,error,pattern", [
    ((Q.half(), K, V), {}, TypeError, r"^q: expected dtype float32, float64 or bfloat16, got Half"),
    ((Q, K.int(), V), {}, TypeError, r"^k: expected dtype float32, float64 or bfloat16, got Int"),
    ((Q, K, V.double()), {}, TypeError, r"^q, k, v: expected one dtype"),
    ((Q.to_sparse(), K, V), {}, TypeError, r"^q: expected a strided"),
    ((Q[0], K, V), {}, ValueError, r"^q: expected 4 dims \[B, H, Nq, d\], got 3 dims"),
    ((Q, K, V[..., None]), {}, ValueError, r"^v: expected 4 dims \[B, H, Nk, dv\], got 5"),
    ((Q[:, :, :0], K, V), {}, ValueError, r"^q: every dimension must be >= 1"),
    ((Q, K[:1], V[:1]), {}, ValueError, r"^k: shape \[1, 2, 5, 4\] does not match q's.*batch"),
    ((Q, K[..., :3], V), {}, ValueError, r"^k: .*head dim d must agree"),
    ((Q, K, V[:, :, :4]), {}, ValueError, r"^v: shape .* does not match k's.*key length Nk"),
    ((Q, K, V), dict(key_mask=torch.ones(2, 6, dtype=torch.bool)), ValueError,
     r"^key_mask: expected shape \[B, Nk\] = \[2, 5\], got \[2, 6\]"),
    ((Q, K, V), dict(query_mask=torch.ones(6, dtype=torch.bool)), ValueError,
     r"^query_mask: expected shape \[B, Nq\] = \[2, 6\], got \[6\]"),
    ((Q, K, V), dict(key_mask=torch.ones(2, 5)), TypeError, r"^key_mask: expected dtype bool or uint8"),
    ((Q, K, V), dict(dropout=1.0), ValueError, r"^dropout = 1: must be in \[0, 1\)"),
    ((Q, K, V), dict(dropout=-0.1), ValueError, r"^dropout = -0.1: must be in \[0, 1\)"),
    ((Q, K, V), dict(scale=float("inf")), ValueError, r"^scale = inf: must be finite"),
    ((Q, K, V), dict(num_threads=-1), ValueError, r"^num_threads = -1: must be >= 0"),
    ((Q, K, V), dict(num_threads=5000), ValueError, r"^num_threads = 5000: must be >= 0 and <= 1024"),
    ((Q, K, V), dict(num_threads=1.5), TypeError, r"^num_threads: expected an int, got float"),
    ((Q, K, V), dict(seed=-1), ValueError, r"^seed = -1: must be in \[0, 2\^64\)"),
    ((Q, K, V), dict(seed=2**64), ValueError, r"^seed = 18446744073709551616: must be in"),
    ((Q, K, V), dict(seed="1"), TypeError, r"^seed: expected an int, got str"),
    ((Q, K, V), dict(dropout="x"), TypeError, r"^dropout: expected a number, got str"),
    ((Q, K, V), dict(scale="x"), TypeError, r"^scale: expected a number, got str"),
    ((Q, K, V), dict(training="yes"), TypeError, r"^training: expected a bool, got str"),
])
def test_functional_edge_errors(fn, args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(*args, **kwargs)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(n_hashes=0), r"SmyrfConfig\.n_hashes = 0"),
    (dict(q_cluster_size=0), r"SmyrfConfig\.q_cluster_size = 0"),
    (dict(k_cluster_size=-3), r"SmyrfConfig\.k_cluster_size = -3"),
    (dict(r=-1.0), r"SmyrfConfig\.r = -1"),
])
def test_smyrf_config_errors_from_the_library(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        smyrf_attention(Q, K, V, **kwargs)


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(n_hashes=2**40), ValueError, r"^n_hashes = 1099511627776: must fit in a 32-bit int"),
    (dict(q_cluster_size=True), TypeError, r"^q_cluster_size: expected an int, got bool"),
    (dict(r="0"), TypeError, r"^r: expected a number, got str"),
])
def test_smyrf_scalar_arguments_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        smyrf_attention(Q, K, V, **kwargs)


def test_range_error_names_the_row():
    big = K.clone()
    big[0, 1, 2, 0] = 1e30
    with pytest.raises(ValueError, match=r"params\.k\[0, 1, 2\] row norm = 1e\+30: above 2\^32"):
        dense_attention(Q, big, V)


def test_non_finite_input_is_reported_by_the_library():
    bad = K.clone()
    bad[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"params\.k\[1, 0, 2, 3\] = nan"):
        dense_attention(Q, bad, V)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_is_rejected():
    with pytest.raises(TypeError, match=r"^q: expected a CPU tensor"):
        dense_attention(Q.cuda(), K, V)


Q3, K3, V3 = Q[:, 0], K[:, 0], V[:, 0]  # [batch, seq, dim]


@pytest.mark.parametrize("args,kwargs,error,pattern", [
    ((Q, K3, V3), {}, ValueError, r"^queries: expected 3 dims \[batch, Nq, d\], got shape"),
    ((Q3, K3.half(), V3), {}, TypeError, r"^keys: expected dtype float32 or float64"),
    ((Q3, K3, [1.0]), {}, TypeError, r"^values: expected a torch\.Tensor"),
    ((Q3, K3[:1], V3[:1]), {}, ValueError, r"^keys: shape \[1, 5, 4\] does not match queries"),
    ((Q3, K3, V3[:, :4]), {}, ValueError, r"^values: shape .* does not match keys"),
    ((Q3, K3, V3), dict(norm_factor=0), ValueError, r"^norm_factor = 0: must be finite and nonzero"),
    ((Q3, K3, V3), dict(norm_factor="two"), TypeError, r"^norm_factor = 'two': expected a number"),
    ((Q3, K3, V3), dict(norm_factor=None), TypeError, r"^norm_factor = None: expected a number"),
    ((Q3, K3.double(), V3), {}, TypeError,
     r"^queries, keys, values: expected one dtype, got torch\.float32, torch\.float64, torch\.float32"),
    ((Q3[:, :0], K3, V3), {}, ValueError, r"^queries: every dimension must be >= 1, got shape \[2, 0, 4\]"),
    ((Q3, K3, V3[..., :0]), {}, ValueError, r"^values: every dimension must be >= 1, got shape \[2, 5, 0\]"),
    ((Q3, K3, V3), dict(attn_mask=torch.ones(2, 5, dtype=torch.bool)), TypeError,
     r"^attn_mask: expected an additive floating-point mask"),
    ((Q3, K3, V3), dict(attn_mask=torch.zeros(2, 6)), ValueError,
     r"^attn_mask: expected shape \[seq\] or \[m, seq\] with seq = 5"),
    ((Q3, K3, V3), dict(attn_mask=torch.zeros(3, 5)), ValueError, r"^attn_mask: .*m dividing the batch size 2"),
    ((Q3, K3, V3), dict(attn_mask=torch.tensor([0.0, -0.5, 0.0, 0.0, 0.0])), ValueError,
     r"^attn_mask: value -0.5 unsupported"),
])
def test_module_edge_errors(args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        SmyrfAttention(1, 4, 4)(*args, **kwargs)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(n_hashes=0), r"^n_hashes = 0: must be an integer >= 1"),
    (dict(q_cluster_size=2.5), r"^q_cluster_size = 2.5"),
    (dict(k_attn_size=0), r"^k_attn_size = 0"),
    (dict(dropout=1.0), r"^dropout = 1.0: must be in \[0, 1\)"),
    (dict(clustering_algo="kmeans"), r"^clustering_algo = 'kmeans': only 'lsh' is supported"),
])
def test_module_constructor_errors(kwargs, pattern):
    args = dict(n_hashes=1, q_cluster_size=4, k_cluster_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        SmyrfAttention(**args)


@pytest.mark.parametrize("dropout", ["0.1", None, True])
def test_module_dropout_must_be_a_number(dropout):
    with pytest.raises(TypeError, match=r"^dropout = .*: expected a number in \[0, 1\)"):
        SmyrfAttention(1, 4, 4, dropout=dropout)


# ---- attention(q, k, v, method, **config) -------------------------------------------------

@pytest.mark.parametrize("method,kwargs,error,pattern", [
    ("nope", {}, ValueError, r"^method = 'nope': unknown; expected one of .*smyrf/lsh"),
    (3, {}, TypeError, r"^method: expected a str, got int"),
    ("smyrf", dict(n_hash=2), TypeError,
     r"^method smyrf: unknown config field 'n_hash'; valid fields: n_hashes, q_cluster_size"),
    ("dense", dict(window=2), TypeError, r"^method dense: unknown config field 'window'; valid fields: none"),
    ("smyrf", dict(n_hashes=2.0), TypeError, r"^n_hashes: expected an int, got float"),
    ("smyrf", dict(n_hashes=True), TypeError, r"^n_hashes: expected an int, got bool"),
    ("smyrf", dict(n_hashes=2**31), ValueError, r"^n_hashes = 2147483648: must fit in a 32-bit int"),
    ("smyrf", dict(r="x"), TypeError, r"^r: expected a number, got str"),
    ("reformer", dict(shared_qk=1), TypeError, r"^shared_qk: expected a bool, got int"),
    ("smyrf", dict(transform="xbox++"), ValueError,
     r"^transform = 'xbox\+\+': expected one of 'xbox_plus', 'xbox', 'h2_alsh', 'l2_alsh'"),
    ("sparse", dict(pattern=3), TypeError, r"^pattern: expected one of 'local', .* \(a str\), got int"),
    ("linear/favor_plus", dict(map="elu"), ValueError,
     r"^map = 'elu': method linear/favor_plus fixes map = 'favor_plus'; pass method='linear'"),
    ("smyrf", dict(n_hashes=0), ValueError, r"SmyrfConfig\.n_hashes = 0"),
    ("routing", dict(centroids=[1.0]), TypeError, r"^centroids: expected a torch\.Tensor or None, got list"),
    ("routing", dict(n_clusters=3, centroids=torch.zeros(2, 4, 4)), ValueError,
     r"^centroids: expected shape \[H, n_clusters, d\] = \[2, 3, 4\], got \[2, 4, 4\]"),
    ("routing", dict(n_clusters=3, centroids=torch.zeros(2, 3, 4, dtype=torch.int32)), TypeError,
     r"^centroids: expected dtype float32 \(or the inputs' Float\), got Int"),
    ("linformer", dict(rank=2, projection_e=torch.zeros(2, 2, 6)), ValueError,
     r"^projection_e: expected shape \[H, rank, Nk\] = \[2, 2, 5\]"),
    ("routing", dict(n_clusters=3, centroids=torch.zeros(2, 3, 4, requires_grad=True)), ValueError,
     r"^centroids: requires grad, but the library computes no gradient for the learned part "
     r"centroids of routing yet"),
    ("dense", dict(causal="yes"), TypeError, r"^causal: expected a bool, got str"),
    ("linear/efficient", dict(causal=True), ValueError, r"params\.causal = true"),
    ("linear", dict(dropout=0.1, training=True), ValueError, r"params\.dropout = 0\.1"),
    ("dense", dict(key_mask=[1]), TypeError, r"^key_mask: expected a torch\.Tensor or None, got list"),
    ("dense", dict(seed=-1), ValueError, r"^seed = -1: must be in \[0, 2\^64\)"),
    ("dense", dict(dropout="x"), TypeError, r"^dropout: expected a number, got str"),
    ("dense", dict(dropout=1.0), ValueError, r"^dropout = 1: must be in \[0, 1\)"),
    ("dense", dict(scale="x"), TypeError, r"^scale: expected a number, got str"),
    ("dense", dict(num_threads=-1), ValueError, r"^num_threads = -1: must be >= 0"),
    ("dense", dict(training=1), TypeError, r"^training: expected a bool, got int"),
    ("compressed/nystrom", dict(rank=2, projection_e=torch.zeros(2, 2, 5)), ValueError,
     r"CompressedConfig\.projection_e"),
])
def test_attention_edge_errors(method, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        attention(Q, K, V, method, **kwargs)


def test_attention_inputs_are_checked_before_the_config():
    with pytest.raises(ValueError, match=r"^q: expected 4 dims"):
        attention(Q[0], K, V, "routing", centroids=torch.zeros(1))
    with pytest.raises(TypeError, match=r"^v: expected a torch\.Tensor, got list"):
        attention(Q, K, [1.0])


def test_causal_backward_is_refused_by_name_where_the_form_has_none():
    """Named from the capabilities: a form with a backward but no causal backward (none today
    may exist; then there is nothing to check)."""
    import smyrf_torch
    forms = [f for f in smyrf_torch.methods()
             if f["capabilities"]["backward"] and f["capabilities"]["causal"]
             and not f["capabilities"]["causal_backward"]]
    q = Q.clone().requires_grad_()
    for f in forms:
        with pytest.raises(ValueError, match=rf"^causal = true: method {f['name']} has no causal backward"):
            attention(q, K, V, f["name"], causal=True)
