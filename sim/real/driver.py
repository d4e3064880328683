"""The processes that live inside the private network namespace.

This file runs as a plain script (``python -I -S driver.py --zygote FD``), so it uses only the
standard library and imports nothing from ``sim``. Two roles:

* the **zygote**: enters a new network namespace, brings ``lo`` up, writes the scenario's
  per-namespace sysctls, then forks one scenario process per request. It is a child subreaper
  (forked scenario processes are re-parented to it) and ignores SIGCHLD (its children are reaped
  by the kernel). When its control channel to the controller closes, it kills its whole process
  group and exits, so a controller that dies leaves nothing behind.
* a **scenario process**: a child of the zygote driven over one AF_UNIX SOCK_SEQPACKET channel,
  one JSON message per command and one per reply. Every socket call is the raw libc call made
  through ctypes on plain fd numbers (no Python socket objects, so nothing is ever closed behind
  the scenario's back), and the kernel decides every error.

File-descriptor layout of a scenario process: 0, 1, 2 are /dev/null, /dev/null and the driver
log (not sockets, as in a C program with its standard streams open), and the control channel
sits at fd ``nofile`` -- at or above the RLIMIT_NOFILE soft limit -- so the kernel can never hand
that slot to the scenario (alloc_fd() allocates below the limit, dup2() above it is EBADF) and
the scenario sees exactly {0, 1, 2} plus its own sockets. The hard limit is raised to
``nofile + 3`` so that fork can briefly park the two ends of a new channel above it.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time

# Helpers of this driver in a sibling file: a plain script finds its directory on no path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sockinfo import (FAMILIES, MSG_FLAGS, OPTIONS, POLL,  # noqa: E402
                      PROTOCOLS, SHUT, SOCK_NONBLOCK, TYPES, drop_caps, errname, sockaddr_name,
                      tcp_info)
from netns import _read, apply_sysctls, enter_netns, lo_up  # noqa: E402
# the raw libc calls (libc and LOAD_IO_TIMEOUT are read by the controller's side as driver.*)
from libcalls import (F_GETFL, F_SETFL, MAX_MSG, O_NONBLOCK, PR_SET_CHILD_SUBREAPER,  # noqa: E402
                      PR_SET_PDEATHSIG, SIOCINQ, SIOCOUTQ, _accept, _bind, _Buffer, _close, _connect, _dup,
                      _dup2, _fcntl, _getpeername, _getsockname, _getsockopt, _int32, _ioctl, _listen,
                      _poll, _prctl, _recv, _result, _send, _sendto, _seteuid, _setsockopt, _shutdown,
                      _socket, c_int, c_uint, libc, sock_family, sockaddr)
from loadgen import LOAD_IO_TIMEOUT, LoadClient, _LoadServer  # noqa: E402, F401


class Child(LoadClient):
    """One scenario process: executes commands from its control channel, one at a time."""

    def __init__(self, ctrl_fd: int, zygote_pid: int) -> None:
        self.ctrl_fd = ctrl_fd
        self.zygote_pid = zygote_pid
        self.chan = socket.socket(fileno=ctrl_fd)
        self.sendbuf = _Buffer()
        self.recvbuf = _Buffer()
        self.server: _LoadServer | None = None
        self.qt = None  # the Qt side of this process, once a Qt command arrives

    # -- channel
    def send(self, msg: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(msg).encode()
        try:
            if fds:
                socket.send_fds(self.chan, [data], fds)
            else:
                self.chan.send(data)
        except OSError:
            os._exit(0)

    def hello(self, warn: list[str]) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.send({"hello": os.getpid(), "ctrl_fd": self.ctrl_fd, "nofile": soft, "hard": hard,
                   "uid": os.getuid(), "warn": warn})

    def serve(self) -> None:
        while True:
            try:
                data = self.chan.recv(MAX_MSG)
            except OSError:
                os._exit(0)
            if not data:
                os._exit(0)  # the controller went away
            msg = json.loads(data)
            fds: list[int] = []
            try:
                op = msg["op"]
                if op == "call":
                    if msg["call"] == "exit":
                        # exit(2): the kernel closes every descriptor (a positive SO_LINGER is
                        # ignored on this path), exactly as for a C program calling _exit().
                        self.send({"ret": 0, "err": None, "t": time.monotonic()})
                        os._exit(0)
                    reply, fds = self.call(msg["call"], msg.get("args") or {})
                elif op == "queues":
                    reply = self.queues(int(msg["sock"]))
                elif op == "tcp_info":
                    got = tcp_info(int(msg["sock"]), list(msg["fields"]))
                    reply = {"error": got} if isinstance(got, str) else {"info": got}
                elif op == "load_client":
                    reply = self.load_client(msg["spec"])
                elif op == "load_server_start":
                    self.server = _LoadServer(int(msg["listener"]), msg["close_first"])
                    reply = {"ok": True}
                elif op.startswith("qt_"):
                    reply = self.qt_op(msg)
                elif op == "load_server_stop":
                    reply = self.server.stop() if self.server else {"accepted": 0, "errors": {}}
                    self.server = None
                else:
                    reply = {"internal": f"unknown op {op!r}"}
            except Exception as exc:  # a driver bug: report it rather than die silently
                reply, fds = {"internal": f"{type(exc).__name__}: {exc}"}, []
            self.send(reply, fds)
            for fd in fds:
                os.close(fd)

    # -- Qt (sim/real/qt_driver.py, loaded on first use with PySide6 from the given paths)
    def qt_op(self, msg: dict) -> dict:
        if self.qt is None:
            import importlib.util

            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qt_driver.py")
            spec = importlib.util.spec_from_file_location("socksim_qt_driver", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            try:
                versions = mod.load(msg.get("paths") or [])
            except ImportError as exc:
                return {"internal": f"PySide6 cannot be imported: {exc}"}
            self.qt = mod.QtChild(self.call)
            self.qt.versions = versions
        reply = self.qt.handle(msg)
        reply["qt"] = list(self.qt.versions)
        return reply

    # -- calls
    def call(self, name: str, a: dict) -> tuple[dict, list[int]]:
        fds: list[int] = []
        t_in = time.monotonic()  # just before the system call: when the kernel saw it
        if name == "fork":
            ret, err, fds = self.c_fork()
        else:
            fn = getattr(self, "c_" + name, None)
            if fn is None:
                return {"internal": f"unknown call {name!r}"}, []
            got = fn(a)
            ret, err = got[0], got[1]
            if len(got) > 2 and got[2] is not None:
                return {"ret": ret, "err": err, "name": got[2], "t": time.monotonic(), "t_in": t_in}, fds
        return {"ret": ret, "err": err, "t": time.monotonic(), "t_in": t_in}, fds

    def c_socket(self, a: dict):
        typ = TYPES[a.get("type", "SOCK_STREAM")] | (SOCK_NONBLOCK if a.get("nonblock") else 0)
        return _result(_socket(FAMILIES[a.get("family", "AF_INET")], typ,
                               PROTOCOLS[a.get("protocol", 0)]))

    def c_setsockopt(self, a: dict):
        level, opt = OPTIONS[a["opt"]]
        v = a.get("value", 1)
        if a["opt"] == "IP_LOCAL_PORT_RANGE" and isinstance(v, (list, tuple)):
            raw = struct.pack("I", (int(v[1]) & 0xFFFF) << 16 | (int(v[0]) & 0xFFFF))
        else:
            vals = list(v) if isinstance(v, (list, tuple)) else [v]
            raw = struct.pack(f"{len(vals)}i", *(_int32(int(x)) for x in vals))
        n = len(raw) if a.get("optlen") is None else int(a["optlen"])
        if n > len(raw):
            raw += bytes(n - len(raw))
        buf = ctypes.create_string_buffer(raw, max(len(raw), 1))
        return _result(_setsockopt(int(a["sock"]), level, opt, buf, _int32(n) & 0xFFFFFFFF))

    def c_getsockopt(self, a: dict):
        level, opt = OPTIONS[a["opt"]]
        size = 8 if a["opt"] == "SO_LINGER" else 4
        want = size if a.get("optlen") is None else int(a["optlen"])
        buf = ctypes.create_string_buffer(max(size, want, 1))
        ln = c_uint(_int32(want) & 0xFFFFFFFF)
        ret, err = _result(_getsockopt(int(a["sock"]), level, opt, buf, ctypes.byref(ln)))
        if err:
            return ret, err
        raw = buf.raw[: ln.value]
        if a["opt"] == "SO_LINGER" and len(raw) >= 8:
            return list(struct.unpack("ii", raw[:8])), None
        val = struct.unpack("i", raw[:4])[0] if len(raw) >= 4 else int.from_bytes(raw, "little")
        if a["opt"] == "SO_ERROR":
            return (errname(val) if val else 0), None
        if a["opt"] == "IP_LOCAL_PORT_RANGE" and len(raw) >= 4:
            u = struct.unpack("I", raw[:4])[0]
            return [u & 0xFFFF, u >> 16], None
        if a.get("optlen") is not None:
            return {"value": val, "optlen": ln.value}, None
        return val, None

    def c_bind(self, a: dict):
        fd = int(a["sock"])
        sa = sockaddr(a.get("addr", "0.0.0.0"), int(a.get("port", 0)), sock_family(fd))
        return _result(_bind(fd, sa, len(sa)))

    def c_connect(self, a: dict):
        fd = int(a["sock"])
        sa = sockaddr(a.get("addr", "127.0.0.1"), int(a["port"]), sock_family(fd))
        return _result(_connect(fd, sa, len(sa)))

    def c_listen(self, a: dict):
        # libc listen(): the backlog reaches the kernel as given (CPython clamps negatives to 0).
        return _result(_listen(int(a["sock"]), _int32(int(a.get("backlog", 128)))))

    def c_accept(self, a: dict):
        buf = ctypes.create_string_buffer(128)
        ln = c_uint(128)
        ret, err = _result(_accept(int(a["sock"]), buf, ctypes.byref(ln)))
        return ret, err, (None if err else sockaddr_name(buf.raw[: ln.value]))

    @staticmethod
    def _flags(a: dict) -> int:
        flags = 0
        for f in a.get("flags") or []:
            flags |= MSG_FLAGS[f]
        return flags

    def c_send(self, a: dict):
        n = int(a["bytes"])
        flags = self._flags(a) | MSG_FLAGS["MSG_NOSIGNAL"]
        return _result(_send(int(a["sock"]), self.sendbuf.get(n), n, flags))

    def c_recv(self, a: dict):
        n = int(a.get("bytes", 65536))
        return _result(_recv(int(a["sock"]), self.recvbuf.get(n), n, self._flags(a)))

    def c_sendto(self, a: dict):
        n = int(a["bytes"])
        fd = int(a["sock"])
        flags = self._flags(a) | MSG_FLAGS["MSG_NOSIGNAL"]
        if a.get("addr") is None:
            return _result(_sendto(fd, self.sendbuf.get(n), n, flags, None, 0))
        sa = sockaddr(a["addr"], int(a.get("port", 0)), sock_family(fd))
        return _result(_sendto(fd, self.sendbuf.get(n), n, flags, sa, len(sa)))

    def c_shutdown(self, a: dict):
        how = a.get("how", "SHUT_WR")
        return _result(_shutdown(int(a["sock"]), SHUT[how] if isinstance(how, str) else _int32(int(how))))

    def c_poll(self, a: dict):
        """poll(2) on one fd with a zero timeout; ret is the list of revents names."""
        events = 0
        for e in a.get("events") or []:
            events |= POLL[e]
        pfd = struct.pack("ihh", int(a["sock"]), events, 0)
        buf = ctypes.create_string_buffer(pfd, len(pfd))
        ret, err = _result(_poll(buf, 1, 0))
        if err:
            return ret, err
        rev = struct.unpack("ihh", buf.raw)[2] & 0xFFFF
        return [n for n in POLL if rev & POLL[n]], None

    def c_getpeername(self, a: dict):
        buf = ctypes.create_string_buffer(128)
        ln = c_uint(128)
        ret, err = _result(_getpeername(int(a["sock"]), buf, ctypes.byref(ln)))
        if err:
            return ret, err
        name = sockaddr_name(buf.raw[: ln.value])
        return (name["port"] if name else 0), None, name

    def c_seteuid(self, a: dict):
        ret, err = _result(_seteuid(int(a["uid"])))
        # changing the euid clears the parent-death signal: arm it again
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return ret, err

    def c_capset(self, a: dict):
        err = drop_caps(list(a.get("drop") or []))
        return (-1, err) if err else (0, None)

    def c_close(self, a: dict):
        return _result(_close(int(a["sock"])))

    def c_dup(self, a: dict):
        return _result(_dup(int(a["sock"])))

    def c_dup2(self, a: dict):
        return _result(_dup2(int(a["sock"]), int(a["fd"])))

    def c_getsockname(self, a: dict):
        buf = ctypes.create_string_buffer(128)
        ln = c_uint(128)
        ret, err = _result(_getsockname(int(a["sock"]), buf, ctypes.byref(ln)))
        if err:
            return ret, err
        name = sockaddr_name(buf.raw[: ln.value])
        return (name["port"] if name else 0), None, name

    def c_set_nonblocking(self, a: dict):
        fd = int(a["sock"])
        flags = _fcntl(fd, F_GETFL, 0)
        if flags < 0:
            return _result(flags)
        new = (flags | O_NONBLOCK) if a.get("on", True) else (flags & ~O_NONBLOCK)
        ret, err = _result(_fcntl(fd, F_SETFL, new))
        return (0 if not err else ret), err

    def c_fork(self):
        """fork(2). The new process gets its own control channel; the scenario sees ret 0.

        The new process is made by a double fork so that it is re-parented to the zygote (a
        child subreaper) and survives this one's exit, as a real fork child does; only then does
        it arm PR_SET_PDEATHSIG against the zygote.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:
            try:
                p, q = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            except OSError as exc:
                return -1, errname(exc.errno), []
            try:
                pf = fcntl.fcntl(p.fileno(), fcntl.F_DUPFD, self.ctrl_fd + 1)
                qf = fcntl.fcntl(q.fileno(), fcntl.F_DUPFD, self.ctrl_fd + 1)
            finally:
                p.close()
                q.close()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(pf)
            os.close(qf)
            return -1, errname(exc.errno), []
        if pid == 0:
            try:
                if os.fork() == 0:
                    self._become_forked(pf, qf)
            finally:
                os._exit(0)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # SIGCHLD is ignored: the kernel reaped it
        os.close(qf)
        return 0, None, [pf]

    def _become_forked(self, pf: int, qf: int) -> None:
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            os.dup2(qf, self.ctrl_fd)  # replaces the inherited channel of the parent
            os.close(qf)
            os.close(pf)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            self.server = None
            deadline = time.monotonic() + 2.0
            while os.getppid() != self.zygote_pid and time.monotonic() < deadline:
                time.sleep(0.0005)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.zygote_pid:
                os._exit(0)
            self.hello([])
            self.serve()
        finally:
            os._exit(0)

    # -- observations
    def queues(self, fd: int) -> dict:
        out = {}
        for key, req in (("recv_q", SIOCINQ), ("send_q", SIOCOUTQ)):
            val = c_int(0)
            if _ioctl(fd, req, ctypes.byref(val)) < 0:
                return {"error": errname(ctypes.get_errno())}
            out[key] = val.value
        return out

