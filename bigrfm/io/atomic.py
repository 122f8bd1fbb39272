"""The one way bigrfm writes a folder: build it aside, then swap it in whole.

Model folders, checkpoints, converted datasets, prediction stores and patch
stores are all written through :class:`AtomicFolder`: everything goes to a
hidden sibling ``.NAME.tmp-PID-RANDOM``; :meth:`AtomicFolder.commit` fsyncs
its files and folders, checks ``overwrite`` again (another process may have
written ``NAME`` meanwhile), and puts it in place:

* no ``NAME`` yet: one ``rename``, which fails if a non-empty ``NAME`` appeared
  in between (two writers racing for the same path: the second one gets an
  error, never a mix);
* ``NAME`` exists (``overwrite``): the two folders are exchanged in one atomic
  ``renameat2(RENAME_EXCHANGE)`` (Linux), so at every instant ``NAME`` is a
  complete folder, old or new; the old one is then removed. Where the system
  lacks it, the old folder is renamed to ``.NAME.old-PID-RANDOM``, the new one
  moved in, and the old one put back if that fails; :func:`recover` (called
  before every read and write of ``NAME``) puts it back after a crash between
  the two renames.

Leftovers of writers that died (their PID is gone) are removed the next time
the same path is written. Paths are made absolute when the writer is created,
so a folder written by Dask workers (predictions) is the same folder for all.

:class:`WriterLock` keeps a second process from writing the same path over a
long job (``bigrfm fit`` holds it on ``--out`` while it fits and checkpoints):
an exclusive ``flock`` on the hidden sibling ``.NAME.lock``, released (and the
file removed) when the job ends, and by the kernel when the process dies.

Owns nothing but files and folders: no zarr, no dask.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

from ..exceptions import InputError

__all__ = ["AtomicFolder", "atomic_folder", "atomic_file", "recover", "fsync_tree", "WriterLock"]

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when the system cannot (then nothing changed)."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_path(path: Path, directory: bool) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under ``root`` (and ``root`` itself), deepest first."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            _fsync_path(Path(folder) / f, directory=False)
        _fsync_path(Path(folder), directory=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _siblings(path: Path, kind: str) -> list[tuple[Path, int]]:
    """Hidden ``.NAME.<kind>-PID-RANDOM`` siblings of ``path`` with the PID that made them."""
    prefix = f".{path.name}.{kind}-"
    out = []
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        if p.name.startswith(prefix):
            pid = p.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit():
                out.append((p, int(pid)))
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def recover(path: str | os.PathLike) -> None:
    """Finish what a writer of ``path`` killed mid-commit left behind.

    A missing ``path`` with a complete old folder set aside (the two-rename
    fallback) gets it back; temporary and old folders of dead writers are
    removed. Folders of live writers are never touched.
    """
    path = Path(path)
    olds = [(p, pid) for p, pid in _siblings(path, "old") if not _pid_alive(pid)]
    if olds and not os.path.lexists(path):
        newest = max(olds, key=lambda t: t[0].stat().st_mtime)[0]
        os.rename(newest, path)
        olds = [t for t in olds if t[0] != newest]
    for p, _pid in olds + [(p, pid) for p, pid in _siblings(path, "tmp") if not _pid_alive(pid)]:
        _remove(p)


class AtomicFolder:
    """A folder written aside and put at ``path`` whole by :meth:`commit`, or removed by :meth:`abort`.

    Parameters
    ----------
    path : str or PathLike
        Final location.
    overwrite : bool
        Replace an existing ``path``; checked when the folder is opened and again at commit.
    may_replace : callable, optional
        ``may_replace(path) -> str | None``: called before an existing ``path`` is
        replaced; a string is the reason it must not be (raised as InputError).

    Use as a context manager (``with atomic_folder(p) as tmp: ...`` commits on
    success and aborts on any exception), or call :meth:`commit` / :meth:`abort`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        may_replace: Callable[[Path], str | None] | None = None,
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.overwrite = overwrite
        self.may_replace = may_replace
        recover(self.path)
        self._check_target()
        if not self.path.parent.is_dir():
            raise InputError(f"The folder {self.path.parent} does not exist; create it first.")
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self.tmp.mkdir()
        self.done = False

    def _check_target(self) -> None:
        if not os.path.lexists(self.path):
            return
        if not self.overwrite:
            raise InputError(f"{self.path} already exists; pass overwrite=True (--overwrite) to replace it.")
        if self.may_replace is not None:
            reason = self.may_replace(self.path)
            if reason:
                raise InputError(reason)

    def commit(self) -> Path:
        """Make the written folder durable and put it at ``path``; returns ``path``."""
        if self.done:
            raise InputError(f"The write of {self.path} is already finished.")
        try:
            fsync_tree(self.tmp)
            recover(self.path)
            self._check_target()
            self._swap_in()
            _fsync_path(self.path.parent, directory=True)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return self.path

    def _swap_in(self) -> None:
        if not os.path.lexists(self.path):
            try:
                os.rename(self.tmp, self.path)  # fails on a non-empty folder that appeared meanwhile
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not self.overwrite:
                    raise InputError(
                        f"{self.path} was created by someone else while this one was being written; "
                        "nothing was replaced. Choose another path, or pass overwrite=True (--overwrite)."
                    ) from None
        if _exchange(self.tmp, self.path):
            # the old folder now sits at the temporary name
            _remove(self.tmp)
            return
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(self.path, old)
        try:
            os.rename(self.tmp, self.path)
        except BaseException:
            os.rename(old, self.path)
            raise
        _remove(old)

    def abort(self) -> None:
        """Remove what was written; ``path`` stays as it was. Harmless after commit."""
        self.done = True
        if self.tmp.exists():
            _remove(self.tmp)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.done:
            self.commit()


