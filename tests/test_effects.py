"""Side effects exactly once (``self.effect``), in process on the virtual clock: a recorded
value is never recomputed (retries, later calls, resumes), a failed effect runs again, an
effect in doubt is confirmed by its ``check`` or fails its intent until a person settles it
with ``rt.resolve_effect``; the journal gates the call; results, ``rt.load`` and the replay
oracle agree. tests/test_effects_kill.py kills real processes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import openintent
import openintent._store
from openintent import (
    EffectInDoubtError,
    OpenIntentError,
    RunFailedError,
    RunInUseError,
    RunNotFoundError,
    Runtime,
    VirtualClock,
)
from openintent._effects import effect_calls
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import EffectRecord, RunResult
from openintent.testing import assert_replay_matches

pytestmark = pytest.mark.asyncio

RETRY = {"max_attempts": 3, "initial_delay": 1, "jitter": False}


class Outside:
    """The outside world: counts the real calls of each effect."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.hang_first = False  # the first call hangs (a timeout or a cancel cuts it short)
        self.fail_first = False
        self.started = anyio.Event()

    async def charge(self, amount: int, *, currency: str = "EUR") -> dict[str, Any]:
        self.calls.append(("charge", amount))
        self.started.set()
        charges = sum(name == "charge" for name, _ in self.calls)
        if self.hang_first and charges == 1:
            await openintent.sleep(1000)
        if self.fail_first and charges == 1:
            raise ValueError("card declined")
        return {"charge": f"ch_{charges}", "amount": amount, "currency": currency}

    def mail(self, to: str) -> str:
        self.calls.append(("mail", threading.get_ident()))
        return f"sent to {to}"


def payer(outside: Outside, *, check: Any = None, fail_attempt: int = 0) -> Any:
    @Agent("payer")
    class Payer:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        @on_assignment
        async def pay(self, intent: Any) -> dict[str, Any]:
            value = await self.effect(intent, "charge-card", outside.charge, 42,
                                      currency="USD", check=check)
            self.seen.append(value)
            if intent.attempt == fail_attempt:
                raise RuntimeError("flaky after the charge")
            return {"receipt": value["charge"]}

    return Payer()


def shipper() -> Any:
    @Agent("shipper")
    class Shipper:
        @on_assignment
        async def ship(self, intent: Any) -> dict[str, Any]:
            [before] = intent.inputs.values()  # Pay's state, or Ship's
            return {"shipped": before.get("receipt", before.get("shipped"))}

    return Shipper()


def order(timeout: float | None = None) -> PortfolioSpec:
    return PortfolioSpec("order", [
        IntentSpec("Pay", assign="payer", retry=RETRY, timeout=timeout),
        IntentSpec("Ship", assign="shipper", depends_on=["Pay"]),
        IntentSpec("Invoice", assign="shipper", depends_on=["Ship"]),
    ])


async def run(spec: PortfolioSpec, *agents: Any, store: str = "memory://") -> RunResult:
    async with Runtime(agents=list(agents), clock=VirtualClock(), seed=0, store=store) as rt:
        return await rt.run(spec)


def effect_events(result: RunResult, title: str = "Pay") -> list[tuple[str, dict[str, Any]]]:
    return [(event.type, event.to_dict()["data"])
            for event in result.events.for_intent(title)
            if event.type.startswith("effect_")]


# ------------------------------------------------------------------ recorded values


async def test_a_retry_gets_the_recorded_value_and_the_effect_runs_once() -> None:
    outside = Outside()
    agent = payer(outside, fail_attempt=1)
    result = await run(order(), agent, shipper())
    assert result.status == "completed"
    assert outside.calls == [("charge", 42)]
    first = {"charge": "ch_1", "amount": 42, "currency": "USD"}
    assert agent.seen == [first, first]  # attempt 2 got the recorded value
    assert result.intents["Pay"].attempts == 2
    assert effect_events(result) == [
        ("effect_started", {"name": "charge-card", "attempt": 1}),
        ("effect_completed", {"name": "charge-card", "value": first}),
    ]
    assert result.intents["Pay"].effects == (
        EffectRecord(name="charge-card", status="completed", value=first, attempts=1),)
    assert result.intents["Ship"].effects == ()
    assert result.intents["Pay"].to_dict()["effects"][0]["value"] == first
    assert_replay_matches(result)


