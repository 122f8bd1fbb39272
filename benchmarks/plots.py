"""Charts of benchmark results (needs matplotlib: the optional extra ``plot``; imported lazily, Agg backend).

    python benchmarks/plots.py benchmarks/_data/run-quick.json benchmarks/_data/run-full.json -o benchmarks/accuracy.png
    python benchmarks/plots.py --scale benchmarks/results/scale-2026-11-27.json -o benchmarks/scale.png
    python benchmarks/plots.py --throughput benchmarks/results/kernel-2026-11-27.json -o benchmarks/throughput.png

Accuracy (``run.py --json`` files, positional): test accuracy per
classification dataset and method (median over seeds), the RMSE of regression
datasets, and, for the KEEL sets, each method's accuracy minus
HistGradientBoosting's (the differences are what the bars of accuracies near 1
hide). When several JSON files hold the same dataset, the later file wins.

``--scale`` (``bench_scale.py --json``): fit seconds and peak RSS of the
process tree against training rows, log-log, one line per method; a method
that gave no result is a marker on the RSS panel at the RSS it reached.

``--throughput`` (``bench_kernel.py --json``): kernel entries per second of
the K^T(Kv) block function (op ``gram``) against d, one panel per thread mode
and dtype, next to the GEMM-equivalent rate (the paired GEMM GFLOP/s divided by
the gram flops per kernel entry, 2d + 4c); each point is labelled with the
table's fraction of GEMM (and the fraction including the metric map X S where
that differs).

Without ``-o`` each chart goes to benchmarks/{accuracy,scale,throughput}.png;
``-o`` needs exactly one kind of chart.
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
        if other_cls:
            ax = fig.add_subplot(gs[0, : len(other_cls)])
            _bars(ax, other_cls, vals, methods, horizontal_labels=True)
            lo = min(v for ds in other_cls for v in vals[ds].values())
            ax.set_ylim(max(0.0, lo - 0.05), 1.0)
            ax.set_ylabel("test accuracy")
            # above the bars: at the lower right it hid the last dataset's HistGB bar
            ax.legend(fontsize=7, loc="upper center", ncol=len(methods), bbox_to_anchor=(0.5, 1.22), frameon=False)
        for j, ds in enumerate(regr):
            ax = fig.add_subplot(gs[0, len(other_cls) + j])
            _bars(ax, [ds], vals, methods, horizontal_labels=True)
            ax.set_ylabel("test RMSE (lower is better)")
            if not other_cls and j == 0:
                ax.legend(fontsize=7)
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


def _records(obj) -> tuple[list[dict], dict]:
    """(records, meta) from a --json file's dict ({"meta", "records"}), a list of such dicts, or a list of records."""
    if isinstance(obj, dict):
        return list(obj["records"]), dict(obj.get("meta") or {})
    obj = list(obj)
    if obj and all(isinstance(o, dict) and "records" in o for o in obj):
        return [r for o in obj for r in o["records"]], dict(obj[-1].get("meta") or {})
    return obj, {}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SCALE_STYLE = {"bigrfm": ("#1f77b4", "o"), "HistGradientBoosting": ("#2ca02c", "s"), "xRFM (CPU)": ("#d62728", "X")}


def _rows_label(n: float) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k"


