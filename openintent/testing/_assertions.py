"""Assertion helpers and replay: check a run the way the docs describe it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from ..models import Event, EventLog, IntentResult, RunResult
from ._oracle import derive, disagreements

__all__ = [
    "assert_event_types",
    "assert_ran_before",
    "assert_replay_matches",
    "event_types",
    "replay",
]


def _events(source: RunResult | EventLog | Iterable[Event]) -> list[Event]:
    if isinstance(source, RunResult):
        return list(source.events)
    return list(source)


def replay(events: RunResult | EventLog | Iterable[Event]) -> dict[str, IntentResult]:
    """Re-derive every intent's record from an event log alone, keyed by title.

    The log may be a finished run's or one still being written (``captured_events``). The
    derivation is the testing kit's own, written from what each event type means
    (``openintent/testing/_oracle.py`` lists the rules), not the runtime's projection, so it
    is an independent check of it: :func:`assert_replay_matches`.
    """
    return derive(_events(events)).results()


def assert_replay_matches(result: RunResult) -> None:
    """Assert that ``result`` is what its own event log says, and that the log is possible.

    Re-derives every intent from ``result.events`` alone (status, state, version,
    ``assigned_to``, attempts, error, cost, ...) and compares it with ``result.intents``; checks
    that each intent's events are a possible life (created first, nothing after it ended,
    dispatched only while pending, completed only while running, ...) and that the run's
    status, cost and decisions match the log. Raises ``AssertionError`` listing every
    disagreement.

    >>> assert_replay_matches(result)
    """
    problems = disagreements(result)
    if problems:
        raise AssertionError(
            f"run {result.portfolio_id} ({result.name!r}) disagrees with its event log:\n  "
            + "\n  ".join(problems)
        )


def event_types(
    source: RunResult | EventLog | Iterable[Event], *, intent: str | None = None
) -> list[str]:
    """The types of the events, in order; with ``intent`` (a title) only that intent's."""
    events = _events(source)
    if intent is not None:
        ids = {event.intent_id for event in events
               if event.type == "created" and (event.data or {}).get("title") == intent}
        if not ids:
            raise AssertionError(f"no intent titled {intent!r} in this event log")
        events = [event for event in events if event.intent_id in ids]
    return [event.type for event in events]


def assert_event_types(
    source: RunResult | EventLog | Iterable[Event],
    expected: Sequence[str],
    *,
    intent: str | None = None,
) -> None:
    """Assert the sequence of event types, showing a readable diff when it differs.

    >>> assert_event_types(result, ["created", "ready", "dispatched", "completed"], intent="A")
    """
    actual = event_types(source, intent=intent)
    if actual != list(expected):
        diff = "\n".join(difflib.ndiff(list(expected), actual))
        where = f" of intent {intent!r}" if intent else ""
        raise AssertionError(
            f"the event types{where} differ (- expected, + actual):\n{diff}"
        )


def _moment(result: RunResult, title: str, event_type: str) -> int:
    intent = result.intents.get(title)
    if intent is None:
        raise AssertionError(f"no intent titled {title!r}; intents: {list(result.intents)}")
    seqs = [event.seq for event in result.events.for_intent(intent.id) if event.type == event_type]
    if not seqs:
        raise AssertionError(f"intent {title!r} never reached {event_type!r} "
                             f"(status {intent.status})")
    return seqs[0] if event_type == "dispatched" else seqs[-1]


def assert_ran_before(result: RunResult, first: str, then: str) -> None:
    """Assert that intent ``first`` completed before intent ``then`` was first dispatched."""
    done: Any = _moment(result, first, "completed")
    started: Any = _moment(result, then, "dispatched")
    if not done < started:
        raise AssertionError(
            f"{first!r} completed at event {done}, after {then!r} started at event {started}"
        )
