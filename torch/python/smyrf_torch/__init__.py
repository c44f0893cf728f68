"""smyrf for PyTorch: every method of the library on CPU tensors, differentiable where the
method has a backward.

    attention(q, k, v, method="smyrf/lsh", **config)       # [B, H, N, d] tensors, any form
    scaled_dot_product_attention(query, key, value, ...)    # torch.nn.functional's signature
    methods()                                               # the forms and their capabilities
    variant("local:0.25", n=784)                            # a budgeted spec: method + config
    nn.Attention(method, **config), nn.<Method><Form>Attention(**config)   # nn.Modules
    smyrf_attention(q, k, v, ...), dense_attention(q, k, v, ...)   # the first two entry points
    SmyrfAttention(...)   # nn.Module, drop-in for smyrf.torch.attn.SmyrfAttention ([batch, seq, dim])

See torch/README.md of the smyrf repository.
"""
import torch  # noqa: F401  (loads libtorch and its Python bindings before the extension)

import functools
import numbers

from . import _C
from . import nn
from .attn import SmyrfAttention
from .functional import (attention, attention_info, describe, methods, routing_update_centroids,
                         scaled_dot_product_attention, variant)

_INT32_MAX = 2**31 - 1


def _int_arg(name, value, lo, hi, why):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value}: {why}")


def _number_arg(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")


def _checked(fn, int_args):
    """fn with its scalar arguments checked by name before the extension converts them (whose
    own error for a wrong type or range lists the whole signature, not the argument)."""
    @functools.wraps(fn)
    def call(q, k, v, *args, **kwargs):
        for name, (lo, hi, why) in int_args.items():
            if name in kwargs:
                _int_arg(name, kwargs[name], lo, hi, why)
        for name in ("dropout", "r"):
            if name in kwargs:
                _number_arg(name, kwargs[name])
        if kwargs.get("scale") is not None:
            _number_arg("scale", kwargs["scale"])
        if "training" in kwargs and not isinstance(kwargs["training"], bool):
            raise TypeError(f"training: expected a bool, got {type(kwargs['training']).__name__}")
        return fn(q, k, v, *args, **kwargs)

    return call


_COMMON_INTS = {
    "seed": (0, 2**64 - 1, "must be in [0, 2^64)"),
    "num_threads": (0, 1024, "must be >= 0 and <= 1024"),
}
dense_attention = _checked(_C.dense_attention, _COMMON_INTS)
smyrf_attention = _checked(_C.smyrf_attention, {
    **_COMMON_INTS,
    **{n: (-_INT32_MAX - 1, _INT32_MAX, "must fit in a 32-bit int")
       for n in ("n_hashes", "q_cluster_size", "k_cluster_size")},
})

__all__ = ["SmyrfAttention", "attention", "attention_info", "dense_attention", "describe", "methods", "nn",
           "routing_update_centroids", "scaled_dot_product_attention", "smyrf_attention", "variant"]