async def test_a_second_call_of_one_name_in_the_same_attempt_gets_the_recorded_value(
) -> None:
    outside = Outside()

    @Agent("twice")
    class Twice:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            first = await self.effect(intent, "mail", outside.mail, "ann")
            second = await self.effect(intent, "mail", outside.mail, "bob")
            other = await self.effect(intent, "mail-bob", outside.mail, "bob")
            return {"values": [first, second, other]}

    result = await run(PortfolioSpec("p", [IntentSpec("T", assign="twice")]), Twice())
    assert result.intents["T"].state["values"] == ["sent to ann", "sent to ann", "sent to bob"]
    assert [name for name, _ in outside.calls] == ["mail", "mail"]
    assert [effect.name for effect in result.intents["T"].effects] == ["mail", "mail-bob"]


async def test_the_value_is_a_plain_copy_and_a_sync_fn_runs_in_a_worker_thread() -> None:
    outside = Outside()

    @Agent("copier")
    class Copier:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            value = await self.effect(intent, "charge", outside.charge, 7)
            value["amount"] = 1_000  # the caller's copy: the log keeps its own
            again = await self.effect(intent, "charge", outside.charge, 7)
            sent = await self.effect(intent, "mail", outside.mail, to="ann")
            return {"again": again, "sent": sent}

    result = await run(PortfolioSpec("p", [IntentSpec("C", assign="copier")]), Copier())
    assert result.intents["C"].state["again"]["amount"] == 7
    assert result.intents["C"].state["sent"] == "sent to ann"
    assert outside.calls[1][0] == "mail" and outside.calls[1][1] != threading.get_ident()


async def test_a_failed_effect_reaches_the_handler_and_runs_again_on_the_next_attempt(
) -> None:
    outside = Outside()
    outside.fail_first = True
    caught: list[BaseException] = []

    @Agent("payer")
    class Payer:
        @on_assignment
        async def pay(self, intent: Any) -> dict[str, Any]:
            try:
                value = await self.effect(intent, "charge-card", outside.charge, 42)
            except ValueError as exc:
                caught.append(exc)
                raise
            return {"receipt": value["charge"]}

    result = await run(order(), Payer(), shipper())
    assert result.status == "completed"
    assert [type(exc) for exc in caught] == [ValueError] and str(caught[0]) == "card declined"
    assert len(outside.calls) == 2
    assert [kind for kind, _ in effect_events(result)] == [
        "effect_started", "effect_failed", "effect_started", "effect_completed"]
    assert effect_events(result)[1][1] == {"name": "charge-card", "error": "card declined",
                                           "error_type": "ValueError"}
    [effect] = result.intents["Pay"].effects
    assert (effect.status, effect.attempts, effect.error_type) == ("completed", 2, "ValueError")
    assert result.intents["Pay"].state["receipt"] == "ch_2"
    assert_replay_matches(result)


# ------------------------------------------------------------------ in doubt


async def test_an_effect_cut_short_is_in_doubt_and_fails_its_intent_without_retry() -> None:
    outside = Outside()
    outside.hang_first = True
    result = await run(order(timeout=10), payer(outside), shipper())
    assert result.status == "failed"
    pay = result.intents["Pay"]
    # The timeout's retry found the effect in doubt: no check, so no third attempt.
    assert (pay.status, pay.attempts, pay.error_type) == ("failed", 2, "EffectInDoubtError")
    assert "'charge-card'" in pay.error and "rt.resolve_effect(" in pay.error
    assert outside.calls == [("charge", 42)]  # never called again
    assert pay.effects == (EffectRecord(name="charge-card", status="in_doubt", attempts=1),)
    assert result.intents["Ship"].status == "skipped"
    [decision] = [d for d in result.decisions if d.decision == "effect_in_doubt"]
    assert decision.coordinator_id == "runtime" and decision.intent_id == pay.id
    assert decision.data == {"effect": "charge-card", "attempt": 1}
    assert "person must decide" in decision.rationale
    assert "rt.resolve_effect(" in decision.rationale
    with pytest.raises(RunFailedError) as raised:
        result.raise_for_status()
    cause = raised.value.failures[0].__cause__
    assert isinstance(cause, EffectInDoubtError) and isinstance(cause, OpenIntentError)
    assert (cause.effect, cause.title, cause.intent_id, cause.portfolio_id) == (
        "charge-card", "Pay", pay.id, result.portfolio_id)
    assert_replay_matches(result)


