"""What ``patience`` would save: the rule applied after the fact to fits that ran every iteration.

Reads the records of a ``run.py`` JSON (``--json``) whose defaults method ran with ``patience=None``
(``--variant fixed:...,patience=None``) and, for each fit, finds where a patience of k would have
ended the loop from its recorded validation scores. Prints the share of the iteration seconds that
would have been saved and how often the best iteration came after that stop.

    python benchmarks/patience_posthoc.py benchmarks/_data/run-full.json --method defaults+fixed --k 2
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np


def stop_index(scores: list, k: int) -> int:
    """The last iteration a patience of ``k`` runs (NaN and missing scores rank lowest)."""
    best, best_t = -math.inf, 0
    for t, s in enumerate(scores):
        s = -math.inf if s is None or not math.isfinite(s) else s
        if t == 0 or s > best:
            best, best_t = s, t
        elif t - best_t >= k:
            return t
    return len(scores) - 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--method", default="defaults+fixed")
    p.add_argument("--k", type=int, default=2)
    args = p.parse_args(argv)
    saved, late = [], 0
    for r in json.load(open(args.json))["records"]:
        if r.get("method") != args.method or "val_scores" not in r:
            continue
        stop = stop_index(r["val_scores"], args.k)
        secs = r["iter_seconds"]
        saved.append(sum(secs[stop + 1 :]) / sum(secs))
        late += r["best_iter"] > stop
    if not saved:
        raise SystemExit(f"no records of {args.method!r} with validation scores in {args.json}")
    print(f"{len(saved)} fits of {args.method}: patience {args.k} saves a median {np.median(saved):.0%} "
          f"(mean {np.mean(saved):.0%}) of the iteration seconds; best iteration after the stop in {late}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
