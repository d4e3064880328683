"""The kernel's tracepoints: one writer of TCP state, typed events, observers that touch nothing private."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.engine import SimBackend
from sim.kernel import stack, tracepoints as tp
from sim.kernel.stack import HOOKS, Kernel
from sim.kernel.tcp_states import TRANSITIONS, State, check_state_write
from sim.kernel.winsock import WinsockKernel
from sim.scenario.loader import load_file
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parents[1]
KERNEL_DIR = ROOT / "sim" / "kernel"


def _assignments(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(function, line, attribute) of every ``x.tcp_state = ...`` / ``x.substate = ...``."""
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and sub.attr in ("tcp_state", "substate"):
                        out.append((fn.name, node.lineno, sub.attr))
    return out


def test_tcp_set_state_is_the_only_writer_of_a_tcp_state():
    writers = []
    for path in sorted((ROOT / "sim").rglob("*.py")):
        for fn, line, attr in _assignments(ast.parse(path.read_text(encoding="utf-8"))):
            writers.append((path.relative_to(ROOT).as_posix(), fn, attr))
    # the constructors give a new object its first state; every later write is tcp_set_state()'s
    allowed = {("sim/kernel/tcp.py", "tcp_set_state", "tcp_state"),
               ("sim/kernel/tcp.py", "tcp_set_state", "substate"),
               ("sim/kernel/sockets.py", "__init__", "tcp_state"),
               ("sim/kernel/timewait.py", "__init__", "substate")}
    assert set(writers) <= allowed, sorted(set(writers) - allowed)
    assert ("sim/kernel/tcp.py", "tcp_set_state", "tcp_state") in writers


def test_the_table_check_fails_on_a_write_that_is_no_row():
    ok = tp.InetSockSetState(None, int(State.CLOSE), int(State.SYN_SENT), "connect")
    check_state_write(ok)
    with pytest.raises(AssertionError, match="not a row"):
        check_state_write(tp.InetSockSetState(None, int(State.CLOSE), int(State.ESTABLISHED), "connect"))
    with pytest.raises(AssertionError, match="not a row"):
        check_state_write(tp.InetSockSetState(None, int(State.LISTEN), int(State.CLOSE), "no_such_event"))


def test_every_state_write_of_a_run_arrives_as_an_event_and_is_a_row():
    sc = load_file(ROOT / "scenarios" / "time-wait-active-closer.yaml")
    seen: list[Any] = []
    run(sc, SimBackend(seed=sc.seed, probes=(seen.append,)), seed=sc.seed)
    changes = [e for e in seen if isinstance(e, tp.InetSockSetState)]
    assert changes
    for e in changes:
        assert TRANSITIONS[(State(e.old), e.event)][0] == e.new
    rows = {(State(e.old).name, e.event, State(e.new).name) for e in changes}
    # the active closer's path, ending in its TIME_WAIT minisock
    assert ("CLOSE", "connect", "SYN_SENT") in rows
    assert ("SYN_SENT", "rcv_synack", "ESTABLISHED") in rows
    assert ("ESTABLISHED", "close", "FIN_WAIT1") in rows
    kinds = {type(e) for e in seen}
    for k in (tp.SegmentSent, tp.SegmentDelivered, tp.FdInstall, tp.CloseFd, tp.PortBound,
              tp.PortReleased, tp.InetTwskEntered, tp.RequestQueued, tp.RuleConsulted, tp.FactNoted,
              tp.SyscallExit, tp.TimerArmed, tp.TimerCancelled, tp.KernelEntered, tp.InetSockSetState):
        assert k in kinds, k.__name__


def test_every_kind_of_event_is_emitted_by_the_bundled_scenarios():
    kinds: set[type] = set()
    for name in ("time-wait-active-closer", "time-wait-expiry", "rst-close-unread-data", "buffers-recv-queues"):
        sc = load_file(ROOT / "scenarios" / f"{name}.yaml")
        seen: list[Any] = []
        run(sc, SimBackend(seed=sc.seed, probes=(seen.append,)), seed=sc.seed)
        kinds |= {type(e) for e in seen}
    declared = {c for c in vars(tp).values()
                if isinstance(c, type) and c.__module__ == tp.__name__ and c is not tp.Tracepoints}
    assert declared - kinds == set(), sorted(c.__name__ for c in declared - kinds)


def test_unsubscribed_observer_gets_nothing_and_events_are_slotted():
    k = Kernel()
    got: list[Any] = []
    k.subscribe(got.append)
    k.add_process("p")
    k.syscall("p", "socket", {}, 0.0)
    assert got
    k.unsubscribe(got.append)
    n = len(got)
    k.syscall("p", "socket", {}, 0.0)
    assert len(got) == n
    for cls in vars(tp).values():
        if isinstance(cls, type) and cls.__module__ == tp.__name__ and cls is not tp.Tracepoints:
            assert hasattr(cls, "__slots__"), cls.__name__


def test_the_rule_trail_belongs_to_one_kernel():
    a, b = Kernel(), Kernel()
    a.add_process("p")
    b.add_process("p")
    a.syscall("p", "socket", {}, 0.0)
    out = b.syscall("p", "listen", {"sock": 99}, 0.0)
    assert "sys.socket" in a.rule_hits()
    assert "sys.socket" not in b.rule_hits()
    assert out.err == "EBADF"
    import sim.kernel.rules as rules

    assert not hasattr(rules, "TRAIL") and not hasattr(rules, "HITS")


