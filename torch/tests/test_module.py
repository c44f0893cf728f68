"""SmyrfAttention: the official module's interface on [batch, seq, dim] tensors."""
import math

import pytest
import torch
from torch.autograd import gradcheck

from helpers import f32, tolerance
from smyrf_torch import SmyrfAttention, smyrf_attention


def bsd(batch, n, dim, dtype=torch.float64, seed=0):
    return torch.randn(batch, n, dim, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def official_dense(queries, keys, values, norm_factor=1.0, attn_mask=None):
    """What the official module computes with one cluster: softmax(q k^T / norm_factor + mask) v,
    the additive mask broadcast over query rows, in float64 with plain torch ops (1 / norm_factor
    rounded to float32, the library's scale type)."""
    s = queries.double() @ keys.double().transpose(1, 2) * f32(1.0 / norm_factor)
    if attn_mask is not None:
        s = s + attn_mask.double()[:, None, :]
    return torch.softmax(s, dim=-1) @ values.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clusters_covering_the_sequence_equal_dense_softmax(dtype):
    q, k, v = bsd(3, 24, 8, dtype, 1), bsd(3, 20, 8, dtype, 2), bsd(3, 20, 5, dtype, 3)
    attn = SmyrfAttention(n_hashes=4, q_cluster_size=24, k_cluster_size=20)
    for norm_factor in (1, math.sqrt(8), 0.5):
        o = attn(q, k, v, norm_factor=norm_factor)
        assert o.shape == (3, 24, 5) and o.dtype == dtype
        ref = official_dense(q, k, v, norm_factor)
        tol = 1e-12 if dtype == torch.float64 else tolerance(q, k, v, 1 / norm_factor)
        assert (o.double() - ref).abs().max().item() <= tol


def test_attn_size_overrides_cluster_size():
    q, k, v = bsd(2, 32, 8, seed=4), bsd(2, 32, 8, seed=5), bsd(2, 32, 8, seed=6)
    dense = official_dense(q, k, v)
    covering = SmyrfAttention(2, q_cluster_size=4, k_cluster_size=4, q_attn_size=32, k_attn_size=32)
    assert (covering(q, k, v) - dense).abs().max().item() <= 1e-12
    small = SmyrfAttention(2, q_cluster_size=32, k_cluster_size=32, q_attn_size=4, k_attn_size=4)
    assert (small(q, k, v) - dense).abs().max().item() > 1e-3


def test_bert_style_additive_mask_per_batch_element():
    """BERT's integration: [batch * heads, N, d] rows (batch-major) and an additive [batch, N]
    mask of 0 / -10000; row r belongs to batch element r // heads."""
    batch, heads, n, d = 2, 3, 16, 8
    q, k, v = bsd(batch * heads, n, d, seed=7), bsd(batch * heads, n, d, seed=8), bsd(batch * heads, n, d, seed=9)
    lengths = [16, 11]
    mask = torch.zeros(batch, n, dtype=torch.float64)
    for b, length in enumerate(lengths):
        mask[b, length:] = -10000.0
    attn = SmyrfAttention(n_hashes=2, q_cluster_size=n, k_cluster_size=n)
    o = attn(q, k, v, attn_mask=mask, norm_factor=math.sqrt(d))
    ref = official_dense(q, k, v, math.sqrt(d), mask.repeat_interleave(heads, dim=0))
    for r in range(batch * heads):
        length = lengths[r // heads]
        assert (o[r, :length] - ref[r, :length]).abs().max().item() <= 1e-12
        if length < n:  # padded queries: 0
            assert o[r, length:].abs().max().item() == 0


def test_one_dimensional_mask_and_minus_infinity():
    q, k, v = bsd(4, 12, 4, seed=10), bsd(4, 12, 4, seed=11), bsd(4, 12, 4, seed=12)
    mask = torch.zeros(12, dtype=torch.float64)
    mask[[2, 5]] = -math.inf
    mask[7] = torch.finfo(torch.float64).min
    o = SmyrfAttention(1, 12, 12)(q, k, v, attn_mask=mask)
    keep = mask == 0
    ref = official_dense(q, k, v, attn_mask=torch.where(keep, 0.0, -1e30).expand(4, 12))
    assert (o[:, keep] - ref[:, keep]).abs().max().item() <= 1e-12
    assert o[:, ~keep].abs().max().item() == 0


def test_cross_attention_mask_masks_keys_only():
    """Nq != Nk (BigGAN pools its keys): the mask has the key length and masks keys only."""
    q, k, v = bsd(2, 16, 4, seed=13), bsd(2, 4, 4, seed=14), bsd(2, 4, 6, seed=15)
    mask = torch.tensor([[0.0, 0.0, -1e4, 0.0], [0.0, -1e4, -1e4, 0.0]], dtype=torch.float64)
    o = SmyrfAttention(1, 16, 4)(q, k, v, attn_mask=mask)
    assert (o - official_dense(q, k, v, attn_mask=torch.where(mask == 0, 0.0, -1e30))).abs().max() <= 1e-12
    # The BigGAN shape with clusters: 4 query clusters of 4 and 4 key clusters of 1.
    assert SmyrfAttention(2, 4, 1)(q, k, v).shape == (2, 16, 6)


def test_same_torch_seed_same_output_and_fresh_hashes_per_call():
    q, k, v = bsd(2, 64, 8, torch.float32, 16), bsd(2, 64, 8, torch.float32, 17), bsd(2, 64, 8, torch.float32, 18)
    attn = SmyrfAttention(n_hashes=2, q_cluster_size=8, k_cluster_size=8)
    torch.manual_seed(0)
    a, b = attn(q, k, v), attn(q, k, v)
    assert not torch.equal(a, b)  # the official module draws new projections every call
    torch.manual_seed(0)
    assert torch.equal(a, attn(q, k, v))


def test_dropout_in_training_mode_only_and_reproducible():
    q, k, v = bsd(2, 32, 8, torch.float32, 19), bsd(2, 32, 8, torch.float32, 20), bsd(2, 32, 8, torch.float32, 21)
    attn = SmyrfAttention(n_hashes=1, q_cluster_size=32, k_cluster_size=32, dropout=0.3)
    dense = official_dense(q, k, v)
    attn.eval()
    assert (attn(q, k, v).double() - dense).abs().max().item() <= tolerance(q, k, v, 1.0)
    attn.train()
    torch.manual_seed(1)
    a = attn(q, k, v)
    assert (a.double() - dense).abs().max().item() > 1e-2
    torch.manual_seed(1)
    assert torch.equal(a, attn(q, k, v))


def test_gradients_flow_and_gradcheck_with_fixed_torch_seed():
    q, k, v = (bsd(2, 12, 4, seed=s).requires_grad_() for s in (22, 23, 24))
    mask = torch.zeros(2, 12, dtype=torch.float64)
    mask[1, 9:] = -1e4
    attn = SmyrfAttention(n_hashes=2, q_cluster_size=4, k_cluster_size=4, dropout=0.2).train()

    def f(q, k, v):
        torch.manual_seed(5)  # the same hashes and dropout masks at every evaluation
        return attn(q, k, v, attn_mask=mask, norm_factor=2.0)

    assert gradcheck(f, (q, k, v))


def test_matches_the_functional_api():
    """forward = smyrf_attention on [batch, 1, N, d] with scale 1 / norm_factor and the seed
    drawn from torch's default generator."""
    q, k, v = bsd(2, 32, 8, torch.float32, 25), bsd(2, 32, 8, torch.float32, 26), bsd(2, 32, 8, torch.float32, 27)
    torch.manual_seed(3)
    o = SmyrfAttention(2, 8, 8)(q, k, v, norm_factor=3.0)
    torch.manual_seed(3)
    seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
    ref = smyrf_attention(q[:, None], k[:, None], v[:, None], n_hashes=2, q_cluster_size=8,
                          k_cluster_size=8, seed=seed, scale=1 / 3.0)[:, 0]
    assert torch.equal(o, ref)


def test_unsupported_options_raise_value_errors():
    with pytest.raises(ValueError, match="clustering_algo"):
        SmyrfAttention(1, 8, 8, clustering_algo="kmeans")
    q = bsd(1, 8, 4)
    with pytest.raises(ValueError, match="return_attn_map"):
        SmyrfAttention(1, 8, 8)(q, q, q, return_attn_map=True)
