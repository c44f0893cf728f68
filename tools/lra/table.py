"""The trained table and its plots from <out>/runs.jsonl and <out>/interchange.jsonl:

    <out>/table.md          accuracy per task (mean +- standard deviation over the seeds run;
                            three for the five best of each task), ms per training step,
                            attention memory, and the average over the tasks run
    <out>/interchange.md    image models evaluated with the other attention
    <out>/lra.png           test accuracy against time per step, one panel per task
"""
import json
import os
import statistics

TASK_ORDER = ("image", "text", "listops")
TASK_TITLES = {"image": "Image (Fashion-MNIST, 784 px)", "text": "Text (SpamAssassin, 2,048 B)",
               "listops": "ListOps (500-2,000 tokens)"}


def _read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _latest(rows):
    """The rows of the newest sizes per task (an older run with other sizes is kept in the
    file but not mixed into the table)."""
    newest = {}
    for r in rows:
        newest[r["task"]] = json.dumps(r.get("sizes"), sort_keys=True)
    return [r for r in rows if json.dumps(r.get("sizes"), sort_keys=True) == newest[r["task"]]]


def summarise(rows, timing=()):
    """{(task, spec): dict(accs, ms, memory, label, capped, timed)}: ms from `lra.py time`
    (timed = True; its latest row per task and spec) where it has the pair, else the training
    runs' medians."""
    out = {}
    for r in _latest(rows):
        e = out.setdefault((r["task"], r["spec"]), dict(accs={}, ms=[], memory=r["memory"],
                                                        label=r["label"], capped=[]))
        e["accs"][r["seed"]] = r["accuracy"]
        e.setdefault("timed", False)
        if r.get("capped") or r.get("diverged"):
            e["capped"].append(f"{'diverged' if r.get('diverged') else 'capped'} at step "
                               f"{r['steps']} of {r['sizes']['steps']}")
        e["ms"].append(r["seconds_per_step"] * 1e3)
    timed = {}
    for r in timing:
        timed[(r["task"], r["spec"])] = r["seconds_per_step"] * 1e3
    for key, e in out.items():
        if key in timed:
            e["ms"], e["timed"] = [timed[key]], True
    return out


def _cell(e):
    accs = [e["accs"][s] for s in sorted(e["accs"])]
    mean = 100 * statistics.fmean(accs)
    mark = f" † ({e['capped'][0]})" if e["capped"] else ""
    if len(accs) > 1:
        return f"{mean:.1f} ± {100 * statistics.stdev(accs):.1f} ({len(accs)}){mark}", mean
    return f"{mean:.1f}{mark}", mean


def write(out):
    rows = _read(os.path.join(out, "runs.jsonl"))
    if not rows:
        print(f"table: no runs in {out}/runs.jsonl")
        return
    s = summarise(rows, _read(os.path.join(out, "timing.jsonl")))
    task_list = [t for t in TASK_ORDER if any(k[0] == t for k in s)]
    specs = []
    for (t, spec) in s:
        if spec not in specs:
            specs.append(spec)
    lines = ["| method | " + " | ".join(f"{t} acc % | ms/step | memory" for t in task_list)
             + " | average acc % |",
             "|---|" + "---:|---:|---:|" * len(task_list) + "---:|"]
    ranked = []
    for spec in specs:
        cells, means = [], []
        label = next(s[(t, spec)]["label"] for t in task_list if (t, spec) in s)
        for t in task_list:
            e = s.get((t, spec))
            if e is None:
                cells += ["–", "–", "–"]
                continue
            text, mean = _cell(e)
            means.append(mean)
            cells += [text, f"{statistics.median(e['ms']):.0f}", f"{e['memory']:.3f}"]
        avg = statistics.fmean(means) if len(means) == len(task_list) else None
        ranked.append((-(avg if avg is not None else -1), label, cells, avg))
    ranked.sort(key=lambda x: x[0])
    for _, label, cells, avg in ranked:
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + (f"{avg:.1f}" if avg is not None else "–") + " |")
    n_timed = sum(e["timed"] for e in s.values())
    note = ("ms/step: one training step (forward, backward, AdamW) at batch 16, 2 threads; "
            + ("every figure measured alone by `lra.py time` (median of 10 steps after 3)."
               if n_timed == len(s) else
               f"{n_timed} of {len(s)} figures measured alone by `lra.py time`, the others the "
               "median step of the training runs."))
    lines += ["", note]
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    inter = _read(os.path.join(out, "interchange.jsonl"))
    if inter:
        latest = {}
        for r in inter:
            latest[r["spec"]] = r
        il = ["| method | its own model | its model, dense attention | dense model, this method |",
              "|---|---:|---:|---:|"]
        for r in sorted(latest.values(), key=lambda r: -r["own"]):
            il.append(f"| {r['label']} | {100 * r['own']:.1f} | {100 * r['trained_eval_dense']:.1f} "
                      f"| {100 * r['dense_eval_method']:.1f} |")
        with open(os.path.join(out, "interchange.md"), "w") as f:
            f.write("\n".join(il) + "\n")
        print("\n".join(il))
    plot(s, task_list, os.path.join(out, "lra.png"))


def plot(s, task_list, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("table: matplotlib not found (scripts/setup.sh --plot): no plot")
        return
    fig, axes = plt.subplots(1, len(task_list), figsize=(6.5 * len(task_list), 5.5), squeeze=False)
    for ax, t in zip(axes[0], task_list):
        pts = [(statistics.median(e["ms"]), 100 * statistics.fmean(e["accs"].values()), e["label"],
                spec) for (tt, spec), e in s.items() if tt == t]
        for ms, acc, label, spec in pts:
            ref = spec in ("dense",) or spec.startswith("local")
            ax.scatter(ms, acc, color="black" if ref else "tab:blue", s=18)
            ax.annotate(label, (ms, acc), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("ms per training step (log)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(TASK_TITLES.get(t, t))
        ax.grid(alpha=0.3)
    fig.suptitle("Trained from scratch at 25% attention memory (dense, local: references)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"table: wrote {path}")
