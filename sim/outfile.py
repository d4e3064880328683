"""Writing output files safely: checked before the work, written atomically, never replacing by surprise.

Every file a command writes (``run --json/--html``, ``crosscheck --json``, ``explain
--json/--graph/--states``, ``sweep -o/--jsonl``, ``report -o``, ``fuzz --out``, ``bench --json``)
goes through this module:

- :func:`check_file` runs before the command does its work: the folder must exist, the path must
  not be a folder, an existing file is refused unless ``--force`` was given, and a probe file is
  created (and removed) in the folder so that a read-only place or a full disk is found at once;
- :class:`AtomicFile` writes to a hidden temporary file in the same folder and renames it into
  place at the end (``rename(2)`` within one file system is atomic), so a reader never sees half a
  file; without ``--force`` the final step is ``link(2)``, which fails if a file appeared meanwhile;
- any failure is one :class:`OutputError` line (the command exits 2) and the temporary file is
  removed: nothing partial is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

STDOUT = "-"


class OutputError(Exception):
    """An output path that cannot be written: one line, exit 2."""


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _probe(folder: Path, shown: str) -> None:
    """Create, write one byte to, and remove a file in ``folder``: finds read-only places and full disks."""
    try:
        fd, name = tempfile.mkstemp(prefix=".socksim-probe-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(f"{shown}: cannot write in the folder {folder}: {_why(e)}") from None
    try:
        os.write(fd, b"\n")
        os.fsync(fd)
    except OSError as e:
        raise OutputError(f"{shown}: cannot write in the folder {folder}: {_why(e)}") from None
    finally:
        os.close(fd)
        try:
            os.unlink(name)
        except OSError:
            pass


def check_file(path: str | os.PathLike[str], what: str, force: bool = False) -> None:
    """Refuse now what :class:`AtomicFile` would refuse at the end (``-``, stdout, is always fine)."""
    if str(path) == STDOUT:
        return
    p = Path(path)
    shown = str(path)
    if p.is_dir():
        raise OutputError(f"{shown}: is a directory, expected a file path for {what}")
    folder = _folder(p)
    if not folder.exists():
        raise OutputError(f"{shown}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{shown}: {folder} is not a folder")
    if (p.exists() or p.is_symlink()) and not force:
        raise OutputError(f"{shown}: already exists; pass --force to replace it")
    _probe(folder, shown)


class AtomicFile:
    """A text file written to a temporary name in its folder and renamed into place on :meth:`commit`.

    Use as a context manager: leaving the block without :meth:`commit` (an error, an interrupt)
    removes the temporary file and leaves the target as it was.
    """

    def __init__(self, path: str | os.PathLike[str], what: str, force: bool = False) -> None:
        check_file(path, what, force)
        self.path, self.what, self.force = Path(path), what, force
        self.shown = str(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=_folder(self.path))
        except OSError as e:
            raise OutputError(f"{self.shown}: cannot write: {_why(e)}") from None
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "w", encoding="utf-8")
        self.done = False

    def write(self, text: str) -> None:
        try:
            self.fh.write(text)
        except OSError as e:
            self.abort()
            raise OutputError(f"{self.shown}: cannot write: {_why(e)}") from None

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as e:
            self.abort()
            raise OutputError(f"{self.shown}: cannot write: {_why(e)}") from None

    def commit(self) -> None:
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.chmod(self.tmp, 0o666 & ~_umask())
            if self.force:
                os.replace(self.tmp, self.path)
            else:
                os.link(self.tmp, self.path)  # fails (EEXIST) rather than replace a file that appeared
                os.unlink(self.tmp)
        except OSError as e:
            self.abort()
            if e.errno == errno.EEXIST:
                raise OutputError(f"{self.shown}: already exists; pass --force to replace it") from None
            raise OutputError(f"{self.shown}: cannot write: {_why(e)}") from None
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.fh.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.abort()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: str | os.PathLike[str], text: str, what: str, force: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (``-``: to stdout)."""
    if str(path) == STDOUT:
        import sys

        sys.stdout.write(text)
        return
    with AtomicFile(path, what, force) as f:
        f.write(text)
        f.commit()


def check_folder(path: str | os.PathLike[str], what: str) -> None:
    """A folder output (created if missing): its nearest existing ancestor must be a writable folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; expected a folder for {what}")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{path}: {probe} is not a folder")
    _probe(probe, str(path))


def fill_folder(out: Path, names: tuple[str, ...], fill: Callable[[Path], None], force: bool) -> None:
    """Write the entries ``names`` of folder ``out``: built in a temporary folder beside them, then
    renamed in. Existing entries of those names are replaced only with ``force``; other files in
    ``out`` are left alone."""
    there = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if there and not force:
        raise OutputError(f"{out}: already holds {', '.join(there)}; pass --force to replace")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".socksim-", suffix=".tmp", dir=out))
    except OSError as e:
        raise OutputError(f"{out}: cannot create the folder: {_why(e)}") from None
    old = None
    try:
        fill(tmp)
        if there:
            old = Path(tempfile.mkdtemp(prefix=".socksim-old-", suffix=".tmp", dir=out))
            for n in there:
                os.replace(out / n, old / n)
        for n in names:
            if (tmp / n).exists():
                os.replace(tmp / n, out / n)
    except OSError as e:
        if old is not None:  # put the previous entries back
            for n in there:
                if (old / n).exists() or (old / n).is_symlink():
                    if (out / n).is_dir() and not (out / n).is_symlink():
                        shutil.rmtree(out / n, ignore_errors=True)
                    os.replace(old / n, out / n)
        raise OutputError(f"{out}: cannot write: {_why(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
