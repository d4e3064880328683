"""fs/file.c (and exit_files(), dup_fd(), fcntl's setfl()): the descriptor calls."""

from __future__ import annotations

from typing import Any

from .errors import Block, SysError
from .handles import OpenFile, Process
from .rules import fact, rule
from .tracepoints import CloseFd, FdInstall


class FileOps:
    """Kernel functions of fs/file.c (a part of :class:`~.stack.Kernel`)."""

    def fd_install(self, p: Process, fd: int, f: OpenFile) -> None:
        """fd_install() in fs/file.c: the reserved ``fd`` now refers to the open file ``f``."""
        p.files.install(fd, f)
        if self.probes:
            self.emit(FdInstall(p.name, fd, f))

    def file_close_fd(self, p: Process, fd: int) -> OpenFile:
        """file_close_fd() in fs/file.c: ``fd`` is taken out of the table; its open file is returned."""
        f = p.files.remove(fd)
        if self.probes:
            self.emit(CloseFd(p.name, fd, f))
        return f

    @rule("sys.close", "fd")
    def close_fd(self, p: Process, sock: int) -> int:
        """close(2), close_fd() in fs/file.c: drop one reference; the socket is released with the last (sock_close)."""
        f = p.files.fds.get(sock)
        if f is None:
            fact(f"fd {sock} is not open in this process")
            raise SysError("EBADF", "sys.close")
        self.file_close_fd(p, sock)
        if f.sock is not None:
            self.fput(f, exiting=False)
        return 0

    def fput(self, f: OpenFile, exiting: bool) -> None:
        """fput() in fs/file_table.c: one reference fewer; the last one releases the file (__fput)."""
        if self.fput_drop(f):
            self.fput_release(f, exiting)

    def fput_drop(self, f: OpenFile) -> bool:
        """fput() in fs/file_table.c: drop one reference; True when it was the last."""
        f.f_count -= 1
        if f.f_count > 0:
            fact(f"{f.f_count} other reference(s) to this socket remain: nothing is sent")
            return False
        return True

    def fput_release(self, f: OpenFile, exiting: bool) -> None:
        """__fput() in fs/file_table.c: the open file goes; a socket's release closes it (sock_close)."""
        self.files.release()
        self.tcp_close(f.sock, exiting)

    @rule("sys.dup", "fd")
    def f_dupfd(self, p: Process, sock: int) -> int:
        """dup(2), f_dupfd() in fs/file.c: a new fd (lowest free) for the same open file."""
        f = p.files.fds.get(sock)
        if f is None:
            raise SysError("EBADF", "sys.dup")
        fd = p.files.alloc_fd()
        self.fd_install(p, fd, f)
        return fd

    @rule("sys.eventfd", "fd")
    def do_eventfd(self, p: Process, **_: Any) -> int:
        """eventfd2(2), do_eventfd() in fs/eventfd.c: a new open file that is not a socket, at the lowest free fd (an event loop's wake-up descriptor)."""
        fd = p.files.alloc_fd()
        self.fd_install(p, fd, OpenFile(None))
        return fd

    @rule("sys.dup2", "fd")
    def do_dup2(self, p: Process, sock: int, fd: int) -> int:
        """dup2(2), do_dup2() in fs/file.c: EBADF past RLIMIT_NOFILE; an open target is closed silently."""
        f = p.files.fds.get(sock)
        if f is None:
            raise SysError("EBADF", "sys.dup2")
        if fd >= p.files.nofile:
            fact(f"target fd {fd} is not below RLIMIT_NOFILE {p.files.nofile}")
            raise SysError("EBADF", "sys.dup2")
        if fd == sock:
            return fd
        old = p.files.fds.get(fd)
        if old is not None:
            self.file_close_fd(p, fd)
            if old.sock is not None:
                self.fput(old, exiting=False)
        self.fd_install(p, fd, f)
        return fd

    @rule("sys.fork", "fd")
    def dup_fd(self, p: Process, **kw: Any) -> int:
        """fork(2), dup_fd() in fs/file.c: the child gets a copy of the fd table sharing every open file."""
        name = kw["as"]
        self._pid += 1
        child = Process(name, p.files.copy(), p.uid, self._pid, p.cred.copy())
        self.procs[name] = child
        if self.probes:
            for fd, f in child.files.fds.items():
                self.emit(FdInstall(name, fd, f))
        fact(f"process {name} shares {len(child.files.fds)} open socket(s) with {p.name}")
        return 0

    @rule("sys.exit", "fd")
    def exit_files(self, p: Process) -> int:
        """do_exit() -> exit_files() -> close_files() in fs/file.c: every fd is dropped, lowest first; the files whose last reference went are released afterwards by task_work_run() (kernel/task_work.c), last-in first-out: the file dropped last is released first. A positive SO_LINGER is ignored."""
        for fd in sorted(p.files.fds):
            f = self.file_close_fd(p, fd)
            # fput() queues __fput() as task work (task_work_add() pushes on the list's head)
            if f.sock is not None and self.fput_drop(f):
                p.task_works.append(f)
        return self.task_work_run(p)

    def task_work_run(self, p: Process) -> int:
        """task_work_run() in kernel/task_work.c: the queued releases run from the list's head (the
        newest first); each release's segments cross loopback before the next one runs."""
        while p.task_works:
            self.fput_release(p.task_works.pop(), exiting=True)
            if p.task_works and self.outbox:
                raise Block(lambda now: self.task_work_run(p), "exit: releasing the next file")
        p.alive = False
        return 0

    @rule("sys.set_nonblocking", "fd")
    def setfl(self, p: Process, sock: int, on: bool = True, **_: Any) -> int:
        """fcntl(2) F_SETFL O_NONBLOCK: a flag of the open file (any file), shared by its dup/fork copies."""
        f = p.files.fds.get(sock)
        if f is None:
            fact(f"fd {sock} is not open in this process")
            raise SysError("EBADF", "sys.set_nonblocking")
        f.nonblock = bool(on)
        return 0
