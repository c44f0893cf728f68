"""smyrf for PyTorch: SMYRF and exact attention on CPU tensors, differentiable.

    smyrf_attention(q, k, v, ...), dense_attention(q, k, v, ...)   # [B, H, N, d] tensors
    SmyrfAttention(...)   # nn.Module, drop-in for smyrf.torch.attn.SmyrfAttention ([batch, seq, dim])

See torch/README.md of the smyrf repository.
"""
import torch  # noqa: F401  (loads libtorch and its Python bindings before the extension)

from ._C import dense_attention, smyrf_attention
from .attn import SmyrfAttention

__all__ = ["SmyrfAttention", "dense_attention", "smyrf_attention"]
