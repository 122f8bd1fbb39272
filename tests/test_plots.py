"""benchmarks/plots.py charts from the committed results and from a tiny bench_kernel run.

The scale and kernel-throughput charts are drawn from benchmarks/results/*.json
(numbers transcribed from benchmarks/RESULTS.md) and from the JSON a tiny
bench_kernel.py run writes to tmp_path (b=256 rows, m=16/32, 64³ GEMMs: well
under a second), so the JSON the scripts write keeps feeding the plots. Skipped
without matplotlib (the optional extra ``plot``). Nothing is written outside tmp_path.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)
import plots  # noqa: E402

SCALE_JSON = os.path.join(BENCH, "results", "scale-2026-11-27.json")
KERNEL_JSON = os.path.join(BENCH, "results", "kernel-2026-11-27.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG_MAGIC and os.path.getsize(path) > 1000


def test_committed_results_hold_the_schema():
    scale, kernel = _load(SCALE_JSON), _load(KERNEL_JSON)
    for obj, section in ((scale, "## flights-3m scale (2026-11-27)"), (kernel, "## bench_kernel — 2026-11-27")):
        assert section in obj["source"] and "RESULTS.md" in obj["source"] and "python benchmarks/" in obj["source"]
    base = {"method", "n", "fit_s", "wall_s", "peak_rss_gb", "rmse"}
    assert all(base <= set(r) for r in scale["records"])
    assert {r["method"] for r in scale["records"]} == {"bigrfm", "HistGradientBoosting", "xRFM (CPU)"}
    xrfm = [r for r in scale["records"] if r["method"] == "xRFM (CPU)"]
    assert len(xrfm) == 1 and xrfm[0]["fit_s"] is None and xrfm[0]["peak_rss_gb"] == 17.5 and xrfm[0]["error"]
    assert len(kernel["records"]) == 96  # 2 thread modes x 2 dtypes x 4 d x 2 m x 3 block functions
    assert sum(r["op"] == "gram" for r in kernel["records"]) == 32


def test_plot_scale_from_committed_json(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "scale.png"
    assert plots.plot_scale(_load(SCALE_JSON), str(out)) == str(out)
    assert _is_png(out)
    out2 = tmp_path / "scale-records.png"  # a bare list of records works too
    plots.plot_scale(_load(SCALE_JSON)["records"], str(out2), target_s=None, target_gb=None)
    assert _is_png(out2)


def test_plot_throughput_from_committed_json(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "throughput.png"
    assert plots.plot_throughput(_load(KERNEL_JSON), str(out)) == str(out)
    assert _is_png(out)


def test_cli_kinds(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "s.png"
    assert plots.main(["--scale", SCALE_JSON, "-o", str(out)]) == 0
    assert _is_png(out)
    # the accuracy chart keeps its positional usage
    run = {"meta": {}, "records": [{"dataset": "digits", "task": "classification", "method": m, "test": t}
                                   for m, t in (("rfm", 0.98), ("hgb", 0.97))]}
    rj = tmp_path / "run.json"
    rj.write_text(json.dumps(run))
    acc = tmp_path / "acc.png"
    assert plots.main([str(rj), "-o", str(acc)]) == 0
    assert _is_png(acc)
    with pytest.raises(SystemExit):
        plots.main(["--scale", SCALE_JSON, "--throughput", KERNEL_JSON, "-o", str(out)])  # -o: one chart only
    with pytest.raises(SystemExit):
        plots.main([])


def test_bench_scale_records_match_the_committed_schema(tmp_path):
    pytest.importorskip("psutil")
    import bench_scale

    rows = [("bigrfm", 200_000, {"fit_s": 1.0, "wall_s": 2.0, "peak_rss": 2**30, "rmse": 29.0, "best_iter": 2,
                                 "cg_iters": [8, 8, 8]}),
            ("HistGradientBoosting", 200_000, {"fit_s": 1.0, "wall_s": 2.0, "peak_rss": 2**29, "rmse": 27.0}),
            ("xRFM (CPU)", 200_000, {"error": "killed", "wall_s": 60.0, "peak_rss": 3 * 2**30})]
    path = tmp_path / "scale.json"
    bench_scale.write_json(str(path), {"date": "today"}, rows)
    got = _load(path)["records"]
    committed = {r["method"]: set(r) for r in _load(SCALE_JSON)["records"]}
    assert [set(r) for r in got] == [committed[r["method"]] for r in got]
    assert got[0]["peak_rss_gb"] == 1.0 and got[2]["fit_s"] is None and got[2]["peak_rss_gb"] == 3.0
    if _has_matplotlib():
        plots.plot_scale(_load(path), str(tmp_path / "s.png"))
        assert _is_png(tmp_path / "s.png")


def test_tiny_bench_kernel_json_feeds_the_plot(tmp_path):
    pytest.importorskip("threadpoolctl")
    import bench_kernel

    path, results = tmp_path / "kernel.json", tmp_path / "RESULTS.md"
    bench_kernel.main(["--dims", "9,32", "--centers", "16,32", "--rows", "256", "--repeats", "1", "--modes", "1,2",
                       "--dtypes", "float32", "--ops", "gram", "--gemm-n", "64", "--pair-n", "64",
                       "--results", str(results), "--no-append", "--json", str(path)])
    assert not results.exists()  # --no-append still appends nothing
    data = _load(path)
    assert len(data["records"]) == 8
    committed = _load(KERNEL_JSON)
    assert [set(r) for r in data["records"]] == [set(committed["records"][0])] * 8
    assert set(data["meta"]) == set(committed["meta"])
    assert {(s["mode"], s["dtype"]) for s in data["meta"]["gemm_sections"]} == {("1", "float32"), ("2", "float32")}
    if _has_matplotlib():
        out = tmp_path / "throughput.png"
        plots.plot_throughput(data, str(out))
        assert _is_png(out)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
