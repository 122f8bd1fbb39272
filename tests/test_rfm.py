"""The whole RFM loop against an independent dense reference of the paper's algorithm."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from bigrfm import RFMClassifier, RFMRegressor


def laplace(X, Z, M, L):
    d2 = np.einsum("id,de,ie->i", X, M, X)[:, None] + np.einsum("jd,de,je->j", Z, M, Z)[None] - 2 * X @ M @ Z.T
    return np.exp(-np.sqrt(np.maximum(d2, 0)) / L)


def reference_rfm(X, y, X_test, L, reg, T):
    """The paper's loop, dense: T AGOP updates, then a final fit (no validation selection)."""
    Y = ((y - y.mean()) / y.std())[:, None]
    M = np.eye(X.shape[1])
    Ms = []
    for _ in range(T + 1):
        alpha = np.linalg.solve(laplace(X, X, M, L) + reg * np.eye(len(X)), Y)
        Ms.append(M)
        diff = X[:, None, :] - X[None, :, :]  # (n, n, d): exact zeros on the diagonal
        r = np.sqrt(np.maximum(np.einsum("ijd,de,ije->ij", diff, M, diff), 0))
        W = np.where(r > 0, -np.exp(-r / L) / (L * np.where(r > 0, r, 1)), 0.0)
        G = np.einsum("ij,jc,ijd->icd", W, alpha, diff) @ M  # (n, c, d) gradients
        agop = np.einsum("icd,ice->de", G, G) / len(X)
        M = agop / agop.max()
    pred = laplace(X_test, X, Ms[-1], L) @ alpha
    return Ms, pred[:, 0] * y.std() + y.mean()


@pytest.mark.parametrize("T", [1, 2])
def test_matches_dense_reference(T):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6))
    y = X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + 0.05 * rng.normal(size=150)
    X_test = rng.normal(size=(40, 6))
    Ms, ref_pred = reference_rfm(X, y, X_test, L=3.0, reg=1e-2, T=T)
    model = RFMRegressor(
        bandwidth=3.0, reg=1e-2, iters=T, solver="exact", validation_fraction=0, standardize=False, block_rows=37
    ).fit(X, y)
    assert model.best_iter_ == T
    np.testing.assert_allclose(model.M_, Ms[-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.predict(X_test), ref_pred, rtol=1e-5, atol=1e-6)
    assert len(model.history_) == T + 1


def test_feature_learning_finds_the_relevant_subspace():
    rng = np.random.default_rng(1)
    d = 20
    X = rng.normal(size=(1400, d))
    y = X[:, 0] * X[:, 1] + 0.05 * rng.normal(size=len(X))
    X_tr, X_val, X_te = X[:1000], X[1000:1200], X[1200:]
    y_tr, y_val, y_te = y[:1000], y[1000:1200], y[1200:]
    errors = []
    for t in (0, 3):
        m = RFMRegressor(iters=t, validation_fraction=0, solver="exact", random_state=0).fit(X_tr, y_tr)
        errors.append(np.mean((m.predict(X_te) - y_te) ** 2))
    model = RFMRegressor(iters=3, solver="exact", random_state=0).fit(X_tr, y_tr, X_val, y_val)
    evals, evecs = np.linalg.eigh(model.M_)
    top2 = evecs[:, -2:]
    projection = np.linalg.norm(top2[:2, :], axis=0)  # weight of coordinates 0, 1 in each eigenvector
    assert np.all(projection >= 0.9), projection
    assert model.best_iter_ > 0
    best_err = np.mean((model.predict(X_te) - y_te) ** 2)
    assert best_err < errors[0] and errors[1] < 0.5 * errors[0], (errors, best_err)
    imp = model.feature_importances_
    assert imp.sum() == pytest.approx(1.0) and set(np.argsort(imp)[-2:]) == {0, 1}


def test_digits_accuracy():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    clf = RFMClassifier(iters=3, random_state=0).fit(X_tr, y_tr)
    acc = clf.score(X_te, y_te)
    assert acc >= 0.98, acc
    proba = clf.predict_proba(X_te)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_string_labels_and_binary():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "yes", "no")
    clf = RFMClassifier(iters=1, random_state=0).fit(X, y)
    assert list(clf.classes_) == ["no", "yes"]
    assert clf.predict(X).dtype.kind == "U"
    assert clf.score(X, y) > 0.9


def test_validation_selection_keeps_best_iteration():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 5))
    y = X[:, 0] * X[:, 1]
    model = RFMRegressor(iters=3, random_state=0, validation_fraction=0.2).fit(X, y)
    scores = [h["score"] for h in model.history_]
    assert model.best_iter_ == int(np.argmax(scores))
    assert all(h["seconds"] >= 0 for h in model.history_)
