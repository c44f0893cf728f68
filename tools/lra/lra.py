#!/usr/bin/env python3
"""A trained comparison of every method with a backward, like the Long Range Arena, on data
available offline (tools/lra/tasks.py): the same small Transformer classifier, budget,
optimiser and seeds for every method, each trained from scratch at the same attention memory
(variant specs at F = 0.25; dense and local attention are the references).

    python3 tools/lra/lra.py run       # every task and method (resumable), then table + plot
    python3 tools/lra/lra.py time      # time per training step of every method, alone
    python3 tools/lra/lra.py table     # results/table.md and the plots from results/runs.jsonl
    python3 tools/lra/lra.py run --tasks image --specs dense,local:0.25 --seeds 0

Each finished run is appended to <out>/runs.jsonl (task, spec, seed, test accuracy, median
seconds per training step, attention memory measured by the library); a run already there
with the same settings is not run again, so an interrupted table resumes where it stopped.
After the single-seed runs, the five best methods of each task get seeds 1 and 2 as well.

Interchangeability (the SMYRF paper's claim, for every method) on the image task: every trained
image model is evaluated with dense attention, and the dense-trained model with every method
(<out>/interchange.jsonl). The models are kept in --model-dir for that.

The model: token embedding + learned positions, DEPTH pre-LN blocks (multi-head attention by
smyrf_torch.attention, GELU MLP), final LayerNorm, mean pooling over the non-padding tokens,
linear classifier. AdamW, linear warm-up then cosine decay, a fixed number of steps per task.
The attention's seed is drawn per training step (fresh hashes and random features, as
Reformer's and Performer's training do) and fixed at evaluation. No setting is chosen on a test
split: every size below is fixed before any run, the same for every method.
"""
import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import tasks  # noqa: E402

try:
    import smyrf_torch
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "build", "torch", "python"))
    import smyrf_torch  # noqa: E402

# Every method form with a backward, as a variant spec at F = 0.25 (fixed-size feature maps
# take no budget: their memory is what they use; the Synthesizers are quadratic by definition,
# like dense). Gated RFA's gates are a per-call input the model does not produce (no gate
# network here), so its plain form stands for it.
BUDGET = 0.25
SPECS = [
    "dense", "local:F", "smyrf:2:F", "smyrf-c:F", "reformer:2:F", "clustered:F", "iclustered:F",
    "routing:F", "dilated:F", "strided:F", "fixed:F", "longformer:F", "bigbird:F",
    "axial-rows:F", "criss-cross:F", "performer:F", "favor:F", "rfa:F", "linear", "l2",
    "efficient", "dpfp", "linformer:F", "nystrom:F", "mca:F", "isab:F", "star:F", "gmat:F",
    "informer:F", "sinkhorn:F", "synthesizer-dense", "synthesizer-random",
]


def spec_at(spec, budget):
    return spec.replace(":F", f":{budget:g}")


# Sizes fixed for every method (see the README's section on the trained table).
MODEL = dict(dim=64, heads=2, depth=2, mlp=128)
TRAIN = dict(batch=16, lr=1e-3, weight_decay=0.01, warmup=0.1)
# trim: the padded tasks run each batch at its longest example's length (the attention's
# settings follow that length: the budget is a fraction of it), with batches drawn from pools of
# POOL consecutive shuffled examples sorted by length, so that a batch holds similar lengths.
TASK_SIZES = {  # training steps and examples (0: all); test examples
    "image": dict(steps=400, n_train=0, n_test=2000),
    "text": dict(steps=160, n_train=0, n_test=0, trim=True),
    "listops": dict(steps=160, n_train=3200, n_test=1000, trim=True),
}
POOL = 50


