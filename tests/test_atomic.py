"""The one atomic-folder helper: a folder appears whole or not at all, an existing one is never
missing while it is replaced, ``overwrite`` is checked at commit, files and folders are fsynced,
leftovers of dead writers are cleaned, and one writer holds a path at a time."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bigrfm.exceptions import InputError
from bigrfm.io import atomic
from bigrfm.io.atomic import AtomicFolder, WriterLock, atomic_file, atomic_folder, fsync_tree, recover


def _write(folder: Path, tag: str, files: int = 3) -> None:
    (folder / "sub").mkdir(exist_ok=True)
    for i in range(files):
        (folder / "sub" / f"part{i}").write_text(tag)
    (folder / "meta.json").write_text(tag)  # written last: a complete folder has it


def _tag(folder: Path) -> str:
    tag = (folder / "meta.json").read_text()
    assert all((folder / "sub" / f"part{i}").read_text() == tag for i in range(3)), "a mixed folder"
    return tag


def _snapshot(path: Path) -> str | None:
    """The tag of the folder ``path`` names now, read through one directory descriptor (one version).

    Raises FileNotFoundError when ``path`` is missing and AssertionError when
    the folder is incomplete or mixed. None: the folder was replaced while it
    was read and is being removed (a reader of the old version, not a gap).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        def read(name: str) -> str:
            f = os.open(name, os.O_RDONLY, dir_fd=fd)
            try:
                return os.read(f, 100).decode()
            finally:
                os.close(f)

        try:
            tag = read("meta.json")
            parts = [read(f"sub/part{i}") for i in range(3)]
        except FileNotFoundError:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return None
            raise AssertionError(f"{path} is incomplete") from None
        assert parts == [tag] * 3, f"a mixed folder: {tag} {parts}"
        return tag
    finally:
        os.close(fd)


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_new_folder_appears_whole_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "m"
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".m.tmp-")
        _write(tmp, "a")
        assert not target.exists()
    assert _tag(target) == "a" and _leftovers(target) == []


def test_an_error_while_writing_leaves_the_path_as_it_was(tmp_path):
    target = tmp_path / "m"
    with atomic_folder(target) as tmp:
        _write(tmp, "old")
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_folder(target, overwrite=True) as tmp:
            _write(tmp, "new")
            raise RuntimeError("disk on fire")
    assert _tag(target) == "old" and _leftovers(target) == []


def test_existing_folder_needs_overwrite_checked_when_opened_and_at_commit(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    with pytest.raises(InputError, match="already exists"):
        AtomicFolder(target)
    target.rmdir()
    writer = AtomicFolder(target)  # nothing there yet: accepted...
    _write(writer.tmp, "mine")
    target.mkdir()  # ...but another writer got there first
    (target / "theirs").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        writer.commit()
    assert (target / "theirs").exists() and not (target / "meta.json").exists()
    assert _leftovers(target) == []


def test_may_replace_can_refuse(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    with pytest.raises(InputError, match="not mine"):
        AtomicFolder(target, overwrite=True, may_replace=lambda p: "not mine")


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = AtomicFolder("rel")
    assert writer.path == tmp_path / "rel" and writer.tmp.is_absolute()
    writer.abort()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_reader_never_sees_the_path_missing_or_mixed_while_it_is_replaced(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_renameat2", None)  # a system without RENAME_EXCHANGE
    target = tmp_path / "m"
    with atomic_folder(target) as tmp:
        _write(tmp, "0")
    stop = threading.Event()
    seen: list[str] = []
    failures: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                tag = _snapshot(target)
                if tag is not None:
                    seen.append(tag)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 30):
            with atomic_folder(target, overwrite=True) as tmp:
                _write(tmp, str(i))
    finally:
        stop.set()
        thread.join()
    if exchange:
        assert not failures, failures[:3]
    else:
        # the fallback has an instant with no folder (between its two renames): readers may miss
        # it, but never see a mixed folder, and recover() closes the gap after a crash
        assert all(isinstance(f, FileNotFoundError) for f in failures), failures[:3]
    assert _tag(target) == "29" and len(seen) > 0
    assert _leftovers(target) == []


def test_recover_puts_back_an_old_folder_of_a_writer_killed_between_two_renames(tmp_path):
    target = tmp_path / "ckpt"
    old = tmp_path / f".ckpt.old-{_dead_pid()}-abcd1234"
    old.mkdir()
    _write(old, "previous")
    stale = tmp_path / f".ckpt.tmp-{_dead_pid()}-abcd1234"
    stale.mkdir()
    _write(stale, "half")
    live = tmp_path / f".ckpt.tmp-{os.getpid()}-abcd1234"  # a live writer's folder is never touched
    live.mkdir()
    recover(target)
    assert _tag(target) == "previous"
    assert _leftovers(target) == [live.name]


def test_leftovers_of_dead_writers_go_when_the_path_is_written_again(tmp_path):
    target = tmp_path / "m"
    stale = tmp_path / f".m.tmp-{_dead_pid()}-00000000"
    stale.mkdir()
    (stale / "junk").write_text("x")
    with atomic_folder(target) as tmp:
        _write(tmp, "a")
    assert _leftovers(target) == []


def test_commit_fsyncs_every_file_and_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "m"
    writer = AtomicFolder(target)
    _write(writer.tmp, "a")
    tmp = str(writer.tmp)
    writer.commit()
    expected = {tmp, f"{tmp}/sub", f"{tmp}/meta.json", *(f"{tmp}/sub/part{i}" for i in range(3))}
    assert expected <= set(synced)
    assert str(tmp_path) in synced  # the parent, after the rename


def test_fsync_tree_on_nested_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    fsync_tree(tmp_path)


def test_parent_folder_must_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        AtomicFolder(tmp_path / "missing" / "m")


_RACER = """
import sys, time
from pathlib import Path
from bigrfm.exceptions import InputError
from bigrfm.io.atomic import atomic_folder
target, tag, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
try:
    with atomic_folder(target) as tmp:
        (tmp / "sub").mkdir()
        for i in range(3):
            (tmp / "sub" / f"part{i}").write_text(tag)
        (tmp / "meta.json").write_text(tag)
except InputError as exc:
    print("lost:", exc)
    sys.exit(3)
"""


def test_two_processes_racing_for_a_new_path_one_wins_whole(tmp_path):
    target, go = tmp_path / "m", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(target), tag, str(go)], stdout=subprocess.PIPE, text=True)
             for tag in ("a", "b", "c")]
    go.touch()
    codes = [p.wait(60) for p in procs]
    assert sorted(codes).count(0) == 1 and all(c in (0, 3) for c in codes), codes
    winner = "abc"[codes.index(0)]
    assert _tag(target) == winner and _leftovers(target) == []


