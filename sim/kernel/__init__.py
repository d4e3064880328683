"""The pure kernel model: plain objects and rules, no SimPy, no sockets, no clock.

Time enters only as ``now`` (seconds, float) passed into the methods of :class:`~.stack.Kernel`.
"""