class Variant:
    """A variant spec's method and fields at each sequence length (cached)."""

    def __init__(self, spec):
        self.spec, self._at = spec, {}

    def at(self, n):
        if n not in self._at:
            v = smyrf_torch.variant(self.spec, n)
            self._at[n] = (v["method"], v["fields"], v["label"])
        return self._at[n]

    def learned(self, n):
        """The learned parts the library differentiates and smyrf_torch.nn initialises (the
        papers' initialisations: Linformer's E and F, the Synthesizers' W1, b1, W2, b2 and R,
        Sinkhorn's sort net, which the paper learns), as tensors for length n; {} for the
        others (parts with a parameter-free default, e.g. segment-mean inducing points and
        memory tokens, keep it)."""
        method, fields, _ = self.at(n)
        dh = MODEL["dim"] // MODEL["heads"]
        asked = {"sort_net": "init"} if method == "sinkhorn" else {}
        core = smyrf_torch.nn.Attention(method, num_heads=MODEL["heads"], head_dim=dh,
                                        seq_len=n, **fields, **asked)
        return {name: p.detach() for name, p in core.named_parameters()}


class Attention(torch.nn.Module):
    """Multi-head self-attention whose core is smyrf_torch.attention by a variant spec. A method
    with learned parts (Linformer, the Synthesizers) holds them as Parameters for the task's
    full length, and then runs every batch at that length (its parts are shaped by it)."""

    def __init__(self, dim, heads, variant, length):
        super().__init__()
        self.heads, self.variant = heads, variant
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        self.parts = torch.nn.ParameterDict(
            {n: torch.nn.Parameter(t) for n, t in variant.learned(length).items()})
        self.parts_spec = variant.spec  # the parts belong to this spec's method
        self.seed = 0  # set per step by the trainer

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        method, fields, _ = self.variant.at(n)
        parts = dict(self.parts) if self.variant.spec == self.parts_spec else {}
        o = smyrf_torch.attention(q.contiguous(), k.contiguous(), v.contiguous(), method,
                                  seed=self.seed, **fields, **parts)
        return self.out(o.transpose(1, 2).reshape(b, n, dim))


class Block(torch.nn.Module):
    def __init__(self, dim, heads, mlp, variant, length):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, variant, length)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, mlp), torch.nn.GELU(),
                                       torch.nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Classifier(torch.nn.Module):
    def __init__(self, task, variant, dim, heads, depth, mlp):
        super().__init__()
        self.pad = task.pad
        self.embed = torch.nn.Embedding(task.vocab, dim)
        self.pos = torch.nn.Parameter(torch.randn(task.length, dim) * 0.02)
        self.blocks = torch.nn.ModuleList(
            Block(dim, heads, mlp, variant, task.length) for _ in range(depth))
        self.ln = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, task.classes)

    def attentions(self):
        return [b.attn for b in self.blocks]

    def set_attention(self, variant):
        for a in self.attentions():
            a.variant = variant

    def fixed_length(self):
        """Whether the model must run at the task's full length (learned parts shaped by it)."""
        return any(len(a.parts) for a in self.attentions())

    def set_seed(self, seed):
        for i, a in enumerate(self.attentions()):
            a.seed = (seed * 1000003 + i) % (2**63)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[:tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        if self.pad is None:
            pooled = x.mean(1)
        else:
            keep = (tokens != self.pad).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.head(pooled)


def lr_at(step, steps, lr, warmup):
    w = max(1, int(warmup * steps))
    if step < w:
        return lr * (step + 1) / w
    return lr * 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


class Progress:
    """One status line on stderr, rewritten in place (a newline when it is not a terminal only
    every few seconds)."""

    def __init__(self, label, total):
        self.label, self.total, self.t0, self.last = label, total, time.time(), 0.0
        self.tty = sys.stderr.isatty()

    def update(self, done, extra=""):
        now = time.time()
        if not self.tty and now - self.last < 15 and done < self.total:
            return
        self.last = now
        width = 24
        fill = int(width * done / max(1, self.total))
        line = (f"{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} "
                f"{now - self.t0:5.0f}s {extra}")
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def lengths(task, split):
    """Each example's length up to its last non-padding token (the full length unpadded)."""
    if task.pad is None:
        return np.full(len(split), task.length)
    nonpad = split.tokens != task.pad
    return np.where(nonpad.any(1), task.length - np.argmax(nonpad[:, ::-1], axis=1), 1)


def batch_tokens(task, split, idx, trim):
    x = split.tokens[idx]
    if trim:
        x = x[:, :int(lengths(task, split)[idx].max())]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(split.labels[idx])


def evaluate(model, task, split, trim, batch=64, seed=12345):
    """Test accuracy with a fixed attention seed; trim: batches of similar lengths."""
    model.eval()
    model.set_seed(seed)
    order = np.argsort(lengths(task, split), kind="stable") if trim else np.arange(len(split))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split), batch):
            x, y = batch_tokens(task, split, order[i:i + batch], trim)
            correct += int((model(x).argmax(-1) == y).sum())
    return correct / max(1, len(split))


