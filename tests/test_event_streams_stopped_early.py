"""A consumer may stop reading ``handle.events()`` early (``break``) without closing it: on
trio, which warns about every async generator dropped unfinished, that must not warn."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@Agent("stream-worker")
class Worker:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {"title": intent.title}


async def test_breaking_out_of_a_run_stream_leaves_nothing_behind() -> None:
    spec = PortfolioSpec("p", [IntentSpec(title=f"I{k}", assign="stream-worker") for k in range(3)])
    with anyio.fail_after(20):
        async with Runtime(agents=[Worker]) as rt:
            handle = await rt.start(spec)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                async for event in handle.events():
                    if event.type == "dispatched":
                        break
                gc.collect()
                await anyio.lowlevel.checkpoint()
            result = await handle.result()
    assert result.status == "completed"
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


async def test_breaking_out_of_the_runtime_stream_leaves_nothing_behind() -> None:
    spec = PortfolioSpec("p", [IntentSpec(title=f"I{k}", assign="stream-worker") for k in range(3)])
    with anyio.fail_after(20):
        async with Runtime(agents=[Worker]) as rt:
            handle = await rt.start(spec)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                async for event in rt.events():
                    if event.type == "dispatched":
                        break
                gc.collect()
                await anyio.lowlevel.checkpoint()
            result = await handle.result()
            # A stream stopped early no longer buffers the runtime's events: a new stream
            # still sees a whole run.
            second = await rt.start(spec)
            seen = [event.type async for event in rt.events()]
            await second.result()
    assert result.status == "completed"
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert seen[0] == "run_started" and seen[-1] == "run_finished"
