"""The real-kernel backend: the same scenario on the host kernel, in a private network namespace.

Ground truth for the model: this package imports only the standard library and :mod:`sim.trace`.
"""

from .backend import BLOCK_WAIT, RealBackend, RealBackendError
from .faults import RealFault

__all__ = ["BLOCK_WAIT", "RealBackend", "RealBackendError", "RealFault"]
