"""SimulatedAgent: a ready-made agent for tests, with scripted results, delays and faults."""

from __future__ import annotations

import inspect
import math
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .._context import current_run
from .._registry import define_instance
from ..agents import AgentMethods
from ..errors import AgentError, Escalate
from ..models import Intent

__all__ = ["HANG", "SimulatedAgent", "SimulatedCall"]

#: An outcome in ``SimulatedAgent(result=[...])`` that waits until cancelled (by a timeout).
HANG = "hang"

Outcome = Mapping[str, Any] | Callable[[Intent], Any] | BaseException | type[BaseException] | None


@attrs.frozen
class SimulatedCall:
    """One call of a :class:`SimulatedAgent`: which intent, which attempt, when (clock time)."""

    intent_id: str
    title: str
    attempt: int
    time: float


class SimulatedAgent(AgentMethods):
    """An agent whose behaviour is scripted, for tests.

    ``result`` is what a call returns: a dict, a callable ``(intent) -> dict`` (may be async),
    or a list of per-call outcomes for each intent (the n-th call for an intent takes item n,
    the last item repeats). An outcome may also be an exception (raised), :data:`HANG`, or
    :class:`~openintent.Escalate`.

    ``delay`` sleeps on the runtime's clock before answering; ``cost_usd`` is reported through
    ``record_cost`` on every call that does not hang; the first ``fail_times`` calls for each
    intent raise ``error`` (default ``RuntimeError``); ``escalate="reason"`` escalates every call;
    ``hang=True`` waits until cancelled.

    Every call is recorded in :attr:`calls`. A new agent registers itself in the current
    registry, so ``Runtime()`` finds it by id.

    >>> writer = SimulatedAgent("writer", result={"draft": "..."}, delay=5.0)
    """

    def __init__(
        self,
        agent_id: str,
        result: Outcome | Sequence[Outcome] = None,
        *,
        delay: float = 0.0,
        cost_usd: float = 0.0,
        fail_times: int = 0,
        error: BaseException | type[BaseException] | None = None,
        escalate: str | None = None,
        hang: bool = False,
        register: bool = True,
    ) -> None:
        if not isinstance(agent_id, str) or not agent_id.strip():
            raise AgentError("SimulatedAgent needs a non-empty string agent_id")
        if delay < 0 or cost_usd < 0 or fail_times < 0:
            raise AgentError("SimulatedAgent delay, cost_usd and fail_times must be >= 0")
        self.agent_id = agent_id
        self.result = result
        self.delay = delay
        self.cost_usd = cost_usd
        self.fail_times = fail_times
        self.error = error
        self.escalate_reason = escalate
        self.hang = hang
        self.calls: list[SimulatedCall] = []
        self._calls_per_run: weakref.WeakKeyDictionary[Any, Counter[str]] = (
            weakref.WeakKeyDictionary()
        )
        define_instance(self, agent_id, "_simulate", register=register)

    def __repr__(self) -> str:
        return f"SimulatedAgent({self.agent_id!r}, calls={len(self.calls)})"

    @property
    def titles(self) -> list[str]:
        """The titles of the intents this agent was called for, in call order."""
        return [call.title for call in self.calls]

    def calls_for(self, title: str) -> list[SimulatedCall]:
        """The calls for one intent, by title."""
        return [call for call in self.calls if call.title == title]

    async def _simulate(self, intent: Intent) -> Any:
        run = current_run("SimulatedAgent")
        clock = run.clock
        # Counted per run: the script restarts each run.
        counts = self._calls_per_run.get(run)
        if counts is None:
            counts = self._calls_per_run[run] = Counter()
        counts[intent.id] += 1
        nth = counts[intent.id]
        self.calls.append(SimulatedCall(intent.id, intent.title, intent.attempt, clock.now()))
        outcome = self._outcome(nth)
        if self.hang or outcome == HANG:
            await clock.sleep(math.inf)
        if self.delay:
            await clock.sleep(self.delay)
        if self.cost_usd:
            await self.record_cost(intent, self.cost_usd, simulated=True)
        if self.escalate_reason is not None:
            raise Escalate(self.escalate_reason)
        if nth <= self.fail_times:
            raise _exception(self.error, f"{self.agent_id} failed (simulated, call {nth})")
        if isinstance(outcome, BaseException) or (
            isinstance(outcome, type) and issubclass(outcome, BaseException)
        ):
            raise _exception(outcome, f"{self.agent_id} failed (simulated)")
        if callable(outcome):
            value = outcome(intent)
            return await value if inspect.isawaitable(value) else value
        return None if outcome is None else dict(outcome)

    def _outcome(self, nth: int) -> Any:
        result = self.result
        if isinstance(result, list | tuple):
            if not result:
                return None
            return result[min(nth, len(result)) - 1]
        return result


def _exception(error: Any, default_message: str) -> BaseException:
    if error is None:
        return RuntimeError(default_message)
    if isinstance(error, type):
        return error(default_message) if issubclass(error, BaseException) else RuntimeError()
    if isinstance(error, BaseException):
        return error
    return RuntimeError(str(error))
