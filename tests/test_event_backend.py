"""The event store's backend seam: the memory backend appends, reads, lists and publishes."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import anyio
import pytest

from openintent._stores import open_backend
from openintent._stores.memory import MemoryBackend
from openintent.errors import OpenIntentError, RunInUseError, RunNotFoundError


def test_a_run_log_appends_one_event_or_a_batch_and_reads_back_in_order() -> None:
    backend = MemoryBackend()
    log = backend.create_run("pf_1", "first")
    log.append(("run_started", 0.0, None, None))
    log.extend([("created", 0.0, "in_1_0", None), ("created", 0.0, "in_1_1", None)])
    assert [event[0] for event in backend.read("pf_1")] == ["run_started", "created", "created"]


def test_runs_are_listed_oldest_first_while_something_holds_them() -> None:
    backend = MemoryBackend()
    first = backend.create_run("pf_1", "first", timebase=1_767_225_600.0)
    second = backend.create_run("pf_2", "second")
    first.append(("run_started", 1.0, None, {"name": "first"}))
    first.append(("run_finished", 3.5, None, {"status": "completed"}))
    listed = backend.runs()
    assert [(info.portfolio_id, info.name, info.status) for info in listed] == [
        ("pf_1", "first", "completed"), ("pf_2", "second", "running")]
    assert listed[0].started_at == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert listed[0].ended_at == datetime(2026, 1, 1, 0, 0, 3, 500000, tzinfo=UTC)
    assert listed[1].started_at is None and listed[1].ended_at is None
    del first, listed
    gc.collect()
    # nobody holds that log any more: it is gone
    assert [info.portfolio_id for info in backend.runs()] == ["pf_2"]
    assert backend.read("pf_2") is second


def test_an_unknown_run_is_a_run_not_found_error_naming_the_store() -> None:
    backend = MemoryBackend()
    with pytest.raises(RunNotFoundError, match="memory:// holds no run 'pf_x'"):
        backend.read("pf_x")
    with pytest.raises(KeyError):
        backend.open_run("pf_x")


def test_a_run_lease_refuses_a_second_holder_until_released() -> None:
    backend = MemoryBackend()
    backend.acquire_run("pf_1", "resume-1")
    backend.acquire_run("pf_1", "resume-1")  # the holder again: fine
    with pytest.raises(RunInUseError, match="resume-1"):
        backend.acquire_run("pf_1", "resume-2")
    backend.release_run("pf_1", "resume-2")  # not the holder: ignored
    backend.release_run("pf_1", "resume-1")
    backend.acquire_run("pf_1", "resume-2")


def test_a_run_id_is_created_once() -> None:
    backend = MemoryBackend()
    log = backend.create_run("pf_1", "first")
    with pytest.raises(ValueError, match="pf_1"):
        backend.create_run("pf_1", "again")
    assert log == []


@pytest.mark.anyio
async def test_subscribers_are_closed_with_the_backend() -> None:
    backend = MemoryBackend()
    send, receive = anyio.create_memory_object_stream[object](1)
    backend.subscribe(send)  # type: ignore[arg-type]
    assert backend.subscribers == [send]
    backend.close()
    assert backend.subscribers == []
    with pytest.raises(anyio.ClosedResourceError):
        send.send_nowait("late")
    backend.unsubscribe(send)  # type: ignore[arg-type]  # unknown now: ignored
    receive.close()


def test_an_unknown_store_url_is_refused_naming_the_ones_there_are() -> None:
    assert isinstance(open_backend("memory://"), MemoryBackend)
    with pytest.raises(OpenIntentError, match="use 'memory://'.*'sqlite:///.*'postgresql://"):
        open_backend("mongodb://db/runs")


@pytest.mark.anyio
async def test_the_bus_tells_observers_every_event_in_log_order_when_one_emits() -> None:
    from openintent import RealClock
    from openintent._bus import EventBus
    from openintent._store import EventStore

    store = EventStore(MemoryBackend(), "pf_1", RealClock(), "order")
    bus = EventBus(store)
    heard: list[tuple[str, str]] = []
    watched: list[str] = []
    store.watchers.append(lambda event: watched.append(event.type))

    def halting(event: object) -> None:
        heard.append(("halting", event.type))  # type: ignore[attr-defined]
        if event.type == "cost_recorded":  # type: ignore[attr-defined]
            bus.emit("guardrail_breach", None, {"guardrail": "budget"})

    bus.observe(halting)
    bus.observe(lambda event: heard.append(("second", event.type)))
    bus.emit("cost_recorded", None, {"usd": 1.0})
    assert [event[0] for event in store.events] == ["cost_recorded", "guardrail_breach"]
    assert watched == ["cost_recorded", "guardrail_breach"]
    # Every observer hears the cost before anyone hears the breach it caused.
    assert heard == [("halting", "cost_recorded"), ("second", "cost_recorded"),
                     ("halting", "guardrail_breach"), ("second", "guardrail_breach")]