def child_main(chan_fd: int, nofile: int, uid: int, zygote_pid: int, nr_open: int,
               caps: list | None = None) -> None:
    """Set up a fresh scenario process (already forked from the zygote) and serve it."""
    warn: list[str] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, min(nofile + 3, nr_open))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError):
        want = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctrl = nofile if nofile + 3 <= want else want - 3
    if ctrl < nofile:
        warn.append(f"control channel at fd {ctrl}, inside the scenario's RLIMIT_NOFILE {nofile}")
    if chan_fd != ctrl:
        os.dup2(chan_fd, ctrl)
    os.closerange(3, ctrl)
    os.closerange(ctrl + 1, max(want, 1 << 20) + 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, want), want))
    if uid:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            warn.append(f"could not switch to uid {uid}: {errname(exc.errno)}")
    if caps:
        problem = drop_caps(caps)
        if problem:
            warn.append(f"could not drop {', '.join(caps)}: {problem}")
    # After the credential change: changing the euid clears the parent-death signal.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote_pid:
        os._exit(0)
    child = Child(ctrl, zygote_pid)
    child.hello(warn)
    child.serve()


# ----------------------------------------------------------------------------- zygote


def _reaper(deaths_fd: int) -> None:
    """Reap every child (scenario processes, and forked ones re-parented here) and tell the
    controller how each ended: one line "PID STATUS" (the raw wait status) on ``deaths_fd``."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.02)
            continue
        except InterruptedError:
            continue
        try:
            os.write(deaths_fd, f"{pid} {status}\n".encode())
        except OSError:
            return


def zygote(chan_fd: int, deaths_fd: int | None = None) -> int:
    chan = socket.socket(fileno=chan_fd)

    def send(msg: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(msg).encode()
        if fds:
            socket.send_fds(chan, [data], fds)
        else:
            chan.send(data)

    # Whatever kills the controller (even SIGKILL) kills this process, and through their own
    # parent-death signal every scenario process with it.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        ns = enter_netns()
        lo_up()
    except OSError as exc:
        send({"error": str(exc)})
        return 1
    _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if deaths_fd is None:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    else:  # reaped here, and each end reported: the controller names a process that died
        threading.Thread(target=_reaper, args=(deaths_fd,), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's business
    try:
        nr_open = int(_read("/proc/sys/fs/nr_open"))
    except (OSError, ValueError):
        nr_open = 1 << 20
    me = os.getpid()
    send({"ready": True, "pid": me, "mode": ns["mode"], "ehash": ns["ehash"], "nr_open": nr_open})
    try:
        while True:
            try:
                data = chan.recv(MAX_MSG)
            except OSError:
                break
            if not data:
                break
            msg = json.loads(data)
            op = msg.get("op")
            if op == "setup":
                send(apply_sysctls(msg["sysctls"]))
            elif op == "spawn":
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    pid = os.fork()
                except OSError as exc:
                    a.close()
                    b.close()
                    send({"error": f"fork: {errname(exc.errno)}"})
                    continue
                if pid == 0:
                    try:
                        a.detach()
                        chan.detach()
                        child_main(b.detach(), int(msg["nofile"]), int(msg["uid"]), me, nr_open,
                                   list(msg.get("drop_caps") or []))
                    finally:
                        os._exit(70)
                b.close()
                send({"pid": pid}, [a.fileno()])
                a.close()
            elif op == "quit":
                break
            else:
                send({"error": f"unknown op {op!r}"})
    finally:
        # Nothing may outlive the zygote: kill its process group (itself included) when it was
        # started as a group leader, which is how the controller starts it.
        if os.getpgid(0) == me:
            os.killpg(me, signal.SIGKILL)
    return 0


def probe() -> int:
    """Exit 0 when a network namespace with a working loopback can be made here."""
    try:
        mode = enter_netns()["mode"]
        lo_up()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen()
        c = socket.create_connection(s.getsockname(), timeout=2)
        c.close()
        s.close()
    except OSError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(mode)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--zygote":
        return zygote(int(argv[1]), int(argv[2]) if len(argv) >= 3 else None)
    if argv and argv[0] == "--probe":
        return probe()
    print("usage: driver.py --zygote FD [DEATHS_FD] | --probe", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
