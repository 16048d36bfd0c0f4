"""``intent.inputs`` is a read-only view like the others: ``to_plain()`` gives a plain,
mutable, JSON-serialisable copy, with dependencies or without."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from openintent import Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

seen: dict[str, Any] = {}


@Agent("inputs-reader")
class Reader:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        plain = intent.inputs.to_plain()
        seen[intent.title] = (plain, json.dumps(plain), copy.deepcopy(intent.inputs))
        plain["mine"] = True  # a copy: the log does not change
        return {"rows": [1, {"k": 2}]}


@pytest.mark.asyncio
async def test_inputs_to_plain_is_a_plain_deep_copy() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="inputs-reader"),
        IntentSpec(title="B", assign="inputs-reader", depends_on=["A"]),
    ])
    async with Runtime(agents=[Reader], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    assert seen["A"][1] == "{}"
    plain, dumped, deep = seen["B"]
    assert type(plain) is dict and type(plain["A"]) is dict and type(plain["A"]["rows"]) is list
    assert json.loads(dumped) == {"A": {"rows": [1, {"k": 2}]}}
    assert deep == {"A": {"rows": [1, {"k": 2}]}}
    assert result.intents["A"].state == {"rows": [1, {"k": 2}]}