async def test_a_check_confirms_an_effect_in_doubt() -> None:
    outside = Outside()
    outside.hang_first = True
    asked: list[tuple[Any, ...]] = []

    async def found(amount: int, *, currency: str) -> dict[str, Any]:
        asked.append((amount, currency))
        return {"charge": "ch_found"}

    agent = payer(outside, check=found)
    result = await run(order(timeout=10), agent, shipper())
    assert result.status == "completed"
    assert outside.calls == [("charge", 42)] and asked == [(42, "USD")]
    assert result.intents["Pay"].state["receipt"] == "ch_found"
    assert effect_events(result)[-1] == (
        "effect_completed", {"name": "charge-card", "value": {"charge": "ch_found"},
                             "checked": True})
    assert result.intents["Pay"].effects[0].checked is True
    assert result.intents["Invoice"].status == "completed"
    assert_replay_matches(result)


async def test_a_check_that_finds_nothing_runs_the_effect_again() -> None:
    outside = Outside()
    outside.hang_first = True
    result = await run(order(timeout=10), payer(outside, check=lambda *a, **k: None),
                       shipper())
    assert result.status == "completed"
    assert len(outside.calls) == 2
    assert result.intents["Pay"].state["receipt"] == "ch_2"
    [effect] = result.intents["Pay"].effects
    assert (effect.status, effect.attempts, effect.checked) == ("completed", 2, False)
    assert_replay_matches(result)


async def test_a_check_that_raises_leaves_the_effect_in_doubt() -> None:
    outside = Outside()
    outside.hang_first = True

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("payments API down")

    result = await run(order(timeout=10), payer(outside, check=broken), shipper())
    pay = result.intents["Pay"]
    assert (pay.status, pay.error_type, pay.attempts) == ("failed", "EffectInDoubtError", 2)
    assert "ConnectionError: payments API down" in pay.error
    with pytest.raises(RunFailedError) as raised:
        result.raise_for_status()
    cause = raised.value.failures[0].__cause__
    assert isinstance(cause, EffectInDoubtError)
    assert isinstance(cause.__cause__, ConnectionError)


async def test_a_value_that_is_not_json_data_is_a_data_error_and_stays_in_doubt() -> None:
    @Agent("odd")
    class Odd:
        @on_assignment
        async def work(self, intent: Any) -> None:
            await self.effect(intent, "make-set", lambda: {1, 2})

    result = await run(PortfolioSpec("p", [IntentSpec("O", assign="odd", retry=RETRY)]), Odd())
    odd = result.intents["O"]
    assert (odd.status, odd.error_type, odd.attempts) == ("failed", "DataError", 1)
    assert "effect 'make-set' of intent 'O'" in odd.error
    assert odd.effects[0].status == "in_doubt"


async def test_two_calls_of_one_name_at_once_are_refused() -> None:
    calls: list[int] = []

    async def slow() -> int:
        calls.append(1)
        await openintent.sleep(1)
        return 1

    @Agent("racer")
    class Racer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            errors: list[str] = []

            async def call() -> None:
                try:
                    await self.effect(intent, "charge", slow)
                except OpenIntentError as exc:
                    errors.append(str(exc))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                tg.start_soon(call)
            return {"errors": errors}

    result = await run(PortfolioSpec("p", [IntentSpec("R", assign="racer")]), Racer())
    [error] = result.intents["R"].state["errors"]
    assert "already being called" in error
    assert calls == [1]


async def test_bad_arguments_say_what_effect_takes() -> None:
    @Agent("bad")
    class Bad:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            messages = []
            for args in [("", print), ("x", "not callable")]:
                try:
                    await self.effect(intent, *args)
                except OpenIntentError as exc:
                    messages.append(str(exc))
            return {"messages": messages}

    result = await run(PortfolioSpec("p", [IntentSpec("B", assign="bad")]), Bad())
    first, second = result.intents["B"].state["messages"]
    assert "non-empty name" in first and "takes a function" in second
    with pytest.raises(OpenIntentError, match="outside a run"):
        await Bad().effect(object(), "x", print)  # type: ignore[attr-defined]


