"""Agent failover: with ``RetryPolicy(lease_seconds=...)`` an agent that goes silent past its
lease loses the attempt (``LeaseExpiredError``) and the retry policy's ``fallback`` agent takes
over, with a ``handoff`` event saying why. Time is the run's clock (a ``VirtualClock``; the
trio test runs on the real clock, which the virtual one refuses, with nothing measured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import openintent
from openintent import LeaseExpiredError, RetryPolicy, Runtime, VirtualClock
from openintent._plan_data import intent_data, intent_from_data, logged_plan
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.errors import SpecError
from openintent.models import Intent, RunResult
from openintent.testing import assert_replay_matches
from openintent.workflow import load_workflow

HANG = 10_000.0  # seconds of virtual time: "forever", far past any lease here


@Agent("fo-hangs")
class Hangs:
    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        await openintent.sleep(HANG)
        return {"by": "hangs"}


@Agent("fo-backup")
class Backup:
    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        await openintent.sleep(1)
        return {"by": "backup"}


@Agent("fo-renews")
class Renews:
    """Works 100 s in 10 s steps, showing it is alive after each (a 30 s lease)."""

    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        for step in range(10):
            await openintent.sleep(10)
            if step % 3 == 0:
                await self.patch_state(intent, {"step": step})  # progress renews it too
            else:
                await self.renew_lease(intent)
        return {"by": "renews"}


def failover_spec(assign: str, *, fallback: tuple[str, ...] = ("fo-backup",),
                  lease: float = 30) -> PortfolioSpec:
    retry = RetryPolicy(max_attempts=1, initial_delay=0, fallback=fallback,
                        lease_seconds=lease)
    return PortfolioSpec("failover", [IntentSpec("Work", assign=assign, retry=retry),
                                      IntentSpec("After", assign="fo-backup",
                                                 depends_on=["Work"])])


async def run_and_load(spec: PortfolioSpec, *agents: Any,
                       store: str = "memory://") -> tuple[RunResult, RunResult]:
    async with Runtime(agents=list(agents), clock=VirtualClock(), seed=0, store=store) as rt:
        live = await rt.run(spec)
        loaded = await rt.load(live.portfolio_id)
    assert loaded.to_dict() == live.to_dict()
    assert list(loaded.events) == list(live.events)
    assert_replay_matches(live)
    return live, loaded


@pytest.mark.asyncio
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_hanging_agent_loses_its_lease_and_the_fallback_completes_the_intent(
        tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"
    live, loaded = await run_and_load(failover_spec("fo-hangs"), Hangs(), Backup(), store=url)

    assert live.status == "completed"
    work = live.intents["Work"]
    assert (work.state, work.assigned_to, work.attempts) == ({"by": "backup"}, "fo-backup", 2)
    failed = live.events.of_type("attempt_failed").for_intent(work.id)
    assert [e.data["error_type"] for e in failed] == ["LeaseExpiredError"]
    assert "lease expired" in failed[0].data["error"]
    assert failed[0].time == 30  # the lease, on the run's clock (not the hang's 10 000 s)
    [handoff] = live.events.of_type("handoff")
    assert dict(handoff.data) == {"from": "fo-hangs", "to": "fo-backup",
                                  "reason": "lease expired"}
    types = [e.type for e in live.events.for_intent(work.id)]
    assert types.index("attempt_failed") < types.index("handoff") < len(types) - 1
    assert live.intents["After"].status == "completed"
    assert [d.decision for d in live.decisions] == ["failover"]
    assert loaded.intents["Work"].assigned_to == "fo-backup"


@pytest.mark.asyncio
async def test_an_agent_that_renews_its_lease_keeps_it() -> None:
    live, _ = await run_and_load(failover_spec("fo-renews"), Renews(), Backup())

    assert live.status == "completed"
    work = live.intents["Work"]
    assert (work.state["by"], work.assigned_to, work.attempts) == ("renews", "fo-renews", 1)
    assert not live.events.of_type("handoff")
    assert not live.events.of_type("attempt_failed")


@pytest.mark.asyncio
async def test_renew_lease_returns_the_new_expiry_or_none_without_a_lease() -> None:
    seen: list[float | None] = []

    @Agent("fo-probe")
    class Probe:
        @on_assignment
        async def work(self, intent: Intent) -> None:
            await openintent.sleep(5)
            seen.append(await self.renew_lease(intent))

    spec = PortfolioSpec("probe", [
        IntentSpec("Leased", assign="fo-probe", retry=RetryPolicy(lease_seconds=20)),
        IntentSpec("Free", assign="fo-probe", depends_on=["Leased"])])
    async with Runtime(agents=[Probe()], clock=VirtualClock(), seed=0) as rt:
        assert (await rt.run(spec)).status == "completed"
    assert seen == [25.0, None]


@pytest.mark.asyncio
async def test_with_no_fallback_left_the_intent_fails_with_lease_expired_error() -> None:
    live, _ = await run_and_load(failover_spec("fo-hangs", fallback=()), Hangs(), Backup())

    assert live.status == "failed"
    work = live.intents["Work"]
    assert (work.status, work.error_type, work.attempts) == ("failed", "LeaseExpiredError", 1)
    assert "'fo-hangs' went silent past its 30 s lease" in (work.error or "")
    assert live.intents["After"].status == "skipped"
    assert not live.events.of_type("handoff")
    with pytest.raises(openintent.RunFailedError, match="LeaseExpiredError"):
        live.raise_for_status()
    assert issubclass(LeaseExpiredError, openintent.LeaseError)
    assert issubclass(LeaseExpiredError, TimeoutError)


@pytest.mark.asyncio
async def test_the_lease_holds_inside_the_intents_timeout() -> None:
    spec = PortfolioSpec("both", [IntentSpec(
        "Work", assign="fo-hangs", timeout=60,
        retry=RetryPolicy(max_attempts=1, initial_delay=0, fallback=["fo-backup"],
                          lease_seconds=20))])
    live, _ = await run_and_load(spec, Hangs(), Backup())
    assert live.status == "completed"
    assert live.intents["Work"].assigned_to == "fo-backup"


def test_the_lease_is_plan_data_and_validated() -> None:
    spec = IntentSpec("Work", assign="a", retry={"fallback": ["b"], "lease_seconds": 30})
    data = intent_data(spec)
    assert data is not None and data["retry"] == {"fallback": ["b"], "lease_seconds": 30}
    again = intent_from_data("Work", [], "a", {}, data)
    assert again.retry.lease_seconds == 30 and again.retry == spec.retry
    for bad in (0, -1, float("inf"), "30", True):
        with pytest.raises(SpecError, match="lease_seconds"):
            RetryPolicy(lease_seconds=bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_logged_plan_keeps_the_lease_for_resume_and_fork() -> None:
    live, loaded = await run_and_load(failover_spec("fo-hangs"), Hangs(), Backup())
    plan = logged_plan(loaded.events._events)
    assert plan.spec.intents[0].retry.lease_seconds == 30
    assert plan.spec.intents[0].retry == failover_spec("fo-hangs").intents[0].retry


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_agent_failover_on_trio(anyio_backend: str) -> None:
    @Agent("fo-trio-hangs")
    class TrioHangs:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    @Agent("fo-trio-backup")
    class TrioBackup:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            return {"by": "backup"}

    spec = PortfolioSpec("trio", [IntentSpec("Work", assign="fo-trio-hangs", retry=RetryPolicy(
        max_attempts=1, initial_delay=0, fallback=["fo-trio-backup"], lease_seconds=0.05))])
    with anyio.fail_after(20):  # a bound against hanging, nothing measured
        async with Runtime(agents=[TrioHangs(), TrioBackup()]) as rt:
            live = await rt.run(spec)
    assert live.status == "completed"
    assert live.intents["Work"].assigned_to == "fo-trio-backup"
    assert [e.data["reason"] for e in live.events.of_type("handoff")] == ["lease expired"]


@pytest.mark.asyncio
async def test_a_workflow_step_sets_the_lease_in_its_retry(tmp_path: Path) -> None:
    path = tmp_path / "failover.yaml"
    path.write_text(
        'openintent: "1.0"\n'
        "info: {name: failover}\n"
        "workflow:\n"
        "  work:\n"
        "    assign: fo-hangs\n"
        "    retry: {max_attempts: 1, initial_delay: 0, fallback: [fo-backup],"
        " lease_seconds: 30}\n"
    )
    workflow = load_workflow(path)
    async with Runtime(agents=[Hangs(), Backup()], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(workflow)
    assert live.status == "completed"
    assert live.intents["work"].assigned_to == "fo-backup"
    assert [e.data["reason"] for e in live.events.of_type("handoff")] == ["lease expired"]
