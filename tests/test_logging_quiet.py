"""The library is quiet until the application configures structlog, whatever ran before.

``structlog.is_configured()`` stays true after ``structlog.testing.capture_logs()`` (and after
any ``configure()``), so it cannot tell; the configuration in effect decides.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import Intent
from openintent.testing import VirtualClock


@pytest.fixture(autouse=True)
def structlog_reset() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@Agent("quiet-worker")
class QuietWorker:
    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        return {"done": True}


SPEC = PortfolioSpec(
    name="quiet",
    intents=[IntentSpec(title="A", assign="quiet-worker"),
             IntentSpec(title="B", assign="quiet-worker", depends_on=["A"])],
)


async def run_once() -> None:
    # blocking_threshold=None: a machine stalled mid-step must not print a warning here.
    async with Runtime(agents=[QuietWorker], clock=VirtualClock(),
                       blocking_threshold=None) as rt:
        result = await rt.run(SPEC)
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_a_run_prints_nothing_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    await run_once()
    assert capsys.readouterr().out == ""


@pytest.mark.asyncio
async def test_a_run_prints_nothing_after_capture_logs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with capture_logs():
        pass
    assert structlog.is_configured()  # the flag the library must not rely on
    await run_once()
    assert capsys.readouterr().out == ""


@pytest.mark.asyncio
async def test_inside_capture_logs_the_info_lines_are_captured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with capture_logs() as logs:
        await run_once()
    events = [entry["event"] for entry in logs if entry["log_level"] == "info"]
    assert events == ["run started", "run finished"]
    assert capsys.readouterr().out == ""


@pytest.mark.asyncio
async def test_an_application_that_configures_structlog_gets_the_info_lines() -> None:
    out = io.StringIO()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(out),
    )
    await run_once()
    lines = out.getvalue().splitlines()
    assert any("run started" in line for line in lines)
    assert any("run finished" in line for line in lines)
    assert not any("dispatched" in line for line in lines)  # debug lines stay filtered


@pytest.mark.asyncio
async def test_reset_defaults_makes_the_library_quiet_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    structlog.reset_defaults()
    await run_once()
    assert capsys.readouterr().out == ""
