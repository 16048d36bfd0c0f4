"""Intent data: read-only data frozen as it comes in.

What comes into the log (a handler's result, a ``patch_state`` patch, decision data, an
``initial_state``) is checked and copied by :func:`openintent._json_data.json_data` into a
:class:`FrozenDict` or :class:`FrozenList`, in one pass. Those are real ``dict`` and
``list`` subclasses (so ``json.dumps``, ``isinstance(x, dict)``, ``{**x}`` and ``dict(x)``
work) whose changing methods raise ``TypeError``; everything inside them is frozen too. The
log keeps them and hands them out as they are: nothing a handler, hook, listener or stream
receives can reach data the log keeps mutable, and handing out costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, Self, SupportsIndex

__all__ = [
    "EMPTY",
    "FrozenDict",
    "FrozenList",
    "Inputs",
    "freeze",
    "frozen_dict",
    "frozen_list",
    "inputs",
    "merged",
    "read_only",
    "to_plain",
]

_READ_ONLY = (
    "is read-only: openintent hands out state, inputs, constraints and event data as "
    "read-only data so nothing can rewrite the log. Return a dict or call patch_state to "
    "change an intent's state; use .to_plain() for a mutable copy"
)


_new_dict = dict.__new__
_update = dict.update


def _refuse(view: object, *_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(f"{type(view).__name__} {_READ_ONLY}")


class FrozenDict(dict[str, Any]):
    """A read-only ``dict``: reading works as on a dict (it *is* a dict: ``json.dumps``,
    ``isinstance(x, dict)``, ``{**x}``), changing it raises ``TypeError``.

    The dicts and lists inside are frozen too, so ``dict(x)`` and ``{**x}`` give a new
    top-level dict whose nested data is still read-only. ``x.to_plain()``, ``x.copy()``,
    ``copy.copy(x)``, ``copy.deepcopy(x)`` and pickling give a plain, mutable deep copy.
    ``FrozenDict(mapping)`` makes a frozen deep copy of the mapping's dicts, lists and tuples.
    """

    __slots__ = ()

    def __new__(cls, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /,
                **kwargs: Any) -> Self:
        self = dict.__new__(cls)
        dict.update(self, data, **kwargs)
        for key, value in list(dict.items(self)):
            if isinstance(value, Mapping | list | tuple) and not _is_frozen(value):
                dict.__setitem__(self, key, freeze(value))
        return self

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Filled in by ``__new__``: calling ``__init__`` again changes nothing."""

    def to_plain(self) -> dict[str, Any]:
        """A plain, mutable deep copy (dicts and lists)."""
        return _copy_dict(self)

    copy = to_plain

    def __copy__(self) -> dict[str, Any]:
        return _copy_dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return _copy_dict(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (_copy_dict(self),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_copy_dict(self)!r})"

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class FrozenList(list[Any]):
    """A read-only ``list``: reading works as on a list (it *is* a list), changing it raises
    ``TypeError``. The dicts and lists inside are frozen too; ``list(x)``, ``x[1:3]``,
    ``x + [...]`` and ``x * 2`` give new lists of that frozen data; ``x.to_plain()``,
    ``x.copy()``, ``copy.deepcopy(x)`` and pickling a plain, mutable deep copy."""

    __slots__ = ()

    def __new__(cls, data: Iterable[Any] = (), /) -> Self:
        self = list.__new__(cls)
        list.extend(self, [
            freeze(value) if isinstance(value, Mapping | list | tuple) else value
            for value in data
        ])
        return self

    def __init__(self, *_args: Any) -> None:
        """Filled in by ``__new__``: calling ``__init__`` again changes nothing."""

    def to_plain(self) -> list[Any]:
        """A plain, mutable deep copy (dicts and lists)."""
        return _copy_list(self)

    copy = to_plain

    def __copy__(self) -> list[Any]:
        return _copy_list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return _copy_list(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (_copy_list(self),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_copy_list(self)!r})"

    def __iadd__(self, _other: Iterable[Any]) -> NoReturn:  # type: ignore[misc]
        _refuse(self)

    def __imul__(self, _times: SupportsIndex) -> NoReturn:
        _refuse(self)

    __setitem__ = __delitem__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse


class Inputs(FrozenDict):
    """``intent.inputs``: each dependency's title mapped to its final state, and each wired
    input's name to its value (read-only)."""

    __slots__ = ()

    def __missing__(self, title: str) -> NoReturn:
        raise KeyError(f"{title!r} is not a dependency of this intent, nor a wired input; "
                       f"inputs has {list(self)}")


