"""nn.Modules for every method form: Attention(method, **config) and one subclass per form.

    attn = smyrf_torch.nn.Attention("smyrf/lsh", n_hashes=4, q_cluster_size=32, k_cluster_size=32)
    attn = smyrf_torch.nn.SmyrfLshAttention(n_hashes=4)               # the same, by class
    attn = smyrf_torch.nn.CompressedLinformerAttention(num_heads=8, seq_len=512, rank=64)
    o = attn(q, k, v, key_mask=None, query_mask=None, causal=False)    # [B, H, N, d] tensors

The subclasses are generated from smyrf_torch.methods(): <Method><Form>Attention in CamelCase
("linear/favor_plus" -> LinearFavorPlusAttention, "dense" -> DenseAttention), so a form the
library registers gets its class without a change here.
"""
import math

import torch
from torch import nn

from .functional import (_int_arg, _number_arg, attention, describe, draw_seed, methods,
                         routing_update_centroids)

__all__ = ["Attention"]


# ---- the papers' initialisations of learned parts ------------------------------------------
# Where a method header documents a seeded default for a learned part, the module draws that
# part once, at construction, from torch's default generator (reproducible under
# torch.manual_seed) with the header's distribution, and keeps it: the library's own default
# would be redrawn from each call's seed. Parts whose library default is parameter-free
# (routing's fitted centroids, segment-mean inducing points and memory tokens, Sinkhorn's
# content sort) stay None unless given.

def _need(what, sizes, names):
    missing = [n for n in names if sizes[n] is None]
    if missing:
        raise ValueError(f"{missing[0]}: required to initialise {what} (give "
                         f"{', '.join(names)}, or pass the tensors)")
    return [sizes[n] for n in names]


def _linformer(cfg, sizes):
    # compressed.h: Rademacher signs +-1/sqrt(rank) (a Johnson-Lindenstrauss projection), E, F
    # independent.
    h, n = _need("compressed/linformer's projection_e, projection_f [H, rank, Nk]", sizes,
                 ["num_heads", "seq_len"])
    r = cfg["rank"]
    sign = lambda: (torch.randint(0, 2, (h, r, n)) * 2 - 1).float() / math.sqrt(r)
    return {"projection_e": sign(), "projection_f": sign()}


def _synthesizer_dense(cfg, sizes):
    # synthesizer.h: w1 ~ N(0, 1/d), w2 ~ N(0, 1/hidden), biases 0.
    h, d, n = _need("synthesizer/dense's w1, b1, w2, b2", sizes,
                    ["num_heads", "head_dim", "seq_len"])
    u = cfg["hidden"]
    return {"w1": torch.randn(h, d, u) / math.sqrt(d), "b1": torch.zeros(h, u),
            "w2": torch.randn(h, u, n) / math.sqrt(u), "b2": torch.zeros(h, n)}


def _synthesizer_random(cfg, sizes):
    # synthesizer.h: R ~ N(0, 1), [H, Nq, Nk].
    h, n = _need("synthesizer/random's logits [H, Nq, Nk]", sizes, ["num_heads", "seq_len"])
    nq = n if sizes["query_len"] is None else sizes["query_len"]
    return {"logits": torch.randn(h, nq, n)}


