#!/usr/bin/python3
"""Turns the comparison runs of scripts/compare.sh into one PNG: on the synthetic problem, each
method's mean cosine to exact attention vs its time (one panel per input kind); on the
pretrained model, each method's mean cosine to the dense embeddings and the classifier accuracy.

usage: plot_compare.py OUT.png BENCH.json EVAL.json
Runs with Debian's python3-matplotlib (/usr/bin/python3)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def family(label):
    return label.split(" ")[0].split("/")[0]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    out, bench_path, eval_path = sys.argv[1:]
    with open(bench_path) as f:
        bench = json.load(f)
    with open(eval_path) as f:
        model = json.load(f)

    kinds = sorted({r["input"] for r in bench["results"]})
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(6.2 * (len(kinds) + 1), 8.4))
    families = sorted({family(r["settings"]) for r in bench["results"] if r["method"] != "dense"}
                      | {family(r["label"]) for r in model["rows"] if r["label"] != "dense"})
    cmap = plt.get_cmap("tab20")
    colour = {fam: cmap(i % 20) for i, fam in enumerate(families)}
    markers = "os^vD<>phX*P8Hd"
    marker = {fam: markers[i % len(markers)] for i, fam in enumerate(families)}

    for ax, kind in zip(axes, kinds):
        rows = [r for r in bench["results"] if r["input"] == kind]
        dense = [r for r in rows if r["method"] == "dense"]
        for r in rows:
            if r["method"] == "dense" or r.get("mean_cosine") is None:
                continue
            fam = family(r["settings"])
            ax.scatter(1e3 * r["median_s"], r["mean_cosine"], color=colour[fam], marker=marker[fam],
                       s=70, zorder=3, label=f"{r['settings']} (mem {100 * r['memory_fraction']:.1f}%)")
        if dense:
            ax.axvline(1e3 * dense[0]["median_s"], color="k", ls=":", lw=1)
            ax.text(1e3 * dense[0]["median_s"], 0.02, " exact dense", fontsize=8, rotation=90, va="bottom")
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        n = rows[0]["nq"] if rows else 0
        ax.set_xlabel("time per call (ms, median of 3)")
        ax.set_ylabel("mean cosine of each output row to the exact one")
        ax.set_title(f"{kind} inputs, N = {n}, d = {rows[0]['d'] if rows else 0}, equal memory budget",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    # One legend for both scatter panels, below them (inside, it hides points).
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower left", ncol=6, fontsize=7.5, bbox_to_anchor=(0.01, 0.0),
               frameon=False)

    ax = axes[-1]
    rows = [r for r in model["rows"] if r["regime"] == "native" and r["label"] != "dense"]
    rows.sort(key=lambda r: r["mean_cos"])
    dense = [r for r in model["rows"] if r["label"] == "dense"]
    ys = range(len(rows))
    ax.barh(list(ys), [r["mean_cos"] for r in rows], color=[colour.get(family(r["label"]), "grey") for r in rows])
    for y, r in zip(ys, rows):
        acc = r.get("accuracy")
        text = f"cos {r['mean_cos']:.3f}, mem {100 * r['memory']:.0f}%"
        if acc is not None:
            text += f", acc {100 * acc:.1f}%"
        ax.text(0.01, y, text, va="center", fontsize=7, color="black",
                bbox=dict(facecolor="white", alpha=0.6, edgecolor="none", pad=0.5))
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    title = f"pretrained USE-lite, {model['texts']} mails, 128 tokens: cosine to dense"
    if dense and dense[0].get("accuracy") is not None:
        title += f" (dense acc {100 * dense[0]['accuracy']:.1f}%)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("mean cosine of the embedding to the dense one")
    fig.tight_layout(rect=(0, 0.19, 1, 1))
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
