#!/usr/bin/env python3
"""A small causal (decoder-only) byte-level language model over public-domain books, trained
once with the library's dense attention, then evaluated with every causal-capable method
swapped in without retraining.

    python3 tools/lm/books.py fetch && python3 tools/lm/books.py write   # the books as text
    python3 tools/lm/lm.py train          # fixed seed; checkpoint + training log
    python3 tools/lm/lm.py perplexity --specs dense,local:0.25,smyrf:2:0.25 --lengths 2048,4096

The model: UTF-8 bytes (vocabulary 256), token embedding tied to the output layer, DEPTH
pre-LayerNorm blocks (multi-head causal attention by smyrf_torch.attention with rotary
positions, RoPE, which extend past the training length; GELU MLP), final LayerNorm. Trained on
every book but the held-out one (Persuasion), in windows of the training length drawn with a
fixed seed; AdamW, linear warm-up then cosine decay. Perplexity: the held-out book cut into
consecutive windows of the evaluation length, each predicted from its own start, exp of the
mean negative log-likelihood per byte over every predicted byte.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
try:
    import smyrf_torch
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "build", "torch", "python"))
    import smyrf_torch  # noqa: E402

MODEL = dict(dim=256, heads=4, depth=4, mlp=1024, length=2048)
TRAIN = dict(batch=4, lr=1e-3, weight_decay=0.1, warmup=0.05, steps=640, minutes=60.0, seed=0)
HELD_OUT = "persuasion"
CHECK_WINDOWS = 8
TRAIN_BOOKS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "kjv", "web"]


def rope(x, base=10000.0):
    """Rotary positions (Su et al. 2021) on the last dimension of x [B, H, N, d]: pairs (2i, 2i+1)
    rotated by position * base^(-2i/d)."""
    n, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(torch.nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out = torch.nn.Linear(dim, dim, bias=False)
        self.spec = "dense"  # the variant the attention runs (set_attention)
        self.seed = 0

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rope(q), rope(k)
        var = smyrf_torch.variant(self.spec, n)
        o = smyrf_torch.attention(q.contiguous(), k.contiguous(), v.contiguous(), var["method"], causal=True,
                                  seed=self.seed, **var["fields"])
        return self.out(o.transpose(1, 2).reshape(b, n, dim))


class Block(torch.nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, mlp), torch.nn.GELU(), torch.nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class LM(torch.nn.Module):
    def __init__(self, dim, heads, depth, mlp, length=None):
        super().__init__()
        self.embed = torch.nn.Embedding(256, dim)
        torch.nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = torch.nn.ModuleList(Block(dim, heads, mlp) for _ in range(depth))
        self.ln = torch.nn.LayerNorm(dim)

    def forward(self, ids):
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x) @ self.embed.weight.t()  # tied output layer

    def set_attention(self, spec, seed=0):
        smyrf_torch.variant(spec, 64)  # a bad spec fails here, naming it
        for blk in self.blocks:
            blk.attn.spec, blk.attn.seed = spec, seed


def read_books(text_dir, names):
    out = {}
    for name in names:
        path = os.path.join(text_dir, name + ".txt")
        if not os.path.exists(path):
            sys.exit(f"lm: {path}: not there; run `python3 tools/lm/books.py fetch` and `... write` first")
        out[name] = torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8).long()
    return out


def batches(corpus, length, batch, seed):
    """Training windows of length + 1 bytes, drawn uniformly over the concatenated books with a
    fixed seed (each book weighted by its size)."""
    g = torch.Generator().manual_seed(seed)
    data = torch.cat(list(corpus.values()))
    while True:
        starts = torch.randint(0, len(data) - length - 1, (batch,), generator=g)
        yield torch.stack([data[s:s + length + 1] for s in starts.tolist()])


def lr_at(step, steps, cfg):
    warm = max(1, int(cfg["warmup"] * steps))
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def save_checkpoint(model, model_cfg, path, extra):
    """Weights in float16 (the checkpoint stays small), the sizes, and `extra` (the log's summary)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(dict(model=model_cfg, state=state, **extra), path)


def load_checkpoint(path):
    ck = torch.load(path)
    model = LM(**ck["model"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state"].items()})
    model.eval()
    return model, ck


def train(text_dir, out, model_cfg, cfg, log_path, books=TRAIN_BOOKS, quiet=False):
    torch.manual_seed(cfg["seed"])
    corpus = read_books(text_dir, books)
    model = LM(**model_cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=cfg["weight_decay"]),
                             dict(params=no_decay, weight_decay=0.0)], lr=cfg["lr"], betas=(0.9, 0.95))
    steps, cap = cfg["steps"], cfg["minutes"] * 60
    it = batches(corpus, model_cfg["length"], cfg["batch"], cfg["seed"])
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    log = open(log_path, "w") if log_path else None
    t0, done = time.perf_counter(), 0
    model.train()
    for step in range(steps):
        xy = next(it)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, cfg)
        logits = model(xy[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), xy[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        elapsed = time.perf_counter() - t0
        row = dict(step=done, loss=loss.item(), bits_per_byte=loss.item() / math.log(2), lr=opt.param_groups[0]["lr"],
                   seconds=elapsed)
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()
        if not quiet and (done % 10 == 0 or done == steps):
            print(f"step {done}/{steps} loss {loss.item():.4f} ({elapsed:.0f} s)", flush=True)
        if elapsed > cap and done < steps:
            print(f"lm: training capped at step {done} of {steps} ({cap / 60:.0f} min)", flush=True)
            break
    seconds = time.perf_counter() - t0
    extra = dict(train=cfg, steps_done=done, seconds=seconds, books=list(books))
    # The check a test repeats: dense perplexity on the held-out book's first CHECK_WINDOWS
    # windows of the training length, with the weights as stored (float16), and those bytes
    # saved next to the checkpoint (so the test needs neither the packages nor the books).
    held = os.path.join(text_dir, HELD_OUT + ".txt")
    if os.path.exists(held):
        n = CHECK_WINDOWS * model_cfg["length"] + 1
        head = open(held, "rb").read()[:n]
        head_path = os.path.join(os.path.dirname(os.path.abspath(out)), HELD_OUT + "_head.txt")
        with open(head_path, "wb") as f:
            f.write(head)
        save_checkpoint(model, model_cfg, out, extra)
        stored, _ = load_checkpoint(out)
        data = torch.frombuffer(bytearray(head), dtype=torch.uint8).long()
        extra["held_out_check"] = dict(book=HELD_OUT, bytes=len(head), length=model_cfg["length"],
                                       perplexity=perplexity(stored, data, model_cfg["length"])[0])
        print(f"lm: {HELD_OUT}, first {CHECK_WINDOWS} windows: perplexity {extra['held_out_check']['perplexity']:.4f}")
    if log:
        log.write(json.dumps(dict(final=extra)) + "\n")
        log.close()
    save_checkpoint(model, model_cfg, out, extra)
    return model


@torch.no_grad()
def perplexity(model, data, length, spec="dense", seed=12345, max_windows=0):
    """exp(mean NLL per byte) over consecutive windows of `length` + 1 bytes of `data` (each
    window predicted from its own start; the last partial window is left out)."""
    model.set_attention(spec, seed)
    total, count = 0.0, 0
    n_windows = (len(data) - 1) // length
    if max_windows:
        n_windows = min(n_windows, max_windows)
    for w in range(n_windows):
        xy = data[w * length:w * length + length + 1][None]
        logits = model(xy[:, :-1])
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, 256), xy[:, 1:].reshape(-1),
                                                   reduction="sum").item()
        count += length
    model.set_attention("dense")
    return math.exp(total / count), count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train with dense attention (fixed seed), write the checkpoint and log")
    t.add_argument("--books", default=os.path.join(ROOT, "build", "books", "text"))
    t.add_argument("--out", default=os.path.join(HERE, "checkpoint", "lm.pt"))
    t.add_argument("--log", default=os.path.join(HERE, "checkpoint", "train_log.jsonl"))
    t.add_argument("--steps", type=int, default=TRAIN["steps"])
    t.add_argument("--minutes", type=float, default=TRAIN["minutes"])
    e = sub.add_parser("perplexity", help="held-out perplexity with each attention swapped in")
    e.add_argument("--books", default=os.path.join(ROOT, "build", "books", "text"))
    e.add_argument("--checkpoint", default=os.path.join(HERE, "checkpoint", "lm.pt"))
    e.add_argument("--specs", default="dense")
    e.add_argument("--lengths", default="2048")
    e.add_argument("--max-windows", type=int, default=0)
    args = p.parse_args(argv)
    if args.command == "train":
        cfg = dict(TRAIN, steps=args.steps, minutes=args.minutes)
        train(args.books, args.out, MODEL, cfg, args.log)
    else:
        model, ck = load_checkpoint(args.checkpoint)
        data = read_books(args.books, [HELD_OUT])[HELD_OUT]
        trained = ck["model"]["length"]
        for length in [int(x) for x in args.lengths.split(",")]:
            for spec in args.specs.split(","):
                ppl, n = perplexity(model, data, length, spec, max_windows=args.max_windows)
                beyond = " (beyond the training length)" if length > trained else ""
                print(f"{HELD_OUT} {length}{beyond} {spec}: perplexity {ppl:.4f} per byte over {n} bytes", flush=True)


if __name__ == "__main__":
    main()
