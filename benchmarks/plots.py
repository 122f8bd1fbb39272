"""Bar charts of ``run.py`` results (needs matplotlib: the optional extra ``plot``).

    python benchmarks/plots.py benchmarks/_data/run-quick.json benchmarks/_data/run-full.json -o benchmarks/accuracy.png

One figure: test accuracy per classification dataset and method (median over
seeds), the RMSE of regression datasets, and, for the KEEL sets, each method's
accuracy minus HistGradientBoosting's (the differences are what the bars of
accuracies near 1 hide). When several JSON files hold the same dataset, the
later file wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ORDER = ("rfm", "kernel", "xrfm", "hgb")
LABELS = {"rfm": "bigrfm RFM", "kernel": "bigrfm kernel (iters=0)", "xrfm": "xRFM", "hgb": "HistGB"}
COLORS = {"rfm": "#1f77b4", "kernel": "#9ecae1", "xrfm": "#d62728", "hgb": "#2ca02c"}


def medians(runs: list[dict]) -> tuple[dict, dict]:
    """({dataset: {method: median test}}, {dataset: task}) over all runs (later runs override)."""
    by: dict[str, dict[str, list]] = {}
    task: dict[str, str] = {}
    for run in runs:
        seen: dict[str, dict[str, list]] = {}
        for r in run["records"]:
            if "error" in r:
                continue
            seen.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r["test"])
            task[r["dataset"]] = r["task"]
        by.update(seen)
    return {ds: {m: float(np.median(v)) for m, v in ms.items()} for ds, ms in by.items()}, task


def _bars(ax, names: list[str], values: dict, methods: list[str], *, horizontal_labels: bool = False) -> None:
    x = np.arange(len(names))
    w = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        ys = [values[ds].get(m, np.nan) for ds in names]
        ax.bar(x + (i - (len(methods) - 1) / 2) * w, ys, w, label=LABELS[m], color=COLORS[m])
    ax.set_xticks(x)
    ax.set_xticklabels([n.removeprefix("keel-") for n in names], rotation=0 if horizontal_labels else 60,
                       ha="center" if horizontal_labels else "right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_accuracy(runs: list[dict], out: str, *, dpi: int = 80) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals, task = medians(runs)
    methods = [m for m in ORDER if any(m in v for v in vals.values())]
    other_cls = [ds for ds in vals if task[ds] == "classification" and not ds.startswith("keel-")]
    regr = [ds for ds in vals if task[ds] == "regression"]
    keel = sorted(ds for ds in vals if ds.startswith("keel-"))
    panels = []
    if other_cls or regr:
        panels.append("top")
    if keel:
        panels += ["keel", "keel_diff"] if "hgb" in methods else ["keel"]
    fig = plt.figure(figsize=(max(10, 0.32 * len(keel) * len(methods) / 2 + 2), 3.4 * len(panels)))
    gs = fig.add_gridspec(len(panels), max(1, len(other_cls) + len(regr)) if panels[0] == "top" else 1)
    row = 0
    if panels and panels[0] == "top":
        ncol = len(other_cls) + len(regr)
        if other_cls:
            ax = fig.add_subplot(gs[0, : len(other_cls)])
            _bars(ax, other_cls, vals, methods, horizontal_labels=True)
            lo = min(v for ds in other_cls for v in vals[ds].values())
            ax.set_ylim(max(0.0, lo - 0.05), 1.0)
            ax.set_ylabel("test accuracy")
            ax.legend(fontsize=7, loc="lower right")
        for j, ds in enumerate(regr):
            ax = fig.add_subplot(gs[0, len(other_cls) + j])
            _bars(ax, [ds], vals, methods, horizontal_labels=True)
            ax.set_ylabel("test RMSE (lower is better)")
            if not other_cls and j == 0:
                ax.legend(fontsize=7)
        del ncol
        row = 1
    if keel:
        ax = fig.add_subplot(gs[row, :])
        _bars(ax, keel, vals, methods)
        ax.set_ylim(0, 1.0)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"KEEL balanced sets ({len(keel)}), median over seeds", fontsize=9)
        ax.legend(fontsize=7, ncol=len(methods), loc="lower left")
        if "hgb" in methods:
            ax = fig.add_subplot(gs[row + 1, :])
            others = [m for m in methods if m != "hgb"]
            diff = {ds: {m: vals[ds][m] - vals[ds]["hgb"] for m in others if m in vals[ds] and "hgb" in vals[ds]}
                    for ds in keel}
            _bars(ax, keel, diff, others)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylabel("accuracy − HistGB")
            ax.legend(fontsize=7, ncol=len(others), loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Accuracy bar chart from run.py JSON records.")
    p.add_argument("json", nargs="+", help="files written by run.py --json (later files override earlier datasets)")
    p.add_argument("-o", "--out", default=os.path.join(HERE, "accuracy.png"))
    p.add_argument("--dpi", type=int, default=80)
    a = p.parse_args(argv)
    runs = []
    for path in a.json:
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    out = plot_accuracy(runs, a.out, dpi=a.dpi)
    print(f"{out}: {os.path.getsize(out) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
