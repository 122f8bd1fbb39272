"""Where blocks run: map a pure block function over row blocks and reduce the results.

Owns threads, LocalClusters and connections to Dask schedulers, and the ordered
reduction of a pass; the one module that imports ``distributed``. Holds no model
maths and reads no data itself (tasks call ``dataset.read``).

One pass over a dataset is ``Engine.map_reduce(block_fn, dataset, ...)``. Each
task reads rows ``[start, stop)`` itself (from the store, not through the
client), optionally prepares them, calls ``block_fn`` and returns a small
partial result; the client reduces those partial results in block order, so a
pass gives bit-identical results on every backend for the same block
boundaries.

Backends, chosen by ``ExecConfig.scheduler``:

- ``None``: a ``ThreadPoolExecutor`` in this process; Dask is never imported
  (unless the data is a Dask collection, whose blocks each thread computes).
  While a pass runs with more than one thread, BLAS is limited to one thread
  (threadpoolctl), as on the cluster's workers.
- ``"local"``: a ``distributed.LocalCluster`` of worker processes (one BLAS
  thread each), started on first use and reused for every later pass.
- ``"tcp://host:port"`` (or ``tls://``, ``inproc://``, ...): an existing Dask
  scheduler; the engine closes its own ``Client`` but never the cluster.

A dataset backed by a Dask collection (:mod:`bigrfm.io.dask_data`) is not
shipped to the workers: on a cluster each block's slice of the collection is
computed by the cluster and the block task runs where that result is.

Memory is bounded: at most ``max_in_flight`` blocks per worker thread are
submitted or waiting to be reduced at any time. On Dask backends the
broadcast values (centers, alpha, M...) are scattered once per pass, an
in-memory dataset once per engine (that is, once per fit), and a lost
worker's blocks are recomputed elsewhere.

Faults end a pass with one :class:`~bigrfm.exceptions.BigRFMError` naming the
block: an error of bigrfm's own in a block (bad data, an unreadable chunk) is
returned at once, never retried; other errors are retried ``retries`` times;
a block whose workers keep dying (Dask's ``KilledWorker``) is reported with its
rows, the likely cause (memory) and the settings to change; a cluster without
any worker for ``worker_timeout`` seconds fails the pass rather than waiting
for ever.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .config import ExecConfig
from .io.datasets import Dataset, block_bounds
from .numerics import gpu
from .numerics.backend import resolve_device
from .numerics.block_cache import BLOCKS
from .exceptions import BigRFMError, ClusterError, InputError

__all__ = ["Engine", "add_tree"]

log = logging.getLogger("bigrfm.engine")

#: Seconds to wait for an existing scheduler before giving up.
CONNECT_TIMEOUT = 20.0

#: Environment of LocalCluster worker processes: one BLAS thread each.
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _malloc_env(block_bytes: int) -> dict[str, str]:
    """glibc settings that let a worker reuse the memory of its previous blocks.

    Distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker, which also
    turns off glibc's adaptive mmap threshold: each block (and each float64
    copy of it) is then a fresh mmap whose pages are faulted in and returned
    to the OS. Measured here: reading 13 MiB Zarr chunks in a worker ran 2-3x
    slower than in a plain process. Blocks up to 4x ``block_bytes`` come from
    the heap instead and are reused; a worker keeps at most twice that of freed
    heap, so its memory stays bounded by the in-flight window.
    """
    mmap = max(64 * 2**20, 4 * int(block_bytes))
    return {"MALLOC_MMAP_THRESHOLD_": str(mmap), "MALLOC_TRIM_THRESHOLD_": str(2 * mmap)}

_REMOTE_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")

#: In-memory datasets an engine keeps scattered on its workers (least recently used dropped first).
_SCATTERED_DATASETS = 4


def add_tree(a: Any, b: Any) -> Any:
    """Add two partial results: numbers and arrays, recursing into tuples, lists and dicts.

    ``None`` is the identity (a skipped block). Dicts must have the same keys;
    any other object is added with ``+`` (e.g. dataclasses defining ``__add__``).
    """
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict):
        if a.keys() != b.keys():
            raise ValueError(f"Cannot add partial results with keys {sorted(a)} and {sorted(b)}.")
        return {k: add_tree(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise ValueError(f"Cannot add partial results of lengths {len(a)} and {len(b)}.")
        return type(a)(add_tree(x, y) for x, y in zip(a, b))
    return a + b


class _RaisedInBlock:
    """A bigrfm error raised by a block, returned instead of raised so Dask does not retry it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _run_block(names: tuple[str, ...], with_range: bool, start: int, stop: int, shared: tuple, *rows: Any) -> Any:
    """One task: read rows [start, stop), prepare them, apply ``block_fn``.

    ``shared`` is ``(block_fn, dataset, prepare, cache_bytes, *broadcast_values)``, the same
    for every block. A ``prepare`` with a ``cache_token`` has its prepared blocks kept in
    this process's :data:`~bigrfm.numerics.block_cache.BLOCKS` (up to ``cache_bytes``).
    ``rows``, when given, are the block's ``(X, y)`` already computed by the cluster (a
    Dask collection's block); otherwise the task reads them with ``dataset.read``.
    """
    block_fn, dataset, prepare, cache_bytes, *values = shared

    def read() -> tuple:
        return tuple(rows) if rows else dataset.read(start, stop)

    try:
        token = getattr(prepare, "cache_token", None)
        if token is not None and cache_bytes:
            if BLOCKS.budget != cache_bytes:
                BLOCKS.set_budget(cache_bytes)
            out = BLOCKS.block((token, start, stop), lambda: prepare(*read(), start, stop))
        else:
            out = read()
            if prepare is not None:
                out = prepare(*out, start, stop)
        if out is None:
            return None
        X, y = out
        kwargs = dict(zip(names, values))
        if with_range:
            kwargs["block_range"] = (start, stop)
        return block_fn(X, y, **kwargs)
    except Exception as exc:
        exc.add_note(f"(bigrfm: in the block of rows [{start}, {stop}))")
        raise


