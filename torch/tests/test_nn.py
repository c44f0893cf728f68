"""smyrf_torch.nn: Attention(method, **config) and the generated per-form subclasses."""
import pytest
import torch

from helpers import qkv
import smyrf_torch
from smyrf_torch import attention, nn as snn


def test_one_subclass_per_form():
    for form in smyrf_torch.methods():
        cls = getattr(snn, snn._class_name(form["name"]))
        assert issubclass(cls, snn.Attention) and cls.__name__ in snn.__all__
    assert snn.LinearFavorPlusAttention is getattr(snn, "LinearFavorPlusAttention")
    assert snn.DenseAttention().name == "dense"


def test_forward_equals_the_function_with_the_drawn_seed():
    q, k, v = qkv(b=2, h=2, nq=10, nk=10, d=4, dv=3, dtype=torch.float32)
    attn = snn.SmyrfLshAttention(n_hashes=2, q_cluster_size=3, k_cluster_size=3, dropout=0.2)
    torch.manual_seed(1)
    a = attn(q, k, v, causal=True)
    torch.manual_seed(1)
    seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
    b = attention(q, k, v, "smyrf/lsh", n_hashes=2, q_cluster_size=3, k_cluster_size=3,
                  dropout=0.2, training=True, seed=seed, causal=True)
    assert torch.equal(a, b)
    attn.eval()
    assert torch.equal(attn(q, k, v, seed=4),
                       attention(q, k, v, "smyrf", n_hashes=2, q_cluster_size=3,
                                 k_cluster_size=3, seed=4))


def test_config_is_checked_at_construction():
    with pytest.raises(TypeError, match=r"unknown config field 'n_hash'; valid fields: n_hashes"):
        snn.Attention("smyrf", n_hash=2)
    with pytest.raises(ValueError, match=r"^map = 'elu': method linear/favor_plus fixes map"):
        snn.LinearFavorPlusAttention(map="elu")
    with pytest.raises(ValueError, match=r"^dropout = 1\.5: must be in \[0, 1\)"):
        snn.DenseAttention(dropout=1.5)


def test_linformer_projections_are_parameters_drawn_once():
    torch.manual_seed(0)
    attn = snn.CompressedLinformerAttention(num_heads=2, seq_len=10, rank=3)
    e = attn.projection_e
    assert e.shape == (2, 3, 10) and e.unique().numel() == 2
    assert torch.allclose(e.abs(), torch.full_like(e, 3**-0.5))
    assert {n for n, _ in attn.named_parameters()} == {"projection_e", "projection_f"}
    q, k, v = qkv(b=2, h=2, nq=10, nk=10, d=4, dv=3, dtype=torch.float32)
    a, b = attn(q, k, v), attn(q, k, v)
    assert torch.equal(a, b)  # fixed projections: a new seed per call changes nothing
    assert torch.equal(a, attention(q, k, v, "linformer", rank=3, projection_e=e.detach(),
                                    projection_f=attn.projection_f.detach()))
    with pytest.raises(ValueError, match=r"^seq_len: required to initialise compressed/linformer"):
        snn.CompressedLinformerAttention(num_heads=2, rank=3)


def test_synthesizer_weights():
    torch.manual_seed(0)
    attn = snn.SynthesizerDenseAttention(num_heads=2, head_dim=4, seq_len=8, hidden=5)
    assert attn.w1.shape == (2, 4, 5) and attn.b2.shape == (2, 8) and (attn.b1 == 0).all()
    q, k, v = qkv(b=1, h=2, nq=8, nk=8, d=4, dv=3, dtype=torch.float32)
    with torch.no_grad():
        o = attn(q, k, v)
    assert o.shape == (1, 2, 8, 3)
    rnd = snn.SynthesizerRandomAttention(num_heads=2, seq_len=8, query_len=6)
    assert rnd.logits.shape == (2, 6, 8)


def test_learned_parts_requiring_grad_are_refused_by_name():
    q, k, v = qkv(b=1, h=2, nq=8, nk=8, d=4, dv=3, dtype=torch.float32)
    centroids = torch.nn.Parameter(torch.randn(2, 3, 4))
    attn = snn.RoutingAttention(n_clusters=3, window=4, centroids=centroids)
    with pytest.raises(ValueError, match=r"^centroids: requires grad, but the library computes "
                                         r"no gradient for the learned part centroids of routing yet"):
        attn(q, k, v)
    with torch.no_grad():
        assert attn(q, k, v).shape == (1, 2, 8, 3)
    attn.centroids = centroids.detach()
    assert attn(q, k, v).shape == (1, 2, 8, 3)


def test_per_call_learned_parts():
    q, k, v = qkv(b=2, h=2, nq=8, nk=8, d=4, dv=3, dtype=torch.float32)
    gates = torch.full((2, 2, 8), 0.5)
    attn = snn.LinearRfaAttention(n_features=8)
    with torch.no_grad():
        o = attn(q, k, v, causal=True, gates=gates, seed=1)
    assert torch.equal(o, attention(q, k, v, "linear/rfa", n_features=8, causal=True,
                                    gates=gates, seed=1))


def test_routing_centroids_follow_the_online_kmeans_step():
    """Routing's centroids have no gradient (the routes are constants); the module moves them by
    the library's moving-average step, in place, and decay 1 leaves their unit vectors."""
    torch.manual_seed(0)
    q, k, v = qkv(b=2, h=2, nq=16, nk=16, d=4, dv=3, dtype=torch.float32)
    start = torch.randn(2, 3, 4)
    attn = snn.RoutingAttention(n_clusters=3, window=4, centroids=start.clone())
    attn.update_centroids(q, k, decay=0.9)
    want = smyrf_torch.routing_update_centroids(q, k, start, decay=0.9, window=4)
    assert torch.equal(attn.centroids, want)
    assert not torch.allclose(want, start / start.norm(dim=-1, keepdim=True))
    assert torch.allclose(want.norm(dim=-1), torch.ones(2, 3))
    same = smyrf_torch.routing_update_centroids(q, k, start, decay=1.0, window=4)
    assert torch.allclose(same, start / start.norm(dim=-1, keepdim=True), atol=1e-6)
    with pytest.raises(ValueError, match="decay"):
        smyrf_torch.routing_update_centroids(q, k, start, decay=2.0)
    with pytest.raises(AttributeError, match="holds no centroids"):
        snn.Attention("dense").update_centroids(q, k)