def test_writer_lock_is_exclusive_across_processes_and_released(tmp_path):
    target = tmp_path / "m"
    code = ("import sys; from bigrfm.io.atomic import WriterLock\n"
            "try:\n    WriterLock(sys.argv[1]).acquire()\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
    with WriterLock(target, "fitting"):
        r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
        assert r.returncode == 3 and f"pid {os.getpid()}" in r.stdout and "fitting" in r.stdout
    assert not (tmp_path / ".m.lock").exists()
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_a_killed_holder_leaves_the_path_free(tmp_path):
    target = tmp_path / "m"
    code = "import sys, os, signal; from bigrfm.io.atomic import WriterLock\nWriterLock(sys.argv[1]).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    subprocess.run([sys.executable, "-c", code, str(target)])
    assert (tmp_path / ".m.lock").exists()  # the file stays, the lock does not
    with WriterLock(target):
        pass


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"one")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"tw")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"one" and _leftovers(target) == []


# Every place in bigrfm/ and cli/ that writes to disk, and why it may: anything else must go
# through bigrfm.io.atomic (a new write site fails this test until it is listed here).
WRITE_SITES = {
    ("bigrfm/io/model_folder.py", "open_group"): "the arrays, inside atomic_folder's temporary folder",
    ("bigrfm/io/model_folder.py", "write_text"): "the JSON file, inside atomic_folder's temporary folder",
    ("bigrfm/io/convert/writer.py", "open_group"): "a dataset, inside AtomicFolder's temporary folder",
    ("bigrfm/features/patches.py", "write_text"): "inside atomic_folder's temporary folder",
    ("bigrfm/inference.py", "open_group"): "predictions: created in atomic_folder's temporary folder, filled by workers",
    ("bigrfm/report.py", "savefig"): "inside atomic_file's temporary file",
    ("bigrfm/io/convert/shuffle.py", "open_group"): "scratch buckets of a shuffle, in a temporary folder removed after",
    ("cli/model_cmds.py", "save"): "the estimator's save (write_model: atomic_folder)",
    ("cli/model_cmds.py", "rmtree"): "removes a fit's checkpoint once its model folder is in place",
    ("cli/demo.py", "mkdir"): "the demo's working folder",
}
_WRITERS = {"write_text", "write_bytes", "rmtree", "rename", "replace", "savefig", "save", "savez", "to_zarr", "mkdir",
            "makedirs", "unlink", "remove"}


def _write_calls(tree: ast.AST):
    """The name of every call in ``tree`` that writes to disk (``open_group``/``open`` with a writing mode too)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
        if name in ("replace", "remove", "unlink") and owner != "os":  # str.replace, dataclasses.replace, list.remove
            continue
        if name in _WRITERS:
            yield name
            continue
        modes = [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
        modes += [a.value for a in node.args[1:2] if name == "open" and isinstance(a, ast.Constant)]
        if name in ("open_group", "open") and any(str(m).strip("b") in ("w", "w-", "a", "r+", "x") for m in modes):
            yield name


def test_nothing_writes_around_the_atomic_helper():
    root = Path(__file__).resolve().parents[1]
    found = set()
    for base in ("bigrfm", "cli"):
        for path in sorted((root / base).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "bigrfm/io/atomic.py":
                continue
            for name in _write_calls(ast.parse(path.read_text())):
                assert (rel, name) in WRITE_SITES, f"{rel} calls {name}(...): write through bigrfm.io.atomic"
                found.add((rel, name))
    assert found == set(WRITE_SITES), set(WRITE_SITES) - found