def _run_block_remote(names: tuple[str, ...], with_range: bool, start: int, stop: int, shared: tuple,
                      dataset: Any = None, *rows: Any) -> Any:
    """``_run_block`` on a Dask worker: bigrfm errors (bad data, deterministic) are
    returned to the client rather than retried ``retries`` times; anything else
    (a flaky read, a lost connection) raises and is retried by Dask.

    ``dataset``, when given, replaces the dataset slot of ``shared``: an in-memory
    dataset scattered once per engine rather than inside every pass's bundle. ``rows``:
    the block's ``(X, y)`` computed by the cluster (a Dask collection's block).
    """
    if dataset is not None:
        shared = (shared[0], dataset, *shared[2:])
    try:
        return _run_block(names, with_range, start, stop, shared, *rows)
    except BigRFMError as exc:
        return _RaisedInBlock(exc)


@contextlib.contextmanager
def environ_kept() -> Any:
    """Put ``os.environ`` back as it was when the block ends.

    distributed's Nanny writes the workers' pre-spawn environment (one BLAS thread, the
    malloc thresholds, the workers' log level) into this process's ``os.environ`` before it
    spawns a worker, and leaves it there: every later subprocess of the user's process (and
    of a test suite) would inherit one BLAS thread and the malloc settings of a worker.
    """
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def dask_setup(worker: Any) -> None:
    """Dask preload hook of the LocalCluster's worker processes (they preload this module): ignore SIGINT.

    Ctrl-C in a terminal reaches the whole process group. The client (the
    process that started the cluster) handles it and shuts the cluster down;
    without this, every worker would also print its own KeyboardInterrupt.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _is_description(dataset: Any) -> bool:
    """Whether a dataset pickles to a few bytes (a store path and names) rather than holding its rows."""
    return getattr(dataset, "path", None) is not None


def _deaths(killed_worker: BaseException) -> int:
    """Worker deaths behind a ``KilledWorker``: one more than the scheduler's allowed failures."""
    allowed = getattr(killed_worker, "allowed_failures", None)
    return allowed + 1 if isinstance(allowed, int) else 1