def inputs(records: Mapping[str, Any], ids: Mapping[str, str], titles: Iterable[str]) -> Inputs:
    """The :class:`Inputs` of an intent depending on ``titles`` (their states are frozen)."""
    if not titles:
        return NO_INPUTS
    states: dict[str, Any] = {}
    for title in titles:
        states[title] = records[ids[title]].state
    made = _new_dict(Inputs)
    _update(made, states)  # one C-level update: cheaper than a dict.__setitem__ per title
    return made


def _is_frozen(value: object) -> bool:
    return isinstance(value, FrozenDict | FrozenList)


def frozen_dict(data: Mapping[str, Any]) -> FrozenDict:
    """A FrozenDict of ``data``'s items as they are (already frozen: nothing is checked)."""
    frozen = dict.__new__(FrozenDict)
    dict.update(frozen, data)
    return frozen


def frozen_list(data: list[Any]) -> FrozenList:
    """A FrozenList of ``data``'s items as they are (already frozen: nothing is checked)."""
    frozen = list.__new__(FrozenList)
    list.extend(frozen, data)
    return frozen


#: The inputs of an intent without dependencies (shared).
NO_INPUTS = dict.__new__(Inputs)

#: The empty FrozenDict (shared: empty states and constraints cost nothing).
EMPTY = frozen_dict({})


def merged(state: Mapping[str, Any], changes: Mapping[str, Any]) -> FrozenDict:
    """A new FrozenDict: ``state`` with ``changes`` on top (both frozen data already)."""
    frozen = dict.__new__(FrozenDict)
    dict.update(frozen, state)
    dict.update(frozen, changes)
    return frozen


def read_only(value: Any) -> Any:
    """``value`` read-only: frozen data as it is, a dict, list or tuple as a frozen deep copy
    (frozen data inside is kept, not copied); any other value as it is."""
    kind = type(value)
    if kind is FrozenDict or kind is FrozenList:
        return value
    if kind is dict:
        return _freeze_dict(value) if value else EMPTY
    if kind is list or kind is tuple:
        return _freeze_list(value)
    return value


# ---------------------------------------------------------------------------- copying


def _freeze_dict(data: Mapping[str, Any]) -> FrozenDict:
    frozen = dict.__new__(FrozenDict)
    dict.update(frozen, data)
    for key, value in data.items():
        kind = type(value)
        if kind is dict:
            dict.__setitem__(frozen, key, _freeze_dict(value))
        elif kind is list or kind is tuple:
            dict.__setitem__(frozen, key, _freeze_list(value))
    return frozen


def _freeze_list(data: Iterable[Any]) -> FrozenList:
    return frozen_list([
        _freeze_dict(value) if type(value) is dict
        else _freeze_list(value) if type(value) is list or type(value) is tuple
        else value
        for value in data
    ])


def _copy_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """A plain deep copy of JSON data already checked (only dicts and lists to copy)."""
    copied = dict(data)
    for key, value in copied.items():
        if isinstance(value, dict):
            copied[key] = _copy_dict(value)
        elif isinstance(value, list):
            copied[key] = _copy_list(value)
    return copied


def _copy_list(data: Iterable[Any]) -> list[Any]:
    return [
        _copy_dict(value) if isinstance(value, dict)
        else _copy_list(value) if isinstance(value, list)
        else value
        for value in data
    ]


def to_plain(value: Any) -> Any:
    """``value`` with every mapping as a new dict and every list or tuple as a new list
    (frozen data included), so it is JSON-serialisable when its leaves are.

    Unlike :func:`openintent._json_data.json_data` it checks nothing: other values are kept
    as they are.
    """
    kind = type(value)
    if kind is FrozenDict:
        return _copy_dict(value)
    if kind is FrozenList:
        return _copy_list(value)
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return [to_plain(item) for item in value]
    return value


def freeze(value: Any) -> Any:
    """A read-only deep copy of specification data (constraints, metadata): mappings become
    FrozenDicts, lists and tuples FrozenLists (frozen data is kept as it is); other values
    are kept as they are, so keep them immutable."""
    if value is None:
        return EMPTY
    if _is_frozen(value):
        return value
    if isinstance(value, Mapping):
        return FrozenDict(value)
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return FrozenList(value)
    return value
