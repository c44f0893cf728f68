#!/usr/bin/python3
"""Prints the README's two comparison tables (Markdown) from the runs of scripts/compare.sh.

usage: compare_tables.py BENCH.json EVAL.json

Synthetic table: one row per method, time and mean cosine to exact attention on each input kind,
memory as measured (RunInfo::attention_scores / Nq*Nk). Model table: rows sorted by mean cosine.
Times are medians of one run on a shared machine: compare them within a table, not across
tables."""
import json
import sys


def pct(x):
    return f"{100 * x:.1f}%"


def synthetic(bench):
    kinds = sorted({r["input"] for r in bench["results"]})
    rows, order = {}, []
    for r in bench["results"]:
        label = r["settings"] if r["method"] != "dense" else "dense"
        if label not in rows:
            rows[label] = {"memory": r["memory_fraction"]}
            order.append(label)
        rows[label][r["input"]] = r
    head = "| method | memory | " + " | ".join(f"{k}: ms | {k}: cos" for k in kinds) + " |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(kinds)))
    for label in order:
        cells = [label, pct(rows[label]["memory"])]
        for k in kinds:
            r = rows[label].get(k)
            if r is None:
                cells += ["—", "—"]
                continue
            cos = r.get("mean_cosine")
            cells += [f"{1e3 * r['median_s']:.2f}", "exact" if cos is None else f"{cos:.3f}"]
        print("| " + " | ".join(cells) + " |")


def model(ev):
    rows = sorted(ev["rows"], key=lambda r: -r["mean_cos"])
    print("| method | memory | mean cos | 5th pct | accuracy | attention ms / mail |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {pct(r['memory'])} | {r['mean_cos']:.3f} | {r['p5_cos']:.3f} | "
              f"{pct(r['accuracy'])} | {r['attention_ms_per_text']:.2f} |")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        bench = json.load(f)
    with open(sys.argv[2]) as f:
        ev = json.load(f)
    synthetic(bench)
    print()
    model(ev)


if __name__ == "__main__":
    main()
