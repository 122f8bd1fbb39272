"""A per-process cache of prepared row blocks and of their rows mapped through the metric, bounded in bytes.

A fit passes over the same training rows dozens of times (one pass per CG
iteration). Within a byte budget, each worker keeps the blocks it prepared
(read, standardized, cast, moved to its device) and, for the current metric,
their mapped rows X S, so later passes skip the read, the standardization and
the b x d x r GEMM. Nothing is cached beyond the budget: once it is full, the
blocks already held stay and the rest are read again on every pass (a
sequential scan through an LRU would evict each block just before it is needed).
Entries of earlier fits, and mapped rows of earlier metrics, make room first.

Holds arrays only (numpy or CuPy); never reads data itself and imports neither
zarr nor dask. Results are bit-identical with and without the cache.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

__all__ = ["BlockCache", "BLOCKS", "DEFAULT_CACHE_BYTES"]

#: Bytes each process may keep by default (``ExecConfig.cache_bytes``).
DEFAULT_CACHE_BYTES = 512 * 2**20


def _nbytes(*arrays: Any) -> int:
    return sum(int(getattr(a, "nbytes", 0)) for a in arrays if a is not None)


class BlockCache:
    """Prepared blocks keyed by ``(fit token, start, stop)`` and mapped rows keyed by ``(block, metric token)``.

    Parameters
    ----------
    budget : int
        Bytes the cache may hold (prepared blocks and mapped rows together); 0 disables it.
    """

    def __init__(self, budget: int = DEFAULT_CACHE_BYTES) -> None:
        self.budget = int(budget)
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple, tuple[Any, Any, int]] = OrderedDict()
        self._mapped: OrderedDict[tuple, tuple[weakref.ref, Any, int]] = OrderedDict()
        self._owner: dict[int, tuple] = {}  # id(prepared X) -> its block key
        self.used = 0
        self.hits = self.misses = 0

    def set_budget(self, budget: int) -> None:
        """Change the budget; entries beyond a smaller one are dropped (oldest fits first)."""
        with self._lock:
            self.budget = int(budget)
            self._make_room(0, current=None)

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._mapped.clear()
            self._owner.clear()
            self.used = 0

    # -- prepared blocks ------------------------------------------------------------------
    def block(self, key: tuple, load: Callable[[], Any]) -> Any:
        """The prepared block ``key = (token, start, stop)``: cached, or ``load()`` and cached if it fits.

        ``load`` returns ``(X, Y)`` or None (a block with no selected row, cached as such).
        """
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None:
                self.hits += 1
                self._blocks.move_to_end(key)
                return None if hit[0] is None else (hit[0], hit[1])
        self.misses += 1
        out = load()
        X, Y = (None, None) if out is None else out
        size = _nbytes(X, Y)
        with self._lock:
            if key not in self._blocks and self._make_room(size, current=key[0]):
                self._blocks[key] = (X, Y, size)
                self.used += size
                if X is not None:
                    self._owner[id(X)] = key
        return out

    # -- rows mapped through the metric ---------------------------------------------------
    def mapped(self, X: Any, token: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` (X mapped through the metric ``token``), kept while X itself is a cached block.

        Mapping a block that is not cached is not worth keeping: the next pass
        reads a new copy of its rows anyway.
        """
        if token is None:
            return compute()
        with self._lock:
            key = self._owner.get(id(X))
            if key is None or self._blocks.get(key, (None,))[0] is not X:
                key = None
            else:
                hit = self._mapped.get((key, token))
                if hit is not None and hit[0]() is X:
                    self._mapped.move_to_end((key, token))
                    return hit[1]
        out = compute()
        if key is None:
            return out
        size = _nbytes(out)
        with self._lock:
            if (key, token) not in self._mapped and self._make_room(size, current=key[0], metric=token):
                self._mapped[(key, token)] = (weakref.ref(X), out, size)
                self.used += size
        return out

    # -- room ------------------------------------------------------------------------------
    def _make_room(self, size: int, current: Any, metric: Any = None) -> bool:
        """Drop stale entries (other fits' blocks, other metrics' mapped rows) until ``size`` fits.

        Returns False (nothing dropped beyond staleness) when it cannot fit.
        """
        if size > self.budget:
            return False
        for key in [k for k in self._mapped if k[1] != metric or k[0][0] != current]:
            if self.used + size <= self.budget:
                break
            self.used -= self._mapped.pop(key)[2]
        for key in [k for k in self._blocks if k[0] != current]:
            if self.used + size <= self.budget:
                break
            X, _, nbytes = self._blocks.pop(key)
            self.used -= nbytes
            self._owner.pop(id(X), None)
            for mkey in [k for k in self._mapped if k[0] == key]:
                self.used -= self._mapped.pop(mkey)[2]
        return self.used + size <= self.budget


#: The cache of this process (each Dask worker process has its own).
BLOCKS = BlockCache()
