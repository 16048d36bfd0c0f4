"""The PostgreSQL listener: one thread per backend hands each notification to the callbacks
of its channel, tells them when it starts listening (again, after the server restarted:
notices sent meanwhile were missed), and wakes async waiters on asyncio and trio. Real
server; every real-time bound is only there so a hang fails instead of hanging."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anyio
import psycopg
import pytest

from openintent._stores._pg_listen import PgListener
from openintent._stores._pg_schema import PgUrl

from _postgres import PostgresServer

pytestmark = pytest.mark.anyio

BOUND = 30


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def listener(postgres_url: str) -> Iterator[PgListener]:
    made = PgListener(PgUrl.parse(postgres_url))
    try:
        yield made
    finally:
        made.close()


def notify(listener: PgListener, channel: str, payload: str) -> None:
    with psycopg.connect(listener.url.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class Seen:
    """What a callback was called with, and a way to wait for it on a plain thread."""

    def __init__(self) -> None:
        self.payloads: list[str | None] = []
        self.changed = threading.Condition()

    def __call__(self, payload: str | None) -> None:
        with self.changed:
            self.payloads.append(payload)
            self.changed.notify_all()

    def wait_for(self, count: int) -> list[str | None]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.payloads) >= count, BOUND)
            return list(self.payloads)


def test_callbacks_get_the_notifications_of_their_channel(listener: PgListener) -> None:
    runs, tasks = Seen(), Seen()
    listener.subscribe("openintent_runs", runs)
    stop = listener.subscribe("openintent_tasks", tasks)
    assert listener.listening.wait(BOUND)
    assert runs.payloads == [None]  # listening: anything sent before was missed
    notify(listener, "openintent_runs", "run-1")
    notify(listener, "openintent_tasks", "writer")
    notify(listener, "openintent_runs", "run-2")
    assert runs.wait_for(3) == [None, "run-1", "run-2"]
    assert [payload for payload in tasks.payloads if payload] == ["writer"]
    stop()
    notify(listener, "openintent_tasks", "reader")
    notify(listener, "openintent_runs", "run-3")
    runs.wait_for(4)
    assert [payload for payload in tasks.payloads if payload] == ["writer"]
    with pytest.raises(ValueError, match="not 'elsewhere'"):
        listener.subscribe("elsewhere", runs)


def test_closing_joins_the_thread(postgres_url: str) -> None:
    listener = PgListener(PgUrl.parse(postgres_url))
    listener.subscribe("openintent_runs", Seen())
    assert listener.listening.wait(BOUND)
    [thread] = [t for t in threading.enumerate() if t.name.startswith("openintent listener")]
    listener.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        listener.subscribe("openintent_runs", Seen())


async def test_a_watch_wakes_on_its_payloads_only(listener: PgListener) -> None:
    with anyio.fail_after(BOUND):
        with listener.watch("openintent_runs", ["run-1"]) as watch, \
                listener.watch("openintent_runs") as everything:
            assert listener.listening.wait(BOUND)
            watch.clear()  # the "listening" notice, if it came after the watch began
            everything.clear()
            notify(listener, "openintent_runs", "run-2")
            assert await everything.wait(None)
            assert not await watch.wait(0)  # not its run
            async with anyio.create_task_group() as group:
                woken: list[bool] = []

                async def wait() -> None:
                    woken.append(await watch.wait(None))

                group.start_soon(wait)
                group.start_soon(wait)  # two waiters on one watch: both woken
                await anyio.sleep(0.01)
                notify(listener, "openintent_runs", "run-1")
            assert woken == [True, True]
            assert await everything.wait(None)  # nobody waited on it: it kept the notice
            # A notice while nobody waits is kept for the next wait.
            notify(listener, "openintent_runs", "run-1")
            assert await everything.wait(None)
            assert await watch.wait(0)
            assert not await watch.wait(0)


async def test_wait_returns_at_a_notice_or_after_the_time_given(listener: PgListener) -> None:
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as group:
            got: list[bool] = []

            async def wait() -> None:
                got.append(await listener.wait("openintent_done", ["run-1"], BOUND))

            group.start_soon(wait)
            while not got:
                notify(listener, "openintent_done", "run-1")
                await anyio.sleep(0.05)
        assert got == [True]
        assert await listener.wait("openintent_done", ["run-9"], 0.01) is False


def test_the_listener_listens_again_after_a_server_restart(
        listener: PgListener, postgres_server: PostgresServer) -> None:
    seen = Seen()
    listener.subscribe("openintent_done", seen)
    assert seen.wait_for(1) == [None]
    postgres_server.stop()
    postgres_server.start()  # (a stop that failed left it running: start then fails loudly)
    assert seen.wait_for(2) == [None, None]  # listening again: look at what you wait for
    notify(listener, "openintent_done", "run-1")
    assert seen.wait_for(3) == [None, None, "run-1"]
    assert listener.connections == 2