def _sinkhorn_sort_net(cfg, sizes):
    # The sort net is a linear layer from a block's summed keys (d) to the block logits of
    # ceil(Nk / block_size) blocks: torch.nn.Linear's initialisation, U(-1/sqrt(d), 1/sqrt(d)).
    h, d, n = _need("sinkhorn's sort_net [H, d, ceil(Nk / block_size)]", sizes,
                    ["num_heads", "head_dim", "seq_len"])
    nb = -(-n // cfg["block_size"])
    return {"sort_net": (torch.rand(h, d, nb) * 2 - 1) / math.sqrt(d)}


# Parts whose library default is parameter-free, drawn only when asked for by the value "init"
# (sort_net="init"): method -> (part, initialiser).
_OPTIONAL_INITS = {"sinkhorn": ("sort_net", _sinkhorn_sort_net)}

# (method, enum field, value) -> (the parts it draws, initialiser).
_INITS = {
    ("compressed", "kind", "linformer"): (("projection_e", "projection_f"), _linformer),
    ("synthesizer", "kind", "dense"): (("w1", "b1", "w2", "b2"), _synthesizer_dense),
    ("synthesizer", "kind", "random"): (("logits",), _synthesizer_random),
}


class Attention(nn.Module):
    """Attention by one method form, holding its config and learned parts.

    method: a name from smyrf_torch.methods() (or an alias, or a method name alone); **config:
    the config's fields by their C++ names (checked here, once). Learned parts given as tensors,
    and those the module initialises (the papers' initialisations where the method header
    documents a seeded default: Linformer's E, F; the Synthesizer's weights; and, asked for by
    the value "init", a part whose default is parameter-free: Sinkhorn's sort_net="init", a
    linear layer's U(-1/sqrt(d), 1/sqrt(d)); these need num_heads, head_dim, seq_len (Nk) and
    query_len (Nq, default seq_len) as the shapes require), are nn.Parameters where the library computes their gradient
    (describe(...)["learned_grad"]: every compressed kind's parts) and buffers elsewhere
    (freeze a Parameter with requires_grad_(False)). dropout applies in training mode (self.training). Each call
    draws its seed from torch's default generator unless forward(seed=...) is given.
    """

    def __init__(self, method="dense", *, num_heads=None, head_dim=None, seq_len=None,
                 query_len=None, dropout=0.0, scale=None, num_threads=0, **config):
        super().__init__()
        asked = {n for n, v in config.items() if isinstance(v, str) and v == "init"}
        config = {n: v for n, v in config.items() if n not in asked}
        info = describe(method, **config)  # unknown names and bad values raise here
        optional = _OPTIONAL_INITS.get(info["method"])
        for n in asked:
            if optional is None or optional[0] != n:
                raise ValueError(f"{n}=\"init\": {info['name']} draws no {n} (only "
                                 + ", ".join(f"{m}'s {p}" for m, (p, _) in _OPTIONAL_INITS.items())
                                 + " is drawn on request)")
        dropout = _number_arg("dropout", dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout = {dropout!r}: must be in [0, 1)")
        self.method = method
        self.name = info["name"]
        self.dropout = dropout
        self.scale = None if scale is None else _number_arg("scale", scale)
        self.num_threads = _int_arg("num_threads", num_threads, 0, 1024,
                                    "must be >= 0 and <= 1024")
        self.config = {n: v for n, v in config.items() if not isinstance(v, torch.Tensor)}
        given = {n: v for n, v in config.items() if isinstance(v, torch.Tensor)}
        sizes = dict(num_heads=num_heads, head_dim=head_dim, seq_len=seq_len,
                     query_len=query_len)
        drawn = {}
        for (m, field, value), (parts, init) in _INITS.items():
            if (info["method"] == m and info["fields"].get(field) == value
                    and any(n not in given for n in parts)):
                drawn = {n: t for n, t in init(info["fields"], sizes).items() if n not in given}
        if asked:
            drawn.update(optional[1](info["fields"], sizes))
        trainable = set(info["learned_grad"])
        for name in info["learned"]:
            t = given.get(name, drawn.get(name))
            if name in trainable and t is not None:
                self.register_parameter(
                    name, t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach().clone()))
            else:
                self.register_buffer(name, t)
        self._learned = list(info["learned"])

    def forward(self, q, k, v, key_mask=None, query_mask=None, causal=False, seed=None,
                **inputs):
        """q [B, H, Nq, d], k [B, H, Nk, d], v [B, H, Nk, dv] -> [B, H, Nq, dv].

        inputs: learned parts given per call (e.g. RFA's gates [B, H, Nk]), by field name.
        """
        learned = {n: getattr(self, n) for n in self._learned if getattr(self, n) is not None}
        learned.update(inputs)
        return attention(q, k, v, self.method, causal=causal, key_mask=key_mask,
                         query_mask=query_mask, dropout=self.dropout, training=self.training,
                         seed=draw_seed() if seed is None else seed, scale=self.scale,
                         num_threads=self.num_threads, **self.config, **learned)

    @torch.no_grad()
    def update_centroids(self, q, k, decay=0.999, key_mask=None, query_mask=None, causal=False):
        """Routing attention: one online k-means step of the held centroids on this batch's
        queries and keys (smyrf_torch.routing_update_centroids), in place; the Routing
        Transformer calls it once per training step. Other methods: AttributeError."""
        centroids = getattr(self, "centroids", None) if "centroids" in self._learned else None
        if centroids is None:
            raise AttributeError(f"update_centroids: {self.name} holds no centroids (routing "
                                 "attention given centroids=... has them)")
        new = routing_update_centroids(q, k, centroids, decay=decay,
                                       window=self.config.get("window", 64), key_mask=key_mask,
                                       query_mask=query_mask, causal=causal,
                                       num_threads=self.num_threads)
        centroids.copy_(new)

    def extra_repr(self):
        fields = "".join(f", {n}={v!r}" for n, v in self.config.items())
        return f"{self.method!r}{fields}, dropout={self.dropout}"


def _class_name(name):
    parts = name.replace("/", "_").replace("-", "_").split("_")
    return "".join(p[:1].upper() + p[1:] for p in parts) + "Attention"


def _subclass(form):
    name = form["name"]

    def __init__(self, **kwargs):
        Attention.__init__(self, name, **kwargs)

    doc = (f"{form['summary']}.\n\nAttention({name!r}, **kwargs): see Attention. Config fields "
           f"(form values): {form['fields']}; learned parts: {form['learned'] or 'none'}.")
    return type(_class_name(name), (Attention,),
                {"__init__": __init__, "__doc__": doc, "__module__": __name__})


for _form in methods():
    _cls = _subclass(_form)
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _form, _cls
