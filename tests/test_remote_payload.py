"""The payload of a remote agent's task (``openintent._json_data.plain_json``): checked by the
JSON-data rule and copied as plain dicts and lists, in one pass over plain data; anything
else takes the full check, with its error."""

from __future__ import annotations

import enum
import json
from types import SimpleNamespace
from typing import Any

import pytest

from openintent._data import FrozenDict, FrozenList, freeze, inputs, to_plain
from openintent._json_data import json_data, plain_json
from openintent.errors import DataError


class Colour(enum.StrEnum):
    RED = "red"


CASES: list[Any] = [
    {"a": 1, "b": [1, 2.5, None, True], "c": {"d": "e"}},
    FrozenDict({"x": [{"y": 1}], "z": (1, 2)}),
    freeze({"nested": {"deep": [1, [2, [3]]]}}),
    inputs({"i1": SimpleNamespace(state=FrozenDict({"total": 3}))}, {"A": "i1"}, ["A"]),
    {"enum": Colour.RED, "tuple": (1, "two"), "list": FrozenList([1])},
    [1, "two", 3.0, None],
    "text",
]


@pytest.mark.parametrize("value", CASES)
def test_the_payload_is_what_the_full_check_gives_as_plain_data(value: Any) -> None:
    plain = plain_json(value, "the task")
    assert plain == to_plain(json_data(value, "the task"))
    assert json.loads(json.dumps(plain)) == plain  # JSON data, with plain containers only
    assert not isinstance(plain, FrozenDict | FrozenList)


@pytest.mark.parametrize("value", [{"x": object()}, {1: "int key"}, {"x": float("nan")},
                                   [float("inf")], {"x": {"y": {1, 2}}}])
def test_what_is_not_json_data_is_refused_as_the_full_check_refuses_it(value: Any) -> None:
    with pytest.raises(DataError) as full:
        json_data(value, "the task of intent 'X'")
    with pytest.raises(DataError) as ours:
        plain_json(value, "the task of intent 'X'")
    assert str(ours.value) == str(full.value)