def test_windows_varies_linux_only_through_named_hooks():
    linux_names = {n for cls in Kernel.__mro__ for n, v in vars(cls).items() if callable(v)}
    windows_parts = [c for c in WinsockKernel.__mro__ if c not in Kernel.__mro__]
    overridden = {n for c in windows_parts for n, v in vars(c).items()
                  if callable(v) and n in linux_names and not n.startswith("__")}
    assert overridden, "the Windows kernel overrides nothing?"
    assert overridden <= HOOKS, sorted(overridden - HOOKS)
    # every hook names a function of the Linux kernel
    assert HOOKS <= linux_names, sorted(HOOKS - linux_names)


def test_every_syscall_enters_a_kernel_function_named_after_the_kernels():
    for call, fn in stack.SYSCALLS.items():
        assert callable(getattr(Kernel, fn)), (call, fn)


def test_kernel_modules_stay_small_and_sans_io():
    for path in KERNEL_DIR.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 600, path.name
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    assert m.split(".")[0] not in ("simpy", "socket", "time", "os", "subprocess"), (path.name, m)
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, (path.name, node.name)


# --------------------------------------------------------------------------- views use public API only

VIEW_MODULES = ("graph", "explain", "coverage")


def _kernel_private_names() -> set[str]:
    names = set()
    for cls in (Kernel, WinsockKernel):
        for klass in cls.__mro__:
            if klass.__module__.startswith("sim.kernel"):
                names |= {n for n in vars(klass) if n.startswith("_") and not n.startswith("__")}
    return names


def _view_files() -> list[Path]:
    files = []
    for name in VIEW_MODULES:
        p = ROOT / "sim" / name
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]
    return files


def test_views_name_no_private_kernel_function():
    private = _kernel_private_names()
    assert private, "the kernel has no private names to guard?"
    for path in _view_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in private:
                pytest.fail(f"{path.name}:{node.lineno} uses the kernel's private {node.attr}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
                pytest.fail(f"{path.name}:{node.lineno} sets an attribute by name (patching?)")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in private:
                pytest.fail(f"{path.name}:{node.lineno} names the kernel's private {node.value!r}")


class _GuardedKernel(Kernel):
    """A Linux kernel that fails loudly when code above the engine (a view) reads a private
    attribute of it or assigns any attribute of it (wrapping a method is an assignment)."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") and not name.startswith("__") and _outside_kernel():
            raise AssertionError(f"a view read the kernel's private {name}")
        return super().__getattribute__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if _outside_kernel():
            raise AssertionError(f"a view assigned the kernel's {name}")
        super().__setattr__(name, value)


def _outside_kernel() -> bool:
    f = sys._getframe(2)
    mod = f.f_globals.get("__name__", "")
    # the kernel itself, and the engine that drives it (it swaps the outbox it drains), are inside
    return not mod.startswith(("sim.kernel", "sim.engine"))


def test_views_record_through_events_with_a_kernel_that_guards_its_privates(monkeypatch):
    import sim.explain as E
    import sim.graph as G

    sc = load_file(ROOT / "scenarios" / "lessons" / "03-restart-bind-fails.yaml")

    def views() -> tuple[Any, ...]:
        rec = G.record(sc, seed=sc.seed)
        failed = next(r.index for r in rec.trace.steps if r.kind == "call" and r.err == "EADDRINUSE")
        ex = E.Explainer(sc, recording=rec).explain(failed)
        trans = [(t.step, t.track, t.src, t.event, t.dst, t.note) for t in rec.transitions]
        graphs = [sorted(g.nodes(data="label")) for g in rec.graphs]
        return trans, graphs, rec.events, ex.rule, ex.state, ex.facts

    plain = views()
    monkeypatch.setattr(stack, "Kernel", _GuardedKernel)
    guarded = views()
    assert guarded == plain
    trans, _, _, rule, state, _ = plain
    assert any(t[4] == "TIME_WAIT" for t in trans) and rule and state


def test_the_guard_itself_catches_a_patch(monkeypatch):
    monkeypatch.setattr(stack, "Kernel", _GuardedKernel)
    b = SimBackend()
    b.start({"host": {}, "processes": {"p": {}}})
    with pytest.raises(AssertionError, match="assigned"):
        b.kernel.tcp_set_state = lambda *a: None  # what the old object graph did to ten methods
    with pytest.raises(AssertionError, match="private"):
        b.kernel._mib("X")


def test_recording_needs_no_kernel_function_by_name():
    for path in _view_files():
        src = path.read_text(encoding="utf-8")
        for hooked in ("_apply_raw", "_listen_start", "_request_ack", "_tw_kill", "_wrap(", "setattr("):
            assert hooked not in src, (path.name, hooked)


def test_view_modules_stay_small():
    for path in _view_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 600, path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, (path.name, node.name)
            if isinstance(node, ast.ExceptHandler):
                caught = ast.unparse(node.type) if node.type is not None else "everything"
                assert caught not in ("Exception", "BaseException", "everything"), (path.name, node.lineno)