def batches(task, n_batches, batch, generator, trim):
    """Training batches (index arrays): shuffled epochs; with trim, each pool of POOL batches'
    examples sorted by length, cut into batches, the batches shuffled."""
    split = task.train
    n = len(split)
    lens = lengths(task, split)
    out = []
    while len(out) < n_batches:
        perm = torch.randperm(n, generator=generator).numpy()
        epoch = []
        for p in range(0, n - batch + 1, batch * POOL):
            pool = perm[p:p + batch * POOL]
            pool = pool[:len(pool) - len(pool) % batch]
            if trim:
                pool = pool[np.argsort(lens[pool], kind="stable")]
            chunk = [pool[i:i + batch] for i in range(0, len(pool), batch)]
            if trim:
                chunk = [chunk[int(i)] for i in torch.randperm(len(chunk), generator=generator)]
            epoch += chunk
        out += epoch
    return out[:n_batches]


def attention_memory(task, method, fields, heads, dim):
    """Score entries per (batch, head) of one forward, as a fraction of dense's N^2."""
    n = task.length
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, dim // heads, generator=g) for _ in range(3))
    info = smyrf_torch.attention_info(q, k, v, method, **fields)
    return info["attention_scores"] / (heads * n * n)


def run_key(task_name, spec, seed, sizes, parts=()):
    what = dict(task=task_name, spec=spec, seed=seed, sizes=sizes, model=MODEL, train=TRAIN)
    if parts:
        what["learned"] = sorted(parts)
    text = json.dumps(what, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_one(task, spec, seed, sizes, model_path=None, cap_seconds=None):
    """One training run; cap_seconds: training stops once its steps have taken that long (the
    row says capped, with the steps done: a method too slow for the table's budget)."""
    variant = Variant(spec)
    method, fields, label = variant.at(task.length)
    torch.manual_seed(seed)
    model = Classifier(task, variant, **MODEL)
    # Batches of similar lengths for the padded tasks; cut to their length unless the method's
    # learned parts fix it.
    pooled = bool(sizes.get("trim"))
    trim = pooled and not model.fixed_length()
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"],
                            weight_decay=TRAIN["weight_decay"])
    steps, batch = sizes["steps"], TRAIN["batch"]
    order = torch.Generator().manual_seed(seed)
    plan = batches(task, steps, batch, order, pooled) if pooled else None
    n = len(task.train)
    perm, at = torch.randperm(n, generator=order), 0
    times, losses = [], []
    progress = Progress(f"{task.name} {spec} seed {seed}", steps)
    for step in range(steps):
        if pooled:
            idx = plan[step]
        else:
            if at + batch > n:
                perm, at = torch.randperm(n, generator=order), 0
            idx = perm[at:at + batch].numpy()
            at += batch
        x, y = batch_tokens(task, task.train, idx, trim)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, TRAIN["lr"], TRAIN["warmup"])
        model.train()
        model.set_seed(int(torch.randint(0, 2**62, (1,), generator=order)))
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            break
        progress.update(step + 1, f"loss {statistics.fmean(losses[-20:]):.3f}")
        if cap_seconds and sum(times) > cap_seconds and step + 1 < steps:
            progress.update(steps, f"capped at step {step + 1}: over {cap_seconds:.0f} s")
            break
    acc = evaluate(model, task, task.test, trim)
    if model_path:
        os.makedirs(os.path.dirname(model_path), exist_ok=True)
        torch.save(model.state_dict(), model_path)
    warm = times[min(5, len(times) - 1):]
    return dict(task=task.name, spec=spec, label=label, method=method, seed=seed,
                accuracy=acc, final_loss=statistics.fmean(losses[-20:]),
                diverged=not math.isfinite(losses[-1]), steps=len(times),
                capped=len(times) < steps and math.isfinite(losses[-1]), cap_seconds=cap_seconds,
                seconds_per_step=statistics.median(warm), seconds=sum(times),
                memory=attention_memory(task, method, fields, MODEL["heads"], MODEL["dim"]),
                n_train=len(task.train), n_test=len(task.test), threads=torch.get_num_threads())


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def load_task(name, sizes, args):
    return tasks.load(name, sizes["n_train"], sizes["n_test"], fashion_dir=args.fashion_dir,
                      spam_package=args.spam_package)


