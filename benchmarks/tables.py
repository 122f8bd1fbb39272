"""The report of an accuracy run: medians over seeds per (dataset, method), the score and seconds tables,
the KEEL block with bigrfm's wins / ties / losses, and the whole markdown text with its heading.
Reads records and a run's ``meta`` only: runs nothing, prints nothing, writes no file (run.py does).
"""

from __future__ import annotations

import json

import numpy as np

import search
from common import machine_line
from suites import LARGE_GRID, is_defaults, label

#: Two scores closer than this are a tie in wins / ties / losses.
TIE = 1e-9


def _median(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.median(vals)) if vals else None


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """{dataset: {method: {test, fit_s, predict_s, search_s, n, errors, configs}}}: medians over seeds."""
    out: dict[str, dict[str, dict]] = {}
    for r in records:
        out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    summ: dict[str, dict[str, dict]] = {}
    for ds, by in out.items():
        summ[ds] = {}
        for m, rs in by.items():
            ok = [r for r in rs if "error" not in r]
            summ[ds][m] = {
                "test": _median([r["test"] for r in ok]),
                "fit_s": _median([r["fit_s"] for r in ok]),
                "predict_s": _median([r["predict_s"] for r in ok]),
                "search_s": _median([r.get("search_s") for r in ok]),
                "n": len(ok),
                "errors": [r["error"] for r in rs if "error" in r],
                "configs": [f"{r['config']} t={r['best_iter']}" for r in ok if "config" in r],
            }
    return summ


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def score_table(records: list[dict], methods: list[str]) -> str:
    """Per dataset: rows × features, the metric, each method's median test score ("skipped" when it has
    no record, "error" when every seed failed) and, with ``rfm``, its configuration per seed."""
    summ = summarize(records)
    head = ["dataset", "n_train × d", "metric"] + [label(m) for m in methods]
    if "rfm" in methods:
        head.append("RFM config per seed (t = selected iteration)")
    rows = []
    for ds in summ:
        inf = next(r for r in records if r["dataset"] == ds)
        metric = "accuracy ↑" if inf["task"] == "classification" else "RMSE ↓"
        row = [ds, f"{inf['n_train']:,} × {inf['d']}", metric]
        for m in methods:
            s = summ[ds].get(m)
            if s is None:
                row.append("skipped")
            elif s["test"] is None:
                row.append("error")
            else:
                row.append(_fmt(s["test"], ".4f") + ("" if not s["errors"] else f" ({len(s['errors'])} err)"))
        if "rfm" in methods:
            row.append("; ".join(summ[ds].get("rfm", {}).get("configs", [])))
        rows.append(row)
    return _markdown(head, rows)


def time_table(records: list[dict], methods: list[str]) -> str:
    """Per dataset: bigrfm's whole-search seconds, then each method's median fit and predict seconds."""
    summ = summarize(records)
    bigrfm = "rfm" in methods or "kernel" in methods
    head = ["dataset"] + (["bigrfm search s (whole grid)"] if bigrfm else [])
    for m in methods:
        head += [f"{label(m)} fit s", f"{label(m)} predict s"]
    rows = []
    for ds in summ:
        row = [ds]
        if bigrfm:
            s = summ[ds].get("rfm") or summ[ds].get("kernel") or {}
            row.append(_fmt(s.get("search_s"), ".2f"))
        for m in methods:
            s = summ[ds].get(m) or {}
            row += [_fmt(s.get("fit_s"), ".2f"), _fmt(s.get("predict_s"), ".3f")]
        rows.append(row)
    return _markdown(head, rows)


def wtl(a: list[float], b: list[float]) -> tuple[int, int, int]:
    """Wins, ties, losses of the scores ``a`` against ``b``, pair by pair (tie: within :data:`TIE`)."""
    w = sum(x > y + TIE for x, y in zip(a, b))
    l = sum(y > x + TIE for x, y in zip(a, b))
    return w, len(a) - w - l, l


def keel_table(records: list[dict], methods: list[str]) -> str:
    """Mean over KEEL sets of the median-over-seeds test accuracy, and wins/ties/losses
    (per set, tie = |difference| <= 1e-9) of bigrfm RFM against each method; only sets
    where every listed method has a result are counted. When a method lacks some sets,
    the sets are named and a second table covers all sets without that method."""
    summ = {ds: v for ds, v in summarize(records).items() if ds.startswith("keel-")}
    have = [m for m in methods if any(m in v for v in summ.values())]
    main = _keel_block(summ, have)
    missing = {m: [ds for ds, v in summ.items() if v.get(m, {}).get("test") is None] for m in have}
    missing = {m: v for m, v in missing.items() if v}
    if not missing or not main:
        return main
    notes = ["", "", "Sets without a result: " + "; ".join(
        f"{label(m)}: {', '.join(ds.removeprefix('keel-') for ds in v)}" for m, v in missing.items()) + "."]
    rest = [m for m in have if m not in missing]
    full = _keel_block(summ, rest) if rest else ""
    return main + "\n".join(notes) + ("\n\nWithout " + ", ".join(label(m) for m in missing) + ":\n\n" + full if full else "")


