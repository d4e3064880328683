"""What-if variants run from the base run's state instead of from the start.

A what-if variant shares every step before its first changed one with the base scenario, so its
run is the base run up to that step. Re-running that prefix for every variant of every step made a
page's what-ifs grow with the square of its steps. Here a worker process runs the base scenario
once more, and at each step where variants begin it forks (``os.fork()``: the child has the
simulator's whole state, SimPy's suspended generators included, which cannot be copied otherwise);
the child goes on with the variant's steps and sends back what the explanation needs. The result
is the same as a fresh run of the variant (a test compares the two on bundled scenarios): the
seed, the steps and so the random draws up to the fork are the same.

The worker is a fresh interpreter (``python -m sim.explain.forked``), so that each fork copies one
run's state, not the explainer's recording of the whole base run. Where ``os.fork()`` is missing,
or the worker fails, the variants run from the start as before.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from ..graph import record
from .whatif import judge


@dataclass
class Job:
    """One variant: the step it forks at, its steps from there, how to judge its run."""

    key: Any
    fork_at: int
    tail: list[Any]  # the variant's validated steps from fork_at on
    i: int  # the base record it explains
    new_s: int  # the target's step in the variant
    via: int | None
    mapping: dict[int, int]


def can_fork() -> bool:
    return hasattr(os, "fork")


def first_changed(base: dict[str, Any], data: dict[str, Any]) -> int | None:
    """The index of the first step of ``data`` that is not the base's (steps are shared, never
    changed in place, so identity tells); None when anything else differs (a sysctl, a process)."""
    if set(data) != set(base) or any(data[k] != v for k, v in base.items() if k != "steps"):
        return None
    for j, (a, b) in enumerate(zip(base["steps"], data["steps"])):
        if a is not b:
            return j
    return min(len(base["steps"]), len(data["steps"]))


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fork_variants(base_sc: Any, jobs: list[Job], base: list[tuple], seed: int,
                  personality: str | None) -> dict[Any, Any]:
    """In this process: run ``base_sc`` once, forking a child for each job at its step; each
    child's answer is ``judge()`` of its run. A child that failed is left out."""
    by_step: dict[int, list[Job]] = {}
    for job in jobs:
        by_step.setdefault(job.fork_at, []).append(job)
    results: dict[Any, Any] = {}
    mine: list[tuple[Job, int]] = []  # set in a child: its job and the pipe back

    def at_step(run: Any, i: int) -> None:
        if mine:
            return
        for job in by_step.get(i, ()):
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                _die_with_parent()  # (fork() clears the worker's own setting in the child)
                os.close(rfd)
                mine.append((job, wfd))
                run.switch(base_sc.model_copy(update={"steps": base_sc.steps[:i] + job.tail}))
                return
            os.close(wfd)
            try:
                data = _read_all(rfd)
            finally:
                os.close(rfd)
                os.waitpid(pid, 0)
            if data:
                results[job.key] = pickle.loads(data)

    finished = False
    try:
        rec = record(base_sc, seed=seed, graphs=False, personality=personality, at_step=at_step)
        finished = True
    finally:
        if mine and not finished:
            os._exit(1)  # a child whose variant failed: no answer (the caller runs it itself)
    if mine:
        job, wfd = mine[0]
        code = 1
        try:
            _write_all(wfd, pickle.dumps(judge(rec, base, job.i, job.new_s, job.via, job.mapping)))
            code = 0
        finally:
            os._exit(code)
    return results


def run_forked(base_sc: Any, jobs: list[Job], base: list[tuple], seed: int,
               personality: str | None) -> dict[Any, Any]:
    """:func:`fork_variants` in a fresh worker process; {} when the worker fails (the caller then
    runs every variant the ordinary way, so a failure of the model is reported where it happens)."""
    payload = pickle.dumps((base_sc, jobs, base, seed, personality))
    proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(payload)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not out:
        return {}
    return pickle.loads(out)


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): the worker ends when the command that started it ends."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent kills the worker on the way out
        pass


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report
    _die_with_parent()
    base_sc, jobs, base, seed, personality = pickle.load(sys.stdin.buffer)
    results = fork_variants(base_sc, jobs, base, seed, personality)
    sys.stdout.buffer.write(pickle.dumps(results))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