def best_specs(rows, task_name, count):
    mine = [r for r in rows if r["task"] == task_name and r["seed"] == 0]
    mine.sort(key=lambda r: -r["accuracy"])
    return [r["spec"] for r in mine[:count]]


def cmd_run(args):
    os.makedirs(args.out, exist_ok=True)
    runs_path = os.path.join(args.out, "runs.jsonl")
    specs = [spec_at(s, args.budget) for s in (args.specs.split(",") if args.specs else SPECS)]
    seeds = [int(s) for s in args.seeds.split(",")]
    for spec in specs:
        try:
            smyrf_torch.variant(spec, 64)
        except ValueError as e:
            sys.exit(f"lra: --specs: {e}")
    for task_name in args.tasks.split(","):
        sizes = dict(TASK_SIZES[task_name])
        if args.steps:
            sizes["steps"] = args.steps
        if args.n_train is not None:
            sizes["n_train"] = args.n_train
        if args.n_test is not None:
            sizes["n_test"] = args.n_test
        task = load_task(task_name, sizes, args)

        def ensure(spec, seed):
            key = run_key(task_name, spec, seed, sizes, Variant(spec).learned(task.length))
            if any(r.get("key") == key for r in read_jsonl(runs_path)):
                return
            path = os.path.join(args.model_dir, f"{task_name}-{spec}-{seed}.pt".replace(":", "_"))
            row = train_one(task, spec, seed, sizes, model_path=path,
                            cap_seconds=60 * args.max_minutes if args.max_minutes > 0 else None)
            row.update(key=key, sizes=sizes, model_path=path)
            append_jsonl(runs_path, row)
            print(f"{task_name:8s} {spec:16s} seed {seed}: accuracy {row['accuracy']:.4f}, "
                  f"{row['seconds_per_step'] * 1e3:.0f} ms/step, memory {row['memory']:.3f}",
                  flush=True)

        for spec in specs:
            for seed in seeds:
                ensure(spec, seed)
        if args.top > 0:
            rows = [r for r in read_jsonl(runs_path) if r.get("sizes") == sizes]
            for spec in best_specs(rows, task_name, args.top):
                for seed in (1, 2):
                    ensure(spec, seed)
        if task_name == "image" and args.interchange:
            interchange(task, sizes, args, specs)
    cmd_table(args)


def interchange(task, sizes, args, specs):
    """Each trained image model evaluated with dense attention, and the dense-trained model
    with each method (the models' own accuracies are the runs')."""
    path = os.path.join(args.out, "interchange.jsonl")
    runs = [r for r in read_jsonl(os.path.join(args.out, "runs.jsonl"))
            if r["task"] == task.name and r["seed"] == 0 and r.get("sizes") == sizes]
    done = {r["key"] for r in read_jsonl(path)}
    dense_run = next((r for r in runs if r["spec"] == "dense"), None)
    if dense_run is None:
        return
    todo = [r for r in runs
            if r["spec"] in specs and r["key"] not in done and r["spec"] != "dense"]
    if not todo:
        return
    dense = Variant("dense")
    dense_model = Classifier(task, dense, **MODEL)
    dense_model.load_state_dict(torch.load(dense_run["model_path"]))
    for r in todo:
        variant = Variant(r["spec"])
        model = Classifier(task, variant, **MODEL)
        model.load_state_dict(torch.load(r["model_path"]))
        model.set_attention(dense)
        trim = bool(sizes.get("trim"))
        with_dense = evaluate(model, task, task.test, trim and not model.fixed_length())
        dense_model.set_attention(variant)
        dense_with = evaluate(dense_model, task, task.test, trim)
        row = dict(spec=r["spec"], label=r["label"], key=r["key"], own=r["accuracy"],
                   trained_eval_dense=with_dense, dense_eval_method=dense_with,
                   dense_own=dense_run["accuracy"])
        append_jsonl(path, row)
        print(f"interchange {r['spec']:16s}: own {r['accuracy']:.4f}, its model with dense "
              f"{with_dense:.4f}, dense model with it {dense_with:.4f}", flush=True)


