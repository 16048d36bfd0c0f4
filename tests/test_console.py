"""The live view: ``openintent.console.follow`` and ``print_summary``, with rich on a terminal
and as plain lines without rich or without a terminal."""

from __future__ import annotations

import io
import sys
from typing import Any

import anyio
import pytest
from rich.console import Console

from openintent import Runtime, VirtualClock
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.console import follow, print_summary, rich_available
from openintent.guardrails import ApprovalRequest
from openintent.models import RunResult
from openintent.testing import SimulatedAgent


class Terminal(io.StringIO):
    """A text file that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def release() -> PortfolioSpec:
    return PortfolioSpec("release", [
        IntentSpec("build", assign="builder"),
        IntentSpec("test", assign="tester", depends_on=["build"], retry={"max_attempts": 2}),
        IntentSpec("deploy", assign="builder", depends_on=["build"]),
        IntentSpec("notify", assign="notifier", depends_on=["test", "deploy"]),
    ])


def agents() -> list[Any]:
    return [
        SimulatedAgent("builder", result={"ok": True}, delay=2, cost_usd=0.5),
        SimulatedAgent("tester", delay=1, fail_times=1),
        SimulatedAgent("notifier", delay=1),
    ]


APPROVE_DEPLOY = [{"type": "approval", "require_for": ["deploy"]}]


async def follow_release(approve_as: str | None = "alice", **options: Any) -> RunResult:
    """Run ``release()`` under ``follow(handle, **options)``, approving as ``approve_as``."""
    async with Runtime(agents=agents(), clock=VirtualClock(), seed=0,
                       guardrails=APPROVE_DEPLOY) as rt:
        handle = await rt.start(release())

        async def approve(request: ApprovalRequest) -> None:
            assert approve_as is not None
            await handle.approve(request.intent_id, by=approve_as, note="ship it")

        return await follow(handle, on_approval=approve if approve_as else None, **options)


PLAIN_PROGRESS = [
    "[    0.00s] started    build (agent builder)",
    "[    2.00s] completed  build in 2.00s (cost so far $0.50)",
    "[    2.00s] started    test (agent tester)",
    "[    2.00s] waiting    deploy: needs approval (1 waiting)",
    "[    2.00s] approved   deploy by alice",
    "[    2.00s] started    deploy (agent builder)",
    "[    3.00s] attempt 1 of test failed: RuntimeError: tester failed (simulated, call 1)",
    "[    3.00s] retrying   test in 0.92s (attempt 2)",
    "[    3.92s] started    test (agent tester, attempt 2)",
    "[    4.00s] completed  deploy in 2.00s (cost so far $1.00)",
    "[    4.92s] completed  test in 2.92s (cost so far $1.00)",
    "[    4.92s] started    notify (agent notifier)",
    "[    5.92s] completed  notify in 1.00s (cost so far $1.00)",
    "[    5.92s] run completed after 5.92s, cost $1.00",
]


def plain_summary(portfolio_id: str) -> list[str]:
    return [
        "",
        f"release ({portfolio_id}): completed",
        "",
        "intent  status     attempts  duration   cost  agent",
        "------  ---------  --------  --------  -----  --------",
        "build   completed         1     2.00s  $0.50  builder",
        "test    completed         2     2.92s  $0.00  tester",
        "deploy  completed         1     2.00s  $0.50  builder",
        "notify  completed         1     1.00s  $0.00  notifier",
        "total cost $1.00",
        "",
        "decisions:",
        "      2.00s runtime [deploy]: approval_granted - ship it",
    ]


@pytest.mark.asyncio
async def test_plain_lines_when_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    result = await follow_release(file=out)
    assert result.status == "completed"
    lines = out.getvalue().splitlines()
    assert lines[0] == f"[    0.00s] run release ({result.portfolio_id}) started: 4 intents"
    assert lines[1:] == PLAIN_PROGRESS + plain_summary(result.portfolio_id)


@pytest.mark.asyncio
async def test_plain_lines_on_a_terminal_when_rich_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in sys.modules if name == "rich" or name.startswith("rich.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rich", None)  # `import rich...` raises ImportError
    assert not rich_available()
    out = Terminal()
    result = await follow_release(file=out)
    assert out.getvalue().splitlines()[1:] == PLAIN_PROGRESS + plain_summary(result.portfolio_id)


def rich_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100, record=True,
                   color_system=None, legacy_windows=False)


@pytest.mark.asyncio
async def test_rich_live_view_on_a_terminal() -> None:
    console = rich_console()
    result = await follow_release(console=console)
    text = console.export_text()
    for line in PLAIN_PROGRESS:
        time, _, message = line.partition("] ")
        assert f"{time[1:]} {message}" in text
    assert "waiting for approval: deploy" in text  # the live status under the lines
    assert "running: test" in text
    assert "cost $0.50" in text
    assert "release completed" in text  # the summary table's title
    assert "│ test   │ completed │        2 │    2.92s │ $0.00 │ tester   │" in text
    assert f"{result.portfolio_id} · total cost $1.00" in text
    assert "│ 2.00s │ runtime │ deploy │ approval_granted │ ship it   │" in text


@pytest.mark.asyncio
async def test_the_live_view_is_rich_when_the_file_is_a_terminal() -> None:
    out = Terminal()
    await follow_release(file=out)
    text = out.getvalue()
    assert "\x1b[" in text and "┏━━━━━━━━┳" in text  # terminal codes and a rich table


@pytest.mark.asyncio
async def test_the_live_view_pauses_while_the_approval_callback_runs() -> None:
    console = rich_console()
    seen: list[tuple[str, bool]] = []
    async with Runtime(agents=agents(), clock=VirtualClock(), seed=0,
                       guardrails=APPROVE_DEPLOY) as rt:
        handle = await rt.start(release())

        async def approve(request: ApprovalRequest) -> None:
            seen.append((request.title, console._live_stack == []))
            await handle.deny(request.intent_id, by="bob")

        result = await follow(handle, console=console, on_approval=approve)
    assert seen == [("deploy", True)]
    assert result.intents["deploy"].status == "failed"
    assert "denied     deploy by bob" in console.export_text()


@pytest.mark.asyncio
async def test_approvals_are_left_to_others_without_a_callback() -> None:
    async with Runtime(agents=agents(), clock=VirtualClock(), seed=0,
                       guardrails=APPROVE_DEPLOY) as rt:
        handle = await rt.start(release())
        out = io.StringIO()

        async def approver() -> None:
            async for event in handle.events():
                if event.type == "approval_requested":
                    await handle.approve("deploy", by="carol")

        async with anyio.create_task_group() as group:
            group.start_soon(approver)
            result = await follow(handle, file=out)
    assert result.status == "completed"
    assert "approved   deploy by carol" in out.getvalue()


@pytest.mark.asyncio
async def test_following_a_run_that_has_ended_prints_all_of_it() -> None:
    async with Runtime(agents=agents(), clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(release())
        await handle.result()
        out = io.StringIO()
        await follow(handle, file=out)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "total cost $1.00"
    assert any("run completed after" in line for line in lines)


@pytest.mark.asyncio
async def test_hostile_titles_keep_one_line_each_and_no_markup() -> None:
    title = 'evil\n[bold red]"x"[/]\r\x1b[2J'
    spec = PortfolioSpec("p", [IntentSpec(title, assign="a")])
    async with Runtime(agents=[SimulatedAgent("a", delay=1)], clock=VirtualClock()) as rt:
        handle = await rt.start(spec)
        out = io.StringIO()
        await follow(handle, file=out)
        console = rich_console()
        print_summary(await handle.result(), console=console)
    lines = out.getvalue().splitlines()
    assert '[    0.00s] started    evil [bold red]"x"[/]  [2J (agent a)' in lines
    assert "\x1b" not in out.getvalue()
    assert 'evil [bold red]"x"[/]  [2J' in console.export_text()


@pytest.mark.asyncio
async def test_failures_breaches_and_decisions_in_the_summary() -> None:
    budget = {"type": "budget", "max_cost_usd": 0.75, "warn_at": 0.5}

    @Coordinator("lead", agents=["builder"], guardrails=[budget])
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> None:
            await self.record_decision(intent_id=intent.id, decision="route",  # type: ignore[attr-defined]
                                       rationale="builder builds")
            await self.delegate(intent, to="builder")  # type: ignore[attr-defined]

    spec = PortfolioSpec("budgeted", [IntentSpec("one"), IntentSpec("two", depends_on=["one"])])
    async with Runtime(agents=agents(), clock=VirtualClock()) as rt:
        handle = await rt.start(spec, coordinator=Lead)
        out = io.StringIO()
        result = await follow(handle, file=out)
    text = out.getvalue()
    assert result.status == "halted"
    assert "[    2.00s] budget     warning: spent $0.50 of $0.75" in text
    assert "[    2.00s] handoff    two: lead -> builder" in text
    assert "BREACH     budget: spent $1.00 of a $0.75 budget" in text
    assert "run halted after" in text
    assert "budgeted (" in text and "): halted" in text
    assert "error: the budget guardrail halted the run" in text
    assert "lead [one]: route - builder builds" in text



@pytest.mark.asyncio
async def test_a_multi_line_rationale_keeps_its_decision_on_one_plain_line() -> None:
    @Coordinator("lead", agents=["builder"])
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> None:
            await self.record_decision(intent_id=intent.id, decision="route",  # type: ignore[attr-defined]
                                       rationale="builder builds\nfast\x1b[2J")
            await self.delegate(intent, to="builder")  # type: ignore[attr-defined]

    spec = PortfolioSpec("one\nrun", [IntentSpec("one")])
    async with Runtime(agents=agents(), clock=VirtualClock()) as rt:
        handle = await rt.start(spec, coordinator=Lead)
        out = io.StringIO()
        await follow(handle, file=out)
    lines = out.getvalue().splitlines()
    assert any(line.endswith("lead [one]: route - builder builds fast [2J") for line in lines)
    assert any(line.startswith("one run (") for line in lines)
    assert "\x1b" not in out.getvalue()

def test_print_summary_plain_and_rich_of_a_finished_result() -> None:
    result = anyio.run(lambda: follow_release(file=io.StringIO()))
    out = io.StringIO()
    print_summary(result, file=out)
    assert out.getvalue().splitlines() == plain_summary(result.portfolio_id)
    console = rich_console()
    print_summary(result, console=console)
    row = "│ build  │ completed │        1 │    2.00s │ $0.50 │ builder  │"
    assert row in console.export_text()


@pytest.mark.asyncio
async def test_a_console_that_is_not_a_terminal_gets_plain_lines() -> None:
    console = Console(file=io.StringIO(), width=100)  # a StringIO is no terminal
    result = await follow_release(console=console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert text.splitlines()[1:] == PLAIN_PROGRESS + plain_summary(result.portfolio_id)


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.mark.anyio
async def test_follow_on_trio() -> None:
    # Real clock (the virtual clock is asyncio's); no delays, so nothing waits.
    spec = PortfolioSpec("p", [IntentSpec("one", assign="a"),
                               IntentSpec("two", assign="a", depends_on=["one"])])
    async with Runtime(agents=[SimulatedAgent("a", cost_usd=0.5)]) as rt:
        handle = await rt.start(spec)
        out = io.StringIO()
        result = await follow(handle, file=out)
    assert result.status == "completed"
    lines = out.getvalue().splitlines()
    assert [line[12:] for line in lines if line.startswith("[") and "completed  " in line] == [
        "completed  one in 0.00s (cost so far $0.50)",
        "completed  two in 0.00s (cost so far $1.00)",
    ]


@pytest.mark.asyncio
async def test_decision_times_count_from_the_start_of_the_run() -> None:
    # A clock that does not start at 0 (the real clock never does).
    async with Runtime(agents=agents(), clock=VirtualClock(start=1000), seed=0,
                       guardrails=APPROVE_DEPLOY) as rt:
        handle = await rt.start(release())

        async def approve(request: ApprovalRequest) -> None:
            await handle.approve(request.intent_id, by="alice")

        out = io.StringIO()
        result = await follow(handle, file=out, on_approval=approve)
        console = rich_console()
        print_summary(result, console=console)
    assert "      2.00s runtime [deploy]: approval_granted - approved by alice" in \
        out.getvalue().splitlines()
    assert "│ 2.00s │ runtime │ deploy │" in console.export_text()


def test_lines_for_a_failed_hook_and_a_blocked_loop() -> None:
    from datetime import UTC, datetime

    from openintent._progress import Progress, event_line
    from openintent.models import Event

    def event(kind: str, data: dict[str, Any]) -> Event:
        return Event(1, kind, 0.5, "pf", "in_1", data, "write", datetime(2026, 1, 1, tzinfo=UTC))

    progress = Progress()
    assert event_line(event("hook_failed", {
        "handler": "on_all_complete", "error": "boom", "error_type": "KeyError"}), progress
    ) == "HOOK FAILED on_all_complete: KeyError: boom"
    assert event_line(event("loop_blocked", {
        "agent": "w", "handler": "Writer.work", "seconds": 0.25}), progress
    ) == "blocked    write: Writer.work blocked the event loop for 0.25s"
    assert event_line(event("state_patched", {}), progress) is None
