"""Runs read back from a store: ``rt.runs()`` lists them, ``await rt.load(id)`` rebuilds one
as the :class:`~openintent.models.RunResult` the live run returned (or, for a run still
going on, what it has so far).

Everything comes from the run's events, through the same projection the live run applies as
it appends (``_store._APPLY``), and from nothing else the backend knows but the run's time
base: intents (status, state, version, attempts, ...), decisions, cost, the output and error
of the last ``run_finished``, the breach of the last ``guardrail_breach``. Only the
:class:`~openintent._stores.EventBackend` protocol is used (``read``, ``timebase``,
``runs``), so every backend loads alike.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._data import to_plain
from ._events import EventSource
from ._guardrail_core import Breach
from ._results import ResultsView
from ._store import _APPLY, IntentRecord, RawEvent, Records
from ._stores import EventBackend, RunInfo, sittings
from .errors import RunNotFoundError
from .models import Decision, EventLog, EventType, RunResult, RunStatus, public_event

__all__ = ["earlier_walls", "list_runs", "load_run", "wall_of"]

_NO_DATA: Mapping[str, Any] = {}


def list_runs(backend: EventBackend) -> list[RunInfo]:
    """The top-level runs ``backend`` holds, oldest first (sub-portfolios a coordinator ran
    are left out: load them by id)."""
    return [info for info in backend.runs() if info.parent is None]


def load_run(backend: EventBackend, portfolio_id: str) -> RunResult:
    """The run ``portfolio_id`` of ``backend`` as a :class:`RunResult`, rebuilt from its
    events (see the module docstring); :class:`RunNotFoundError` for an unknown id."""
    try:
        events: Sequence[RawEvent] = list(backend.read(portfolio_id))  # this moment's log
        timebase = backend.timebase(portfolio_id)
    except KeyError:
        raise RunNotFoundError(
            f"the store {backend.url} holds no run {portfolio_id!r}; rt.runs() lists the "
            "runs it holds (a memory:// store keeps a run only while its result or handle "
            "is held, in this process)"
        ) from None
    records: Records = {}
    ids_by_title: dict[str, str] = {}
    total_cost = 0.0
    decision_events: list[int] = []
    ending: dict[str, Any] = {}  # what the run's last sitting says about its end
    for seq, event in enumerate(events):
        type_, _time, intent_id, data = event
        handler = _APPLY.get(type_)
        if handler is not None:
            handler(records, event)
        if type_ == EventType.CREATED:
            ids_by_title[records[intent_id or ""].title] = intent_id or ""
        elif type_ == EventType.COST_RECORDED:
            total_cost += (data or _NO_DATA)["usd"]  # summed as the live store sums it
        elif type_ == EventType.DECISION:
            decision_events.append(seq)
        elif type_ == EventType.RUN_FINISHED:
            ending["finished"] = data or _NO_DATA
        elif type_ == EventType.GUARDRAIL_BREACH:
            ending["breach"] = data or _NO_DATA
        elif type_ == EventType.RUN_RESUMED:
            ending.clear()  # a run_finished before it no longer ends the run
        elif type_ == EventType.EFFECT_RESOLVED:
            ending.clear()  # an effect settled: the run is open again for rt.resume
    # Each sitting of the run (a resume starts one) dates its events by its own time base.
    starts, bases = sittings(events, timebase)
    source = EventSource(portfolio_id, _title_of(records), wall_of(bases[-1]),
                         since=starts[-1],
                         earlier=earlier_walls(starts, bases) if len(starts) > 1 else None)
    started: Mapping[str, Any] = (events[0][3] or _NO_DATA) if events else _NO_DATA
    finished: Mapping[str, Any] | None = ending.get("finished")
    breach: Mapping[str, Any] | None = ending.get("breach")
    return RunResult(
        portfolio_id=portfolio_id,
        name=started.get("name", ""),
        status=RunStatus(finished["status"]) if finished is not None else RunStatus.RUNNING,
        output=to_plain(finished.get("output")) if finished is not None else None,
        intents=ResultsView(records, ids_by_title),
        events=EventLog(events, source),
        decisions=tuple(Decision.from_event(public_event(events[seq], seq, source))
                        for seq in decision_events),
        cost_usd=total_cost,
        error=finished.get("error") if finished is not None else None,
        breach=Breach(**to_plain(breach)) if breach is not None else None,
    )


def wall_of(timebase: float) -> Callable[[float], datetime]:
    """How a sitting whose clock time 0 was POSIX time ``timebase`` dates its events (as
    ``_clock.run_timebase`` dates them live)."""
    base = datetime.fromtimestamp(timebase, UTC)

    def at(time: float) -> datetime:
        return base + timedelta(seconds=time)

    return at


def earlier_walls(starts: list[int], bases: list[float]) -> Callable[[int, float], datetime]:
    """How the events of the sittings before the last are dated (``EventSource.earlier``),
    from :func:`~openintent._stores.sittings`."""
    walls = [wall_of(base) for base in bases]

    def at(seq: int, time: float) -> datetime:
        return walls[bisect_right(starts, seq) - 1](time)

    return at


def _title_of(records: Mapping[str, IntentRecord]) -> Callable[[str], str | None]:
    def title_of(intent_id: str) -> str | None:
        record = records.get(intent_id)
        return None if record is None else record.title

    return title_of
