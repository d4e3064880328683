"""Per-process handle tables: fd numbers, struct file reference counts, EMFILE/ENFILE.

An fd is an index into one process's table (``files_struct``); it means nothing in another
process. Several fds -- in one process after dup(), or in two after fork() -- can point to one
*open file* (``struct file``), which counts its references; the socket behind it is released only
when the last reference goes.
"""

from __future__ import annotations

from typing import Any

from .errors import SysError
from .rules import fact, rule


class Process:
    """A process as the socket layer sees it: a name, an fd table (``files_struct``), credentials."""

    __slots__ = ("name", "files", "cred", "alive", "pid", "task_works")

    def __init__(self, name: str, files: Any, uid: int, pid: int, cred: Any = None):
        from .capability import Cred

        self.name, self.files, self.alive, self.pid = name, files, True, pid
        self.task_works: list[OpenFile] = []  # task->task_works: files whose release is deferred
        self.cred = cred if cred is not None else Cred(uid)

    @property
    def uid(self) -> int:
        """The effective uid (also the fsuid, which new sockets take as their owner)."""
        return self.cred.euid

    @property
    def caps(self) -> set[str]:
        return self.cred.effective

    def capable(self, cap: str) -> bool:
        from .capability import capable

        return capable(self.cred, cap)


class OpenFile:
    """``struct file``: one open socket, shared by every fd that refers to it."""

    __slots__ = ("sock", "f_count", "nonblock")

    def __init__(self, sock: Any):
        self.sock = sock
        self.f_count = 0
        self.nonblock = False  # O_NONBLOCK lives on the open file, shared by dup/fork copies




class FileTable:
    """``struct files_struct``: fd -> OpenFile, lowest-free allocation, RLIMIT_NOFILE."""

    __slots__ = ("fds", "nofile")

    def __init__(self, nofile: int, std_streams: int = 3):
        # fds 0..2 are open on stdin/stdout/stderr, as in any program started from a shell
        self.fds: dict[int, OpenFile] = {}
        for i in range(std_streams):  # open files that are not sockets
            f = self.fds[i] = OpenFile(None)
            f.f_count = 1
        self.nofile = nofile

    def copy(self) -> FileTable:
        t = FileTable(self.nofile, 0)
        t.fds = dict(self.fds)
        for f in t.fds.values():
            f.f_count += 1
        return t

    def sockets(self) -> list[int]:
        return sorted(fd for fd, f in self.fds.items() if f.sock is not None)

    @rule("fd.alloc_lowest", "fd", "minor")
    def alloc_fd(self) -> int:
        """alloc_fd() in fs/file.c: the lowest free index below RLIMIT_NOFILE, else EMFILE."""
        fd = 0
        while fd in self.fds:
            fd += 1
        if fd >= self.nofile:
            fact(f"lowest free fd would be {fd}, RLIMIT_NOFILE is {self.nofile}")
            raise SysError("EMFILE", "fd.alloc_lowest")
        fact(f"fd {fd} is the lowest free index")
        return fd

    def install(self, fd: int, f: OpenFile) -> None:
        self.fds[fd] = f
        f.f_count += 1

    @rule("fd.lookup", "fd", "minor")
    def get(self, fd: int) -> OpenFile:
        """fdget() in fs/file.c; sock_from_file() in net/socket.c: EBADF if not open, ENOTSOCK if not a socket."""
        f = self.fds.get(fd)
        if f is None:
            fact(f"fd {fd} is not open in this process")
            raise SysError("EBADF", "fd.lookup")
        if f.sock is None:
            fact(f"fd {fd} is open but is not a socket (a standard stream)")
            raise SysError("ENOTSOCK", "fd.lookup")
        return f

    def remove(self, fd: int) -> OpenFile:
        return self.fds.pop(fd)


class FileCount:
    """The system-wide count of open files against fs.file-max (nr_files)."""

    __slots__ = ("nr_files", "file_max")

    def __init__(self, file_max: int):
        self.nr_files = 0
        self.file_max = file_max

    @rule("fd.file_max", "fd", "minor")
    def charge(self, privileged: bool) -> None:
        """alloc_empty_file() in fs/file_table.c: ENFILE at fs.file-max, except for CAP_SYS_ADMIN."""
        if self.nr_files >= self.file_max and not privileged:
            fact(f"{self.nr_files} files open system-wide, fs.file-max is {self.file_max}")
            raise SysError("ENFILE", "fd.file_max")
        self.nr_files += 1

    def release(self) -> None:
        self.nr_files -= 1
