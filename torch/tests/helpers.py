"""Shared pieces of the smyrf_torch tests: inputs, plain-torch attention, the tolerance rule."""
import math

import torch

EPS_F32 = torch.finfo(torch.float32).eps


def qkv(b=2, h=2, nq=12, nk=10, d=4, dv=3, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)
    return make(b, h, nq, d), make(b, h, nk, d), make(b, h, nk, dv)


def f32(x):
    """x rounded to float32: the library's softmax scale is a float32 in every path."""
    return torch.tensor(x, dtype=torch.float32).item()


def torch_attention(q, k, v, scale=None, key_mask=None, query_mask=None):
    """softmax(scale q k^T) v with plain torch ops in float64 (scale rounded to float32, as the
    library does; default 1/sqrt(d)); masked keys removed, masked queries (and queries without a
    visible key) 0."""
    q, k, v = q.double(), k.double(), v.double()
    scale = f32(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    s = (q @ k.transpose(-1, -2)) * scale
    if key_mask is not None:
        s = s.masked_fill(~key_mask.bool()[:, None, None, :], -math.inf)
    o = torch.nan_to_num(torch.softmax(s, dim=-1)) @ v
    if query_mask is not None:
        o = o.masked_fill(~query_mask.bool()[:, None, :, None], 0.0)
    return o


def tolerance(q, k, v, scale=None):
    """The suite's float32 tolerance rule (tests/test_util.h): max|O - O_ref| <=
    16 eps_f32 max|V| (1 + L + log2 Nk), L = max |scale| sum_t |q_t k_t|."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    L = abs(scale) * (q.double().abs() @ k.double().abs().transpose(-1, -2)).max().item()
    return 16 * EPS_F32 * v.abs().max().item() * (1 + L + math.log2(k.shape[-2]))


def rel_frobenius(a, ref):
    return ((a.double() - ref.double()).norm() / ref.double().norm()).item()


def random_masks(b, nq, nk, seed=0):
    """Bool masks with some tokens off, every batch element keeping at least one key."""
    g = torch.Generator().manual_seed(seed)
    key_mask = torch.rand(b, nk, generator=g) > 0.3
    key_mask[:, 0] = True
    query_mask = torch.rand(b, nq, generator=g) > 0.2
    return key_mask, query_mask
