"""Intent data: the JSON-data rule, copying data in, and read-only views handed out.

What comes into the log (a handler's result, a ``patch_state`` patch, decision data, an
``initial_state``) is checked and copied by :func:`json_data`, so nobody keeps a reference
into the log. What goes out to handlers, hooks, listeners and streams is a
:class:`FrozenDict` or :class:`FrozenList`: a lazy, deep, read-only view of the log's own
(never mutated) containers. A view costs one small object; nested containers are wrapped
only when they are read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, overload

from .errors import DataError

__all__ = [
    "EMPTY",
    "FrozenDict",
    "FrozenList",
    "freeze",
    "json_data",
    "json_state",
    "read_only",
    "to_plain",
    "unwrap",
]

_READ_ONLY = (
    "is read-only: openintent hands out state, inputs, constraints and event data as "
    "read-only views so nothing can rewrite the log. Return a dict or call patch_state to "
    "change an intent's state; use .to_plain() for a mutable copy"
)


def _refuse(view: object, *_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(f"{type(view).__name__} {_READ_ONLY}")


class FrozenDict(Mapping[str, Any]):
    """A deep read-only view of a dict: reading works as on a dict, changing raises
    ``TypeError``.

    Nested dicts and lists come back as views too. A view compares equal to a plain dict
    with the same content (``view == {"rows": [1, 2]}``); ``dict(view)`` gives a shallow dict
    (of views), and ``view.to_plain()``, ``view.copy()`` and ``copy.deepcopy(view)`` a plain,
    mutable deep copy (also what pickling stores).
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        kind = type(value)
        if kind is dict:
            return FrozenDict(value)
        if kind is list:
            return FrozenList(value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (a view for a container), or ``default``."""
        if key in self._data:
            return self[key]
        return default

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._data == other._data
        if isinstance(other, dict):
            return self._data == other
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a dict

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self, **other}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self}

    def to_plain(self) -> dict[str, Any]:
        """A plain, mutable deep copy (dicts and lists)."""
        return _copy_dict(self._data)

    copy = to_plain

    def __copy__(self) -> dict[str, Any]:
        return self.to_plain()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return self.to_plain()

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.to_plain(),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class FrozenList(Sequence[Any]):
    """A deep read-only view of a list: reading works as on a list, changing raises
    ``TypeError``. Compares equal to a plain list with the same content; ``list(view)`` is a
    shallow list (of views), ``view.to_plain()`` a plain, mutable deep copy; ``view + [...]``
    makes a new list."""

    __slots__ = ("_data",)

    def __init__(self, data: list[Any]) -> None:
        self._data = data

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> FrozenList: ...
    def __getitem__(self, index: int | slice) -> Any:
        value: Any = self._data[index]
        kind = type(value)
        if kind is dict:
            return FrozenDict(value)
        if kind is list:
            return FrozenList(value)  # a slice is a new list: a view of it is still read-only
        return value

    def __iter__(self) -> Iterator[Any]:
        for value in self._data:
            kind = type(value)
            if kind is dict:
                yield FrozenDict(value)
            elif kind is list:
                yield FrozenList(value)
            else:
                yield value

    def __contains__(self, value: object) -> bool:
        return value in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenList):
            return self._data == other._data
        if isinstance(other, list):
            return self._data == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __add__(self, other: Sequence[Any]) -> list[Any]:
        if not isinstance(other, list | tuple | FrozenList):
            return NotImplemented
        return [*self, *other]

    def __radd__(self, other: Sequence[Any]) -> list[Any]:
        if not isinstance(other, list | tuple):
            return NotImplemented
        return [*other, *self]

    def __mul__(self, times: int) -> list[Any]:
        return list(self) * times

    __rmul__ = __mul__

    def to_plain(self) -> list[Any]:
        """A plain, mutable deep copy (dicts and lists)."""
        return _copy_list(self._data)

    copy = to_plain

    def __copy__(self) -> list[Any]:
        return self.to_plain()

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return self.to_plain()

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (self.to_plain(),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse


#: The view of an empty dict (shared: empty states and constraints cost nothing).
EMPTY = FrozenDict({})


def read_only(value: Any) -> Any:
    """A view of a dict or list of the log's own; any other value as it is."""
    kind = type(value)
    if kind is dict:
        return FrozenDict(value) if value else EMPTY
    if kind is list:
        return FrozenList(value)
    return value


def unwrap(value: Any) -> Any:
    """The container behind a view (the log's own: never change it); other values as they
    are."""
    if isinstance(value, FrozenDict | FrozenList):
        return value._data
    return value


# ---------------------------------------------------------------------------- copying


def _copy_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON data already checked (only dicts and lists to copy)."""
    copied = data.copy()
    for key, value in data.items():
        kind = type(value)
        if kind is dict:
            copied[key] = _copy_dict(value)
        elif kind is list:
            copied[key] = _copy_list(value)
    return copied


def _copy_list(data: list[Any]) -> list[Any]:
    return [
        _copy_dict(value) if type(value) is dict
        else _copy_list(value) if type(value) is list
        else value
        for value in data
    ]


def to_plain(value: Any) -> Any:
    """``value`` with every mapping as a new dict and every list or tuple as a new list
    (read-only views included), so it is JSON-serialisable when its leaves are.

    Unlike :func:`json_data` it checks nothing: other values are kept as they are.
    """
    if isinstance(value, FrozenDict):
        return _copy_dict(value._data)
    if isinstance(value, FrozenList):
        return _copy_list(value._data)
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return [to_plain(item) for item in value]
    return value


def freeze(value: Any) -> Any:
    """A read-only deep copy of specification data (constraints, metadata): mappings and
    sequences are copied (tuples become lists) and handed out as views; other values are
    kept as they are, so keep them immutable."""
    if value is None:
        return EMPTY
    if isinstance(value, FrozenDict | FrozenList):
        return value  # already immutable
    if isinstance(value, Mapping | list | tuple):
        return read_only(to_plain(value))
    return value


# ---------------------------------------------------------------------------- JSON data

_ATOMS = frozenset({str, int, bool, type(None)})


def json_state(value: Any, where: str) -> dict[str, Any] | None:
    """A handler's result as intent state: ``None``, or a checked deep copy of a mapping.

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
    """A deep, plain copy of ``value`` after checking that it is JSON data.

    JSON data is a ``dict`` with ``str`` keys, a ``list`` or ``tuple`` (copied as a list),
    ``str``, ``int``, finite ``float``, ``bool`` or ``None``; views and subclasses (a
    ``StrEnum`` member, an ``OrderedDict``) are copied as their plain type. NaN and infinite
    floats are refused: JSON has no such numbers. Anything else raises :class:`DataError`
    naming ``where`` and the key path.
    """
    if type(value) is dict:
        # The common case, kept cheap: a flat dict of atoms costs one loop and one copy.
        for key, item in value.items():
            kind = type(item)
            if type(key) is not str or (
                kind not in _ATOMS and (kind is not float or item - item != 0.0)
            ):
                break
        else:
            return value.copy()
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
    if isinstance(value, FrozenDict):
        return _copy_dict(value._data)  # the log's own data: checked when it came in
    if isinstance(value, FrozenList):
        return _copy_list(value._data)
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    _refuse_key(key, where, path)
                key = str.__str__(key)
            copied[key] = _checked(item, where, _join(path, key))
        return copied
    if isinstance(value, list | tuple):
        return [_checked(item, where, f"{path}[{index}]") for index, item in enumerate(value)]
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
