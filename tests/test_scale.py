"""bandwidth="auto", reg="auto" and patience: the choice is the validation argmax over the candidates,
fixed values give the code before them bit for bit, the loop stops after `patience` non-improving
iterations keeping the best, and the new state survives a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigrfm import RFMClassifier, RFMRegressor
from bigrfm.io.datasets import ArrayDataset
from bigrfm.model import scale
from bigrfm.model.checkpoint import load_checkpoint, save_checkpoint
from bigrfm.model.rfm import IterationRecord
from bigrfm.numerics.kernels import LaplaceKernel
from bigrfm.numerics.linalg import kernel_matrix
from bigrfm.solvers.exact import solve_exact

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before these defaults (main with the ecosystem and reliability work merged): fixed values
#: must reproduce it.
BEFORE = "a25ed6b"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(420, 6)) * [1.0, 2.0, 0.5, 1.0, 3.0, 1.0]
    y = np.sin(X[:, 0] * X[:, 1]) + 0.3 * X[:, 2] + 0.1 * rng.normal(size=420)
    return X[:300], y[:300], X[300:360], y[300:360], X[360:], y[360:]


def test_median_distance_is_the_median_of_the_positive_pairwise_distances():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    X[10] = X[11]  # a duplicate pair is left out
    M = np.diag([1.0, 0.25, 0.0])
    d = np.sqrt(np.einsum("ijk,kl,ijl->ij", X[:, None] - X[None], M, X[:, None] - X[None]))
    upper = d[np.triu_indices(50, k=1)]
    assert scale.median_distance(M, X) == pytest.approx(np.median(upper[upper > 0]), rel=1e-6)  # one GEMM: |x|^2 + |z|^2 - 2x.z
    assert scale.median_distance(np.zeros((3, 3)), X) == 1.0  # no positive distance: scale 1


@pytest.mark.parametrize("auto_reg", [False, True])
def test_choice_is_the_validation_argmax_over_the_candidates(auto_reg):
    rng = np.random.default_rng(2)
    X, Xv = rng.normal(size=(200, 4)), rng.normal(size=(80, 4))
    f = lambda A: np.stack([A[:, 0] * A[:, 1], np.cos(A[:, 2])], axis=1)  # noqa: E731
    Y, Yv = f(X) + 0.1 * rng.normal(size=(200, 2)), f(Xv)
    A = rng.normal(size=(4, 4))
    M = A @ A.T / np.abs(A @ A.T).max()
    screen = scale.ScreenRows(X, Y, Xv, Yv, X[:150], all_rows=True)
    choice = scale.choose_scale(LaplaceKernel(1.0), 1e-3, M, screen, auto_bandwidth=True, auto_reg=auto_reg,
                                classification=False)
    med = scale.median_distance(M, X[:150])
    regs = scale.REGS if auto_reg else (1e-3,)
    # brute force: every candidate fitted on its own by the exact solver and scored on the validation rows
    brute = []
    for r in scale.RATIOS:
        for reg in regs:
            alpha = solve_exact(LaplaceKernel(r * med), M, X, Y, reg)
            pred = kernel_matrix(LaplaceKernel(r * med), M, Xv, X) @ alpha
            brute.append((r * med, reg, -np.mean((pred - Yv) ** 2)))
    got = choice.record["candidates"]
    assert len(got) == len(brute)
    for (L, reg, s), (L0, reg0, s0) in zip(got, brute):
        assert L == pytest.approx(L0, rel=1e-12) and reg == reg0 and s == pytest.approx(s0, rel=1e-9)
    best = max(range(len(brute)), key=lambda i: brute[i][2])
    assert choice.kernel.bandwidth == pytest.approx(brute[best][0], rel=1e-12) and choice.reg == brute[best][1]
    assert choice.record["ratio"] == pytest.approx(brute[best][0] / med)
    # the exact solver's screen is the fit: the winner's coefficients, nothing refitted
    np.testing.assert_array_equal(choice.predictor.alpha, solve_exact(choice.kernel, M, X, Y, choice.reg))


def test_estimator_records_the_choice_of_every_iteration(data):
    X, y, Xv, yv, _, _ = data
    model = RFMRegressor(bandwidth="auto", reg="auto", iters=2, patience=None, random_state=0).fit(X, y, Xv, yv)
    previous = None
    for h in model.history_:
        cands, med = h["scale"]["candidates"], h["scale"]["median"]
        if previous is None:  # t = 0: every ratio with every ridge
            expect = [(r * med, reg) for r in scale.RATIOS for reg in scale.REGS]
        else:  # later: around the previous ratio, with the previous ridge
            expect = [(f * previous["scale"]["ratio"] * med, previous["reg"]) for f in scale.NARROW]
        assert [c[0] for c in cands] == pytest.approx([e[0] for e in expect], rel=1e-12)
        assert [c[1] for c in cands] == [e[1] for e in expect]
        best = max(cands, key=lambda c: c[2])
        assert (h["bandwidth"], h["reg"]) == (best[0], best[1])
        assert h["bandwidth"] / med == pytest.approx(h["scale"]["ratio"])
        previous = h
    # iteration 0 is the plain kernel on standardized rows (M = I): its median distance, computed by hand
    Xs = (X - X.mean(0)) / X.std(0)
    d = np.sqrt(((Xs[:, None] - Xs[None]) ** 2).sum(-1))[np.triu_indices(len(X), k=1)]
    assert model.history_[0]["scale"]["median"] == pytest.approx(np.median(d), rel=1e-9)
    # the candidate's score at t = 0 is the score of a fit with that bandwidth fixed
    L, reg, s = model.history_[0]["scale"]["candidates"][1]
    fixed = RFMRegressor(bandwidth=L, reg=reg, iters=0, random_state=0).fit(X, y, Xv, yv)
    assert fixed.history_[0]["score"] == pytest.approx(s, rel=1e-9)
    assert model.bandwidth_ == model.history_[model.best_iter_]["bandwidth"]
    assert model.reg_ == model.history_[model.best_iter_]["reg"]


def test_without_validation_rows_the_default_ratio_is_used(data):
    X, y = data[0], data[1]
    model = RFMRegressor(iters=1, validation_fraction=0, random_state=0).fit(X, y)
    for h in model.history_:
        assert h["scale"]["candidates"] == [] and h["scale"]["ratio"] == scale.DEFAULT_RATIO
        assert h["reg"] == 1e-3


def _before_code(tmp_path: Path) -> Path | None:
    """The bigrfm package as of :data:`BEFORE`, exported from git (None where the history is not at hand)."""
    try:
        subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"], check=True,
                       capture_output=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "bigrfm"], check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    tmp_path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    return tmp_path


FIT_SCRIPT = """
import sys, numpy as np
from bigrfm import RFMClassifier, RFMRegressor
d = np.load(sys.argv[1])
kw = dict(random_state=3, iters=3, block_rows=64)
if len(sys.argv) > 3:
    kw.update(bandwidth=10.0, reg=1e-3, patience=None)  # the new code, today's values made explicit
