"""Helpers shared by several test modules (``from _helpers import ...``): running a portfolio
on a virtual clock, reading a result's events, and agents the coordinator tests share."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
    on_handoff,
    on_retry,
)
from openintent.models import Event, RunResult

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """The module ``examples/<name>.py``, imported afresh."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------- coordinators and agents


def portfolio(*intents: IntentSpec, name: str = "p") -> PortfolioSpec:
    return PortfolioSpec(name, list(intents))


HANG_GUARD = 10  # real seconds; only a regression that hangs ever reaches it


async def run(
    spec: PortfolioSpec,
    *agents: Any,
    coordinator: Any = None,
    clock: VirtualClock | None = None,
    seed: int | None = 0,
) -> RunResult:
    async with Runtime(agents=list(agents), clock=clock or VirtualClock(), seed=seed) as rt:
        return await rt.run(spec, coordinator=coordinator)


def types_of(result: RunResult, title: str) -> list[str]:
    return [event.type for event in result.events.for_intent(result.intents[title].id)]


def one(result: RunResult, event_type: str, title: str) -> Any:
    (event,) = [e for e in result.events.for_intent(result.intents[title].id)
                if e.type == event_type]
    return event


class Cleanup:
    """A slow agent whose ``finally`` counts: shows cancelled work really unwinds."""

    def __init__(self, answer: dict[str, Any] | None = None, seconds: float = 600) -> None:
        self.answer = answer if answer is not None else {"slow": True}
        self.seconds = seconds
        self.started = 0
        self.answered = 0
        self.cleaned = 0

    @on_assignment
    async def work(self, intent):
        self.started += 1
        try:
            await openintent.sleep(self.seconds)
            self.answered += 1
            return self.answer
        finally:
            self.cleaned += 1


@Agent("dev")
class Dev:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    @on_handoff
    async def received(self, intent, from_agent):
        self.log.append(("handoff", intent.title, from_agent, intent.assigned_to))

    @on_assignment
    async def work(self, intent):
        self.log.append(("work", intent.title, intent.assigned_to))
        return {"by": "dev", "shared": "dev"}


# ---------------------------------------------------------------------------------- guardrails


NO_DELAY = {"initial_delay": 0, "jitter": False}


def statuses(result: RunResult) -> dict[str, str]:
    return {title: str(item.status) for title, item in result.intents.items()}


def of_type(result: RunResult, kind: str, title: str | None = None) -> list[Event]:
    events = result.events.of_type(kind)
    if title is not None:
        events = [event for event in events if event.intent_id == result.intents[title].id]
    return events


async def bounded(rt: Runtime, spec: PortfolioSpec, coordinator: Any = None) -> RunResult:
    """``rt.run`` on a virtual clock, given up after 10**6 virtual seconds, so a regression
    that hangs fails the test (a real-time deadline would keep virtual time from jumping)."""
    result: RunResult | None = None
    with rt.clock.timeout(1e6):
        result = await rt.run(spec, coordinator=coordinator)
    assert result is not None, "the run was still going after 10**6 virtual seconds"
    return result


@Agent("echo")
class Echo:
    """Returns its title; records the order of calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @on_assignment
    async def work(self, intent):
        self.calls.append(intent.title)
        return {"title": intent.title, "saw": sorted(intent.inputs)}


class Flaky:
    """Fails the first ``failures`` attempts of every intent, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[tuple[str, int]] = []
        self.retries: list[tuple[int, str]] = []

    @on_assignment
    async def work(self, intent):
        self.attempts.append((intent.title, intent.attempt))
        if intent.attempt <= self.failures:
            raise RuntimeError(f"boom {intent.attempt}")
        return {"ok": intent.attempt}

    @on_retry
    async def retrying(self, intent, attempt, error):
        self.retries.append((attempt, str(error)))


FlakyAgent = Agent("flaky")(Flaky)


@Coordinator("lead")
class Lead:
    def __init__(self) -> None:
        self.completed: list[str] = []
        self.finished = 0

    @on_complete
    async def seen(self, intent):
        self.completed.append(intent.title)

    @on_all_complete
    async def done(self, portfolio):
        self.finished += 1
        return {"done": sorted(portfolio.intents)}


_RUN_TOKEN = re.compile(r"\b(pf|in|dc)_[0-9a-f]{16}")


def masked(value: Any) -> Any:
    """``value`` with each run's token masked out of its ids (``in_<token>_3`` becomes
    ``in_*_3``): ids are unique to each run, everything else a seed reproduces."""
    if isinstance(value, str):
        return _RUN_TOKEN.sub(r"\1_*", value)
    if isinstance(value, Mapping):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    return value


class Concurrency:
    """Counts the handlers of the agent :meth:`agent` makes: how many ran at once at most
    (``peak``) and the titles in the order they started (``order``)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.order: list[str] = []

    def agent(self, agent_id: str) -> type:
        """An ``@Agent(agent_id)`` whose handler counts itself and sleeps one virtual second."""
        counter = self

        @Agent(agent_id)
        class Counted:
            @on_assignment
            async def work(self, intent: Any) -> dict[str, Any]:
                counter.running += 1
                counter.peak = max(counter.peak, counter.running)
                counter.order.append(intent.title)
                await openintent.sleep(1)
                counter.running -= 1
                return {}

        return Counted
