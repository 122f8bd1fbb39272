"""The GPU path's decisions that need no GPU: dtype and device resolution, sizing from device
memory, launch geometry, and models fitted for a GPU used on a CPU-only machine."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from bigrfm import RFMRegressor, load_model
from bigrfm.config import ExecConfig
from bigrfm.exceptions import InputError
from bigrfm.io.convert import create_dataset
from bigrfm.numerics import gpu
from bigrfm.numerics.backend import resolve_dtype
from bigrfm.numerics.cuda_kernels import ktu_split
from bigrfm_cli.main import cli


def test_auto_dtype_is_float32_on_a_gpu_and_float64_on_a_cpu(caplog):
    assert resolve_dtype("auto", "cuda") == "float32"
    assert resolve_dtype("auto", "cpu") == "float64"
    assert resolve_dtype("float32", "cpu") == "float32"
    with caplog.at_level(logging.WARNING, logger="bigrfm.backend"):
        assert resolve_dtype("float64", "cuda") == "float64"
    assert "skips the fused float32 kernels" in caplog.text
    # the estimators' default: float64 blocks on the CPU, as before
    assert RFMRegressor()._exec_config().dtype == "float64"


def test_gpu_blocks_are_sized_from_device_memory_not_from_cpu_cores():
    h200 = 140 * 2**30
    rows = gpu.gpu_block_rows(h200, 9, 4)
    assert rows == gpu.MAX_GPU_BLOCK_ROWS  # d = 9: the cap, millions of rows
    wide = gpu.gpu_block_rows(h200, 784, 4)
    assert gpu.MIN_GPU_BLOCK_ROWS <= wide < rows and wide * 784 * 4 * 4 <= gpu.BLOCK_FRACTION * h200 + 784 * 16
    assert gpu.gpu_block_rows(2**30, 784, 4) == gpu.MIN_GPU_BLOCK_ROWS  # a small card still gets full kernels
    assert gpu.gpu_block_rows(h200, 9, 4, n_rows=1000) == 1000
    # the engine's rule on top: at least two blocks per thread, whole stored chunks
    cfg = ExecConfig(dtype="float32")
    assert cfg.rows_per_block(9, None, 200_000, workers=2, device_rows=rows) == 50_000
    assert cfg.rows_per_block(9, 65_536, 2_850_000, workers=2, device_rows=rows) == 65_536 * 10
    # the CPU rule (16 MiB of features) would have given ~466k rows per block at d = 9
    assert cfg.rows_per_block(9, None, 10**8, workers=2) == 16 * 2**20 // 36


def test_gpu_tiles_and_resident_cache_take_a_fraction_of_device_memory():
    h200 = 140 * 2**30
    tile = gpu.gpu_tile_rows(h200, 8000, 4)
    assert tile > 20_000  # the CPU's 16 MiB tiles are ~500 rows at m = 8,000
    assert 3 * tile * 8000 * 4 <= gpu.TILE_FRACTION * h200 + 3 * 8000 * 4
    assert gpu.gpu_tile_rows(10**6, 8000, 4) == 1024
    assert gpu.gpu_cache_bytes(100 * 2**30) == int(gpu.CACHE_FRACTION * 100 * 2**30)


def test_fused_ktu_grid_stays_within_cudas_grid_limit():
    assert ktu_split(10_000) == 4096
    for b in (2.7e8, 1e9, 4e9):
        split = ktu_split(int(b))
        assert -(-int(b) // split) <= 65535


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory):
    """A model saved as if fitted on a GPU (device='cuda', float32), and a test store."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = X[:, 0] * X[:, 1]
    d = tmp_path_factory.mktemp("gpu")
    est = RFMRegressor(iters=1, random_state=0, dtype="float32").fit(X, y)
    est.set_params(device="cuda").save(d / "model")
    with create_dataset(d / "test.zarr", 4, dtype="float64") as w:
        w.append(X[:100], y[:100])
    return d, X, est


def test_a_gpu_fitted_model_predicts_and_evaluates_on_a_cpu_only_machine(gpu_model):
    d, X, est = gpu_model
    runner = CliRunner()
    r = runner.invoke(cli, ["evaluate", str(d / "model"), str(d / "test.zarr"), "--scheduler", "threads", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["predict", str(d / "model"), str(d / "test.zarr"), "--out", str(d / "p.zarr"),
                            "--scheduler", "threads"])
    assert r.exit_code == 0, r.output
    pred = zarr.open_group(str(d / "p.zarr"), mode="r")["y_pred"][:]
    on_cpu = load_model(d / "model", device="cpu")
    assert on_cpu.device == "cpu"
    # the CLI computed in the model's dtype (float32) on the CPU: the same numbers as Python
    np.testing.assert_allclose(pred, on_cpu.predict(X[:100]), rtol=1e-6, atol=1e-6)


def test_load_model_overrides_only_execution_settings(gpu_model):
    d, _, _ = gpu_model
    with pytest.raises(InputError, match="not execution settings"):
        load_model(d / "model", bandwidth=3.0)
    assert load_model(d / "model", dtype="float64", n_workers=1).dtype == "float64"