def _killed_worker_error(block: tuple[int, int], dataset: Any, config: ExecConfig, deaths: int) -> ClusterError:
    """The error of a block whose workers died ``deaths`` times while running it."""
    start, stop = block
    where = getattr(dataset, "path", None)
    what = f"{getattr(dataset, 'x_name', 'X')!r} in {where}" if where else "the in-memory data"
    times = f"{deaths} time{'s' if deaths > 1 else ''}"
    limit = config.memory_limit if config.memory_limit not in (None, "auto") else "auto: the machine's memory / workers"
    return ClusterError(
        f"The block of rows [{start}, {stop}) of {what} killed its Dask worker {times} (KilledWorker). "
        f"The likely cause is memory: a worker that outgrows its memory limit ({limit}) or the machine's is "
        f"killed. Use smaller blocks (--block-rows / block_rows, now {stop - start}), give each worker more "
        "memory (--memory-limit), or run fewer workers per machine (--workers)."
    )


class Engine:
    """Runs passes over row blocks on threads, a LocalCluster, or an existing Dask cluster.

    Nothing starts until the first pass. Use as a context manager (or call
    :meth:`close`) so a LocalCluster it started is shut down; a cluster it only
    connected to is left running.

    Parameters
    ----------
    config : ExecConfig, optional
        ``scheduler``, ``n_workers``, ``threads_per_worker``, ``memory_limit``,
        ``max_in_flight``, ``retries`` and the block size are read from it.
    connect_timeout : float
        Seconds to wait for an existing scheduler (``scheduler="tcp://..."``).

    Examples
    --------
    >>> import numpy as np
    >>> from bigrfm.io.datasets import ArrayDataset
    >>> def colsum(X, y):
    ...     return X.sum(axis=0)
    >>> with Engine(ExecConfig(block_rows=3)) as engine:
    ...     engine.map_reduce(colsum, ArrayDataset(np.ones((10, 2))))
    array([10., 10.])
    """

    def __init__(self, config: ExecConfig | None = None, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.config = config if config is not None else ExecConfig()
        self.connect_timeout = float(connect_timeout)
        sched = self.config.scheduler
        if sched is None:
            self._kind = "threads"
        elif sched == "local":
            self._kind = "local"
        elif isinstance(sched, str) and sched.startswith(_REMOTE_SCHEMES):
            self._kind = "remote"
        else:
            raise InputError(
                f"scheduler must be None (threads), 'local' (a LocalCluster) or a scheduler address "
                f"such as 'tcp://host:8786'. Got {sched!r} instead."
            )
        self._lock = threading.Lock()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._cluster: Any = None
        self._spawn_env: dict[str, str | None] = {}  # what a LocalCluster's workers changed in os.environ
        self._client: Any = None
        # "cuda" or "cpu": decides threads per device, block sizes and the cache budget
        self.device = resolve_device(self.config.device)
        # id(dataset) -> (dataset, its future on the workers); the dataset is held so its id stays unique
        self._scattered: OrderedDict[int, tuple[Any, Any]] = OrderedDict()

    @property
    def kind(self) -> str:
        """``"threads"``, ``"local"`` or ``"remote"``."""
        return self._kind

    @property
    def n_workers(self) -> int:
        """Threads of the pool, or worker processes of the cluster (connects if needed)."""
        if self._kind == "threads":
            return self._n_threads()
        return len(self._dask_client().nthreads())

    @property
    def address(self) -> str | None:
        """The Dask scheduler's address (starting or connecting if needed); None for threads.

        Other engines and estimators can share this engine's LocalCluster by
        passing the address as their ``scheduler``.
        """
        if self._kind == "threads":
            return None
        return self._dask_client().scheduler.address

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Shut down what this engine started; idempotent."""
        with self._lock:
            pool, client, cluster = self._pool, self._client, self._cluster
            self._pool = self._client = self._cluster = None
            self._scattered.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
            log.info("LocalCluster closed")
            for k, v in self._spawn_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _n_gpus(self) -> int:
        """GPUs the threads backend uses: ``n_workers`` (``--gpus``), at most the ones there are."""
        have = gpu.device_count()
        return max(1, min(int(self.config.n_workers or have), have))

    def _n_threads(self) -> int:
        if self.device == "cuda":
            # a few threads per GPU, each with its own stream: reads and copies overlap kernels
            return self._n_gpus() * gpu.THREADS_PER_DEVICE
        return int(self.config.n_workers or os.cpu_count() or 1)

    def _thread_pool(self) -> cf.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                kwargs: dict = {}
                if self.device == "cuda":
                    counter = itertools.count()
                    n_gpus = self._n_gpus()
                    kwargs = {"initializer": lambda: gpu.bind_thread(next(counter), n_gpus)}
                self._pool = cf.ThreadPoolExecutor(self._n_threads(), thread_name_prefix="bigrfm-block", **kwargs)
            return self._pool

    def _cache_bytes(self) -> int:
        """Budget of the per-process block cache: ``cache_bytes``, or on a GPU a fraction of its
        memory (blocks then stay resident on the device between passes); 0 turns it off."""
        if self.config.cache_bytes and self.device == "cuda":
            free = gpu.device_memory()[0] if gpu.device_count() else 16 * 2**30
            return max(int(self.config.cache_bytes), gpu.gpu_cache_bytes(free))
        return int(self.config.cache_bytes)

    def block_rows(self, n_features: int, chunk_rows: int | None = None, n_rows: int | None = None) -> int:
        """Rows per block of a pass over a dataset of this shape on this engine.

        :meth:`ExecConfig.rows_per_block` with this engine's parallelism; on a GPU
        the block size comes from the device's memory
        (:func:`bigrfm.numerics.gpu.gpu_block_rows`), not from the CPU rule.
        """
        device_rows = None
        workers = self._n_threads() if self._kind == "threads" else None
        if self.device == "cuda":
            free = gpu.device_memory()[0] if gpu.device_count() else 16 * 2**30
            device_rows = gpu.gpu_block_rows(free, n_features, self.config.np_dtype.itemsize)
        return self.config.rows_per_block(n_features, chunk_rows or None, n_rows, workers=workers,
                                          device_rows=device_rows)

    def _dask_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._start_local() if self._kind == "local" else self._connect()
            return self._client

    def _start_local(self) -> Any:
        import dask  # noqa: PLC0415
        from distributed import Client, LocalCluster  # noqa: PLC0415

        c = self.config
        threads = int(c.threads_per_worker or 1)
        n = int(c.n_workers or max(1, (os.cpu_count() or 1) // threads))
        # Set before each worker process starts (LocalCluster's env= is applied inside the
        # running worker: too late for glibc's malloc settings and for BLAS).
        key = "distributed.nanny.pre-spawn-environ"
        environ = {**dask.config.get(key, default={}), **_WORKER_ENV, **_malloc_env(c.block_bytes)}
        if c.worker_log_level:
            # read by `distributed` when it is imported in the worker process, before it logs anything
            environ["DASK_LOGGING__DISTRIBUTED"] = str(c.worker_log_level)
        # a worker that restarts later (after a death) writes them into os.environ again: close() undoes that
        self._spawn_env = {k: os.environ.get(k) for k in (*environ, "__DASK_PARENT_PID")}
        if self.device == "cuda":
            with dask.config.set({key: environ}), environ_kept():
                return self._start_local_cuda()
        try:
            with dask.config.set({key: environ}), environ_kept():
                cluster = LocalCluster(
                    n_workers=n, threads_per_worker=threads, processes=True, memory_limit=c.memory_limit,
                    preload=[__name__],  # dask_setup: the workers leave Ctrl-C to this process
                    # the scheduler's HTTP server (health routes; the dashboard when bokeh is
                    # installed) always starts: a free port on localhost, so that several
                    # engines never collide on 8787 and nothing listens on public interfaces
                    dashboard_address="127.0.0.1:0",
                )
        except Exception as exc:
            raise ClusterError(
                f"Could not start a local Dask cluster of {n} workers ({type(exc).__name__}: {exc}). "
                "Use fewer workers (--workers), or run without a cluster (scheduler=None)."
            ) from exc
        self._cluster = cluster
        log.info("LocalCluster started: %d workers x %d threads at %s", n, threads, cluster.scheduler_address)
        return Client(cluster, set_as_default=False)

    def _start_local_cuda(self) -> Any:
        """One worker per GPU (dask-cuda's LocalCUDACluster), each owning its device.

        Workers get the same environment as CPU workers (one BLAS thread, the malloc
        settings; the caller sets it before they spawn) and :data:`~bigrfm.numerics.gpu.THREADS_PER_DEVICE`
        threads, so a block's read and host-to-device copy overlap another block's kernels.
        """
        from distributed import Client  # noqa: PLC0415

        try:
            from dask_cuda import LocalCUDACluster  # noqa: PLC0415
        except ImportError:
            raise ClusterError(
                "device='cuda' with a local cluster needs dask-cuda (pip install 'bigrfm[multigpu]'), "
                "or run without a cluster (scheduler=None: one GPU in this process), or connect to a "
                "cluster whose workers have GPUs (scheduler='tcp://...')."
            ) from None
        kwargs = {"n_workers": int(self.config.n_workers)} if self.config.n_workers else {}
        try:
            cluster = LocalCUDACluster(threads_per_worker=gpu.THREADS_PER_DEVICE, dashboard_address="127.0.0.1:0",
                                       memory_limit=self.config.memory_limit, preload=[__name__], **kwargs)
        except Exception as exc:
            raise ClusterError(f"Could not start a LocalCUDACluster ({type(exc).__name__}: {exc}).") from exc
        self._cluster = cluster
        log.info("LocalCUDACluster started at %s", cluster.scheduler_address)
        return Client(cluster, set_as_default=False)

    def _connect(self) -> Any:
        from distributed import Client  # noqa: PLC0415

        address = self.config.scheduler
        try:
            client = Client(address, timeout=self.connect_timeout, set_as_default=False)
        except Exception as exc:  # OSError, TimeoutError, or a protocol error
            raise ClusterError(
                f"Could not connect to the Dask scheduler at {address} within {self.connect_timeout:g}s "
                f"({type(exc).__name__}: {exc}). Check that `dask scheduler` runs there and the port is "
                "reachable, or use scheduler='local' to start a cluster on this machine."
            ) from exc
        log.info("connected to Dask scheduler %s (%d workers)", address, len(client.nthreads()))
        return client

    def compute(self, *collections: Any) -> tuple:
        """Compute Dask collections where this engine runs blocks (small results: counts, lengths).

        Threads: Dask's threaded scheduler with this engine's number of threads.
        A cluster: submitted to it and gathered here.
        """
        if self._kind == "threads":
            import dask  # noqa: PLC0415

            return tuple(dask.compute(*collections, scheduler="threads", num_workers=self._n_threads()))
        client = self._dask_client()
        return tuple(client.gather(client.compute(list(collections))))

    # -- passes -------------------------------------------------------------------------

    def map_reduce(
        self,
        block_fn: Callable[..., Any],
        dataset: Dataset,
        *,
        broadcast: Mapping[str, Any] | None = None,
        prepare: Callable[..., Any] | None = None,
        reduce: Callable[[Any, Any], Any] | None = None,
        block_rows: int | None = None,
        with_range: bool = False,
        progress: Callable[[int, int, int], None] | None = None,
    ) -> Any:
        """One pass: ``reduce`` over blocks, in block order, of ``block_fn(X, y, **broadcast)``.

        Parameters
        ----------
        block_fn : callable
            ``block_fn(X, y, **broadcast)`` (plus ``block_range=(start, stop)``
            when ``with_range``); a picklable module-level function or small
            frozen dataclass.
        dataset : Dataset
            Read by each task with ``dataset.read(start, stop)``; on a Dask
            cluster, a dataset with ``block_collections(start, stop)`` (a Dask
            collection's) has each block computed by the cluster instead, and the
            task runs on the worker that holds it.
        broadcast : mapping of str to object, optional
            Keyword arguments shared by all blocks; sent to each worker once per pass.
        prepare : callable, optional
            ``prepare(X, y, start, stop) -> (X, y)`` or None to skip the block.
        reduce : callable, optional
            Binary reduction of block results; default :func:`add_tree`. Skipped
            blocks (None) are left out; it needs not be commutative.
        block_rows : int, optional
            Rows per block; default ``config.rows_per_block`` for the dataset's
            features, stored chunks (``dataset.chunk_rows`` when it has one) and rows.
        with_range : bool
            Pass ``block_range=(start, stop)`` to ``block_fn``.
        progress : callable, optional
            ``progress(done_blocks, total_blocks, rows_done)``, called here after each block.

        Returns
        -------
        The reduced result, or None when every block was skipped.
        """
        rows = int(block_rows or self.block_rows(dataset.n_features, getattr(dataset, "chunk_rows", None), dataset.n_rows))
        blocks = block_bounds(dataset, rows)
        names = tuple(broadcast or {})
        shared = (block_fn, dataset, prepare, self._cache_bytes(), *(broadcast or {}).values())
        t0 = time.perf_counter()
        if self._kind == "threads":
            result = self._pass_threads(blocks, names, with_range, shared, reduce, progress)
        else:
            result = self._pass_dask(blocks, names, with_range, shared, reduce, progress)
        log.debug("pass of %s: %d blocks of %d rows on %s in %.3fs",
                  getattr(block_fn, "__name__", type(block_fn).__name__), len(blocks), rows, self._kind,
                  time.perf_counter() - t0)
        return result

    def _pass_threads(self, blocks: list, names: tuple, with_range: bool, shared: tuple,
                      reduce: Callable | None, progress: Callable | None) -> Any:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        pool = self._thread_pool()
        window = max(1, self.config.max_in_flight * self._n_threads())

        def submit(i: int) -> cf.Future:
            return pool.submit(_run_block, names, with_range, *blocks[i], shared)

        def wait(pending: set) -> Any:
            return cf.wait(pending, return_when=cf.FIRST_COMPLETED).done

        # One BLAS thread per block thread, as on the cluster's worker processes: no
        # oversubscription, and the same BLAS code path gives the same bits.
        limit = threadpool_limits(limits=1, user_api="blas") if self._n_threads() > 1 else None
        try:
            return _windowed(blocks, window, submit, wait, lambda f: f.result(),
                             lambda fs: [f.cancel() for f in fs], reduce, progress)
        finally:
            if limit is not None:
                limit.restore_original_limits()

    def _pass_dask(self, blocks: list, names: tuple, with_range: bool, shared: tuple,
                   reduce: Callable | None, progress: Callable | None) -> Any:
        from distributed import as_completed  # noqa: PLC0415

        client = self._dask_client()
        n_threads = self._await_workers(client)
        window = max(1, self.config.max_in_flight * n_threads)
        dataset = shared[1]
        # A Dask collection's graph goes to the scheduler block by block (the workers compute
        # each block where it lives), never the whole collection to every worker. An
        # in-memory dataset goes to the workers once per engine (once per fit), not once
        # per pass; a store description (a few strings) travels in the bundle.
        lazy = hasattr(dataset, "block_collections")
        in_memory = not lazy and not _is_description(dataset)
        if lazy or in_memory:
            shared = (shared[0], None, *shared[2:])
        # Scatter once per pass, not per task: block_fn, prepare and the broadcast values
        # (and a store description), as one object (one dependency per task). hash=False
        # gives a fresh key, so passes never collide.
        inputs: dict[str, Any] = {}

        def scattered(i: int) -> tuple:
            """Block i's inputs: the bundle (scattered again when its workers died), then the
            in-memory dataset's future, or a collection's block computed by the cluster."""
            if inputs.get("bundle") is None or inputs["bundle"].status != "finished":
                [inputs["bundle"]] = client.scatter([tuple(shared)], broadcast=True, hash=False)
            if in_memory:
                return (inputs["bundle"], self._scattered_dataset(client, dataset))
            if lazy:
                X, y = dataset.block_collections(*blocks[i])
                # computed by the workers; the block task is placed where the result is
                parts = client.compute([a for a in (X, y) if a is not None and hasattr(a, "__dask_graph__")])
                return (inputs["bundle"], None, parts[0], parts[1] if len(parts) > 1 else y)
            return (inputs["bundle"],)

        pass_id = uuid.uuid4().hex[:8]
        fn_name = getattr(shared[0], "__name__", type(shared[0]).__name__)
        # with_results: results arrive with the completion, no extra round trip per block
        completed = as_completed(loop=client.loop, with_results=True, raise_errors=False)
        arrived: dict[Any, Any] = {}
        block_of: dict[Any, tuple[int, Any]] = {}  # task key -> (block index, future)
        watchdog = _NoWorkerWatchdog(client, self.config.worker_timeout, block_of)

        def task(i: int, attempt: int = 0) -> Any:
            return client.submit(
                _run_block_remote, names, with_range, *blocks[i], *scattered(i),
                key=f"bigrfm-{fn_name}-{pass_id}-{i}" + (f"-again{attempt}" if attempt else ""),
                retries=self.config.retries, pure=False,
            )

        def submit(i: int) -> Any:
            fut = task(i)
            block_of[fut.key] = (i, fut)
            completed.add(fut)
            return fut

        def wait(pending: set) -> list:
            batch = completed.next_batch(block=True)
            arrived.update(batch)
            return [f for f, _ in batch]

        def value(i: int, status: str, out: Any) -> Any:
            if status == "error":
                _, exc, tb = out
                if type(exc).__name__ == "KilledWorker":
                    return again(i, _deaths(exc))
                raise exc.with_traceback(tb)
            if isinstance(out, _RaisedInBlock):
                raise out.exc
            return out

        def again(i: int, deaths: int) -> Any:
            """Block i once more, alone, after ``deaths`` deaths of the workers that ran it.

            Dask blames every task a dying worker held (``KilledWorker``), and
            cancels the tasks whose scattered inputs died with their last worker
            (a one-worker cluster). So the block is rerun alone, once the pass's
            other tasks are done: a bystander then succeeds, and a block that kills
            its worker again is the one reported (with its rows and the likely
            cause); inputs lost with it are scattered again, up to ``retries`` times.
            """
            while not all(fut.done() for _, fut in list(block_of.values())):
                time.sleep(0.05)  # a rare path: polling the pass's other tasks is cheap enough
            for attempt in range(1, self.config.retries + 1):
                self._await_workers(client)
                fut = task(i, attempt)
                try:
                    return value(i, "finished", fut.result())
                except cf.CancelledError:  # distributed's FutureCancelledError: its worker died
                    deaths += 1
                except Exception as exc:  # noqa: BLE001 - a KilledWorker, or the block's own error
                    if type(exc).__name__ != "KilledWorker":
                        raise
                    raise _killed_worker_error(blocks[i], dataset, self.config, deaths + _deaths(exc)) from None
                finally:
                    fut.release()
            raise _killed_worker_error(blocks[i], dataset, self.config, deaths)

        def result(f: Any) -> Any:
            out = arrived.pop(f)
            i, _ = block_of.pop(f.key)
            if watchdog.error is not None:
                raise watchdog.error
            # Read once: after release() the client's loop cancels the future's state
            # (Client._release_key), so a second read may say "cancelled" for an error.
            status = f.status
            if status == "cancelled":  # not by us: its inputs died with their workers
                return again(i, 1)
            if status not in ("finished", "error"):
                raise ClusterError(
                    f"The cluster dropped the task of block rows [{blocks[i][0]}, {blocks[i][1]}) ({status}: "
                    f"{out!r}); run the pass again."
                )
            f.release()
            return value(i, status, out)

        watchdog.start()
        try:
            return _windowed(blocks, window, submit, wait, result, lambda fs: client.cancel(list(fs)), reduce, progress)
        finally:
            watchdog.stop()
            completed.clear()
            arrived.clear()
            if inputs.get("bundle") is not None:
                client.cancel([inputs["bundle"]])

    def _await_workers(self, client: Any) -> int:
        """Threads of the cluster's workers, waiting up to ``worker_timeout`` seconds for a first one."""
        n_threads = sum(client.nthreads().values())
        if n_threads:
            return n_threads
        timeout = self.config.worker_timeout
        log.warning("the Dask cluster has no workers; waiting up to %gs for one", timeout)
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ClusterError(
                f"The Dask cluster at {client.scheduler.address} has no workers: none joined within "
                f"{timeout:g}s (worker_timeout). Start workers (`dask worker {client.scheduler.address}`) and "
                "check they can reach the scheduler, or wait longer with --worker-timeout."
            ) from None
        return max(1, sum(client.nthreads().values()))

    def _scattered_dataset(self, client: Any, dataset: Any) -> Any:
        """The future of ``dataset`` on the workers, scattered on first use and kept for later passes."""
        entry = self._scattered.get(id(dataset))
        if entry is not None and entry[0] is dataset and entry[1].status == "finished":
            self._scattered.move_to_end(id(dataset))
            return entry[1]
        [fut] = client.scatter([dataset], broadcast=True, hash=False)
        self._scattered[id(dataset)] = (dataset, fut)
        while len(self._scattered) > _SCATTERED_DATASETS:
            _, (_, old) = self._scattered.popitem(last=False)
            old.release()
        return fut


class _NoWorkerWatchdog:
    """Fails a Dask pass whose cluster has had no worker for ``timeout`` seconds.

    Runs in a thread beside the pass: when every worker is gone (none joined,
    or all died) for that long, it records a :class:`ClusterError` and cancels
    the pass's tasks, so the waiting client wakes up and raises it.
    """

    def __init__(self, client: Any, timeout: float, block_of: dict) -> None:
        self.client, self.timeout, self.block_of = client, float(timeout), block_of
        self.error: ClusterError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bigrfm-no-worker-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        poll = min(1.0, self.timeout / 4)
        empty_since: float | None = None
        while not self._stop.wait(poll):
            try:
                n = len(self.client.nthreads())
            except Exception:  # noqa: BLE001 - the client is closing; the pass itself reports
                return
            if n:
                empty_since = None
                continue
            now = time.monotonic()
            empty_since = now if empty_since is None else empty_since
            if now - empty_since >= self.timeout:
                self.error = ClusterError(
                    f"The Dask cluster at {self.client.scheduler.address} has no workers: every one is gone and "
                    f"none joined within {self.timeout:g}s (worker_timeout); {len(self.block_of)} block(s) of the "
                    "pass were left. Restart the workers (a nanny restarts them: `dask worker` without "
                    "--no-nanny), or wait longer with --worker-timeout."
                )
                self.client.cancel([fut for _, fut in list(self.block_of.values())])
                return


def _windowed(
    blocks: list[tuple[int, int]], window: int, submit: Callable[[int], Any], wait: Callable[[set], Any],
    result: Callable[[Any], Any], cancel: Callable[[set], Any], reduce: Callable | None, progress: Callable | None,
) -> Any:
    """Run blocks with at most ``window`` of them submitted or awaiting reduction; reduce in order.

    A block is submitted only when it is fewer than ``window`` blocks ahead of
    the next block to reduce, so the buffer of out-of-order results is bounded.
    """
    reduce = reduce or add_tree
    n = len(blocks)
    index: dict[Any, int] = {}
    buffered: dict[int, Any] = {}
    acc, next_submit, next_reduce, done, rows_done = None, 0, 0, 0, 0
    try:
        while next_reduce < n:
            while next_submit < n and next_submit < next_reduce + window:
                index[submit(next_submit)] = next_submit
                next_submit += 1
            for fut in wait(set(index)):
                i = index.pop(fut)
                buffered[i] = result(fut)
                done += 1
                rows_done += blocks[i][1] - blocks[i][0]
                if progress is not None:
                    progress(done, n, rows_done)
            while next_reduce in buffered:
                out = buffered.pop(next_reduce)
                if out is not None:
                    acc = out if acc is None else reduce(acc, out)
                next_reduce += 1
    except BaseException:
        if index:
            cancel(set(index))
        raise
    return acc
