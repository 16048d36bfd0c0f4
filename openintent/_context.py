"""The seam between the authoring layer and a running runtime.

``agents.py`` never imports the runtime: the methods it gives decorated classes
(``patch_state``, ``record_cost``, ...) look up the run they are called from here. The runtime
sets the context variable for the tasks of a run; tasks and worker threads started inside the
run inherit it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

import anyio

from ._clock import Clock
from .errors import OpenIntentError
from .models import Decision, Intent, RunResult

__all__ = ["RunContext", "active_run", "current_run", "sleep"]


class RunContext(Protocol):
    """What a running portfolio offers to the handlers it calls."""

    @property
    def clock(self) -> Clock: ...

    @property
    def portfolio_id(self) -> str: ...

    async def patch_state(
        self, intent: Intent, patch: Mapping[str, Any], expected_version: int | None
    ) -> int: ...

    async def record_cost(
        self, agent_id: str, intent: Intent, usd: float, details: Mapping[str, Any]
    ) -> None: ...

    async def renew_lease(self, intent: Intent) -> float | None: ...

    async def record_event(
        self, agent_id: str, intent: Intent | None, event_type: str, data: Mapping[str, Any]
    ) -> None: ...

    async def effect(
        self,
        intent: Intent,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        check: Callable[..., Any] | None,
    ) -> Any: ...

    async def delegate(self, coordinator_id: str, intent: Intent, to: str) -> Any: ...

    def record_decision(
        self,
        coordinator_id: str,
        intent_id: str | None,
        decision: str,
        rationale: str,
        data: Mapping[str, Any],
    ) -> Decision: ...

    async def add_intent(self, spec: Any) -> str: ...

    async def execute_portfolio(self, spec: Any, coordinator_id: str) -> RunResult: ...


active_run: ContextVar[RunContext | None] = ContextVar("openintent_active_run", default=None)


def current_run(method: str) -> RunContext:
    """The run the calling handler belongs to, or a clear error outside any run."""
    run = active_run.get()
    if run is None:
        raise OpenIntentError(
            f"{method}() was called outside a run: call it from a handler while "
            "`await rt.run(...)` is running"
        )
    return run


async def sleep(seconds: float) -> None:
    """Sleep on the running portfolio's clock (real time outside a run).

    Use it in handlers instead of ``anyio.sleep`` so a test's virtual clock can skip the wait.

    >>> async def work(self, intent):
    ...     await openintent.sleep(30)   # instant under VirtualClock
    """
    run = active_run.get()
    if run is None:
        await anyio.sleep(seconds)
    else:
        await run.clock.sleep(seconds)
