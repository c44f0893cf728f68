"""SmyrfAttention with the interface of the official SMYRF module (github.com/giannisdaras/smyrf,
smyrf/torch/attn.py), computed by this library: existing code switches by changing

    from smyrf.torch.attn import SmyrfAttention   ->   from smyrf_torch import SmyrfAttention

Deviations from the official module are listed in torch/README.md.
"""
import math
import numbers

import torch
from torch import nn

from ._C import smyrf_attention

# An additive attn_mask entry at or below this removes the key; 0 keeps it. The official module
# adds the mask to the logits; its users pass 0 / -10000 (BERT's extended attention mask) or
# 0 / finfo.min, under which exp() of a masked logit is exactly 0 in float32.
MASKED_AT_OR_BELOW = -1e4


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} = {value!r}: must be an integer >= 1")
    return value


def _check_tensor(name, t, layout):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name}: expected 3 dims {layout}, got shape {list(t.shape)}")
    if t.device.type != "cpu":
        raise TypeError(f"{name}: expected a CPU tensor, got one on {t.device}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {t.dtype}")
    if any(s < 1 for s in t.shape):
        raise ValueError(f"{name}: every dimension must be >= 1, got shape {list(t.shape)}")


def _key_mask(attn_mask, batch, k_seqlen):
    """The official additive [seq] or [m, seq] mask as a bool [batch, seq] mask (True = attend).

    Rows of queries/keys/values are the reshape(-1, seq, dim) of [batch, heads, seq, dim], so row
    r belongs to mask row r // (batch // m).
    """
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor, got {type(attn_mask).__name__}")
    if not attn_mask.is_floating_point():
        raise TypeError("attn_mask: expected an additive floating-point mask (0 = attend, "
                        f"<= {MASKED_AT_OR_BELOW:g} = masked), got dtype {attn_mask.dtype}")
    mask = attn_mask.unsqueeze(0) if attn_mask.dim() == 1 else attn_mask
    if mask.dim() != 2 or mask.shape[1] != k_seqlen or mask.shape[0] == 0 or batch % mask.shape[0]:
        raise ValueError(f"attn_mask: expected shape [seq] or [m, seq] with seq = {k_seqlen} (the "
                         f"key length) and m dividing the batch size {batch}, got "
                         f"{list(attn_mask.shape)}")
    keep = mask == 0
    bad = ~(keep | (mask <= MASKED_AT_OR_BELOW))
    if bool(bad.any()):
        raise ValueError(f"attn_mask: value {mask[bad][0].item()!r} unsupported: entries must be 0 "
                         f"(attend) or <= {MASKED_AT_OR_BELOW:g} (masked); other additive biases "
                         "cannot be expressed by the library's boolean masks")
    return keep.repeat_interleave(batch // mask.shape[0], dim=0)


class SmyrfAttention(nn.Module):
    """SMYRF attention on [batch, seq, dim] tensors (batch may be batch x heads).

    n_hashes rounds of balanced clusters; q_attn_size / k_attn_size (default: q_cluster_size /
    k_cluster_size) are the numbers of queries and keys per cluster, as in the official module.
    Only clustering_algo='lsh' exists; r and max_iters are accepted for compatibility and have no
    effect (see torch/README.md). Dropout on the attention weights in training mode.
    """

    def __init__(self, n_hashes, q_cluster_size, k_cluster_size, q_attn_size=None,
                 k_attn_size=None, clustering_algo='lsh', dropout=0., r=1, max_iters=50):
        super().__init__()
        if clustering_algo != 'lsh':
            raise ValueError(f"clustering_algo = {clustering_algo!r}: only 'lsh' is supported")
        self.n_hashes = _positive_int("n_hashes", n_hashes)
        self.q_attn_size = (_positive_int("q_cluster_size", q_cluster_size) if q_attn_size is None
                            else _positive_int("q_attn_size", q_attn_size))
        self.k_attn_size = (_positive_int("k_cluster_size", k_cluster_size) if k_attn_size is None
                            else _positive_int("k_attn_size", k_attn_size))
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout = {dropout!r}: expected a number in [0, 1)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout = {dropout!r}: must be in [0, 1)")
        self.dropout = nn.Dropout(dropout)
        self.clustering_algo = clustering_algo
        self.clustering_params = {'r': r, 'n_hashes': n_hashes}
        self.max_iters = max_iters

    def forward(self, queries, keys, values, attn_mask=None, progress=False, norm_factor=1,
                return_attn_map=False):
        """queries [batch, Nq, d], keys [batch, Nk, d], values [batch, Nk, dv] -> [batch, Nq, dv].

        Logits are queries . keys / norm_factor. attn_mask: additive, [Nk] or [m, Nk] with m
        dividing batch, entries 0 (attend) or <= -1e4 (masked); when Nq == Nk it also marks the
        padded queries, whose output is 0. progress is ignored (as in the official module).
        """
        if return_attn_map:
            raise ValueError("return_attn_map = True: not supported: the library computes its "
                             "clusters internally and does not return them")
        _check_tensor("queries", queries, "[batch, Nq, d]")
        _check_tensor("keys", keys, "[batch, Nk, d]")
        _check_tensor("values", values, "[batch, Nk, dv]")
        if keys.dtype != queries.dtype or values.dtype != queries.dtype:
            raise TypeError(f"queries, keys, values: expected one dtype, got {queries.dtype}, "
                            f"{keys.dtype}, {values.dtype}")
        batch, q_seqlen, dim = queries.shape
        if keys.shape[0] != batch or keys.shape[2] != dim:
            raise ValueError(f"keys: shape {list(keys.shape)} does not match queries "
                             f"{list(queries.shape)}: batch and dim must agree")
        if values.shape[:2] != keys.shape[:2]:
            raise ValueError(f"values: shape {list(values.shape)} does not match keys "
                             f"{list(keys.shape)}: batch and Nk must agree")
        try:
            factor = float(norm_factor)
        except (TypeError, ValueError):
            raise TypeError(f"norm_factor = {norm_factor!r}: expected a number") from None
        if not math.isfinite(factor) or factor == 0.0:
            raise ValueError(f"norm_factor = {norm_factor!r}: must be finite and nonzero")
        k_seqlen = keys.shape[1]
        key_mask = None if attn_mask is None else _key_mask(attn_mask, batch, k_seqlen)
        query_mask = key_mask if key_mask is not None and q_seqlen == k_seqlen else None
        # Hashing (and dropout) draw from torch's default generator, as the official module's
        # torch.normal / nn.Dropout do: reproducible under torch.manual_seed.
        seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
        out = smyrf_attention(queries.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1),
                              n_hashes=self.n_hashes, q_cluster_size=self.q_attn_size,
                              k_cluster_size=self.k_attn_size, r=0.0, dropout=self.dropout.p,
                              training=self.training, seed=seed, key_mask=key_mask,
                              query_mask=query_mask, scale=1.0 / factor)
        return out.squeeze(1)
