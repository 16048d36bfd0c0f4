"""The event store's backend seam: the memory backend appends, reads, lists and publishes."""

from __future__ import annotations

import gc

import anyio
import pytest

from openintent._stores import open_backend
from openintent._stores.memory import MemoryBackend
from openintent.errors import OpenIntentError


def test_a_run_log_appends_one_event_or_a_batch_and_reads_back_in_order() -> None:
    backend = MemoryBackend()
    log = backend.create_run("pf_1", "first")
    log.append(("run_started", 0.0, None, None))
    log.extend([("created", 0.0, "in_1_0", None), ("created", 0.0, "in_1_1", None)])
    assert [event[0] for event in backend.read("pf_1")] == ["run_started", "created", "created"]


def test_runs_are_listed_oldest_first_while_something_holds_them() -> None:
    backend = MemoryBackend()
    first = backend.create_run("pf_1", "first")
    second = backend.create_run("pf_2", "second")
    assert backend.runs() == ["pf_1", "pf_2"]
    del first
    gc.collect()
    assert backend.runs() == ["pf_2"]  # nobody holds that log any more: it is gone
    assert backend.read("pf_2") is second


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


def test_only_the_memory_backend_exists_yet() -> None:
    assert isinstance(open_backend("memory://"), MemoryBackend)
    with pytest.raises(OpenIntentError, match="only 'memory://'"):
        open_backend("sqlite:///runs.db")


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