r = RFMRegressor(**kw).fit(d["X"], d["y"])
c = RFMClassifier(**kw).fit(d["X"], d["c"])
np.savez(sys.argv[2], r=r.predict(d["T"]), rM=r.M_, c=c.decision_function(d["T"]), cM=c.M_,
         rs=[h["score"] for h in r.history_], cs=[h["score"] for h in c.history_])
"""


def test_fixed_bandwidth_without_patience_reproduces_the_code_before_bit_for_bit(tmp_path, data):
    old = _before_code(tmp_path / "before")
    if old is None:
        pytest.skip(f"commit {BEFORE} is not in this checkout's history")
    X, y, _, _, T, _ = data
    np.savez(tmp_path / "d.npz", X=X, y=y, c=(y > np.median(y)).astype(int), T=T)
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT)
    env_old = {**os.environ, "PYTHONPATH": str(old)}
    env_new = {**os.environ, "PYTHONPATH": str(ROOT)}
    for env, out, extra in ((env_old, "old.npz", []), (env_new, "new.npz", ["explicit"])):
        subprocess.run([sys.executable, str(script), str(tmp_path / "d.npz"), str(tmp_path / out), *extra], check=True,
                       env=env, cwd=tmp_path)
    a, b = np.load(tmp_path / "old.npz"), np.load(tmp_path / "new.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_patience_stops_after_k_non_improving_iterations_and_keeps_the_best():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(360, 8))
    y = X[:, 0] + 0.5 * rng.normal(size=360)  # nearly linear and noisy: later iterations stop helping early
    kw = dict(bandwidth=10.0, iters=8, random_state=0, validation_fraction=0.25)
    full = RFMRegressor(patience=None, **kw).fit(X, y)
    scores = [h["score"] for h in full.history_]
    for k in (1, 2):
        best, stop_at = 0, None
        for t in range(1, len(scores)):
            best = t if scores[t] > scores[best] else best
            if t - best >= k:
                stop_at = t
                break
        assert stop_at is not None and stop_at < kw["iters"], "the data must stop the loop early"
        model = RFMRegressor(patience=k, **kw).fit(X, y)
        hist = model.history_
        assert len(hist) == stop_at + 1
        assert hist[-1]["stop"] == "patience" and all(h["stop"] is None for h in hist[:-1])
        assert [h["score"] for h in hist] == scores[: stop_at + 1]  # the same iterations, bit for bit
        assert model.best_iter_ == int(np.argmax(scores[: stop_at + 1])) == best
        np.testing.assert_array_equal(model.predict(X[:20]), RFMRegressor(patience=None, **{**kw, "iters": best}).fit(X, y).predict(X[:20]))
        # the last iteration takes no AGOP pass
        assert hist[-1]["passes"] == 0
    assert full.history_[-1]["stop"] == "iters"


def test_classifier_defaults_choose_bandwidth_and_stop(data):
    X, y = data[0], (data[1] > 0).astype(int)
    clf = RFMClassifier(random_state=0).fit(X, y)
    assert clf.get_params()["bandwidth"] == "auto" and clf.get_params()["patience"] == 2
    assert all(h["scale"]["candidates"] for h in clf.history_)
    assert clf.score(X, y) > 0.8


def test_checkpoint_round_trip_of_the_stop_and_the_scale_records(tmp_path, data):
    X, y, Xv, yv, _, _ = data
    states = []
    est = RFMRegressor(iters=4, patience=1, reg="auto", random_state=0)
    est._fit_data(ArrayDataset(X, y), ArrayDataset(Xv, yv), classification=False, on_iteration=states.append)
    fp = {"what": "test"}
    for i, st in enumerate((states[0], states[-1])):
        save_checkpoint(st, tmp_path / f"ck{i}", fp)
        back = load_checkpoint(tmp_path / f"ck{i}", fp)
        assert back.stop == st.stop and back.t == st.t and back.best_iter == st.best_iter
        assert back.history == st.history  # bandwidth, reg, the scale records and the stop, exactly
        assert isinstance(back.history[0], IterationRecord) and back.history[0].scale["candidates"]
        np.testing.assert_array_equal(back.M, st.M)
        assert back.best_predictor.kernel == st.best_predictor.kernel
    assert states[-1].stop in ("patience", "iters") and states[0].stop is None
    # a fit resumed from the checkpoint of iteration 0 reaches the uninterrupted fit's model
    resumed = RFMRegressor(iters=4, patience=1, reg="auto", random_state=0)
    resumed._fit_data(ArrayDataset(X, y), ArrayDataset(Xv, yv), classification=False,
                      state=load_checkpoint(tmp_path / "ck0", fp))
    assert resumed.best_iter_ == est.best_iter_ and resumed.bandwidth_ == est.bandwidth_
    np.testing.assert_array_equal(resumed.dual_coef_, est.dual_coef_)
    np.testing.assert_array_equal(resumed.M_, est.M_)
    # a stopped state resumes to itself: no further iteration
    done = RFMRegressor(iters=4, patience=1, reg="auto", random_state=0)
    done._fit_data(ArrayDataset(X, y), ArrayDataset(Xv, yv), classification=False,
                   state=load_checkpoint(tmp_path / "ck1", fp))
    assert len(done.history_) == len(est.history_)


@pytest.mark.parametrize("solver", [{"solver": "nystrom", "n_centers": 120}, {"solver": "rff", "n_components": 256}])
def test_approximate_solvers_choose_the_ridge_again_on_all_rows_in_shared_passes(data, solver):
    """After the subsample screen, iteration 0 of a Nystrom or RFF fit solves the screen's ridge and the others
    of REGS from the same passes (smaller ones first after it) and keeps the best on validation; later
    iterations keep it."""
    X, y, Xv, yv, _, _ = data
    model = RFMRegressor(**solver, iters=2, patience=None, random_state=0).fit(X, y, Xv, yv)
    h0 = model.history_[0]
    screened = max(h0["scale"]["candidates"], key=lambda c: c[2])[1]
    cands = h0["solver"]["reg_candidates"]
    assert [r for r, _ in cands] == scale.ridges_at_full_scale(screened, len(scale.REGS))
    assert sorted(r for r, _ in cands) == sorted(scale.REGS)
    assert h0["reg"] == min(cands, key=lambda c: c[1])[0]
    for h in model.history_[1:]:
        assert h["reg"] == h0["reg"] and "reg_candidates" not in h["solver"]
        assert [c[1] for c in h["scale"]["candidates"]] == [h0["reg"]] * len(scale.NARROW)
    # a fixed ridge is not chosen again
    fixed = RFMRegressor(**solver, iters=0, reg=0.1, random_state=0).fit(X, y, Xv, yv)
    assert "reg_candidates" not in fixed.history_[0]["solver"] and fixed.history_[0]["reg"] == 0.1


def test_ridges_at_full_scale_order_and_count():
    assert scale.ridges_at_full_scale(1.0, 3) == [1.0, 1e-1, 1e-3]
    assert scale.ridges_at_full_scale(1e-1, 3) == [1e-1, 1e-3, 1.0]
    assert scale.ridges_at_full_scale(1e-3, 2) == [1e-3, 1e-1]
    assert scale.ridges_at_full_scale(1.0, 0) == [1.0]
