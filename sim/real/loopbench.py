"""The real kernel's side of ``socksim bench`` (a'): connection lifecycles on loopback, from Python.

The lifecycle is the simulator's: socket(), connect() to a listener on 127.0.0.1, accept(), an
optional 100-byte send() and recv(), close() by the client, the server's recv() of EOF and its
close(). The client's TIME_WAIT entry is ended by the kernel's own timer, at no cost to the caller.

It runs in a private network namespace (``unshare(CLONE_NEWNET)`` as root), so nothing else's
ports, TIME_WAIT entries or connection table share the measurement. Like the rest of
:mod:`sim.real`, it imports only the standard library (and :mod:`sim.real.driver` for the
namespace and ``lo``).

``python -m sim.real.loopbench N [--data]`` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

PORT = 8080


def lifecycles(n: int, data: bool) -> float:
    """Wall seconds for ``n`` lifecycles on 127.0.0.1 in the current network namespace."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind(("127.0.0.1", PORT))
        srv.listen(4096)
        dest = ("127.0.0.1", PORT)
        payload = b"x" * 100
        t = time.perf_counter()
        for _ in range(n):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.connect(dest)
            a, _ = srv.accept()
            if data:
                c.send(payload)
                a.recv(100)
            c.close()
            if a.recv(65536) != b"":
                raise RuntimeError("the server read data where it expected end of stream")
            a.close()
        return time.perf_counter() - t
    finally:
        srv.close()


def measure(n: int, data: bool) -> dict[str, Any]:
    """Enter a private namespace (root only), bring ``lo`` up, time ``n`` lifecycles."""
    if os.geteuid() != 0:
        return {"skipped": "not root: the real side runs in a private network namespace made by unshare()"}
    from .netns import CLONE_NEWNET, _unshare_or_raise, lo_up

    try:
        # one namespace with the host-sized connection hash table (the scenario backend's
        # namespaces take a small private table, which 20,000 TIME_WAIT entries would crowd)
        _unshare_or_raise(CLONE_NEWNET, "CLONE_NEWNET")
        lo_up()
    except OSError as e:
        return {"skipped": f"no private network namespace: {e}"}
    lifecycles(min(n, 200), data)  # warm-up: first allocations of the socket caches
    wall = lifecycles(n, data)
    return {"lifecycles": n, "data": data, "wall_seconds": wall, "per_lifecycle_s": wall / n}


def main(argv: list[str]) -> int:
    n = int(argv[0])
    print(json.dumps(measure(n, "--data" in argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