def _keel_block(summ: dict, have: list[str]) -> str:
    sets = [ds for ds, v in summ.items() if all(v.get(m, {}).get("test") is not None for m in have)]
    if not sets:
        return ""
    acc = {m: [summ[ds][m]["test"] for ds in sets] for m in have}
    lines = [f"KEEL: {len(sets)} sets, accuracy = median over seeds per set, then mean over sets.", "",
             "| method | mean test accuracy | bigrfm RFM wins / ties / losses against it | mean fit s | mean predict s |",
             "|---|---|---|---|---|"]
    for m in have:
        vs = "—" if m == "rfm" or "rfm" not in acc else "{} / {} / {}".format(*wtl(acc["rfm"], acc[m]))
        fit = np.mean([summ[ds][m]["fit_s"] for ds in sets])
        pred = np.mean([summ[ds][m]["predict_s"] for ds in sets])
        lines.append(f"| {label(m)} | {np.mean(acc[m]):.4f} | {vs} | {fit:.2f} | {pred:.3f} |")
    if "rfm" in have:
        srch = np.mean([summ[ds]["rfm"]["search_s"] for ds in sets])
        lines.append(f"| (bigrfm whole grid search) | | | {srch:.2f} | |")
    if "xrfm" in acc and "hgb" in acc:
        lines += ["", "xRFM against HistGB (as in the anchor of /work/shared/BENCHMARKS.md): wins / ties / losses "
                  "{} / {} / {}.".format(*wtl(acc["xrfm"], acc["hgb"]))]
    return "\n".join(lines)


#: A set whose accuracy a defaults variant lowers by more than this (0.5 point) is named in the comparison.
NOTABLE_DROP = 0.005


def _per_set(records: list[dict], key: str) -> dict[tuple[str, str], float]:
    """{(dataset, method): median over seeds of ``key``} for the records that have it."""
    vals: dict[tuple[str, str], list] = {}
    for r in records:
        if r.get(key) is not None and "error" not in r:
            vals.setdefault((r["dataset"], r["method"]), []).append(r[key])
    return {k: float(np.median(v)) for k, v in vals.items()}


def defaults_table(records: list[dict], methods: list[str]) -> str:
    """bigrfm's ``defaults`` methods (no search) against the first one listed, the reference.

    KEEL block (sets where every defaults method has a result): mean over sets of the median-over-seeds
    test accuracy, its change against the reference, the sets better / equal / worse, the sets worse by more
    than :data:`NOTABLE_DROP` with their change, the median over sets of the fit-time ratio (a set's median
    fit seconds over the reference's), and the mean number of iterations run. Then one row per dataset: each
    method's test score and fit seconds, the variants' with their change and time ratio, and the selected
    iteration / iterations run."""
    dm = [m for m in methods if is_defaults(m)]
    if not dm:
        return ""
    summ = summarize(records)
    ref = dm[0]
    ran, best = _per_set(records, "iters_run"), _per_set(records, "best_iter")
    sets = [ds for ds, v in summ.items() if all(v.get(m, {}).get("test") is not None for m in dm)]
    keel = [ds for ds in sets if ds.startswith("keel-")]
    parts = []
    if keel:
        lines = [f"bigrfm defaults, KEEL: {len(keel)} sets, accuracy = median over seeds per set, then mean over sets; "
                 f"changes and time ratios against {label(ref)}.", "",
                 "| method | mean test accuracy | change | sets better / equal / worse | worse by > 0.5 point "
                 "| median fit-time ratio | fit s, all sets | mean iterations run |", "|---|---|---|---|---|---|---|---|"]
        acc_ref = np.array([summ[ds][ref]["test"] for ds in keel])
        for m in dm:
            acc = np.array([summ[ds][m]["test"] for ds in keel])
            diff = acc - acc_ref
            drops = sorted(((d, ds) for d, ds in zip(diff, keel) if d < -NOTABLE_DROP))
            ratio = np.median([summ[ds][m]["fit_s"] / max(summ[ds][ref]["fit_s"], 1e-9) for ds in keel])
            fit_total = sum(summ[ds][m]["fit_s"] for ds in keel)
            iters = np.mean([ran.get((ds, m), np.nan) for ds in keel])
            wtl_ = "—" if m == ref else "{} / {} / {}".format(*wtl(list(acc), list(acc_ref)))
            drop_text = "—" if m == ref else (", ".join(f"{ds.removeprefix('keel-')} {d * 100:+.1f}" for d, ds in drops) or "none")
            lines.append(f"| {label(m)} | {acc.mean():.4f} | {'—' if m == ref else f'{diff.mean() * 100:+.2f} points'} "
                         f"| {wtl_} | {drop_text} | {ratio:.2f} | {fit_total:.1f} | {iters:.2f} |")
        parts.append("\n".join(lines))
    head = ["dataset", "n_train × d", "metric", f"{label(ref)}", "fit s", "t / ran"]
    for m in dm[1:]:
        head += [label(m), "fit s (ratio)", "t / ran"]
    rows = []
    for ds in sets:
        inf = next(r for r in records if r["dataset"] == ds)
        up = inf["task"] == "classification"
        r0 = summ[ds][ref]
        row = [ds, f"{inf['n_train']:,} × {inf['d']}", "accuracy ↑" if up else "RMSE ↓", f"{r0['test']:.4f}",
               f"{r0['fit_s']:.2f}", f"{best.get((ds, ref), np.nan):.0f} / {ran.get((ds, ref), np.nan):.0f}"]
        for m in dm[1:]:
            s = summ[ds][m]
            delta = s["test"] - r0["test"]
            row += [f"{s['test']:.4f} ({delta * (100 if up else 1):+.{1 if up else 4}f})",
                    f"{s['fit_s']:.2f} ({s['fit_s'] / max(r0['fit_s'], 1e-9):.2f}×)",
                    f"{best.get((ds, m), np.nan):.0f} / {ran.get((ds, m), np.nan):.0f}"]
        rows.append(row)
    parts.append("Per dataset (medians over seeds; accuracy changes in points, RMSE changes in target units; "
                 "t = selected iteration, ran = iterations fitted):\n\n" + _markdown(head, rows))
    return "\n\n".join(parts)


