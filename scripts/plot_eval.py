#!/usr/bin/python3
"""Turns `smyrf eval` JSON into a PNG: the memory-quality trade-off of every attention variant
on the pretrained model, per regime: mean cosine to the dense embeddings (left) and the
accuracy of the classifier trained on dense embeddings (right) vs attention memory.

usage: plot_eval.py OUT.png EVAL.json [EVAL.json ...]   (rows of all files together)
Runs with Debian's python3-matplotlib (/usr/bin/python3)."""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def family(row):
    """Variants that differ only in budget share a line: 'smyrf 2 x 50%' -> 'smyrf, 2 rounds'."""
    spec = row["variant"]
    if spec == "dense":
        return None
    parts = spec.split(":")
    if parts[0] == "smyrf-c":
        return f"smyrf centroid, clusters of {parts[2] if len(parts) == 3 else 16}"
    if len(parts) == 3:
        return f"smyrf LSH, {parts[1]} round{'s' if parts[1] != '1' else ''}"
    return spec


def main():
    out = sys.argv[1]
    rows = []
    for path in sys.argv[2:]:
        with open(path) as f:
            rows.extend(json.load(f)["rows"])
    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    styles = {"native": "-", "extended": "--"}
    colors = {}
    for regime in regimes:
        rr = [r for r in rows if r["regime"] == regime]
        dense = next(r for r in rr if r["variant"] == "dense")
        lines = defaultdict(list)
        points = []
        for r in rr:
            fam = family(r)
            if fam is None:
                continue
            if fam == r["variant"]:
                points.append(r)
            else:
                lines[fam].append(r)
        tag = f"{regime} ({dense['max_tokens']} tokens, {dense['texts']} texts)"
        for fam, pts in lines.items():
            pts.sort(key=lambda r: r["memory"])
            color = colors.setdefault(fam, f"C{len(colors)}")
            x = [100 * r["memory"] for r in pts]
            axes[0].plot(x, [r["mean_cos"] for r in pts], styles.get(regime, ":"), marker="o",
                         color=color, label=f"{fam}, {tag}")
            if pts[0]["accuracy"] is not None:
                axes[1].plot(x, [100 * r["accuracy"] for r in pts], styles.get(regime, ":"),
                             marker="o", color=color, label=f"{fam}, {tag}")
        for r in points:
            color = colors.setdefault(r["variant"], f"C{len(colors)}")
            axes[0].plot([100 * r["memory"]], [r["mean_cos"]], marker="s", linestyle="",
                         color=color, label=f"{r['label']}, {regime}")
            if r["accuracy"] is not None:
                axes[1].plot([100 * r["memory"]], [100 * r["accuracy"]], marker="s", linestyle="",
                             color=color, label=f"{r['label']}, {regime}")
        axes[0].plot([100], [1.0], marker="*", markersize=10, color="k", linestyle="")
        if dense["accuracy"] is not None:
            axes[1].axhline(100 * dense["accuracy"], color="k", linestyle=styles.get(regime, ":"),
                            linewidth=1, label=f"dense, {regime}")
    axes[0].axhline(1.0, color="k", linewidth=1)
    axes[0].set_xlabel("attention memory (% of dense scores)")
    axes[0].set_ylabel("mean cosine to the dense embedding")
    axes[1].set_xlabel("attention memory (% of dense scores)")
    axes[1].set_ylabel("spam accuracy (probe trained on dense)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, 105)
    handles, labels = axes[1].get_legend_handles_labels()
    h0, l0 = axes[0].get_legend_handles_labels()
    for h, l in zip(h0, l0):
        if l not in labels:
            handles.append(h)
            labels.append(l)
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Universal Sentence Encoder lite, attention swapped without retraining "
                 "(SpamAssassin)", fontsize=10)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