async def test_a_coordinator_runs_effects_too() -> None:
    outside = Outside()

    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> dict[str, Any]:
            return {"mail": await self.effect(intent, "announce", outside.mail, "team")}

    async with Runtime(agents=[], clock=VirtualClock()) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("X")]), coordinator=Lead)
    assert result.intents["X"].state["mail"] == "sent to team"
    assert result.intents["X"].effects[0].status == "completed"


async def test_effect_calls_counts_every_real_call() -> None:
    outside = Outside()
    calls: list[tuple[str, str, str]] = []
    token = effect_calls.set(calls)
    try:
        result = await run(order(), payer(outside, fail_attempt=1), shipper())
    finally:
        effect_calls.reset(token)
    assert calls == [(result.portfolio_id, result.intents["Pay"].id, "charge-card")]
    assert effect_calls.get() is None


# ------------------------------------------------------------------ settling by hand


async def in_doubt_run(rt: Runtime, outside: Outside) -> RunResult:
    outside.hang_first = True
    result = await rt.run(order(timeout=10))
    assert result.intents["Pay"].error_type == "EffectInDoubtError"
    assert [result.intents[t].status for t in ("Ship", "Invoice")] == ["skipped", "skipped"]
    return result


async def test_resolving_with_a_value_reopens_the_intent_and_its_skipped_dependents(
) -> None:
    outside = Outside()
    agent = payer(outside)
    async with Runtime(agents=[agent, shipper()], clock=VirtualClock()) as rt:
        failed = await in_doubt_run(rt, outside)
        record = await rt.resolve_effect(failed.portfolio_id, "Pay", "charge-card",
                                         value={"charge": "ch_by_hand"})
        assert record == EffectRecord(name="charge-card", status="completed",
                                      value={"charge": "ch_by_hand"}, attempts=1,
                                      resolved=True)
        loaded = await rt.load(failed.portfolio_id)
        assert loaded.status == "running"  # open again, for rt.resume
        assert [loaded.intents[t].status for t in ("Pay", "Ship", "Invoice")] == [
            "pending", "pending", "pending"]
        assert [info.status for info in rt.runs()] == ["running"]
        [resolved] = loaded.events.of_type("effect_resolved")
        assert resolved.to_dict()["data"] == {
            "name": "charge-card", "value": {"charge": "ch_by_hand"},
            "reopened": [failed.intents[t].id for t in ("Pay", "Ship", "Invoice")]}
        assert_replay_matches(loaded)
        resumed = await rt.resume(failed.portfolio_id)
        assert resumed.status == "completed"
        assert outside.calls == [("charge", 42)]  # settled: never called again
        assert resumed.intents["Pay"].attempts == 3
        assert resumed.intents["Invoice"].state["shipped"] == "ch_by_hand"
        assert resumed.intents["Pay"].effects[0].resolved is True
        assert_replay_matches(resumed)
        assert (await rt.load(failed.portfolio_id)).intents == resumed.intents


async def test_resolving_as_not_happened_runs_the_effect_again_on_resume() -> None:
    outside = Outside()
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock()) as rt:
        failed = await in_doubt_run(rt, outside)
        record = await rt.resolve_effect(failed.portfolio_id, failed.intents["Pay"].id,
                                         "charge-card", happened=False)
        assert (record.status, record.resolved) == ("not_happened", True)
        resumed = await rt.resume(failed.portfolio_id)
    assert resumed.status == "completed"
    assert len(outside.calls) == 2
    assert resumed.intents["Pay"].state["receipt"] == "ch_2"
    [effect] = resumed.intents["Pay"].effects
    assert (effect.status, effect.attempts, effect.resolved) == ("completed", 2, False)
    assert_replay_matches(resumed)


