"""`socksim run` shows a progress bar for a large run on a terminal, and nothing when piped."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from sim.cli import RUN_PROGRESS_CONNECTIONS

LARGE = f"""
name: large
processes: {{server: {{}}, client: {{}}}}
steps:
  - {{proc: server, call: socket, as: srv}}
  - {{proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}}
  - {{proc: server, call: listen, sock: srv, backlog: 4096}}
  - load: {{proc: client, port: 9999, rate: 1000, duration: {RUN_PROGRESS_CONNECTIONS // 1000 + 1},
           accept_proc: server, listener: srv}}
"""


def test_a_bar_on_a_terminal(tmp_path):
    f = tmp_path / "large.yaml"
    f.write_text(LARGE)
    pid, fd = pty.fork()
    if pid == 0:  # the child: socksim with a terminal for stdout and stderr
        os.execvp(sys.executable, [sys.executable, "-m", "sim.cli", "run", str(f)])
    out = b""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
    finally:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    assert b"connections" in out and b"run\x1b[0m large" in out, out[-500:]


def test_nothing_when_piped(tmp_path):
    f = tmp_path / "large.yaml"
    f.write_text(LARGE)
    r = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(f)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "eta" not in r.stderr and "%" not in r.stderr, r.stderr
