"""Handlers and lifecycle hooks are inherited from base classes, as docs/testing.md says."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import AgentError, Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
)
from openintent.models import RunResult

pytestmark = pytest.mark.asyncio


async def run(spec: PortfolioSpec, *agents: Any, coordinator: Any = None) -> RunResult:
    async with Runtime(agents=list(agents), clock=VirtualClock(), seed=0) as rt:
        return await rt.run(spec, coordinator=coordinator)


class Worker:
    """A plain base class with a handler, a hook and a helper its subclasses change."""

    completed: list[tuple[str, str]]

    def __init__(self) -> None:
        self.completed = []

    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        return {"greeting": self.greet(intent.title), "by": type(self).__name__}

    @on_complete
    async def done(self, intent: Any) -> None:
        self.completed.append((type(self).__name__, intent.title))

    def greet(self, title: str) -> str:
        return f"hello {title}"


async def test_a_subclass_inherits_the_handlers_and_hooks_of_a_plain_base_class() -> None:
    @Agent("polite")
    class Polite(Worker):
        def greet(self, title: str) -> str:
            return f"good day {title}"

    polite = Polite()
    result = await run(PortfolioSpec("p", [IntentSpec("A", assign="polite")]), polite)
    assert result.intents["A"].state == {"greeting": "good day A", "by": "Polite"}
    assert polite.completed == [("Polite", "A")]


async def test_a_subclass_of_a_decorated_agent_has_its_handlers() -> None:
    @Agent("parent")
    class Parent(Worker):
        pass

    @Agent("child")
    class Child(Parent):
        pass

    spec = PortfolioSpec("p", [IntentSpec("A", assign="parent"), IntentSpec("B", assign="child")])
    result = await run(spec, Parent, Child)
    assert result.intents["A"].state["by"] == "Parent"
    assert result.intents["B"].state["by"] == "Child"


async def test_a_decorated_override_replaces_the_base_handler() -> None:
    @Agent("override")
    class Override(Worker):
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"overridden": True}

    result = await run(PortfolioSpec("p", [IntentSpec("A", assign="override")]), Override)
    assert result.intents["A"].state == {"overridden": True}  # the base's ran no more


async def test_an_undecorated_override_is_a_plain_method() -> None:
    @Agent("plain")
    class Plain(Worker):
        async def work(self, intent: Any) -> dict[str, Any]:  # type: ignore[override]
            return {"plain": True}

    with pytest.raises(AgentError, match="Plain has no @on_assignment handler"):
        await run(PortfolioSpec("p", [IntentSpec("A", assign="plain")]), Plain)


async def test_a_coordinator_inherits_its_hooks() -> None:
    class Summary:
        @on_all_complete
        async def finish(self, portfolio: Any) -> dict[str, Any]:
            return {"done": sorted(portfolio.intents)}

    @Coordinator("lead")
    class Lead(Summary):
        pass

    @Agent("worker")
    class Plain(Worker):
        pass

    result = await run(PortfolioSpec("p", [IntentSpec("A", assign="worker")]), Plain,
                       coordinator=Lead)
    assert result.output == {"done": ["A"]}