def plot_scale(records, out: str, *, dpi: int = 80, target_s: float | None = 900.0,
               target_gb: float | None = 3.0) -> str:
    """Fit seconds and peak RSS (GB = 2**30 bytes) against training rows n, log-log, one line per method.

    ``records``: what ``bench_scale.py --json`` writes (the dict, or its "records" list). A record with
    an "error" (no result) is drawn as a marker on the RSS panel at the RSS it reached, annotated with
    the minutes it ran. ``target_s`` / ``target_gb``: dotted target lines (issue 4: 2.85M rows in 15 min,
    under 3 GB); None leaves them out.
    """
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    recs, meta = _records(records)
    methods = list(dict.fromkeys(r["method"] for r in recs))
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.4))
    ns = sorted({r["n"] for r in recs})
    for meth in methods:
        color, marker = SCALE_STYLE.get(meth, (None, "o"))
        ok = sorted((r for r in recs if r["method"] == meth and not r.get("error") and r.get("fit_s") is not None),
                    key=lambda r: r["n"])
        if ok:
            x = [r["n"] for r in ok]
            (line,) = ax_t.plot(x, [r["fit_s"] for r in ok], marker=marker, color=color, label=meth)
            color = line.get_color()
            below = meth == "HistGradientBoosting"  # labels of the lower curve go below-right, others above-left
            for r in ok:
                ax_t.annotate(f"{r['fit_s']:.0f} s", (r["n"], r["fit_s"]), textcoords="offset points",
                              xytext=(6, -11) if below else (-6, 5), ha="left" if below else "right",
                              fontsize=7, color=color)
            rss = [r for r in ok if r.get("peak_rss_gb") is not None]
            ax_m.plot([r["n"] for r in rss], [r["peak_rss_gb"] for r in rss], marker=marker, color=color, label=meth)
            for r in rss:
                ax_m.annotate(f"{r['peak_rss_gb']:.2f}", (r["n"], r["peak_rss_gb"]), textcoords="offset points",
                              xytext=(6, -11 if below else 4), fontsize=7, color=color)
        for r in recs:
            if r["method"] != meth or not (r.get("error") or r.get("fit_s") is None):
                continue
            if r.get("peak_rss_gb") is None:
                continue
            ax_m.plot([r["n"]], [r["peak_rss_gb"]], marker="X", ms=10, ls="none", color=color or "#d62728",
                      label=f"{meth}: no result")
            ax_m.annotate(f"{meth}: no result after {r['wall_s'] / 60:.0f} min,\n{r['peak_rss_gb']:g} GB",
                          (r["n"], r["peak_rss_gb"]), textcoords="offset points", xytext=(12, -10), fontsize=8,
                          color=color or "#d62728")
    if target_s:
        ax_t.axhline(target_s, ls=":", color="0.4", lw=1)
        ax_t.annotate(f"target: {target_s / 60:g} min", (ns[-1] * 2.1, target_s), textcoords="offset points",
                      xytext=(0, 4), ha="right", fontsize=7, color="0.3")
    if target_gb:
        ax_m.axhline(target_gb, ls=":", color="0.4", lw=1)
        ax_m.annotate(f"target: {target_gb:g} GB", (ns[-1] * 2.1, target_gb), textcoords="offset points",
                      xytext=(0, 4), ha="right", fontsize=7, color="0.3")
    for ax, ylabel, title in ((ax_t, "fit time (s, log)", "fit seconds"),
                              (ax_m, "peak RSS (GB = 2^30 bytes, log)", "peak RSS, whole process tree")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(ns[0] / 1.4, ns[-1] * 2.2)
        ax.xaxis.set_major_locator(FixedLocator(ns))
        ax.set_xticks(ns, [_rows_label(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training rows n (log)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(which="both", alpha=0.3)
    lo, hi = ax_m.get_ylim()
    ax_m.set_ylim(min(lo, 0.5), hi * 1.6)
    lo, hi = ax_t.get_ylim()
    ax_t.set_ylim(lo / 1.3, max(hi, (target_s or 0) * 1.3) * 1.3)
    handles = {}
    for ax in (ax_t, ax_m):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.035))
    title = "flights-3m scale curve"
    if meta.get("date"):
        title += f" ({meta['date']}"
        title += f"; {meta['machine']})" if meta.get("machine") else ")"
    fig.suptitle(title, fontsize=11)
    if meta.get("bigrfm_args"):
        fig.text(0.5, 0.005, f"bigrfm fit {meta['bigrfm_args']}", ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_throughput(records, out: str, *, dpi: int = 80, op: str = "gram") -> str:
    """Kernel entries/s of block function ``op`` (default gram: K^T(Kv)) against d, next to the GEMM rate.

    ``records``: what ``bench_kernel.py --json`` writes. One panel per (thread mode, dtype), one colour
    per number of centers m: measured entries/s (solid) and the GEMM-equivalent rate, i.e. the paired
    GEMM GFLOP/s over the gram flops per entry 2d + 4c (dashed). Log y; each point is labelled with the
    record's "fraction" (and "fraction_incl_xs" where it differs by 3 points or more).
    """
    if op != "gram":
        raise ValueError("the GEMM-equivalent line uses the gram flop count (2d + 4c per entry); op must be 'gram'")
    plt = _pyplot()
    from matplotlib.lines import Line2D

    recs, meta = _records(records)
    recs = [r for r in recs if r["op"] == op]
    if not recs:
        raise ValueError(f"no records with op == {op!r}")
    modes = list(dict.fromkeys(r["mode"] for r in recs))
    dtypes = list(dict.fromkeys(r["dtype"] for r in recs))
    ms = sorted({r["m"] for r in recs})
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    markers = ["o", "s", "^", "D"]
    fig, axes = plt.subplots(len(modes), len(dtypes), figsize=(5.2 * len(dtypes), 3.6 * len(modes) + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    for i, mode in enumerate(modes):
        for j, dt in enumerate(dtypes):
            ax = axes[i][j]
            cell = [r for r in recs if r["mode"] == mode and r["dtype"] == dt]
            for k, m in enumerate(ms):
                rs = sorted((r for r in cell if r["m"] == m), key=lambda r: r["d"])
                if not rs:
                    continue
                col, mk = colors[k % len(colors)], markers[k % len(markers)]
                d = [r["d"] for r in rs]
                gemm_eq = [r["gemm_gflops"] * 1e9 / (2 * r["d"] + 4 * r.get("outputs", 1)) for r in rs]
                ax.plot(d, [r["entries_per_s"] for r in rs], "-", marker=mk, ms=5, color=col)
                ax.plot(d, gemm_eq, "--", marker=mk, ms=3, color=col, alpha=0.8)
                for r in rs:  # stacked below the measured point (the GEMM line is above it)
                    lab = f"{r['fraction']:.0%}"
                    if abs(r["fraction_incl_xs"] - r["fraction"]) >= 0.03:
                        lab += f" ({r['fraction_incl_xs']:.0%})"
                    ax.annotate(lab, (r["d"], min(x["entries_per_s"] for x in cell if x["d"] == r["d"])),
                                textcoords="offset points", xytext=(0, -13 - 9 * k), ha="center", fontsize=7,
                                color=col)
            ax.set_xscale("log")
            ax.set_yscale("log")
            dims = sorted({r["d"] for r in cell})
            ax.set_xticks(dims, [str(x) for x in dims])
            ax.minorticks_off()
            ax.set_xlim(dims[0] / 1.6, dims[-1] * 1.6)
            ax.grid(which="major", alpha=0.3)
            ax.set_title(f"{cell[0]['threads'] if cell else mode}, {dt}", fontsize=9)
            if i == len(modes) - 1:
                ax.set_xlabel("feature dimension d (log)")
            if j == 0:
                ax.set_ylabel("kernel entries / s (log)")
    lo = min(r["entries_per_s"] for r in recs)
    hi = max(r["gemm_gflops"] * 1e9 / (2 * r["d"] + 4 * r.get("outputs", 1)) for r in recs)
    axes[0][0].set_ylim(lo / (3.0 if len(ms) > 1 else 2.2), hi * 1.8)
    handles = [Line2D([], [], color=colors[k % len(colors)], marker=markers[k % len(markers)], lw=2,
                      label=f"m = {m:,} centers") for k, m in enumerate(ms)]
    handles += [Line2D([], [], color="0.2", label="solid: measured K^T(Kv) block (gram), entries/s"),
                Line2D([], [], color="0.2", ls="--", label="dashed: GEMM-equivalent = paired GEMM GFLOP/s / (2d+4c) flops")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    b = recs[0].get("rows")
    c = recs[0].get("outputs", 1)
    title = f"Kernel pass K^T(Kv) throughput vs the GEMM rate in the same process (b = {b:,} rows, c = {c})" if b else \
        "Kernel pass K^T(Kv) throughput vs the GEMM rate in the same process"
    sub = "labels: fraction of GEMM for the flops 2bmd+4bmc (in parentheses: incl. the metric map X·S, 2bd²)"
    if meta.get("date"):
        sub += f"; run {meta['date']}"
    fig.suptitle(title + "\n" + sub, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Charts from benchmark JSON: accuracy (run.py), scale (bench_scale.py), "
                                            "kernel throughput (bench_kernel.py).")
    p.add_argument("json", nargs="*", help="files written by run.py --json (later files override earlier datasets)")
    p.add_argument("--scale", metavar="JSON", help="file written by bench_scale.py --json: fit s and peak RSS vs rows")
    p.add_argument("--throughput", metavar="JSON",
                   help="file written by bench_kernel.py --json: gram entries/s vs d next to the GEMM rate")
    p.add_argument("-o", "--out", default=None,
                   help="output PNG (default benchmarks/accuracy.png, scale.png or throughput.png; one chart only)")
    p.add_argument("--dpi", type=int, default=80)
    a = p.parse_args(argv)
    kinds = [k for k, v in (("accuracy", a.json), ("scale", a.scale), ("throughput", a.throughput)) if v]
    if not kinds:
        p.error("give run.py JSON files, --scale JSON or --throughput JSON")
    if a.out and len(kinds) > 1:
        p.error("-o names one output; draw one kind of chart at a time, or leave -o out")
    for kind in kinds:
        out = a.out or os.path.join(HERE, f"{kind}.png")
        if kind == "accuracy":
            out = plot_accuracy([_load(path) for path in a.json], out, dpi=a.dpi)
        elif kind == "scale":
            out = plot_scale(_load(a.scale), out, dpi=a.dpi)
        else:
            out = plot_throughput(_load(a.throughput), out, dpi=a.dpi)
        print(f"{out}: {os.path.getsize(out) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
