"""``openintent runs events STORE ID [--follow]``: a run's events, one line each, and with
``--follow`` the ones another process appends, until the run finishes: looked for every
:data:`POLL_SECONDS`, or, on a store that notifies each commit (PostgreSQL), at each notice
(every :data:`NOTIFIED_POLL_SECONDS` as a fallback)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC
from typing import TextIO

import anyio

from .._progress import one_line
from .._stores import open_backend
from ..errors import OpenIntentError
from ..models import Event, EventType
from ..runtime import Runtime
from ._common import EXIT_INTERRUPTED, EXIT_OK, Streams, fail
from ._store_url import existing_store, explain

__all__ = ["NOTIFIED_POLL_SECONDS", "POLL_SECONDS", "event_text", "runs_events_command"]

#: How often ``--follow`` looks for new events (real seconds: the run is in another process).
POLL_SECONDS = 0.25
#: The same on a store that notifies each commit (PostgreSQL): only a fallback.
NOTIFIED_POLL_SECONDS = 2.0

_DATA_WIDTH = 200  # a line's data is cut here (--json has all of it)


async def _poll_wait() -> None:
    """Between two looks at the store (tests replace it to append events meanwhile)."""
    await anyio.sleep(POLL_SECONDS)


def event_text(event: Event) -> str:
    """One line: sequence number, when (UTC, to the millisecond), type, intent title, data."""
    data = json.dumps(dict(event.data or {}), default=str, separators=(",", ":"))
    if len(data) > _DATA_WIDTH:
        data = data[:_DATA_WIDTH - 1] + "…"
    title = one_line(event.title) if event.title else "-"
    when = event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{event.seq:>6}  {when}  {event.type:<20}  {title}  {data}".rstrip()


def _print(events: Sequence[Event], out: TextIO, json_lines: bool) -> None:
    for event in events:
        if json_lines:
            out.write(json.dumps(event.to_dict(), default=str) + "\n")
        else:
            out.write(event_text(event) + "\n")
    out.flush()


def runs_events_command(args: argparse.Namespace, streams: Streams) -> int:
    """Print the run's events; with ``--follow``, keep printing until its ``run_finished``
    (Ctrl-C stops following: exit 130)."""
    try:
        url = existing_store(args.store)
        anyio.run(_show, url, args, streams, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    except KeyboardInterrupt:
        streams.out.flush()
        return EXIT_INTERRUPTED
    return EXIT_OK


async def _show(url: str, args: argparse.Namespace, streams: Streams) -> None:
    async with Runtime(store=url) as rt:
        events = (await rt.load(args.id)).events
        _print(events, streams.out, args.json)
        if not args.follow:
            return
        printed = len(events)
        backend = open_backend(url)  # to see cheaply whether the log grew
        watch_events = getattr(backend, "watch_events", None)
        try:
            # A store that notifies (PostgreSQL): wake at each commit of the run's events.
            with nullcontext() if watch_events is None else watch_events(args.id) as watch:
                while not (events and events[-1].type == EventType.RUN_FINISHED):
                    if watch is not None:
                        watch.clear()  # about to look: a commit from now on wakes the wait
                    if len(backend.read(args.id)) <= printed:
                        if watch is None:
                            await _poll_wait()
                        else:
                            await watch.wait(NOTIFIED_POLL_SECONDS)
                        continue
                    events = (await rt.load(args.id)).events
                    _print(events[printed:], streams.out, args.json)
                    printed = len(events)
        finally:
            backend.close()
