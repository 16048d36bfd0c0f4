"""Which failures are retried: programming errors never are; a RetryPolicy can name the
exceptions to retry on and those never to retry on."""

from __future__ import annotations

import types
from typing import Any

import pytest

from openintent import (
    AgentError,
    EventType,
    RetryPolicy,
    RunFailedError,
    Runtime,
    SpecError,
    VirtualClock,
)
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

from _helpers import FlakyAgent


def portfolio(*intents: IntentSpec) -> PortfolioSpec:
    return PortfolioSpec("p", list(intents))


async def run(spec: PortfolioSpec, *agents: Any) -> Any:
    async with Runtime(agents=list(agents), clock=VirtualClock(), seed=0) as rt:
        return await rt.run(spec)


THREE = {"max_attempts": 3, "initial_delay": 0}


class Raiser:
    """Raises the next error of ``errors`` on each call, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"done": True}


def raiser(agent_id: str, *errors: BaseException) -> Any:
    return Agent(agent_id)(type(f"Raiser_{agent_id}", (Raiser,), {}))(*errors)


# ---------------------------------------------------------------------------- never retried


@pytest.mark.asyncio
async def test_a_non_dict_result_fails_on_the_first_attempt_whatever_the_policy() -> None:
    calls = []

    @Agent("rp-list")
    class ReturnsList:
        @on_assignment
        async def work(self, intent: Any) -> Any:
            calls.append(1)
            return ["not", "a", "dict"]

    spec = portfolio(IntentSpec("A", assign="rp-list", retry={**THREE, "retry_on": [Exception]}))
    result = await run(spec, ReturnsList)
    assert result.intents["A"].status == "failed"
    assert result.intents["A"].error_type == "DataError"
    assert result.intents["A"].attempts == 1 and calls == [1]


def _with_handler(agent: Any, handler: Any) -> Any:
    # Swapped in on the instance, after the class was decorated: the handler is only found
    # to take the wrong arguments when it is called.
    agent.work = types.MethodType(handler, agent)
    return agent


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_handler_called_with_the_wrong_arguments_fails_at_once(kind: str) -> None:
    calls = []

    async def async_needs_two(self: Any, intent: Any, extra: Any) -> dict[str, Any]:
        calls.append(1)
        return {}

    def sync_needs_two(self: Any, intent: Any, extra: Any) -> dict[str, Any]:
        calls.append(1)
        return {}

    @Agent("rp-args")
    class Args:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {}

    handler = async_needs_two if kind == "async" else sync_needs_two
    agent = _with_handler(Args(), handler)
    result = await run(portfolio(IntentSpec("A", assign="rp-args", retry=THREE)), agent)
    failed = result.intents["A"]
    assert failed.status == "failed"
    assert failed.attempts == 1 and calls == []
    assert failed.error_type == "AgentError"
    assert "cannot be called with the 1 argument(s)" in failed.error
    assert "extra" in failed.error
    with pytest.raises(RunFailedError) as caught:
        result.raise_for_status()
    error = caught.value.failures[0].__cause__
    assert isinstance(error, AgentError) and isinstance(error.__cause__, TypeError)

    # A TypeError from inside a handler's body is an ordinary failure: it is retried.
    inner = raiser(f"rp-inner-{kind}", TypeError("bad operand"), TypeError("bad operand"))
    result = await run(portfolio(IntentSpec("A", assign=f"rp-inner-{kind}", retry=THREE)),
                       inner)
    assert result.intents["A"].status == "completed"
    assert inner.calls == 3


@pytest.mark.asyncio
async def test_a_wrong_signature_on_the_retry_path_fails_at_once_too() -> None:
    # Under a per-intent timeout the handler is called through the slower, general path.
    @Agent("rp-args-timeout")
    class Args:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {}

    async def needs_two(self: Any, intent: Any, extra: Any) -> dict[str, Any]:
        return {}

    agent = _with_handler(Args(), needs_two)
    spec = portfolio(IntentSpec("A", assign="rp-args-timeout", retry=THREE, timeout=5))
    result = await run(spec, agent)
    assert result.intents["A"].attempts == 1
    assert result.intents["A"].error_type == "AgentError"


# ---------------------------------------------------------------------------- retry_on


@pytest.mark.asyncio
async def test_retry_on_retries_only_the_named_exceptions() -> None:
    flaky = raiser("rp-flaky", TimeoutError("slow"), ValueError("bad input"))
    spec = portfolio(IntentSpec("A", assign="rp-flaky",
                                retry=RetryPolicy(max_attempts=5, initial_delay=0,
                                                  retry_on=(TimeoutError, "ConnectionError"))))
    result = await run(spec, flaky)
    assert result.intents["A"].status == "failed"
    assert result.intents["A"].error_type == "ValueError"
    assert result.intents["A"].attempts == 2 and flaky.calls == 2


@pytest.mark.asyncio
async def test_never_retry_on_matches_names_along_the_mro() -> None:
    # KeyError is a LookupError: the name of a base class matches its subclasses.
    flaky = raiser("rp-lookup", TimeoutError("slow"), KeyError("gone"))
    spec = portfolio(IntentSpec("A", assign="rp-lookup", retry={
        **THREE, "never_retry_on": ["LookupError"]}))
    result = await run(spec, flaky)
    assert result.intents["A"].error_type == "KeyError"
    assert flaky.calls == 2


@pytest.mark.asyncio
async def test_a_failure_that_is_never_retried_skips_the_fallback_agents_too() -> None:
    primary = raiser("rp-primary", PermissionError("no"))
    backup = raiser("rp-backup")
    spec = portfolio(IntentSpec("A", assign="rp-primary", retry={
        "max_attempts": 1, "initial_delay": 0, "fallback": ["rp-backup"],
        "never_retry_on": [PermissionError]}))
    result = await run(spec, primary, backup)
    assert result.intents["A"].status == "failed"
    assert backup.calls == 0


def test_the_policy_decides_by_retry_on_and_never_retry_on() -> None:
    policy = RetryPolicy(retry_on=(OSError,), never_retry_on=("builtins.FileNotFoundError",))
    assert policy.retries(ConnectionError())
    assert not policy.retries(FileNotFoundError())
    assert not policy.retries(ValueError())
    assert RetryPolicy().retries(ValueError())
    assert RetryPolicy(retry_on="ValueError").retry_on == ("ValueError",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"retry_on": (int,)}, "retry_on takes exception classes or their names"),
        ({"never_retry_on": ["not a name"]}, "never_retry_on takes exception classes"),
        ({"retry_on": 3}, "retry_on takes a tuple of exception classes"),
        ({"retry_on": [""]}, "retry_on takes exception classes"),
    ],
)
def test_exception_filters_are_checked_when_the_policy_is_built(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        RetryPolicy(**fields)
    with pytest.raises(SpecError, match=message):
        IntentSpec("A", retry=fields)


def test_an_unknown_policy_field_lists_the_new_fields() -> None:
    with pytest.raises(SpecError, match="retry_on, never_retry_on"):
        RetryPolicy.coerce({"retry_when": ["ValueError"]})


@pytest.mark.parametrize("retry_on, never_retry_on", [
    ((TimeoutError,), (TimeoutError,)),
    (("TimeoutError",), (TimeoutError,)),
    ((ValueError, "builtins.KeyError"), ("KeyError",)),
])
def test_one_exception_in_both_retry_on_and_never_retry_on_is_a_spec_error(
    retry_on: Any, never_retry_on: Any
) -> None:
    with pytest.raises(SpecError, match="both retry_on and never_retry_on"):
        RetryPolicy(retry_on=retry_on, never_retry_on=never_retry_on)
    with pytest.raises(SpecError, match="both retry_on and never_retry_on"):
        RetryPolicy.coerce({"retry_on": retry_on, "never_retry_on": never_retry_on})
    # A subclass in one and its base in the other is a meaningful policy.
    RetryPolicy(retry_on=(OSError,), never_retry_on=(FileNotFoundError,))


@pytest.mark.asyncio
async def test_retries_follow_the_policy_and_on_retry_fires_before_each():
    flaky = FlakyAgent(failures=2)
    spec = portfolio(IntentSpec("A", assign="flaky", retry=RetryPolicy(
        max_attempts=3, initial_delay=0.001, jitter=False)))
    result = await run(spec, flaky)
    assert result.status == "completed"
    assert result.intents["A"].attempts == 3
    assert result.intents["A"].state == {"ok": 3}
    assert flaky.attempts == [("A", 1), ("A", 2), ("A", 3)]
    assert flaky.retries == [(2, "boom 1"), (3, "boom 2")]
    types = result.events.types()
    assert types.count(EventType.ATTEMPT_FAILED) == 2
    assert types.count(EventType.RETRY_SCHEDULED) == 2
    delays = [event.data["delay"] for event in result.events.of_type("retry_scheduled")]
    assert delays == [0.001, 0.002]


@pytest.mark.asyncio
async def test_fallback_agents_take_over_when_the_primary_gives_up():
    @Agent("backup")
    class Backup:
        @on_assignment
        async def work(self, intent):
            return {"by": "backup", "attempt": intent.attempt}

    spec = portfolio(IntentSpec("A", assign="flaky", retry={
        "max_attempts": 2, "initial_delay": 0, "fallback": ["backup"]}))
    result = await run(spec, FlakyAgent(failures=10), Backup)
    assert result.status == "completed"
    assert result.intents["A"].state == {"by": "backup", "attempt": 3}
    assert result.intents["A"].assigned_to == "backup"
    dispatched = [event.data["agent"] for event in result.events.of_type("dispatched")]
    assert dispatched == ["flaky", "flaky", "backup"]
