"""scikit-learn's contract and input validation at the boundary."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from bigrfm import RFMClassifier, RFMRegressor
from bigrfm.exceptions import InputError

# Expected failures of scikit-learn's suite, with the reason.
EXPECTED_FAILED = {}


@parametrize_with_checks(
    [RFMRegressor(iters=1, random_state=0), RFMClassifier(iters=1, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    return X, X[:, 0] + 0.1 * rng.normal(size=40)


def test_nan_and_inf_name_the_rows(data):
    X, y = data
    X = X.copy()
    X[[3, 17], 1] = [np.nan, np.inf]
    with pytest.raises(InputError, match=r"Input X contains NaN or inf in 2 row\(s\): 3, 17"):
        RFMRegressor().fit(X, y)
    y2 = y.copy()
    y2[5] = np.nan
    with pytest.raises(InputError, match=r"Input y contains NaN or inf in 1 row\(s\): 5"):
        RFMRegressor().fit(data[0], y2)


def test_shape_errors(data):
    X, y = data
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        RFMRegressor().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        RFMRegressor().fit(X, y[:-1])
    model = RFMRegressor(iters=0).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but RFMRegressor is expecting 3 features"):
        model.predict(X[:, :2])


def test_single_class(data):
    X, _ = data
    with pytest.raises(ValueError, match="single class"):
        RFMClassifier().fit(X, np.zeros(len(X), dtype=int))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"kernel": "cosine"}, "The 'kernel' parameter of RFMRegressor must be a str among"),
        ({"solver": "magic"}, "The 'solver' parameter of RFMRegressor must be a str among"),
        ({"bandwidth": -1.0}, r"The 'bandwidth' parameter of RFMRegressor must be a float in the range \(0.0, inf\)"),
        ({"reg": 0.0}, r"The 'reg' parameter of RFMRegressor must be a float in the range \(0.0, inf\)"),
    ],
)
def test_bad_hyper_parameters(data, params, message):
    with pytest.raises(InvalidParameterError, match=message):
        RFMRegressor(**params).fit(*data)


def test_validation_arrays_must_come_in_pairs(data):
    X, y = data
    with pytest.raises(InputError, match="Pass both X_val and y_val"):
        RFMRegressor().fit(X, y, X_val=X)


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    model = RFMRegressor(iters=1, random_state=0).fit(df, df["a"] * 2)
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert model.feature_importances_.shape == (3,)


def test_diag_metric_shape(data):
    model = RFMRegressor(iters=1, diag=True, random_state=0).fit(*data)
    assert model.M_.shape == (3,)


def test_import_needs_no_gpu_and_no_cluster():
    import subprocess
    import sys

    code = (
        "import sys; from bigrfm import RFMRegressor, RFMClassifier; RFMRegressor().get_params(); "
        "assert 'cupy' not in sys.modules and 'distributed' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
