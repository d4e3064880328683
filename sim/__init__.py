"""socksim: the kernel's socket machinery as a discrete-event model, cross-checked against the real kernel."""

__version__ = "0.1.0"
