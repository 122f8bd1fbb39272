"""Screen of the rules behind ``bandwidth="auto"`` / ``reg="auto"`` / ``patience`` on the KEEL sets.

Each variant is bigrfm with its defaults (no search, like run.py's ``defaults`` method), some estimator
parameters, and some constants of :mod:`bigrfm.model.scale` replaced for its fits (the candidate ratios,
the ridge candidates, the re-choice after the first iteration). All variants run in one process on the
same splits; the report compares them with the first one, set by set (run.py's defaults table).

    python benchmarks/scale_screen.py --variants fixed10,ratios-a,ratios-b --max-train 5000
    python benchmarks/scale_screen.py --list

benchmarks/ is not a package: this folder goes on sys.path.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib
import datetime as _dt
import json
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets  # noqa: E402
import peers  # noqa: E402
import tables  # noqa: E402
from common import machine_line  # noqa: E402
from suites import load, resolve_only  # noqa: E402

#: name -> (estimator parameters, constants of bigrfm.model.scale). Patience is off unless a variant sets it.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "fixed10": ({"bandwidth": 10.0, "reg": 1e-3, "patience": None}, {}),
    "ratios-a": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (0.5, 1.0, 2.0, 4.0)}),
    "ratios-b": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (1.0, 2.0, 4.0, 8.0)}),
    "ratios-c": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)}),
    "ratios-d": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (1.0, 2.0, 4.0)}),
    "keep": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (0.5, 1.0, 2.0, 4.0), "RECHOOSE": "keep"}),
    "narrow": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (0.5, 1.0, 2.0, 4.0), "RECHOOSE": "narrow"}),
    "reg-2": ({"bandwidth": "auto", "reg": "auto", "patience": None},
              {"RATIOS": (0.5, 1.0, 2.0, 4.0), "REGS": (1e-3, 1.0)}),
    "reg-3": ({"bandwidth": "auto", "reg": "auto", "patience": None},
              {"RATIOS": (0.5, 1.0, 2.0, 4.0), "REGS": (1e-3, 1e-1, 1.0)}),
    "fixed10-reg-2": ({"bandwidth": 10.0, "reg": "auto", "patience": None}, {"REGS": (1e-3, 1.0)}),
    "fixed10-reg-3": ({"bandwidth": 10.0, "reg": "auto", "patience": None}, {"REGS": (1e-3, 1e-1, 1.0)}),
    "mse": ({"bandwidth": "auto", "patience": None}, {"RATIOS": (0.5, 1.0, 2.0, 4.0), "SELECT": "mse"}),
    "reg-3-mse": ({"bandwidth": "auto", "reg": "auto", "patience": None},
                  {"RATIOS": (0.5, 1.0, 2.0, 4.0), "REGS": (1e-3, 1e-1, 1.0), "SELECT": "mse"}),
    "reg-4": ({"bandwidth": "auto", "reg": "auto", "patience": None},
              {"RATIOS": (0.5, 1.0, 2.0, 4.0), "REGS": (1e-4, 1e-2, 1.0)}),
    "reg-5": ({"bandwidth": "auto", "reg": "auto", "patience": None},
              {"RATIOS": (0.5, 1.0, 2.0, 4.0), "REGS": (1e-3, 1e-2, 1e-1, 1.0, 10.0)}),
    "reg-5-mse": ({"bandwidth": "auto", "reg": "auto", "patience": None},
                  {"RATIOS": (0.5, 1.0, 2.0, 4.0), "REGS": (1e-3, 1e-2, 1e-1, 1.0, 10.0), "SELECT": "mse"}),
}
R4 = (0.5, 1.0, 2.0, 4.0)
for _name, _ratios, _regs, _more in [
    ("fixed10-reg-3-mse", None, (1e-3, 1e-1, 1.0), {}),
    ("reg-3-mse-keep", R4, (1e-3, 1e-1, 1.0), {"RECHOOSE": "keep"}),
    ("reg-3-mse-narrow", R4, (1e-3, 1e-1, 1.0), {"RECHOOSE": "narrow"}),
    ("reg-3-mse-b", (1.0, 2.0, 4.0, 8.0), (1e-3, 1e-1, 1.0), {}),
    ("reg-3-mse-d", (1.0, 2.0, 4.0), (1e-3, 1e-1, 1.0), {}),
    ("reg-2-mse", R4, (1e-3, 1.0), {}),
    ("reg-3-loo", R4, (1e-3, 1e-1, 1.0), {"SELECT": "loo"}),
    ("mse-d", (1.0, 2.0, 4.0), None, {}),
    ("reg-3-mse-d-narrow", (1.0, 2.0, 4.0), (1e-3, 1e-1, 1.0), {"RECHOOSE": "narrow"}),
]:
    _consts = {"SELECT": "mse", **({"RATIOS": _ratios} if _ratios else {}), **({"REGS": _regs} if _regs else {}), **_more}
    VARIANTS[_name] = ({"bandwidth": "auto" if _ratios else 10.0, "reg": "auto" if _regs else 1e-3, "patience": None},
                       _consts)


#: The defaults (the constants of bigrfm.model.scale as they are) with patience 1, 2, 3 or none.
for _k in (None, 1, 2, 3):
    VARIANTS[f"auto-p{_k or 0}"] = ({"bandwidth": "auto", "reg": "auto", "patience": _k}, {})
VARIANTS["fixed10-p2"] = ({"bandwidth": 10.0, "reg": 1e-3, "patience": 2}, {})
for _name, _extra in [("diag", {"diag": True}), ("center", {"centering": True}), ("pow05", {"agop_power": 0.5})]:
    VARIANTS[f"auto-p2-{_name}"] = ({"bandwidth": "auto", "reg": "auto", "patience": 2, **_extra}, {})
VARIANTS["auto-p2-s2000"] = ({"bandwidth": "auto", "reg": "auto", "patience": 2}, {"SCREEN_ROWS": 2000})


@contextlib.contextmanager
def patched(consts: dict):
    """The constants of bigrfm.model.scale replaced inside the block."""
    from bigrfm.model import scale

    old = {k: getattr(scale, k) for k in consts}
    for k, v in consts.items():
        setattr(scale, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(scale, k, v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="fixed10,ratios-a", help="comma-separated names of VARIANTS; the first is the reference")
    p.add_argument("--only", default="keel", help="datasets (run.py's --only of the full suite)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-train", type=int, default=None, help="skip sets with more training rows")
    p.add_argument("--min-train", type=int, default=None, help="skip sets with fewer training rows")
    p.add_argument("--params", default="", help="JSON object of extra variants: {name: [params, constants]}")
    p.add_argument("--results", default="", help="markdown file the report is appended to ('' = none)")
    p.add_argument("--json", default="", help="records as JSON ('' = none)")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    args = p.parse_args(argv)
    variants = dict(VARIANTS)
    if args.params:
        variants.update({k: (v[0], v[1]) for k, v in json.loads(args.params).items()})
    if args.list:
        for k, (params, consts) in variants.items():
            print(f"{k:16} {params} {consts}")
        return 0
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = resolve_only("full", args.only)
    peers.warm_up(["defaults"])
    records, t0 = [], time.perf_counter()
    for ds in sets:
        for seed in seeds:
            d = load(ds, seed)
            if (args.max_train and len(d["y_train"]) > args.max_train) or len(d["y_train"]) < (args.min_train or 0):
                break
            info = {"dataset": ds, "seed": seed, "task": d["task"], "n_train": len(d["y_train"]),
                    "d": int(d["X_train"].shape[1])}
            for name in names:
                params, consts = variants[name]
                with patched(consts):
                    try:
                        rec = peers.run_defaults(d, seed, params, method=f"defaults+{name}")
                    except Exception as e:  # noqa: BLE001
                        rec = {"method": f"defaults+{name}", "error": f"{type(e).__name__}: {e}"}
                records.append({**info, **rec})
                msg = rec.get("error") or f"test {rec['test']:.4f} fit {rec['fit_s']:.2f}s [{rec['config']}, t={rec['best_iter']}]"
                print(f"{ds:<24} seed {seed} {name:<14} {msg}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    methods = [f"defaults+{n}" for n in names]
    head = (f"\n## scale_screen — {_dt.datetime.now():%Y-%m-%d %H:%M}\n\nCommand: `python benchmarks/scale_screen.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}` ({seconds:.0f} s)  \n" + machine_line()
            + "Variants (estimator parameters; constants of bigrfm.model.scale): "
            + "; ".join(f"{n}: {json.dumps(variants[n][0])} {json.dumps({k: v for k, v in variants[n][1].items()})}"
                        for n in names) + ".\n\n")
    text = head + tables.defaults_table(records, methods) + "\n"
    print(text)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"variants": {n: variants[n] for n in names}, "records": records}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
