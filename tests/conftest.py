"""Fixtures for every test of the suite."""

from __future__ import annotations

from typing import Any

import pytest

from sim.kernel.stack import Kernel
from sim.kernel.tcp_states import check_state_write


@pytest.fixture(autouse=True)
def state_writes_are_table_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel a test makes fails on a TCP state write that is not a transition-table row."""
    init = Kernel.__init__

    def subscribed_init(self: Kernel, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        self.subscribe(check_state_write)

    monkeypatch.setattr(Kernel, "__init__", subscribed_init)
