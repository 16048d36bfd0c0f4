"""The JSON-data rule: what may come into the log, checked and frozen in one pass.

:func:`json_data` checks that a value is JSON data and copies it into the read-only
containers of :mod:`openintent._data`; :func:`json_state` applies it to a handler's result.
A refusal is a :class:`DataError` naming where the data came from, the key path, and what to
store instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn, TypeGuard

from ._data import FrozenDict, FrozenList, Inputs, frozen_dict, frozen_list, to_plain
from .errors import DataError

__all__ = ["is_finite_number", "json_data", "json_state", "plain_json"]

_ATOMS = frozenset({str, int, bool, type(None)})


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a finite int or float (not a bool): the check behind every
    numeric setting (timeouts, thresholds, costs)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def json_state(value: Any, where: str) -> dict[str, Any] | None:
    """A handler's result as intent state: ``None``, or a checked frozen copy of a mapping.

    Raises :class:`DataError` for anything else, naming ``where`` (the handler).
    """
    if type(value) is dict or isinstance(value, Mapping):
        copied: dict[str, Any] = json_data(value, where)
        return copied
    if value is None:
        return None
    raise DataError(
        f"{where} returned {type(value).__name__}; a handler that completes an intent returns "
        "a dict (merged into the intent's state) or None"
    )


def json_data(value: Any, where: str) -> Any:
    """A deep, frozen copy of ``value`` after checking that it is JSON data.

    JSON data is a ``dict`` with ``str`` keys, a ``list`` or ``tuple`` (copied as a list),
    ``str``, ``int``, finite ``float``, ``bool`` or ``None``; subclasses (a ``StrEnum``
    member, an ``OrderedDict``) are copied as their plain type, dicts as :class:`FrozenDict`
    and lists as :class:`FrozenList`. NaN and infinite floats are refused: JSON has no such
    numbers. Anything else raises :class:`DataError` naming ``where`` and the key path.
    """
    kind = type(value)
    if kind is dict or kind is FrozenDict:
        # The common case, kept cheap: a flat dict of atoms costs one loop and one copy.
        for key, item in value.items():
            kind = type(item)
            if type(key) is not str or (
                kind not in _ATOMS and (kind is not float or item - item != 0.0)
            ):
                break
        else:
            return value if type(value) is FrozenDict else frozen_dict(value)
    try:
        return _checked(value, where, "")
    except RecursionError:
        raise DataError(
            f"{where}: the data is nested too deeply or contains itself; JSON data is a tree "
            "of dicts and lists"
        ) from None


def _checked(value: Any, where: str, path: str) -> Any:
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        _refuse_data(value, where, path)
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    _refuse_key(key, where, path)
                key = str.__str__(key)
            copied[key] = _checked(item, where, _join(path, key))
        return frozen_dict(copied)
    if isinstance(value, list | tuple):
        return frozen_list(
            [_checked(item, where, f"{path}[{index}]") for index, item in enumerate(value)]
        )
    # Subclasses of the atoms (an enum member of str or int) are stored as the plain type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__float__(value)
    _refuse_data(value, where, path)


def _join(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _refuse_key(key: object, where: str, path: str) -> NoReturn:
    inside = f" in {path}" if path else ""
    raise DataError(
        f"{where}: key {key!r}{inside} is of type {type(key).__name__}, not str; JSON data "
        "has str keys: use str(key)",
        path=path,
    )


def _refuse_data(value: object, where: str, path: str) -> NoReturn:
    what = f"{path}: " if path else ""
    raise DataError(
        f"{where}: {what}{type(value).__name__} is not JSON data; {_hint(value)}", path=path
    )


def _hint(value: object) -> str:
    """What to store instead, for the usual suspects."""
    import datetime
    import decimal
    import enum
    import pathlib
    import uuid

    if isinstance(value, float):
        return "NaN and infinite floats are not JSON numbers; store None or a string"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "store an ISO string (value.isoformat())"
    if isinstance(value, datetime.timedelta):
        return "store seconds as a float (value.total_seconds())"
    if isinstance(value, set | frozenset):
        return "store a list (sorted(value))"
    if isinstance(value, bytes | bytearray | memoryview):
        return "store a base64 str (base64.b64encode(value).decode())"
    if isinstance(value, decimal.Decimal):
        return "store a str (str(value)) to keep every digit, or a float"
    if isinstance(value, uuid.UUID | pathlib.PurePath):
        return "store a str (str(value))"
    if isinstance(value, enum.Enum):
        return "store its value (member.value)"
    return ("store dicts with str keys, lists, str, int, float, bool or None (a dataclass: "
            "dataclasses.asdict(value))")


class _Unusual(Exception):  # noqa: N818 - a marker, never seen outside this module
    """Data :func:`_copy` leaves to :func:`~openintent._json_data.json_data`."""


def plain_json(value: Any, where: str) -> Any:
    """``value`` checked to be JSON data (the rule of :func:`~openintent._json_data.json_data`,
    and its error, naming ``where``) and copied as plain dicts and lists: one pass over data of
    the plain types, which an intent's fields nearly always are."""
    try:
        return _copy(value)
    except (_Unusual, RecursionError):
        return to_plain(json_data(value, where))


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if value - value == 0.0:  # finite
            return value
        raise _Unusual
    if kind is dict or kind is FrozenDict or kind is Inputs:
        copied = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Unusual
            copied[key] = _copy(item)
        return copied
    if kind is list or kind is FrozenList or kind is tuple:
        return [_copy(item) for item in value]
    raise _Unusual