def time_one(task, spec, sizes, warmup=3, steps=10):
    """Median seconds of a training step (forward, backward, optimiser) of a fresh model on the
    task's first batches, after warm-up steps: the table's time per step, measured apart from
    the training runs so that it can be taken alone on a quiet machine."""
    variant = Variant(spec)
    torch.manual_seed(0)
    model = Classifier(task, variant, **MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"])
    pooled = bool(sizes.get("trim"))
    trim = pooled and not model.fixed_length()
    g = torch.Generator().manual_seed(0)
    plan = batches(task, warmup + steps, TRAIN["batch"], g, pooled)
    model.train()
    times = []
    for i, idx in enumerate(plan):
        x, y = batch_tokens(task, task.train, idx, trim)
        model.set_seed(i)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cmd_time(args):
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "timing.jsonl")
    specs = [spec_at(s, args.budget) for s in (args.specs.split(",") if args.specs else SPECS)]
    for task_name in args.tasks.split(","):
        sizes = dict(TASK_SIZES[task_name])
        task = load_task(task_name, sizes, args)
        progress = Progress(f"timing {task_name}", len(specs))
        for i, spec in enumerate(specs):
            seconds = time_one(task, spec, sizes)
            append_jsonl(path, dict(task=task_name, spec=spec, seconds_per_step=seconds,
                                    threads=torch.get_num_threads(), sizes=sizes))
            progress.update(i + 1, f"{spec} {seconds * 1e3:.0f} ms")
    cmd_table(args)


def cmd_table(args):
    import table
    table.write(args.out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train (resumable), then write the table and the plots")
    r.add_argument("--tasks", default=",".join(tasks.TASKS))
    r.add_argument("--specs", default="", help="comma-separated variant specs, F = budget "
                   "(default: every method with a backward)")
    r.add_argument("--budget", type=float, default=BUDGET)
    r.add_argument("--seeds", default="0")
    r.add_argument("--top", type=int, default=5, help="methods per task run with seeds 1 and 2")
    r.add_argument("--no-interchange", dest="interchange", action="store_false")
    r.add_argument("--steps", type=int, default=0, help="override the task's training steps")
    r.add_argument("--n-train", type=int, default=None)
    r.add_argument("--n-test", type=int, default=None)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--max-minutes", type=float, default=5.0,
                   help="training time cap of one run (0: none); a capped run is marked")
    r.add_argument("--fashion-dir", default=tasks.FASHION_DIR)
    r.add_argument("--spam-package", default=os.path.join(ROOT, tasks.SPAM_PACKAGE))
    r.add_argument("--out", default=os.path.join(HERE, "results"))
    r.add_argument("--model-dir", default=os.path.join(ROOT, "build", "lra-models"))
    tm = sub.add_parser("time", help="time per training step of every method, alone (the "
                        "table's ms/step column; run it on a quiet machine)")
    tm.add_argument("--tasks", default=",".join(tasks.TASKS))
    tm.add_argument("--specs", default="")
    tm.add_argument("--budget", type=float, default=BUDGET)
    tm.add_argument("--threads", type=int, default=2)
    tm.add_argument("--fashion-dir", default=tasks.FASHION_DIR)
    tm.add_argument("--spam-package", default=os.path.join(ROOT, tasks.SPAM_PACKAGE))
    tm.add_argument("--out", default=os.path.join(HERE, "results"))
    t = sub.add_parser("table", help="the table and plots from <out>/runs.jsonl")
    t.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.command in ("run", "time"):
        torch.set_num_threads(args.threads)
    {"run": cmd_run, "time": cmd_time, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    main()