def atomic_folder(
    path: str | os.PathLike, overwrite: bool = False, *, may_replace: Callable[[Path], str | None] | None = None
) -> AtomicFolder:
    """Shorthand for :class:`AtomicFolder` (``with atomic_folder(path) as tmp: write into tmp``)."""
    return AtomicFolder(path, overwrite=overwrite, may_replace=may_replace)


class atomic_file:  # noqa: N801 - used like a function: ``with atomic_file(path) as tmp:``
    """A single file written aside (``.NAME.tmp-PID-RANDOM``) and put at ``path`` by one ``os.replace``.

    The file is fsynced before and its folder after the replace; an exception
    inside the ``with`` block removes the temporary file and leaves ``path``
    as it was. Overwrites an existing file (plots, reports), never a folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.abspath(path))
        if not self.path.parent.is_dir():
            raise InputError(f"The folder {self.path.parent} does not exist; create it first.")
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder; give a file name.")
        recover(self.path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{self.path.suffix}")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                _fsync_path(self.tmp, directory=False)
                os.replace(self.tmp, self.path)
                _fsync_path(self.path.parent, directory=True)
        finally:
            _remove(self.tmp)


class WriterLock:
    """One writer per path across processes: an exclusive ``flock`` on ``.NAME.lock`` beside ``path``.

    Parameters
    ----------
    path : str or PathLike
        The path the job writes (a model folder, say).
    what : str
        What the holder does, for the message given to a second writer.

    :meth:`acquire` fails at once with an :class:`~bigrfm.exceptions.InputError`
    naming the holder's PID when another process holds the lock; use as a
    context manager. The kernel drops the lock of a process that dies, so a
    killed job never leaves the path locked.
    """

    def __init__(self, path: str | os.PathLike, what: str = "writing") -> None:
        self.path = Path(os.path.abspath(path))
        self.what = what
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        import fcntl  # noqa: PLC0415  (POSIX only; imported where needed)

        if not self.path.parent.is_dir():
            raise InputError(f"The folder {self.path.parent} does not exist; create it first.")
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, _, what = os.read(fd, 256).decode(errors="replace").partition("\n")
                os.close(fd)
                raise InputError(
                    f"Another bigrfm process (pid {pid.strip() or '?'}) is {what.strip() or 'writing'} {self.path}; "
                    "wait for it to finish, or choose another path."
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its previous holder removed between our open and flock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.what}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)  # while still held: a waiting opener sees another inode and retries
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
