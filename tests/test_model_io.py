"""Model folders: bit-for-bit round trips, validation on load, atomic writes."""

import json

import numpy as np
import pytest

from bigrfm import RFMClassifier, RFMRegressor, load_model
from bigrfm.exceptions import InputError, ModelFormatError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    return X, X[:, 0] * X[:, 1] + 0.1 * rng.normal(size=200)


@pytest.mark.parametrize("solver", ["exact", "nystrom", "rff"])
def test_regressor_round_trip_is_bit_for_bit(tmp_path, data, solver):
    X, y = data
    model = RFMRegressor(iters=2, solver=solver, n_centers=50, n_components=256, random_state=0).fit(X, y)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is RFMRegressor and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.M_, model.M_)
    assert loaded.best_iter_ == model.best_iter_ and loaded.history_ == json.loads(json.dumps(model.history_))


def test_classifier_with_string_labels_round_trip(tmp_path, data):
    X, y = data
    labels = np.where(y > 0, "pos", "neg")
    model = RFMClassifier(iters=1, diag=True, random_state=0).fit(X, labels)
    model.save(tmp_path / "c")
    loaded = load_model(tmp_path / "c")
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_refuses_to_overwrite_and_leaves_no_partial_folder(tmp_path, data):
    model = RFMRegressor(iters=0).fit(*data)
    model.save(tmp_path / "m")
    with pytest.raises(InputError, match="already exists"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_load_validates(tmp_path, data):
    with pytest.raises(ModelFormatError, match="no model.json"):
        load_model(tmp_path)
    model = RFMRegressor(iters=0).fit(*data)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="format version 99"):
        load_model(tmp_path / "m")


def test_no_pickle_in_model_folder(tmp_path, data):
    RFMRegressor(iters=0).fit(*data).save(tmp_path / "m")
    for f in (tmp_path / "m").rglob("*"):
        if f.is_file():
            assert not f.read_bytes().startswith(b"\x80"), f  # pickle protocol header
