"""The per-process cache of prepared blocks and mapped rows: bounded, never stale, invisible in the results."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bigrfm import RFMRegressor
from bigrfm.config import ExecConfig
from bigrfm.engine import Engine
from bigrfm.io.datasets import ArrayDataset
from bigrfm.model.fit import FitSettings, fit_dataset
from bigrfm.model.rfm import RFMParams
from bigrfm.numerics.block_cache import BLOCKS, BlockCache
from bigrfm.numerics.kernels import LaplaceKernel


def block(rows: int, d: int = 4, value: float = 1.0) -> np.ndarray:
    return np.full((rows, d), value)  # rows * d * 8 bytes


def test_blocks_are_kept_within_the_budget_and_the_first_ones_stay():
    cache = BlockCache(budget=3 * 800)  # three blocks of 25 x 4 float64
    loads = []

    def loader(i):
        def load():
            loads.append(i)
            return block(25, value=i), None
        return load

    for _ in range(3):  # three passes over five blocks
        for i in range(5):
            X, _ = cache.block(("fit", i, i + 1), loader(i))
            assert X[0, 0] == i
    # blocks 0-2 were loaded once and then served from the cache; 3 and 4 on every pass
    assert loads == [0, 1, 2, 3, 4, 3, 4, 3, 4]
    assert cache.used == 3 * 800 and cache.hits == 6


def test_a_new_fit_replaces_the_blocks_of_an_earlier_one():
    cache = BlockCache(budget=2 * 800)
    for i in range(2):
        cache.block(("old", i, i + 1), lambda: (block(25), None))
    cache.block(("new", 0, 1), lambda: (block(25, value=7.0), None))
    assert ("new", 0, 1) in cache._blocks and cache.used == 2 * 800
    assert sum(k[0] == "old" for k in cache._blocks) == 1


def test_mapped_rows_are_kept_only_for_cached_blocks_and_only_for_their_metric():
    cache = BlockCache(budget=10_000)
    X, _ = cache.block(("fit", 0, 25), lambda: (block(25), None))
    calls = []

    def compute():
        calls.append(1)
        return X * 2.0

    a = cache.mapped(X, "M1", compute)
    b = cache.mapped(X, "M1", compute)
    assert a is b and len(calls) == 1
    cache.mapped(X, "M2", compute)  # another metric: computed again
    assert len(calls) == 2
    stray = block(25)  # not a cached block: never kept
    cache.mapped(stray, "M1", compute)
    cache.mapped(stray, "M1", compute)
    assert len(calls) == 4


def test_a_block_larger_than_the_budget_is_not_cached_and_a_zero_budget_disables_it():
    cache = BlockCache(budget=100)
    cache.block(("fit", 0, 25), lambda: (block(25), None))
    assert cache.used == 0 and not cache._blocks
    cache.set_budget(0)
    assert cache.used == 0


@pytest.mark.parametrize("solver", ["nystrom", "exact"])
def test_a_fit_with_the_cache_equals_a_fit_without_it_bit_for_bit(solver):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 5))
    y = X[:, 0] * X[:, 1] + 0.1 * rng.normal(size=900)
    kw = dict(solver=solver, n_centers=200 if solver == "nystrom" else None, iters=2, random_state=0, block_rows=128,
              dtype="float32", cg_maxiter=8, bandwidth=10.0, patience=None)
    BLOCKS.clear()
    hits = BLOCKS.hits
    cached = RFMRegressor(**kw).fit(X, y)
    assert BLOCKS.hits > hits  # later passes were served from the cache
    params = RFMParams(kernel=LaplaceKernel(10.0), iters=2)
    settings = FitSettings(solver=solver, n_centers=kw["n_centers"], cg_maxiter=8, seed=cached.random_state)
    config = ExecConfig(dtype="float32", block_rows=128, cache_bytes=0)
    with Engine(config) as engine:
        plain = fit_dataset(ArrayDataset(X, y.reshape(-1, 1)), params=params, settings=settings, config=config,
                            engine=engine).state
    np.testing.assert_array_equal(cached.M_, plain.best_M)
    np.testing.assert_array_equal(cached.dual_coef_, plain.best_predictor.alpha)
    assert [h["score"] for h in cached.history_] == [r.score for r in plain.history]
