"""Differential fuzzing: random valid scenarios on the simulator and on the real kernel.

A scenario is drawn by hypothesis as *raw choices* -- one seed for the host and the processes,
then a number of steps (5 to 40) and one seed per step -- and :func:`interpret` turns them into a
scenario document (plain dicts) while keeping a rough picture of what the sockets are doing, so
that most steps make sense: sockets get options (SO_REUSEADDR, SO_REUSEPORT, SO_LINGER, buffer
sizes...) and are bound to a tiny port space, listen, connect to listening ports, accept, send,
receive, shut down and close; processes fork and dup; some sockets are non-blocking; the host
gets random sysctls (a one- or two-port ``ip_local_port_range``, ``tcp_tw_reuse``,
``tcp_timestamps``, ``somaxconn``, ``tcp_max_tw_buckets``...). Because every step is one element
of a list, hypothesis shrinks a scenario by deleting steps, and the interpretation of the
remaining ones adapts.

What legitimately varies between runs is kept out: the ephemeral range is always one or two
ports (so the port an autobind picks is decided by parity, never by the kernel's random offset),
sends are below 1000 bytes with receive buffers large enough that flow control never engages,
``tcp_tw_reuse_delay`` is at its maximum (60 s) so that no TIME_WAIT is recycled because the real
run happened to be slower than the simulated one, and sleeps are rare and short.

Every scenario is emitted as YAML and validated with :func:`sim.scenario.loader.load_text`, so a
divergent one can be written out verbatim and replayed with ``socksim crosscheck``.

The campaign (:func:`campaign`, ``socksim fuzz``) runs each example on both backends and compares
the traces: call results and the segments on the wire (a difference on the wire alone is a
divergence). A divergence is identified by a *signature* (the first disagreeing step's call
and the two outcome classes, e.g. ``bind: simulator EINVAL, real ok``, or the first segment that
differs, e.g. ``wire: <ACK differs in win``; see :attr:`Verdict.primary`); a
new one is confirmed by a second real run (timing-dependent differences are reported as unstable
and not shrunk), shrunk by hypothesis to the smallest example with the same signature, then
reduced further step by step, confirmed again, and written as YAML.
"""

from .world import *  # noqa: F401,F403
from .steps import *  # noqa: F401,F403
from .verdict import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
