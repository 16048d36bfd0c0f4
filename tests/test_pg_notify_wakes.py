"""Waking, not polling, on a PostgreSQL store: what waits on another process's doings wakes
at its notification (LISTEN/NOTIFY), long before its fallback poll. Each test makes that poll
60 s and gives the wake a generous 20 s: only a notification makes it in time. On asyncio and
trio."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

import openintent._serve
from openintent import Runtime
from openintent._detach import start_detached
from openintent._stores import open_backend
from openintent._stores.postgres import PostgresBackend
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

FALLBACK = 60.0  # seconds: the fallback poll each test sets
BOUND = 20.0  # seconds: a wake must come well before the fallback poll

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


@Agent("notify-writer")
class Writer:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        return {"text": intent.title.lower()}


def spy(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> threading.Event:
    """An event set each time ``cls.name`` returned (the process looked)."""
    looked = threading.Event()
    real: Callable[..., Any] = getattr(cls, name)

    def looking(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real(self, *args, **kwargs)
        finally:
            looked.set()

    monkeypatch.setattr(cls, name, looking)
    return looked


async def until(event: threading.Event) -> None:
    assert await anyio.to_thread.run_sync(event.wait, BOUND)


async def between_looks() -> None:
    """A pause between two looks at the store (not a measurement)."""
    await anyio.sleep(0.05)


async def status_of(url: str, run_id: str) -> str:
    def read() -> str:
        backend = open_backend(url)
        try:
            return next(info.status for info in backend.runs() if info.portfolio_id == run_id)
        finally:
            backend.close()

    return await anyio.to_thread.run_sync(read)


async def test_a_serving_runtime_adopts_a_detached_run_at_its_notice(
        postgres_url: str, anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openintent._serve, "POLL_SECONDS", FALLBACK)  # the adopter's poll
    looked = spy(monkeypatch, PostgresBackend, "adoptable_runs")
    spec = PortfolioSpec("adopt me", [IntentSpec("Write", assign="notify-writer")])
    async with Runtime(agents=[Writer], store=postgres_url) as server, \
            Runtime(agents=[], store=postgres_url) as starter:
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            with anyio.fail_after(BOUND):
                await until(looked)  # it looked once, found nothing, and waits now
                run_id = await start_detached(starter, spec)
                while await status_of(postgres_url, run_id) == "running":
                    await between_looks()
            group.cancel_scope.cancel()
    assert await status_of(postgres_url, run_id) == "completed"




async def test_a_decision_sent_from_another_process_wakes_the_run_at_its_notice(
        postgres_url: str, anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from openintent._inbox import InboxWatch, submit_decision
    from openintent._stores._pg_inbox import PgInbox
    from openintent.testing import SimulatedAgent

    real_init = InboxWatch.__init__

    def slow(self: Any, run: Any, inbox: Any, poll: Any = None) -> None:
        real_init(self, run, inbox, FALLBACK)  # the inbox's poll: 60 s

    monkeypatch.setattr(InboxWatch, "__init__", slow)
    looked = spy(monkeypatch, PgInbox, "waiting")
    approval = {"type": "approval", "require_for": ["Deploy"], "approvers": ["bob"]}
    spec = PortfolioSpec("release", [IntentSpec("Deploy", assign="worker")])
    async with Runtime(agents=[SimulatedAgent("worker", result={"ok": True})],
                       store=postgres_url, guardrails=[approval]) as rt:
        handle = await rt.start(spec)
        with anyio.fail_after(BOUND):
            await until(looked)  # the run asked, looked at its inbox once, and waits now

            def decide() -> None:  # as `openintent approve` does, on its own connections
                other = open_backend(postgres_url)
                try:
                    submit_decision(other, handle.portfolio_id, "Deploy", True, "bob")
                finally:
                    other.close()

            await anyio.to_thread.run_sync(decide)
            result = await handle.result()
    assert result.status == "completed"
    assert result.events.of_type("approval_granted")[0].data["by"] == "bob"


async def test_runs_events_follow_wakes_at_each_commit_of_the_run(
        postgres_url: str, anyio_backend: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from openintent.cli import _event_log, main

    monkeypatch.setattr(_event_log, "POLL_SECONDS", FALLBACK)
    monkeypatch.setattr(_event_log, "NOTIFIED_POLL_SECONDS", FALLBACK, raising=False)
    reads = [0]
    looked = threading.Event()
    real_read = PostgresBackend.read

    def read(self: Any, run_id: str) -> Any:
        try:
            return real_read(self, run_id)
        finally:
            reads[0] += 1
            if reads[0] >= 2:  # rt.load's, then the follower's first look
                looked.set()

    monkeypatch.setattr(PostgresBackend, "read", read)
    started, release = anyio.Event(), anyio.Event()

    @Agent("notify-slow")
    class Slow:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            started.set()  # its dispatch is committed (journal before acting)
            await release.wait()
            return {"done": True}

    spec = PortfolioSpec("followed", [IntentSpec("Slow", assign="notify-slow")])
    async with Runtime(agents=[Slow], store=postgres_url) as rt:
        handle = await rt.start(spec)
        codes: list[int] = []
        follower = threading.Thread(target=lambda: codes.append(main(
            ["runs", "events", postgres_url, handle.portfolio_id, "--follow"])), daemon=True)
        with anyio.fail_after(BOUND):
            await started.wait()
            follower.start()
            await until(looked)  # it printed what was there, looked once, and waits now
            release.set()
            result = await handle.result()
            await anyio.to_thread.run_sync(follower.join, BOUND)
    assert not follower.is_alive() and codes == [0]
    assert result.status == "completed"
    assert "run_finished" in capsys.readouterr().out



async def test_each_commit_of_a_run_is_announced_on_the_events_channel(
        postgres_url: str, anyio_backend: str) -> None:
    import psycopg

    from openintent._stores._pg_schema import PgUrl

    open_backend(postgres_url).close()  # the schema
    conninfo = PgUrl.parse(postgres_url).conninfo
    spec = PortfolioSpec("announced", [IntentSpec("Write", assign="notify-writer"),
                                       IntentSpec("Edit", assign="notify-writer",
                                                  depends_on=["Write"])])
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute("LISTEN openintent_events")
        async with Runtime(agents=[Writer], store=postgres_url) as rt:
            result = await rt.run(spec)
        heard = [note.payload for note in listener.notifies(timeout=0.5)]
        batches = listener.execute("SELECT count(*) FROM openintent.batches").fetchone()
    assert result.status == "completed"
    assert batches is not None and heard == [result.portfolio_id] * batches[0]


async def test_a_standby_wakes_when_the_run_it_waits_for_ends(
        postgres_url: str, anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from _postgres import with_option

    url = with_option(postgres_url, f"lease_ttl={FALLBACK * 6:g}")  # it looks every 60 s
    looked = spy(monkeypatch, PostgresBackend, "run_lease")
    started, release = anyio.Event(), anyio.Event()

    @Agent("notify-held")
    class Held:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            started.set()
            await release.wait()
            return {"done": True}

    spec = PortfolioSpec("held", [IntentSpec("Hold", assign="notify-held")])
    async with Runtime(agents=[Held], store=url) as holder, \
            Runtime(agents=[Held], store=url) as standby:
        handle = await holder.start(spec)
        with anyio.fail_after(BOUND):
            await started.wait()
            async with anyio.create_task_group() as group:
                taken: list[Any] = []

                async def stand_by() -> None:
                    taken.append(await standby.standby(handle.portfolio_id))

                group.start_soon(stand_by)
                await until(looked)  # it saw the lease held, and waits now
                release.set()
                result = await handle.result()
    assert result.status == "completed"
    assert taken[0].status == "completed"  # the run ended: its result, nothing taken over
