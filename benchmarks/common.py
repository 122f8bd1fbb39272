"""Helpers shared by the benchmark scripts: timing, peak memory, the machine facts and the reports' "Machine:"
line, report headings and appending.

benchmarks/ is not a package: scripts do ``sys.path.insert(0, <this folder>); import common``.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
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


#: Modules whose versions :func:`machine_facts` records (those that import).
VERSIONED = ("bigrfm", "numpy", "scipy", "sklearn", "torch", "xrfm")
#: Environment variables of the thread pools that :func:`machine_facts` records when set.
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def machine_facts() -> dict:
    """This machine and interpreter now, as JSON values: ``uname`` (``uname -a``), ``nproc`` (the
    cores this process may run on, from its CPU affinity; GNU ``nproc`` would report ``OMP_NUM_THREADS``
    instead), ``python``, ``executable``, ``versions`` ({module: version} of :data:`VERSIONED` that
    import), ``blas`` (:func:`blas_line`: numpy's and what the benchmark loaded, read before those
    imports), ``env`` (the :data:`THREAD_ENV` that are set) and ``loadavg`` (the 1, 5 and 15-minute load
    averages; None where the system has none)."""
    import numpy  # noqa: F401 -- loads the BLAS every script uses, so blas_line names it
    try:
        blas = blas_line()
    except ImportError:  # threadpoolctl missing
        blas = "unknown"
    versions = {}
    for mod in VERSIONED:
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # noqa: BLE001 -- a module that fails to import has no version to report
            pass
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        uname = " ".join(platform.uname())
    return {
        "uname": uname,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "versions": versions,
        "blas": blas,
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "loadavg": ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def machine_line(facts: dict | None = None) -> str:
    """The reports' "Machine:" line (markdown, ends with a hard line break) from ``facts`` (default:
    :func:`machine_facts` now): uname, cores, Python; then, where ``facts`` has them (older run.py
    records lack some), the versions, BLAS, thread environment and the load average."""
    f = machine_facts() if facts is None else facts
    parts = [f"Machine: `{f['uname']}`, nproc={f['nproc']}, Python {f['python']}"]
    if f.get("versions"):
        parts.append(", ".join(f"{k} {v}" for k, v in f["versions"].items()))
    if f.get("blas"):
        parts.append(f"BLAS: {f['blas']}")
    if f.get("env"):
        parts.append(f"env {f['env']}")
    if f.get("loadavg"):
        parts.append(f"load average at the end {f['loadavg']}")
    return "; ".join(parts) + " (shared machine)  \n"


def report_head(script: str, argv: list[str] | None, seconds: float) -> str:
    """A screen's report heading: ``## <script> — <date>``, the command that ran (``argv`` None: this
    process's arguments) with its seconds, and :func:`machine_line`."""
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


def screen_report(script: str, argv: list[str] | None, seconds: float, about: str, table: str,
                  path: str | None) -> str:
    """A screen's report: :func:`report_head`, the ``about`` text (data and model, ending with a
    newline) and ``table``; printed, and appended to ``path`` unless it is None."""
    text = append_report(report_head(script, argv, seconds) + about, table, path=path)
    print(text)
    return text
