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
broadcast values (centers, alpha, M...) are scattered once per pass, tasks are
retried ``retries`` times, and a lost worker's blocks are recomputed elsewhere.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .config import ExecConfig
from .io.datasets import Dataset, block_bounds
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


def _run_block_remote(*args: Any) -> Any:
    """``_run_block`` on a Dask worker: bigrfm errors (bad data, deterministic) are
    returned to the client rather than retried ``retries`` times; anything else
    (a flaky read, a lost connection) raises and is retried by Dask."""
    try:
        return _run_block(*args)
    except BigRFMError as exc:
        return _RaisedInBlock(exc)


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
        self._client: Any = None

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
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
            log.info("LocalCluster closed")

    def _n_threads(self) -> int:
        return int(self.config.n_workers or os.cpu_count() or 1)

    def _thread_pool(self) -> cf.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self._n_threads(), thread_name_prefix="bigrfm-block")
            return self._pool

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
        if resolve_device(c.device) == "cuda":
            return self._start_local_cuda(n)
        try:
            with dask.config.set({key: environ}):
                cluster = LocalCluster(
                    n_workers=n, threads_per_worker=threads, processes=True, memory_limit=c.memory_limit,
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

    def _start_local_cuda(self, n_gpus: int | None) -> Any:
        """One worker per GPU (dask-cuda's LocalCUDACluster), each owning its device."""
        from distributed import Client  # noqa: PLC0415

        try:
            from dask_cuda import LocalCUDACluster  # noqa: PLC0415
        except ImportError:
            raise ClusterError(
                "device='cuda' with a local cluster needs dask-cuda (pip install 'bigrfm[multigpu]'), "
                "or run without a cluster (scheduler=None: one GPU in this process), or connect to a "
                "cluster whose workers have GPUs (scheduler='tcp://...')."
            ) from None
        kwargs = {"n_workers": n_gpus} if self.config.n_workers else {}
        try:
            cluster = LocalCUDACluster(threads_per_worker=1, dashboard_address="127.0.0.1:0", **kwargs)
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
        rows = int(block_rows or self.config.rows_per_block(
            dataset.n_features, getattr(dataset, "chunk_rows", None) or None, dataset.n_rows))
        blocks = block_bounds(dataset, rows)
        names = tuple(broadcast or {})
        shared = (block_fn, dataset, prepare, self.config.cache_bytes, *(broadcast or {}).values())
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
        n_threads = sum(client.nthreads().values())
        if n_threads == 0:
            log.warning("the Dask cluster has no workers yet; blocks wait until one joins")
        window = max(1, self.config.max_in_flight * n_threads)
        dataset = shared[1]
        lazy = hasattr(dataset, "block_collections")
        if lazy:
            # a Dask collection: the graph goes to the scheduler block by block, never the
            # whole collection to every worker
            shared = (shared[0], None, *shared[2:])
        # Scatter once per pass, not per task: block_fn, the dataset description, prepare
        # and the broadcast values, as one object (one dependency per task). The dataset is
        # usually a few strings (ZarrDataset) but may hold whole arrays (ArrayDataset),
        # which must not be pickled into every task. hash=False gives a fresh key, so
        # passes never collide.
        [bundle] = client.scatter([tuple(shared)], broadcast=True, hash=False)
        pass_id = uuid.uuid4().hex[:8]
        fn_name = getattr(shared[0], "__name__", type(shared[0]).__name__)
        # with_results: results arrive with the completion, no extra round trip per block
        completed = as_completed(loop=client.loop, with_results=True, raise_errors=False)
        arrived: dict[Any, Any] = {}

        def submit(i: int) -> Any:
            rows: list = []
            if lazy:
                X, y = dataset.block_collections(*blocks[i])
                # computed by the workers; the block task is placed where the result is
                parts = client.compute([a for a in (X, y) if a is not None and hasattr(a, "__dask_graph__")])
                rows = [parts[0], parts[1] if len(parts) > 1 else y]
            fut = client.submit(
                _run_block_remote, names, with_range, *blocks[i], bundle, *rows,
                key=f"bigrfm-{fn_name}-{pass_id}-{i}", retries=self.config.retries, pure=False,
            )
            completed.add(fut)
            return fut

        def wait(pending: set) -> list:
            batch = completed.next_batch(block=True)
            arrived.update(batch)
            return [f for f, _ in batch]

        def result(f: Any) -> Any:
            out = arrived.pop(f)
            if f.status == "error":
                _, exc, tb = out
                raise exc.with_traceback(tb)
            if f.status != "finished":
                raise ClusterError(f"The cluster dropped block task {f.key} ({f.status}: {out!r}); run the pass again.")
            f.release()
            if isinstance(out, _RaisedInBlock):
                raise out.exc
            return out

        try:
            return _windowed(blocks, window, submit, wait, result, lambda fs: client.cancel(list(fs)), reduce, progress)
        finally:
            completed.clear()
            arrived.clear()
            client.cancel([bundle])


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
