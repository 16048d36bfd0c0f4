"""Custom event types: declared with :func:`register_event_type`, then accepted by
``@on_event``, ``EventLog.of_type`` and ``self.record_event``.

The declared names live in the current registry (see :mod:`openintent._registry`), so
``isolated_registry()`` and the pytest plugin keep one test's types out of the next.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._events import EventType
from ._registry import current_registry, suggest
from .errors import OpenIntentError, SpecError

__all__ = ["check_recorded_event", "is_event_type", "register_event_type", "unknown_event_type"]


_NAME = re.compile(r"[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*")


def register_event_type(name: str) -> str:
    """Declare a custom event type and return its name.

    Once declared, ``@on_event(name)`` hooks may listen for it, ``result.events.of_type(name)``
    finds it, and handlers append one with ``await self.record_event(intent, name, **data)``.
    A name is lowercase: letters, digits and underscores, starting with a letter, with single
    ``.`` or ``-`` allowed between words (``"audit"``, ``"tool_called"``, ``"audit.logged"``),
    so it is safe as a key in any store, log or URL. Declaring a name again does nothing; a
    built-in type's name is refused. Both mistakes raise :class:`~openintent.SpecError`
    (a ``ValueError``).

    >>> register_event_type("audit")
    'audit'

    .. versionadded:: 0.1
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        hint = ""
        if isinstance(name, str):
            simple = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
            hint = f", e.g. {simple!r}" if _NAME.fullmatch(simple) else ""
        raise SpecError(
            f"register_event_type takes a simple lowercase name (letters, digits and "
            f"underscores, starting with a letter; '.' or '-' between words{hint}), got "
            f"{name!r}"
        )
    if name in EventType.ALL:
        raise SpecError(
            f"{name!r} is a built-in event type (openintent.EventType); the runtime records "
            "those itself. Declare your own under another name, e.g. 'audit'"
        )
    current_registry().event_types.add(name)
    return name


def is_event_type(name: str) -> bool:
    """Whether ``name`` is a built-in event type or one declared with
    :func:`register_event_type`."""
    return name in EventType.ALL or name in current_registry().event_types


def unknown_event_type(name: object, where: str) -> str:
    """The message for an event type that is neither built in nor declared."""
    custom = current_registry().event_types
    hint = suggest(name, sorted(EventType.ALL | custom)) if isinstance(name, str) else ""
    declared = f"; declared custom types: {', '.join(sorted(custom))}" if custom else ""
    return (
        f"{where}: unknown event type {name!r}{hint}. Built-in types are listed in "
        f"openintent.EventType{declared}; to use a type of your own, declare it first with "
        f"openintent.register_event_type({name!r})"
    )


def check_recorded_event(event_type: object, data: Mapping[str, Any], where: str) -> None:
    """The checks of ``self.record_event(event_type, data)`` (``where`` names the call): a
    declared custom type, not a built-in one, and no ``agent`` key (the runtime sets it)."""
    if isinstance(event_type, str) and event_type in EventType.ALL:
        raise OpenIntentError(
            f"{where}: {event_type!r} is a built-in event type, which only the runtime "
            "records; declare a type of your own with openintent.register_event_type"
        )
    if not isinstance(event_type, str) or not is_event_type(event_type):
        raise OpenIntentError(unknown_event_type(event_type, where))
    if "agent" in data:
        raise OpenIntentError(f"{where}: 'agent' is set by the runtime; name your key "
                              "otherwise")
