"""bigrfm.report and ``bigrfm features``: ranking, eigen-decomposition identities, the command and its plot."""

import copy
import json
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bigrfm import RFMRegressor, load_model
from bigrfm.exceptions import InputError
from bigrfm.report import feature_report, plot_metric
from bigrfm_cli.main import cli

NAMES = ["signal_a", "signal_b", "noise_0", "noise_1", "noise_2", "noise_3"]


@pytest.fixture(scope="module")
def fitted():
    """y = x0 * x1: only the first two features matter."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, len(NAMES))), columns=NAMES)
    y = X["signal_a"] * X["signal_b"]
    return RFMRegressor(iters=3, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def model_dir(fitted, tmp_path_factory):
    return str(fitted.save(tmp_path_factory.mktemp("model") / "model"))


def test_ranking_is_argsort_of_the_diagonal(fitted):
    rep = feature_report(fitted, top=None)
    diag = np.diag(fitted.M_)
    assert [f["index"] for f in rep["features"]] == list(np.argsort(-diag, kind="stable"))
    assert {f["name"] for f in rep["features"][:2]} == {"signal_a", "signal_b"}
    for f in rep["features"]:
        assert f["diag"] == diag[f["index"]]
        assert f["importance"] == pytest.approx(fitted.feature_importances_[f["index"]])
        assert f["name"] == NAMES[f["index"]]
    assert [f["rank"] for f in rep["features"]] == list(range(1, len(NAMES) + 1))
    assert len(feature_report(fitted, top=3)["features"]) == 3
    assert rep["trace"] == pytest.approx(diag.sum())
    assert rep["best_iter"] == fitted.best_iter_ and rep["metric"] == "full"


def test_eigenvector_loadings_reconstruct_M(fitted):
    d = len(NAMES)
    rep = feature_report(fitted, n_eigen=d, n_loadings=d)
    M = np.zeros((d, d))
    for e in rep["eigenvectors"]:
        v = np.zeros(d)
        for ld in e["loadings"]:
            v[ld["index"]] = ld["value"]
        assert np.linalg.norm(v) == pytest.approx(1.0)
        M += e["eigenvalue"] * np.outer(v, v)
    np.testing.assert_allclose(M, fitted.M_, atol=1e-10)
    lam = [e["eigenvalue"] for e in rep["eigenvectors"]]
    assert lam == sorted(lam, reverse=True)
    assert sum(e["fraction"] for e in rep["eigenvectors"]) == pytest.approx(1.0)


def test_default_report_keeps_five_directions_of_five_loadings(fitted):
    rep = feature_report(fitted)
    assert len(rep["eigenvectors"]) == 5
    assert all(len(e["loadings"]) <= 5 for e in rep["eigenvectors"])
    # the dominant direction lives in the span of the two signal features
    top = rep["eigenvectors"][0]["loadings"]
    assert {ld["name"] for ld in top[:2]} == {"signal_a", "signal_b"}
    assert max(abs(ld["value"]) for ld in top) == max(ld["value"] for ld in top)  # sign convention


def test_diagonal_metric_has_the_axes_as_eigenvectors(fitted):
    est = copy.copy(fitted)
    est.M_ = np.diag(fitted.M_).copy()
    rep = feature_report(est)
    assert rep["metric"] == "diagonal"
    order = np.argsort(-est.M_, kind="stable")
    for e, i in zip(rep["eigenvectors"], order):
        assert e["loadings"] == [{"name": NAMES[i], "index": int(i), "value": 1.0}]
        assert e["eigenvalue"] == est.M_[i]


def test_names_default_to_x_i(fitted):
    est = copy.copy(fitted)
    del est.feature_names_in_
    assert [f["name"] for f in feature_report(est, top=None)["features"]] == [
        f"x{f['index']}" for f in feature_report(fitted, top=None)["features"]
    ]


def test_bad_top_is_an_input_error(fitted):
    with pytest.raises(InputError, match="top must be an integer >= 1"):
        feature_report(fitted, top=0)


def test_cli_prints_ranked_names_and_eigenvectors(model_dir):
    res = CliRunner().invoke(cli, ["features", model_dir, "--top", "3"])
    assert res.exit_code == 0, res.output
    assert "Features ranked by diag(M)" in res.output and "Top eigenvectors of M" in res.output
    ranked = res.output.split("Features ranked by diag(M)")[1].split("Top eigenvectors")[0]
    lines = [ln for ln in ranked.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 3
    assert {lines[0].split()[1], lines[1].split()[1]} == {"signal_a", "signal_b"}


def test_cli_json_matches_the_library(model_dir):
    res = CliRunner().invoke(cli, ["features", model_dir, "--json", "--top", "4"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == json.loads(json.dumps(feature_report(load_model(model_dir), top=4)))


def test_cli_plot_writes_a_png(model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "M.png"
    res = CliRunner().invoke(cli, ["features", model_dir, "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote the heatmap of M to {png}" in res.output


def test_plot_many_features_and_top(fitted, tmp_path):
    pytest.importorskip("matplotlib")
    est = copy.copy(fitted)
    rng = np.random.default_rng(1)
    A = rng.normal(size=(60, 60))
    est.M_ = A @ A.T / 60
    del est.feature_names_in_
    assert plot_metric(est, tmp_path / "big.png").stat().st_size > 0
    assert plot_metric(est, tmp_path / "top.png", top=10).stat().st_size > 0


def test_missing_matplotlib_is_one_clear_error(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    png = tmp_path / "M.png"
    res = CliRunner().invoke(cli, ["features", model_dir, "--plot", str(png)])
    assert res.exit_code == 2
    assert "Error: matplotlib is needed for --plot: pip install 'bigrfm[plot]'" in res.output
    assert "Features ranked" not in res.output and not png.exists()