async def test_a_dependent_that_another_failure_skipped_stays_skipped() -> None:
    outside = Outside()

    @Agent("broken")
    class Broken:
        @on_assignment
        async def work(self, intent: Any) -> None:
            raise RuntimeError("always")

    spec = PortfolioSpec("p", [
        IntentSpec("Pay", assign="payer", retry=RETRY, timeout=10),
        IntentSpec("Other", assign="broken"),
        IntentSpec("Both", assign="shipper", depends_on=["Pay", "Other"]),
    ])
    outside.hang_first = True
    async with Runtime(agents=[payer(outside), shipper(), Broken()],
                       clock=VirtualClock()) as rt:
        failed = await rt.run(spec)
        await rt.resolve_effect(failed.portfolio_id, "Pay", "charge-card",
                                value={"charge": "ch_x"})
        loaded = await rt.load(failed.portfolio_id)
        assert [loaded.intents[t].status for t in ("Pay", "Other", "Both")] == [
            "pending", "failed", "skipped"]
        resumed = await rt.resume(failed.portfolio_id)
    assert resumed.status == "failed"
    assert [resumed.intents[t].status for t in ("Pay", "Other", "Both")] == [
        "completed", "failed", "skipped"]


async def test_resolve_effect_refuses_what_it_cannot_settle() -> None:
    outside = Outside()
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock()) as rt:
        failed = await in_doubt_run(rt, outside)
        run_id = failed.portfolio_id
        with pytest.raises(RunNotFoundError):
            await rt.resolve_effect("pf_nope", "Pay", "charge-card", value=1)
        with pytest.raises(OpenIntentError, match="did you mean 'Pay'"):
            await rt.resolve_effect(run_id, "Pya", "charge-card", value=1)
        with pytest.raises(OpenIntentError, match="did you mean 'charge-card'.*its effects"):
            await rt.resolve_effect(run_id, "Pay", "charge-crad", value=1)
        with pytest.raises(OpenIntentError, match="value=... .* or happened=False"):
            await rt.resolve_effect(run_id, "Pay", "charge-card")
        with pytest.raises(OpenIntentError, match="not both"):
            await rt.resolve_effect(run_id, "Pay", "charge-card", value=1, happened=False)
        with pytest.raises(openintent.DataError):
            await rt.resolve_effect(run_id, "Pay", "charge-card", value={1, 2})
        assert (await rt.load(run_id)).events.of_type("effect_resolved") == []
        await rt.resolve_effect(run_id, "Pay", "charge-card", value=1)
        with pytest.raises(OpenIntentError, match="not in doubt .*completed"):
            await rt.resolve_effect(run_id, "Pay", "charge-card", value=2)

        outside.started = anyio.Event()
        outside.hang_first, outside.calls = True, []
        handle = await rt.start(order())
        await outside.started.wait()
        with pytest.raises(RunInUseError, match="going on"):
            await rt.resolve_effect(handle.portfolio_id, "Pay", "charge-card", value=1)
        await handle.cancel()
    with pytest.raises(OpenIntentError, match="closed"):
        await rt.resolve_effect(run_id, "Pay", "charge-card", value=1)


# ------------------------------------------------------------------ the journal


