"""The projection of the ``effect_*`` events: how each changes its intent's record.

:mod:`openintent._store` puts these in its ``_APPLY`` table, so the live run, ``rt.load`` and
a resume see an intent's effects alike (``IntentRecord.effects``: name -> :class:`EffectState`,
in the order they first started).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._effect_records import EffectState, EffectStatus
from .models import EventType, IntentStatus

__all__ = ["EFFECT_APPLY", "copied_effects"]

_NO_DATA: Mapping[str, Any] = {}
# (type, time, intent_id, data), as _store keeps events
_RawEvent = tuple[str, float, "str | None", Any]


def _state(records: Mapping[str, Any], event: _RawEvent) -> tuple[Any, EffectState,
                                                                    Mapping[str, Any]]:
    record = records[event[2] or ""]
    data: Mapping[str, Any] = event[3] or _NO_DATA
    name = data["name"]
    effects = record.effects
    if effects is None:
        effects = record.effects = {}
    state = effects.get(name)
    if state is None:
        state = effects[name] = EffectState(name)
    return record, state, data


def _effect_started(records: Mapping[str, Any], event: _RawEvent) -> None:
    _record, state, data = _state(records, event)
    state.status = EffectStatus.STARTED
    state.attempts += 1
    state.attempt = data.get("attempt", 0)
    state.checked = state.resolved = False


def _effect_completed(records: Mapping[str, Any], event: _RawEvent) -> None:
    _record, state, data = _state(records, event)
    state.status = EffectStatus.COMPLETED
    state.value = data.get("value")
    state.checked = bool(data.get("checked", False))


def _effect_failed(records: Mapping[str, Any], event: _RawEvent) -> None:
    _record, state, data = _state(records, event)
    state.status = EffectStatus.FAILED
    state.error = data.get("error")
    state.error_type = data.get("error_type")


def _effect_resolved(records: Mapping[str, Any], event: _RawEvent) -> None:
    _record, state, data = _state(records, event)
    state.resolved = True
    if data.get("happened", True) is False:
        state.status = EffectStatus.NOT_HAPPENED
        state.value = None
    else:
        state.status = EffectStatus.COMPLETED
        state.value = data.get("value")
    # The intent (failed in doubt) and the dependents it had skipped wait again for a resume.
    for intent_id in data.get("reopened", ()):
        records[intent_id].status = IntentStatus.PENDING


def copied_effects(effects: Any) -> dict[str, EffectState] | None:
    """The effects a fork's ``intent_copied`` event copies (its ``effects``: each
    ``{"name", "value", "attempts"}``, ``checked``/``resolved`` when so), all completed in
    the source run; ``None`` when there are none."""
    if not effects:
        return None
    states: dict[str, EffectState] = {}
    for item in effects:
        state = states[item["name"]] = EffectState(item["name"])
        state.status = EffectStatus.COMPLETED
        state.value = item.get("value")
        state.attempts = item.get("attempts", 0)
        state.checked = bool(item.get("checked", False))
        state.resolved = bool(item.get("resolved", False))
    return states


EFFECT_APPLY: dict[str, Callable[[Any, _RawEvent], None]] = {
    EventType.EFFECT_STARTED: _effect_started,
    EventType.EFFECT_COMPLETED: _effect_completed,
    EventType.EFFECT_FAILED: _effect_failed,
    EventType.EFFECT_RESOLVED: _effect_resolved,
}
