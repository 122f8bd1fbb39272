"""Engine: every backend reduces a pass over a real Zarr store to what numpy computes in memory.

Backends: threads, an in-process LocalCluster, and a real cluster of
``dask scheduler`` + ``dask worker`` subprocesses (one of which is SIGKILLed
mid-pass in one test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from bigrfm.config import ExecConfig
from bigrfm.io.datasets import ArrayDataset, row_blocks
from bigrfm.io.zarr_store import open_dataset
from bigrfm.engine import Engine, add_tree
from bigrfm.exceptions import ClusterError, DataError, InputError

from conftest import _free_port
from closeness import assert_close

N, D = 10_007, 5


# -- block functions (module level: workers import them from this file) ------------------


def colsum(X, y):
    return X.sum(axis=0, dtype=np.float64)


def gram(X, y):
    return X.T.astype(np.float64) @ X


def gram_and_ysum(X, y, *, scale):
    return {"G": scale * (X.T @ X), "ysum": float(y.sum()), "n": X.shape[0]}


def starts(X, y, *, block_range):
    return [block_range[0]]


def concat(a, b):
    return a + b  # list concatenation: not commutative


def even_blocks_only(X, y, start, stop):
    """A prepare that skips odd blocks (by start row) and doubles X."""
    if (start // 1000) % 2:
        return None
    return 2 * X, y


def skip_all(X, y, start, stop):
    return None


def fails_on_block_three(X, y, *, block_range):
    if block_range[0] == 3000:
        raise DataError(f"X has NaN in rows [{block_range[0]}, {block_range[1]}); drop them.")
    return 1


def fails_with_value_error(X, y):
    raise ValueError("not a bigrfm error")


def slow_gram(X, y):
    time.sleep(0.2)
    return X.T @ X, X.shape[0]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    y = rng.standard_normal(N)
    path = tmp_path_factory.mktemp("engine") / "data.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("X", shape=X.shape, chunks=(1000, D), dtype="float64")[:] = X
    g.create_array("y", shape=y.shape, chunks=(1000,), dtype="float64")[:] = y
    return open_dataset(path), X, y


@pytest.fixture(params=["threads", "local", "remote"])
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("block_rows", [1000, 777, N])
def test_column_sum_and_gram_equal_numpy(engine, store, block_rows):
    ds, X, _ = store
    # sums in another order: compared on the scale of their terms (a column sum may cancel to ~0)
    assert_close(engine.map_reduce(colsum, ds, block_rows=block_rows), X.sum(axis=0), 1e-12, scale=np.abs(X).sum(axis=0).max())
    assert_close(engine.map_reduce(gram, ds, block_rows=block_rows), X.T @ X, 1e-12)


def test_backends_are_bit_identical(engine, threads_engine, store):
    ds = store[0]
    ref = threads_engine.map_reduce(gram, ds, block_rows=777)
    assert np.array_equal(engine.map_reduce(gram, ds, block_rows=777), ref)


def test_broadcast_prepare_and_dict_results(engine, store):
    ds, X, y = store
    out = engine.map_reduce(gram_and_ysum, ds, broadcast={"scale": 0.5}, prepare=even_blocks_only, block_rows=1000)
    keep = np.concatenate([np.arange(s, e) for s, e in row_blocks(N, 1000) if (s // 1000) % 2 == 0])
    Xk = 2 * X[keep]
    assert_close(out["G"], 0.5 * Xk.T @ Xk, 1e-12)
    assert_close(out["ysum"], y[keep].sum(), 1e-12, scale=np.abs(y[keep]).sum())
    assert out["n"] == keep.size


def test_all_blocks_skipped_gives_none(engine, store):
    assert engine.map_reduce(colsum, store[0], prepare=skip_all, block_rows=2500) is None


def test_reduction_is_in_block_order_with_range(engine, store):
    blocks = row_blocks(N, 333)
    out = engine.map_reduce(starts, store[0], reduce=concat, block_rows=333, with_range=True)
    assert out == [s for s, _ in blocks]


def test_progress_reports_every_block(engine, store):
    calls = []
    engine.map_reduce(colsum, store[0], block_rows=2000, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5, 6]
    assert all(c[1] == 6 for c in calls)
    assert calls[-1][2] == N


def test_remote_exception_keeps_type_and_message(engine, store):
    with pytest.raises(DataError) as info:
        engine.map_reduce(fails_on_block_three, store[0], block_rows=1000, with_range=True)
    assert type(info.value) is DataError
    assert str(info.value) == "X has NaN in rows [3000, 4000); drop them."
    with pytest.raises(ValueError, match="not a bigrfm error"):
        engine.map_reduce(fails_with_value_error, store[0], block_rows=5000)
    # the engine is still usable after a failed pass
    assert engine.map_reduce(colsum, store[0], block_rows=5000).shape == (D,)


def _scheduler_task_count(engine) -> int:
    return engine._client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


@pytest.mark.parametrize("name", ["local", "remote"])
def test_passes_release_their_tasks_and_scattered_data(name, request, store):
    engine = request.getfixturevalue(f"{name}_engine")
    engine.map_reduce(gram_and_ysum, store[0], broadcast={"scale": np.ones((D, D))}, block_rows=1000)
    with pytest.raises(DataError):
        engine.map_reduce(fails_on_block_three, store[0], block_rows=100, with_range=True)
    deadline = time.monotonic() + 10
    while _scheduler_task_count(engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _scheduler_task_count(engine) == 0


def test_default_blocks_follow_stored_chunks(store):
    ds = store[0]  # chunks of 1000 rows
    with Engine(ExecConfig(n_workers=2, block_bytes=1500 * D * 8)) as engine:
        out = engine.map_reduce(starts, ds, reduce=concat, with_range=True)
    assert out[0] == 0 and len(out) > 1
    assert all(s % 1000 == 0 for s in out)


def _worker_environ():
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_")}


def test_local_workers_get_one_blas_thread_and_block_sized_malloc(local_engine):
    for env in local_engine._client.run(_worker_environ).values():
        assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
        assert int(env["MALLOC_MMAP_THRESHOLD_"]) >= 4 * local_engine.config.block_bytes


def test_in_memory_dataset_and_small_window(store):
    _, X, _ = store
    with Engine(ExecConfig(n_workers=3, max_in_flight=1)) as engine:
        assert engine.kind == "threads" and engine.n_workers == 3
        out = engine.map_reduce(starts, ArrayDataset(X), reduce=concat, block_rows=100, with_range=True)
    assert out == list(range(0, N, 100))


def test_worker_killed_mid_pass_gives_identical_result(remote_cluster, store):
    ds, X, _ = store
    with Engine(ExecConfig(n_workers=2)) as engine:
        expected = engine.map_reduce(slow_gram, ds, block_rows=334)  # 30 blocks
    some_done = threading.Event()
    result: dict = {}
    dones: list[int] = []

    def progress(done, total, rows):
        dones.append(done)
        if done >= 4:
            some_done.set()

    def run():
        with Engine(ExecConfig(scheduler=remote_cluster.address, retries=1)) as engine:
            try:
                result["value"] = engine.map_reduce(slow_gram, ds, block_rows=334, progress=progress)
            except BaseException as exc:  # reported below
                result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert some_done.wait(60)
    victim = remote_cluster.workers.pop(0)
    os.kill(victim.pid, signal.SIGKILL)
    done_at_kill = dones[-1]
    thread.join(120)
    victim.wait()
    assert "error" not in result, result.get("error")
    assert done_at_kill < 20  # the worker died mid-pass
    G, n = result["value"]
    assert n == N
    assert np.array_equal(G, expected[0])
    assert_close(G, X.T @ X, 1e-12)
    remote_cluster.workers.append(remote_cluster.start_worker())  # restore for later tests
    remote_cluster.wait_for(2)


def test_remote_engine_reports_workers_and_kind(remote_engine, local_engine):
    assert remote_engine.kind == "remote" and remote_engine.n_workers == 2
    assert local_engine.kind == "local" and local_engine.n_workers == 2


def test_unreachable_scheduler_is_a_cluster_error():
    address = f"tcp://127.0.0.1:{_free_port()}"
    with Engine(ExecConfig(scheduler=address), connect_timeout=1.0) as engine:
        with pytest.raises(ClusterError, match=address.replace(".", r"\.")):
            engine.map_reduce(colsum, ArrayDataset(np.ones((4, 2))))


def test_bad_scheduler_string_is_an_input_error():
    with pytest.raises(InputError, match="scheduler"):
        Engine(ExecConfig(scheduler="my-cluster"))


def test_engine_starts_nothing_until_used():
    engine = Engine(ExecConfig(scheduler="local"))
    assert engine._client is None and engine._cluster is None
    engine.close()


def test_add_tree():
    a = {"x": (1, np.ones(2)), "y": [2.0]}
    out = add_tree(add_tree(a, None), a)
    assert out["x"][0] == 2 and np.array_equal(out["x"][1], [2, 2]) and out["y"] == [4.0]
    assert add_tree(None, None) is None
    with pytest.raises(ValueError, match="keys"):
        add_tree({"a": 1}, {"b": 1})


def test_threads_backend_does_not_import_distributed():
    code = (
        "import sys, numpy as np\n"
        "from bigrfm.engine import Engine\n"
        "from bigrfm.io.datasets import ArrayDataset\n"
        "out = Engine().map_reduce(lambda X, y: X.sum(axis=0), ArrayDataset(np.ones((10, 2))), block_rows=3)\n"
        "assert out.tolist() == [10.0, 10.0], out\n"
        "bad = [m for m in ('distributed', 'dask') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _keys_seen(prefix, dask_scheduler=None):
    """Keys starting with ``prefix`` the scheduler has held or transitioned (its task table and log)."""
    keys = {k for k in dask_scheduler.tasks if isinstance(k, str) and k.startswith(prefix)}
    keys |= {t[0] for t in dask_scheduler.transition_log if isinstance(t[0], str) and t[0].startswith(prefix)}
    return sorted(keys)


def test_in_memory_data_goes_to_the_workers_once_per_engine(local_engine):
    ds = ArrayDataset(np.arange(3000.0).reshape(1000, 3))
    before = set(local_engine._client.run_on_scheduler(_keys_seen, "ArrayDataset-"))
    for _ in range(3):
        np.testing.assert_array_equal(local_engine.map_reduce(colsum, ds, block_rows=100), ds.X.sum(axis=0))
    new = set(local_engine._client.run_on_scheduler(_keys_seen, "ArrayDataset-")) - before
    assert len(new) == 1, new


def test_an_estimator_fit_on_a_cluster_sends_its_arrays_once(local_engine):
    """However many passes (here 3 iterations of CG and AGOP passes), the training rows and the
    prepared validation rows each reach the workers once."""
    from bigrfm import RFMRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4))
    before = set(local_engine._client.run_on_scheduler(_keys_seen, "ArrayDataset-"))
    RFMRegressor(iters=2, solver="nystrom", n_centers=60, random_state=0, scheduler=local_engine.address).fit(X, X[:, 0])
    new = set(local_engine._client.run_on_scheduler(_keys_seen, "ArrayDataset-")) - before
    assert len(new) == 2, new


def test_a_local_cluster_leaves_this_process_environment_as_it_was(tmp_path):
    """distributed's Nanny writes the workers' pre-spawn variables (one BLAS thread, malloc
    thresholds, the log level) into the parent's os.environ; every later subprocess would
    inherit them (a test suite's too). The engine puts them back, at start and at close."""
    before = dict(os.environ)
    with Engine(ExecConfig(scheduler="local", n_workers=1, block_rows=4, worker_log_level="critical")) as engine:
        out = engine.map_reduce(colsum, ArrayDataset(np.ones((10, 2))))
        assert dict(os.environ) == before
    np.testing.assert_array_equal(out, [10.0, 10.0])
    assert dict(os.environ) == before
