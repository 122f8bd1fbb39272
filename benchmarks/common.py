"""Helpers shared by the benchmark scripts: timing, peak memory, the BLAS line, report appending.

benchmarks/ is not a package: scripts do ``sys.path.insert(0, <this folder>); import common``.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Callable

import psutil


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn``."""
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def tree_rss(pid: int | None = None) -> int:
    """Summed RSS of a process (default: this one) and all its descendants, in bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:  # the process just exited
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakRSS:
    """Peak of :func:`tree_rss` of ``pid`` (default: this process) while the context is open."""

    def __init__(self, interval: float = 0.05, pid: int | None = None) -> None:
        self.interval, self.pid, self.peak = interval, pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = tree_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


def blas_line() -> str:
    """The BLAS libraries threadpoolctl sees: name, version, architecture, threading layer, threads."""
    from threadpoolctl import threadpool_info

    info = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('threading_layer')}, "
            f"{i.get('num_threads')} threads by default)" for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(info) or "unknown"


def machine_line() -> str:
    """The report's "Machine:" line (markdown, ends with a hard line break): uname, cores, Python,
    numpy, :func:`blas_line`, load average now."""
    import os
    import platform
    import subprocess

    import numpy as np

    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Machine: `{uname}`, nproc={os.cpu_count()}, Python {platform.python_version()}, numpy {np.__version__}, "
            f"BLAS: {blas_line()}; load average at the end {load} (shared machine)  \n")


def report_head(script: str, argv: list[str] | None, seconds: float) -> str:
    """A screen's report heading: ``## <script> — <date>``, the command that ran (``argv`` None: this
    process's arguments) with its seconds, and :func:`machine_line`."""
    import datetime
    import sys

    args = " ".join(argv if argv is not None else sys.argv[1:])
    return (f"\n## {script} — {datetime.datetime.now():%Y-%m-%d %H:%M}\n\n"
            f"Command: `python benchmarks/{script}.py {args}` ({seconds:.0f} s)  \n" + machine_line())


def append_report(report: str, table: str, *, note: str = "", path: str | None = None) -> str:
    """``report`` + the optional ``note`` + ``table``; appended to ``path`` unless it is None."""
    text = report + (f"{note}\n" if note else "") + "\n" + table + "\n"
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        print(f"\nappended to {path}")
    return text
