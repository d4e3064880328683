"""Why did a step turn out the way it did, and what would have changed it?

For one trace record this module gathers:

- the **rule** that decided the outcome, its **citation** (kernel function and file, man page) and
  the rule's full source text, plus every rule consulted on the way;
- the **facts** the rule recorded, and facts read from the kernel's own tables just before the
  step (who owns the port, when a TIME_WAIT entry expires, which fds share an open file, how full
  a queue is...);
- **what would have changed the outcome**: variants of the scenario (SO_REUSEADDR on the old
  and/or the new socket, waiting for a TIME_WAIT entry to expire, a larger backlog, reading
  before closing, ...) that are each *re-run on the model*; a variant is reported with the
  outcome the model gave, whether or not it differs. Nothing here is written by hand.

``socksim explain FILE --step N`` prints this; ``socksim explain FILE`` does every step; the
HTML page (:mod:`sim.report.page`) shows it beside the object graph.

The package is split by concept: ``text`` (where an outcome comes from, the texts of calls and
results, the text rendering), ``facts`` (the kernel's state read from the recorded object graphs),
``whatif`` (the counterfactual variants, re-run on the model), ``windows`` (the same facts in
Winsock's and a Windows administrator's terms), ``explainer`` (the
:class:`Explainer` that puts them together) and ``command`` (the terminal commands).
"""

from __future__ import annotations

from .command import cmd_explain, print_explanations, register
from .explainer import Explainer
from .text import MAX_WHATIFS, SOURCES, Explanation, WhatIf, call_text, outcome_text, render_text, syscall_line

__all__ = ["MAX_WHATIFS", "SOURCES", "Explainer", "Explanation", "WhatIf", "call_text", "cmd_explain",
           "outcome_text", "print_explanations", "register", "render_text"]
