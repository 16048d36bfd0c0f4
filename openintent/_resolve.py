"""Settling a side effect in doubt: ``await rt.resolve_effect(portfolio_id, intent, name,
value=...)`` (it happened, and returned ``value``) or ``happened=False`` (it did not).

A person found out what became of an effect the log shows started and never finished (see
:mod:`openintent._effects`). Holding the run's lease, this appends one ``effect_resolved``
event to the run's log: the effect is ``completed`` with that value (never called again) or
``not_happened`` (called again on its next call). An intent that failed in doubt is reopened
(``pending``) with the dependents its failure skipped (those whose other dependencies did not
fail): the event's ``reopened`` lists them, and the run is no longer ended, so the next
``rt.resume`` dispatches them again. Nothing else is written; nothing runs here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableSequence
from typing import Any, cast

import structlog

from ._effect_records import EffectRecord, EffectStatus, effect_results
from ._json_data import json_data
from ._launch import Launcher, lease_holder, release_lease
from ._registry import suggest
from ._store import _APPLY, IntentRecord, RawEvent, Records
from ._stores import Journal, sitting_base
from .errors import OpenIntentError, RunInUseError
from .models import EventType, IntentStatus

__all__ = ["UNSET", "resolve_effect"]

#: ``value`` not given.
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()

_BLOCKING = (IntentStatus.FAILED, IntentStatus.SKIPPED)


async def resolve_effect(
    launcher: Launcher,
    portfolio_id: str,
    intent: str,
    name: str,
    value: Any,
    happened: bool | None,
) -> EffectRecord:
    """Settle the effect ``name`` of ``intent`` (a title or an id) of run ``portfolio_id``
    (see the module docstring); return its record as it is now."""
    call = f"rt.resolve_effect({portfolio_id!r}, {intent!r}, {name!r})"
    data = _settlement(call, name, value, happened)
    if not isinstance(portfolio_id, str) or not isinstance(intent, str):
        raise OpenIntentError(f"{call} takes the run's portfolio id and the intent's title "
                              "or id as str")
    for run in launcher.active:
        if run.portfolio_id == portfolio_id:
            raise RunInUseError(f"{call}: run {portfolio_id} is going on in this runtime; "
                                "wait for it to end before settling one of its effects")
    backend = launcher.backend
    info = next((info for info in backend.runs() if info.portfolio_id == portfolio_id), None)
    if info is not None and info.parent is not None:
        raise OpenIntentError(
            f"{call}: run {portfolio_id} is a sub-portfolio of run {info.parent} (a "
            "coordinator's execute()), which is not resumed on its own; its coordinator's "
            "intent runs a new sub-portfolio")
    holder = lease_holder("rt.resolve_effect()")
    backend.acquire_run(portfolio_id, holder)  # RunNotFoundError for an unknown id
    try:
        log = backend.open_run(portfolio_id)
        records = _projected(log)
        record = _find(call, records, intent)
        state = (record.effects or {}).get(name)
        if state is None:
            known = list(record.effects or {})
            raise OpenIntentError(
                f"{call}: intent {record.title!r} has no effect named {name!r}"
                f"{suggest(name, known)}; its effects: {', '.join(map(repr, known)) or 'none'}")
        if state.status != EffectStatus.STARTED:
            raise OpenIntentError(
                f"{call}: effect {name!r} of intent {record.title!r} is not in doubt (it is "
                f"{state.status}); only an effect that started and never finished is settled")
        if record.status is IntentStatus.FAILED:
            data["reopened"] = _reopened(records, record)
        when = max(time.time() - sitting_base(log, backend.timebase(portfolio_id)),
                   log[-1][1] if log else 0.0)
        event: RawEvent = (EventType.EFFECT_RESOLVED, when, record.id, data)
        log.append(event)
        _APPLY[EventType.EFFECT_RESOLVED](records, event)
        if backend.durable:
            await cast(Journal, log).wait_committed(len(log))
        return effect_results({name: state}, False, record.attempts)[0]
    finally:
        release_lease(backend, portfolio_id, holder, structlog.get_logger("openintent"))


def _settlement(call: str, name: str, value: Any, happened: bool | None) -> dict[str, Any]:
    """The event's data: ``{"name", "value"}`` or ``{"name", "happened": False}``."""
    if not isinstance(name, str) or not name:
        raise OpenIntentError(f"{call} takes the effect's name (a non-empty str)")
    if happened is False:
        if value is not UNSET:
            raise OpenIntentError(f"{call}: pass value=... (it happened) or happened=False "
                                  "(it did not), not both")
        return {"name": name, "happened": False}
    if value is UNSET:
        raise OpenIntentError(
            f"{call} needs what you found out: value=... (it happened and returned that "
            "value, JSON data) or happened=False (it did not happen: it is called again)")
    if happened not in (None, True):
        raise OpenIntentError(f"{call} takes happened=False or value=..., got "
                              f"happened={happened!r}")
    return {"name": name, "value": json_data(value, f"{call} value")}


def _projected(log: MutableSequence[RawEvent]) -> Records:
    """The intents' records as the log projects them."""
    records: Records = {}
    for event in log:
        apply = _APPLY.get(event[0])
        if apply is not None:
            apply(records, event)
    return records


def _find(call: str, records: Records, intent: str) -> IntentRecord:
    """The record of an intent by id, else by title."""
    record = records.get(intent)
    if record is not None:
        return record
    by_title = {record.title: record for record in records.values()}
    record = by_title.get(intent)
    if record is None:
        titles = list(by_title)
        raise OpenIntentError(f"{call}: the run has no intent with that title or id"
                              f"{suggest(intent, titles)}; its intents: "
                              f"{', '.join(map(repr, titles[:10])) or 'none'}")
    return record


def _reopened(records: Mapping[str, IntentRecord], failed: IntentRecord) -> list[str]:
    """The failed intent and the skipped intents downstream of it that may run again (none
    of their dependencies failed or was skipped otherwise), in creation order."""
    by_title = {record.title: record for record in records.values()}
    reopened = {failed.id}
    grew = True
    while grew:
        grew = False
        for record in records.values():
            if record.status is not IntentStatus.SKIPPED or record.id in reopened:
                continue
            deps = [by_title[title] for title in record.depends_on if title in by_title]
            if any(dep.id in reopened for dep in deps) and all(
                    dep.id in reopened or dep.status not in _BLOCKING for dep in deps):
                reopened.add(record.id)
                grew = True
    return [intent_id for intent_id in records if intent_id in reopened]