def committed_types(database: Path, run_id: str) -> list[str]:
    """The types of the run's events on disk now (another connection, read-only)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute(
            "SELECT type FROM events WHERE run_id = ? ORDER BY seq", (run_id,))]
    finally:
        connection.close()


async def test_the_journal_gates_the_call_and_the_return(tmp_path: Path) -> None:
    database = tmp_path / "runs.db"
    seen: dict[str, list[str]] = {}

    @Agent("gated")
    class Gated:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            def fn() -> str:
                seen["during"] = committed_types(database, intent.portfolio_id)
                return "done"

            value = await self.effect(intent, "gate", fn)
            seen["after"] = committed_types(database, intent.portfolio_id)
            return {"value": value}

    result = await run(PortfolioSpec("p", [IntentSpec("G", assign="gated")]), Gated(),
                       store=f"sqlite:///{database}")
    assert result.status == "completed"
    assert seen["during"][-1] == "effect_started"
    assert seen["after"][-2:] == ["effect_started", "effect_completed"]


async def test_a_cancelled_run_resumed_keeps_recorded_effects_and_checks_the_one_in_doubt(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    outside = Outside()
    checked: list[int] = []

    async def find(amount: int) -> dict[str, str]:
        checked.append(amount)
        return {"charge": "ch_seen"}

    @Agent("two")
    class Two:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            mail = await self.effect(intent, "mail", outside.mail, "ann")
            charge = await self.effect(intent, "charge", outside.charge, 5, check=find)
            return {"mail": mail, "charge": charge["charge"]}

    spec = PortfolioSpec("p", [IntentSpec("T", assign="two")])
    outside.hang_first = True
    async with Runtime(agents=[Two()], clock=VirtualClock(), store=store) as rt:
        handle = await rt.start(spec)
        await outside.started.wait()
        await handle.cancel()
        cancelled = await handle.result()
    assert cancelled.status == "cancelled"
    assert [e.status for e in cancelled.intents["T"].effects] == ["completed", "in_doubt"]

    async with Runtime(agents=[Two()], clock=VirtualClock(), store=store) as rt:
        resumed = await rt.resume(cancelled.portfolio_id)
        loaded = await rt.load(cancelled.portfolio_id)
    assert resumed.status == "completed"
    assert [name for name, _ in outside.calls] == ["mail", "charge"]  # neither called again
    assert checked == [5]
    assert resumed.intents["T"].state == {"mail": "sent to ann", "charge": "ch_seen"}
    assert [(e.name, e.status, e.checked) for e in resumed.intents["T"].effects] == [
        ("mail", "completed", False), ("charge", "completed", True)]
    assert loaded.intents == resumed.intents
    assert_replay_matches(loaded)


async def test_resolve_effect_on_a_sqlite_journal_from_a_fresh_runtime(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    outside = Outside()
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock(),
                       store=store) as rt:
        failed = await in_doubt_run(rt, outside)
    async with Runtime(agents=[], store=store) as rt:
        assert [info.status for info in rt.runs()] == ["failed"]
        await rt.resolve_effect(failed.portfolio_id, "Pay", "charge-card",
                                value={"charge": "ch_9"})
        assert [info.status for info in rt.runs()] == ["running"]
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock(),
                       store=store) as rt:
        resumed = await rt.resume(failed.portfolio_id)
        loaded = await rt.load(failed.portfolio_id)
    assert resumed.status == "completed" and len(outside.calls) == 1
    assert resumed.intents["Invoice"].state["shipped"] == "ch_9"
    assert loaded.intents == resumed.intents
    assert [event.seq for event in loaded.events] == list(range(len(loaded.events)))
    assert_replay_matches(loaded)


# ------------------------------------------------------------------ the replay oracle


async def test_the_replay_oracle_reads_effects_on_its_own(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    result = await run(order(), payer(Outside(), fail_attempt=1), shipper())
    assert_replay_matches(result)
    doctored = dict(result.intents)
    doctored["Pay"] = attrs.evolve(doctored["Pay"], effects=())
    with pytest.raises(AssertionError, match="intent 'Pay' effects: the events say"):
        assert_replay_matches(attrs.evolve(result, intents=doctored))
    # A completed effect started again is an impossible log, even when the result agrees.
    events = list(result.events)
    started = next(e for e in events if e.type == "effect_started")
    retry = next(e for e in events if e.type == "dispatched" and e.data["attempt"] == 2)
    again = started._replace(data={"name": "charge-card", "attempt": 2})
    at = events.index(retry) + 1
    repeated = [*events[:at], again, *events[at:]]
    with pytest.raises(AssertionError, match="while effect 'charge-card' of 'Pay' was "
                                             "completed"):
        assert_replay_matches(attrs.evolve(result, events=repeated))
    # A projection that drops completions: the live records disagree with the oracle.
    monkeypatch.setitem(openintent._store._APPLY, "effect_completed",
                        lambda records, event: None)
    broken = await run(order(), payer(Outside(), fail_attempt=1), shipper())
    with pytest.raises(AssertionError, match="intent 'Pay' effects"):
        assert_replay_matches(broken)


async def test_resolve_effect_refuses_a_sub_portfolio() -> None:
    outside = Outside()
    outside.hang_first = True

    @Coordinator("boss")
    class Boss:
        @on_assignment
        async def route(self, intent: Any) -> dict[str, Any]:
            sub = await self.execute(PortfolioSpec("sub", [
                IntentSpec("Pay", assign="payer", retry=RETRY, timeout=10)]))
            return {"sub": sub.portfolio_id, "status": str(sub.status)}

    async with Runtime(agents=[payer(outside)], clock=VirtualClock()) as rt:
        result = await rt.run(PortfolioSpec("top", [IntentSpec("X")]), coordinator=Boss)
        state = result.intents["X"].state
        assert state["status"] == "failed"
        with pytest.raises(OpenIntentError, match="sub-portfolio"):
            await rt.resolve_effect(state["sub"], "Pay", "charge-card", value=1)


async def test_a_run_stopped_inside_an_effect_resumes_in_doubt_until_settled(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    outside = Outside()
    outside.hang_first = True
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock(),
                       store=store) as rt:
        handle = await rt.start(order())
        await outside.started.wait()
        await handle.cancel()  # as a crash would, inside the charge
        run_id = handle.portfolio_id
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock(),
                       store=store) as rt:
        failed = await rt.resume(run_id)
        assert failed.intents["Pay"].error_type == "EffectInDoubtError"
        assert (await rt.resume(run_id)).status == "failed"  # over for good, until settled
        await rt.resolve_effect(run_id, "Pay", "charge-card", happened=False)
        resumed = await rt.resume(run_id)
    assert resumed.status == "completed"
    assert len(outside.calls) == 2
    assert resumed.intents["Invoice"].state["shipped"] == "ch_2"
    assert_replay_matches(resumed)


async def test_the_progress_view_shows_a_settled_effect_reopening_its_intents() -> None:
    from openintent._progress import Progress, event_line

    outside = Outside()
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock()) as rt:
        failed = await in_doubt_run(rt, outside)
        await rt.resolve_effect(failed.portfolio_id, "Pay", "charge-card", happened=False)
        loaded = await rt.load(failed.portfolio_id)
    progress = Progress()
    lines = []
    for event in loaded.events:
        progress.add(event)
        lines.append(event_line(event, progress))
    assert progress.status == "running"
    assert [progress.intents[loaded.intents[t].id].status for t in ("Pay", "Ship")] == [
        "pending", "pending"]
    assert lines[-1] == "settled    Pay: effect 'charge-card' did not happen"


async def test_an_effect_stopped_before_its_call_is_journaled_as_not_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from openintent._effects import Effects
    from openintent._stores import CommitFailed
    from openintent.testing import capture_events

    async def broken(self: Effects) -> None:
        raise CommitFailed("the journal could not commit: the disk is full")

    monkeypatch.setattr(Effects, "_committed", broken)
    outside = Outside()
    with capture_events() as events, pytest.raises(BaseException) as raised:
        await run(order(), payer(outside), shipper())
    errors = [raised.value]
    while isinstance(errors[-1], BaseExceptionGroup):  # the run's task groups
        errors.append(errors[-1].exceptions[0])
    assert isinstance(errors[-1], openintent.StoreError)
    assert outside.calls == []
    assert [(e.type, e.to_dict()["data"]) for e in events if e.type.startswith("effect_")] == [
        ("effect_started", {"name": "charge-card", "attempt": 1}),
        ("effect_failed", {"name": "charge-card", "error": "stopped before it was called",
                           "error_type": "NotCalled"}),
    ]


async def test_an_effect_of_a_stopped_run_may_be_settled_before_the_resume() -> None:
    outside = Outside()
    outside.hang_first = True
    async with Runtime(agents=[payer(outside), shipper()], clock=VirtualClock()) as rt:
        handle = await rt.start(order())
        await outside.started.wait()
        await handle.cancel()
        stopped = await handle.result()
        assert stopped.intents["Pay"].status == "cancelled"
        await rt.resolve_effect(stopped.portfolio_id, "Pay", "charge-card",
                                value={"charge": "ch_known"})
        resolved = (await rt.load(stopped.portfolio_id)).events.of_type("effect_resolved")
        assert "reopened" not in resolved[0].data  # the resume reopens a cancelled intent
        resumed = await rt.resume(stopped.portfolio_id)
    assert resumed.status == "completed" and len(outside.calls) == 1
    assert resumed.intents["Invoice"].state["shipped"] == "ch_known"
    assert_replay_matches(resumed)
