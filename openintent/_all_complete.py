"""``@on_all_complete``: fired once every intent of a run completed, on the coordinator
(whose return value is the run's output) and then on the agents."""

from __future__ import annotations

from typing import Any

from ._blocking import current_watch
from ._context import active_run
from ._dispatch import call_handler
from ._registry import HookKind
from ._results import ResultsView
from ._scheduler import Run
from .models import EventType, Portfolio

__all__ = ["fire_all_complete"]


async def fire_all_complete(run: Run) -> tuple[Any, str | None]:
    """Fire ``@on_all_complete``; return the output, or the error that replaced it.

    The coordinator's handler decides the output, so its exception fails the run (it is
    recorded as a ``hook_failed`` event and in ``result.errors[""]``); an agent's is recorded
    like any hook failure.
    """
    store = run.store
    spec = run.spec
    # Read-only views for the handler: the run's result keeps its own copies.
    results = ResultsView(store.records, run.id_of_title, views=True)
    portfolio = Portfolio(store.portfolio_id, spec.name, spec.description, spec.metadata, results)
    if store.journal is not None:  # a durable store: every completion is on disk first
        await store.journal.wait_committed(len(store.events))
    try:
        return await _fire(run, portfolio), None
    except Exception as exc:  # the work is done and kept; the run reports the failure
        run.errors[""] = exc
        run.bus.emit(
            EventType.HOOK_FAILED,
            None,
            {"handler": "on_all_complete", "error": str(exc), "error_type": type(exc).__name__},
        )
        store.logger.error("on_all_complete failed", exc_info=exc)
        return None, f"@on_all_complete raised {type(exc).__name__}: {exc}"


async def _fire(run: Run, portfolio: Portfolio) -> Any:
    output: Any = None
    token = active_run.set(run.context)
    watching = current_watch.set(run.blocking)
    try:
        if run.coordinator is not None:
            for handler in run.coordinator.handlers_of(HookKind.ALL_COMPLETE):
                output = await call_handler(handler, portfolio, clock=run.clock)
        for agent in run.agents:
            if agent is run.coordinator:
                continue
            for handler in agent.handlers_of(HookKind.ALL_COMPLETE):
                await run.hooks.call_safely(handler, portfolio)
    finally:
        current_watch.reset(watching)
        active_run.reset(token)
    return output