def report(records: list[dict], methods: list[str], meta: dict, *, suite: str, only: str | None, iters: int,
           argv: list[str]) -> str:
    """The markdown section of a run: heading, command, machine (``meta["machine"]``, a
    :func:`common.machine_facts` dict, through :func:`common.machine_line`), the protocol, ``meta``'s notes,
    the score and seconds tables, the KEEL block when there are KEEL sets, and the errors."""
    mach = meta["machine"]
    grid = meta["grid"]
    searched = any(m in ("rfm", "kernel") for m in methods)
    dparams = meta.get("defaults_params") or {}
    # "loadavg" sits beside "machine" in meta (records written before machine_facts had none inside)
    machine = machine_line({**mach, "loadavg": meta.get("loadavg")}).removesuffix("\n")
    parts = [
        f"## run.py --suite {suite}{' --only ' + only if only else ''} — {meta['date']}",
        "",
        f"Command: `{mach['executable']} benchmarks/run.py {' '.join(argv)}` "
        f"(total {meta['seconds']:.0f} s)  ",
        machine,
        f"Seeds {meta['seeds']}; medians over seeds. "
        + ("bigrfm defaults, no search: `RFMClassifier/RFMRegressor(random_state=seed, **params).fit(X_tr, y_tr, "
           "X_val, y_val)` with params " + "; ".join(f"{label(m)}: {json.dumps(p)}" for m, p in dparams.items())
           + ". " if dparams else "")
        + (f"bigrfm: iters={iters}, grid "
        f"{json.dumps({k: v for k, v in grid.items()})} chosen on the validation split (accuracy, ties by val MSE; "
        f"regression: val MSE); solver exact up to {search.EXACT_MAX_ROWS:,} training rows, else nystrom with grid "
        f"{json.dumps(meta.get('large_grid', LARGE_GRID))}"
        + "".join(f" ({n}: {json.dumps(g)})" for n, g in meta.get("large_grids", {}).items())
        + ". Kernel = the grid point whose iteration 0 scored best on validation, refitted with iters=0. "
        "xRFM: `xRFM(device=\"cpu\", random_state=seed)` on standardized X. HistGB: max_iter=500, raw X. "
        "Fit s = one fit of the chosen configuration (the search over the grid is the separate column)."
           if searched else "xRFM: `xRFM(device=\"cpu\", random_state=seed)` on standardized X. HistGB: max_iter=500, raw X."),
    ]
    if meta.get("notes"):
        parts += ["", *meta["notes"]]
    parts += ["", "Test score (median over seeds):", "", score_table(records, methods), "",
              "Seconds (median over seeds):", "", time_table(records, methods)]
    others = [m for m in methods if not is_defaults(m)]
    kt = keel_table(records, others) if others else ""
    if kt:
        parts += ["", kt]
    dt = defaults_table(records, methods)
    if dt:
        parts += ["", dt]
    errs = [r for r in records if "error" in r]
    if errs:
        parts += ["", "Errors:", ""] + [f"- {r['dataset']} seed {r['seed']} {r['method']}: {r['error']}" for r in errs]
    return "\n".join(parts) + "\n"
