"""Engine benchmarks: per-block overhead, read throughput, and peak memory versus n.

Run from the repository root::

    python benchmarks/bench_engine.py --rows 1000000      # ~1 minute
    python benchmarks/bench_engine.py                     # 10^7 rows (4 GB per store)

Writes two synthetic Zarr stores (float32, d=100, uncompressed and
blosc-lz4+shuffle) under benchmarks/_data/, prints a markdown table, appends
it to benchmarks/RESULTS.md with the command and machine, and deletes the
stores (unless --keep).

The page cache cannot be dropped without disturbing other users of the
machine, and the stores were just written, so the read numbers are warm-cache
numbers (memory bandwidth and decode cost, not disk).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from bigrfm.config import ExecConfig
from bigrfm.io.datasets import ArrayDataset
from bigrfm.io.zarr_store import open_dataset
from bigrfm.engine import Engine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import PeakRSS, machine_line, median_time  # noqa: E402
D = 100
CHUNK_ROWS = 32_768  # 12.5 MiB of float32 per chunk (DESIGN: 4-16 MiB)


# -- block functions ----------------------------------------------------------------------


def tiny(X, y):
    return 1


def colsum(X, y):
    return X.sum(axis=0, dtype=np.float64)


def gram(X, y):
    Xd = X.astype(np.float64)  # (b, d)
    return Xd.T @ Xd  # (d, d)


@dataclasses.dataclass(frozen=True)
class Head:
    """The first ``n`` rows of a dataset."""

    ds: object
    n: int

    @property
    def n_rows(self) -> int:
        return self.n

    @property
    def n_features(self) -> int:
        return self.ds.n_features

    @property
    def has_y(self) -> bool:
        return False

    def read(self, start, stop):
        return self.ds.read(start, stop)


# -- helpers -------------------------------------------------------------------------------


def write_stores(root: Path, rows: int) -> dict[str, Path]:
    """Same random float32 rows into an uncompressed and a blosc-lz4 store, chunk by chunk."""
    paths = {"none": root / "plain.zarr", "blosc-lz4": root / "lz4.zarr"}
    codecs = {"none": None, "blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")}
    arrays = {}
    for name, path in paths.items():
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        arrays[name] = g.create_array("X", shape=(rows, D), chunks=(CHUNK_ROWS, D), dtype="float32",
                                      compressors=codecs[name])
    rng = np.random.default_rng(0)
    for s in range(0, rows, CHUNK_ROWS):
        block = rng.random((min(CHUNK_ROWS, rows - s), D), dtype=np.float32)  # (b, D)
        for arr in arrays.values():
            arr[s:s + block.shape[0]] = block
    return paths


def chunk_files(path: Path) -> list[Path]:
    return sorted((path / "X" / "c").glob("*/0"), key=lambda p: int(p.parent.name))


def numpy_read(files: list[Path], as_float32: bool) -> None:
    """Read every chunk file into one reused buffer; sum it as float32 when uncompressed."""
    buf = bytearray(max(f.stat().st_size for f in files))
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            n = fh.readinto(buf)
        if as_float32:
            np.frombuffer(buf, dtype=np.float32, count=n // 4).reshape(-1, D).sum(axis=0, dtype=np.float64)


def dd_read(files: list[Path]) -> None:
    for f in files:
        subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=16M", "status=none"], check=True)


def local_config(**kw) -> ExecConfig:
    return ExecConfig(scheduler="local", n_workers=2, threads_per_worker=1, **kw)


# -- benchmarks ----------------------------------------------------------------------------


def bench_overhead(rows: list[list[str]]) -> None:
    ds = ArrayDataset(np.zeros((1000, 1), dtype=np.float32))
    for label, cfg in [("threads (2)", ExecConfig(n_workers=2)), ("LocalCluster (2 procs)", local_config())]:
        with Engine(cfg) as engine:
            engine.map_reduce(tiny, ds, block_rows=100)  # start the cluster, warm up
            t = median_time(lambda: engine.map_reduce(tiny, ds, block_rows=1), 3)
        rows.append(["overhead: 1,000 tiny blocks", label, "-", f"{t:.3f} s", f"{1e3 * t / 1000:.2f} ms/block"])


def bench_read(rows: list[list[str]], paths: dict[str, Path], n: int) -> None:
    logical_mb = n * D * 4 / 1e6
    engines = {"threads (2)": Engine(ExecConfig(n_workers=2)), "LocalCluster (2 procs)": Engine(local_config())}
    try:
        for codec, path in paths.items():
            ds = open_dataset(path)
            files = chunk_files(path)
            file_mb = sum(f.stat().st_size for f in files) / 1e6
            for label, engine in engines.items():
                engine.map_reduce(colsum, Head(ds, 2 * CHUNK_ROWS), block_rows=CHUNK_ROWS)  # warm up
                t = median_time(lambda: engine.map_reduce(colsum, ds, block_rows=CHUNK_ROWS), 1)
                rows.append([f"read: column sum, {codec}", label, f"{file_mb:,.0f} MB on disk",
                             f"{t:.2f} s", f"{logical_mb / t:,.0f} MB/s of X"])
            t = median_time(lambda: numpy_read(files, as_float32=codec == "none"), 1)
            how = "numpy readinto + column sum" if codec == "none" else "numpy readinto (raw bytes)"
            rows.append([f"read: chunk files, {codec}", f"{how}, 1 thread", f"{file_mb:,.0f} MB",
                         f"{t:.2f} s", f"{file_mb / t:,.0f} MB/s of files"])
            t = median_time(lambda: dd_read(files), 1)
            rows.append([f"read: chunk files, {codec}", f"dd bs=16M, {len(files)} processes", f"{file_mb:,.0f} MB",
                         f"{t:.2f} s", f"{file_mb / t:,.0f} MB/s of files"])
    finally:
        for engine in engines.values():
            engine.close()


def bench_memory(rows: list[list[str]], path: Path, sizes: list[int]) -> None:
    ds = open_dataset(path)
    peaks = []
    for n in sizes:
        with Engine(local_config()) as engine:
            engine.map_reduce(gram, Head(ds, 2 * CHUNK_ROWS), block_rows=CHUNK_ROWS)  # start, warm up
            with PeakRSS() as rss:
                t = median_time(lambda: engine.map_reduce(gram, Head(ds, n), block_rows=CHUNK_ROWS), 1)
        peaks.append(rss.peak)
        rows.append([f"peak RSS: XᵀX, n={n:,}", "LocalCluster (2 procs), client + workers",
                     f"{n * D * 4 / 1e6:,.0f} MB of X", f"{t:.2f} s", f"{rss.peak / 2**20:,.0f} MiB"])
    rows.append(["peak RSS ratio", f"n={sizes[-1]:,} / n={sizes[0]:,}", "-", "-", f"{peaks[-1] / peaks[0]:.2f}x"])


def table(rows: list[list[str]]) -> str:
    head = ["benchmark", "backend / reader", "size", "time", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the synthetic stores (d=100 float32)")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the generated stores")
    parser.add_argument("--note", default="", help="a sentence added to the report")
    args = parser.parse_args()

    root = args.data_dir / "bench_engine"
    root.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    started = time.perf_counter()
    try:
        bench_overhead(rows)
        t0 = time.perf_counter()
        paths = write_stores(root, args.rows)
        print(f"wrote two stores of {args.rows:,} x {D} float32 in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        bench_read(rows, paths, args.rows)
        bench_memory(rows, paths["none"], [args.rows // 10, args.rows])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    out = table(rows)
    print(out)
    report = (
        f"\n## bench_engine — {datetime.date.today().isoformat()}\n\n"
        f"Command: `python benchmarks/bench_engine.py {' '.join(sys.argv[1:])}` "
        f"({time.perf_counter() - started:.0f}s)  \n"
        + machine_line()
        + f"Stores: float32, d={D}, chunks of {CHUNK_ROWS:,} rows, written just before reading: "
        "warm page cache (cold cache could not be controlled).\n"
        + (f"{args.note}\n" if args.note else "")
        + "\n"
        f"{out}\n"
    )
    new = not args.results.exists() or args.results.stat().st_size == 0
    with open(args.results, "a", encoding="utf-8") as fh:
        if new:
            fh.write("# Benchmark results (appended by the scripts in benchmarks/)\n")
        fh.write(report)


if __name__ == "__main__":
    main()
