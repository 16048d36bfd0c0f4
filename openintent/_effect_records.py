"""What the log says about an intent's side effects (``self.effect(...)``): the projection's
mutable entry per effect, and the frozen :class:`EffectRecord` results show.

An effect's life, as its events tell it (see :mod:`openintent._effects`)::

    effect_started -> effect_completed      its value is recorded: it never runs again
                   -> effect_failed         its fn raised: the next call runs it again
                   -> (nothing)             in doubt: did it happen? (a crash, a timeout)
    in doubt       -> effect_resolved       a person said what happened (rt.resolve_effect)

Kept apart from :mod:`openintent.models` (which re-exports :class:`EffectRecord`) so the
projection (:mod:`openintent._store`) and the results share one definition.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from ._data import read_only, to_plain

__all__ = ["EffectRecord", "EffectState", "EffectStatus", "effect_results"]


class EffectStatus:
    """Where a named side effect is, as plain strings (``EffectRecord.status``)."""

    #: ``effect_started`` is its last event, and the attempt that started it is going on.
    STARTED: Final = "started"
    #: Started, never finished, and its attempt is over (the process died, a timeout cut it
    #: short): whether it happened is unknown. A ``check`` or ``rt.resolve_effect`` settles it.
    IN_DOUBT: Final = "in_doubt"
    #: Its value is recorded (by its fn, a check, or a resolution): it never runs again.
    COMPLETED: Final = "completed"
    #: Its fn raised; the next call runs it again.
    FAILED: Final = "failed"
    #: ``rt.resolve_effect(..., happened=False)``: it did not happen; the next call runs it.
    NOT_HAPPENED: Final = "not_happened"


@attrs.frozen
class EffectRecord:
    """One named side effect of an intent (``result.intents[title].effects``), from the log.

    ``status`` is one of :class:`EffectStatus`' values; ``value`` the recorded value (a
    completed effect's); ``attempts`` how many times its function was started; ``error`` and
    ``error_type`` its last failure; ``checked`` whether a ``check`` confirmed the value after
    the effect was in doubt; ``resolved`` whether ``rt.resolve_effect`` settled it.

    .. versionadded:: 0.3
    """

    name: str
    status: str
    value: Any = None
    attempts: int = 0
    error: str | None = None
    error_type: str | None = None
    checked: bool = False
    resolved: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this record."""
        return {
            "name": self.name,
            "status": self.status,
            "value": to_plain(self.value),
            "attempts": self.attempts,
            "error": self.error,
            "error_type": self.error_type,
            "checked": self.checked,
            "resolved": self.resolved,
        }


class EffectState:
    """One effect in an intent's projected record (only the apply functions change it)."""

    __slots__ = ("name", "status", "value", "attempts", "attempt", "error", "error_type",
                 "checked", "resolved")

    def __init__(self, name: str) -> None:
        self.name = name
        self.status: str = EffectStatus.STARTED
        self.value: Any = None
        self.attempts = 0  # how many times it was started
        self.attempt = 0  # the intent's attempt that started it last
        self.error: str | None = None
        self.error_type: str | None = None
        self.checked = False
        self.resolved = False


def effect_results(
    effects: dict[str, EffectState], running: bool, attempts: int, *, view: bool = False
) -> tuple[EffectRecord, ...]:
    """The frozen records of an intent's effects, in the order they first started.

    An effect still ``started`` is in doubt unless the attempt that started it is the one
    going on (``running``: the intent is running, at attempt ``attempts``).
    """
    return tuple(
        EffectRecord(
            name=state.name,
            status=(EffectStatus.IN_DOUBT if state.status == EffectStatus.STARTED and (
                not running or state.attempt < attempts) else state.status),
            value=read_only(state.value) if view else to_plain(state.value),
            attempts=state.attempts,
            error=state.error,
            error_type=state.error_type,
            checked=state.checked,
            resolved=state.resolved,
        )
        for state in effects.values()
    )
