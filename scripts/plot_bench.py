#!/usr/bin/python3
"""Turns `smyrf bench` JSON files into a PNG: time vs N (log-log) per method and setting, and
SMYRF's error (mean cosine to the exact output) vs N on both input kinds.

usage: plot_bench.py OUT.png BENCH.json [BENCH.json ...]
Runs with Debian's python3-matplotlib (/usr/bin/python3)."""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(paths):
    rows, machine = [], {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        machine = doc["machine"]
        rows.extend(doc["results"])
    return rows, machine


def label(row):
    if row["method"] != "smyrf":
        return row["method"]
    return f"smyrf {row['n_hashes']} hashes x {row['q_cluster']}/{row['k_cluster']}"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    rows, machine = load(paths)

    # Time does not depend on the input kind: take the fastest median per (label, N).
    times = defaultdict(dict)
    for r in rows:
        key = label(r)
        times[key][r["nq"]] = min(times[key].get(r["nq"], float("inf")), r["median_s"])
    cosines = defaultdict(dict)
    for r in rows:
        if r["method"] == "smyrf" and r.get("mean_cosine") is not None:
            cosines[(label(r), r["input"])][r["nq"]] = r["mean_cosine"]

    fig, (ax_t, ax_q) = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {"reference": ("k", ":"), "dense": ("tab:blue", "-")}
    smyrf_colors = iter(["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"])
    colors = {}
    for key in sorted(times, key=lambda k: (k != "reference", k != "dense", k)):
        color, ls = styles.get(key, (None, "-"))
        if color is None:
            color = colors.setdefault(key, next(smyrf_colors))
        ns = sorted(times[key])
        ax_t.plot(ns, [times[key][n] * 1e3 for n in ns], marker="o", color=color, ls=ls, label=key)
    ax_t.set_xscale("log", base=2)
    ax_t.set_yscale("log")
    ax_t.set_xlabel("sequence length N (Nq = Nk)")
    ax_t.set_ylabel("median time per call (ms)")
    ax_t.set_title("Time vs N (log-log)")
    ax_t.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)

    for (key, inp), series in sorted(cosines.items()):
        ns = sorted(series)
        ax_q.plot(ns, [series[n] for n in ns], marker="o", color=colors.get(key),
                  ls="-" if inp == "clustered" else "--", label=f"{key}, {inp}")
    ax_q.set_xscale("log", base=2)
    ax_q.set_ylim(0, 1.02)
    ax_q.set_xlabel("sequence length N")
    ax_q.set_ylabel("mean cosine to the exact output")
    ax_q.set_title("SMYRF quality (solid: clustered inputs, dashed: iid Gaussian)")
    ax_q.grid(True, alpha=0.3)
    ax_q.legend(fontsize=7)

    fig.suptitle(f"smyrf {machine.get('version', '')}: {machine.get('simd_target', '')}, "
                 f"{machine.get('threads', '')} threads, d = 64, fp32", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
