"""Run results as a new user reads them: JSON data, plain dict state, errors that say why and
name the titles."""

from __future__ import annotations

import json
from typing import Any

import pytest

import openintent
from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import SimulatedAgent


@Agent("summarizer")
class Summarizer:
    @on_assignment
    async def summarize(self, intent: Any) -> dict[str, Any]:
        # Passing an upstream result along is an everyday pattern.
        return {"source": intent.inputs["Extract"], "n": len(intent.inputs["Extract"]["rows"])}


@pytest.mark.asyncio
async def test_to_dict_is_json_serialisable_when_a_handler_passes_inputs_along(
    runtime: Runtime,
) -> None:
    SimulatedAgent("extractor", result={"rows": [1, 2, 3]})
    spec = PortfolioSpec(
        "p",
        [
            IntentSpec("Extract", assign="extractor"),
            IntentSpec("Summarize", assign="summarizer", depends_on=["Extract"]),
        ],
    )
    result = await runtime.run(spec)
    assert result.status == "completed"
    json.dumps(result.to_dict())


@pytest.mark.asyncio
async def test_intent_state_in_the_result_is_a_dict(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": [1, 2, 3]})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    state = result.intents["Extract"].state
    assert json.loads(json.dumps(state)) == {"rows": [1, 2, 3]}
    assert isinstance(state, dict)


@pytest.mark.asyncio
async def test_raise_for_status_message_says_why_the_intent_failed(runtime: Runtime) -> None:
    SimulatedAgent("flaky", fail_times=1, error=ValueError("disk full"))
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("B", assign="flaky")]))
    assert result.status == "failed"
    with pytest.raises(openintent.RunFailedError, match="disk full"):
        result.raise_for_status()


@pytest.mark.asyncio
async def test_unknown_title_lookup_names_the_titles(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": []})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    with pytest.raises(KeyError) as info:
        result.intents["extract"]
    assert "Extract" in str(info.value)
