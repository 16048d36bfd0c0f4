"""Approvals from another process: a decision sent through a SQLite journal's inbox
(``openintent approve`` / ``openintent deny``, ``openintent._inbox.submit_decision``) is applied
by the process running the run, through the run's own log, and only for listed approvers.

The in-process tests open two runtimes on one file (one runs, the other's store sends) on a
virtual clock; the subprocess tests run a workflow in a child process and approve it with
``python -m openintent approve`` from another. Nothing is timed: the tests wait for what the
file says (bounded, with a generous real-time guard only a hang reaches).
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from openintent import ApprovalError, RunNotFoundError, Runtime, StoreError, VirtualClock
from openintent._inbox import decision_of, submit_decision
from openintent._stores import open_backend
from openintent._stores._sqlite_file import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from openintent._stores.sqlite import SqliteBackend
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.cli._approvals import ApprovalPolicy
from openintent.models import EventType
from openintent.testing import SimulatedAgent

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 30  # real seconds; only a regression that hangs ever waits this long
APPROVAL = {"type": "approval", "require_for": ["Deploy"], "approvers": ["alice", "bob"]}


def release() -> PortfolioSpec:
    return PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])


async def waiting_run(rt: Runtime) -> Any:
    """Start the release on ``rt``; return its handle once Deploy's request is on disk."""
    handle = await rt.start(release())
    async for event in handle.events():  # (committed events only)
        if event.type == EventType.APPROVAL_REQUESTED:
            return handle
    raise AssertionError("the run never asked for approval")


def runtime(url: str, clock: VirtualClock | None = None) -> Runtime:
    return Runtime(agents=[SimulatedAgent("worker", result={"ok": True})], store=url,
                   guardrails=[APPROVAL],
                   clock=clock or VirtualClock(deadlock_after=HANG_GUARD))


@pytest.mark.asyncio
@pytest.mark.parametrize("approve", [True, False])
async def test_a_decision_sent_through_the_store_is_applied_by_the_running_process(
    journal_url: str, approve: bool
) -> None:
    url = journal_url  # a SQLite file, then a PostgreSQL database
    with anyio.fail_after(HANG_GUARD):
        async with runtime(url) as rt:
            handle = await waiting_run(rt)
            other = open_backend(url)  # another runtime's store (another process's, alike)
            try:
                sent = submit_decision(other, handle.portfolio_id, "Deploy", approve, "bob",
                                       "from elsewhere")
                result = await handle.result()
                settled = decision_of(other, sent.id)
            finally:
                other.close()
    assert sent.status == "pending" and sent.intent_id == result.intents["Deploy"].id
    assert settled is not None and (settled.status, settled.reason) == ("applied", None)
    kind = EventType.APPROVAL_GRANTED if approve else EventType.APPROVAL_DENIED
    [decided] = result.events.of_type(kind)
    assert (decided.title, decided.data["by"], decided.data["note"]) == (
        "Deploy", "bob", "from elsewhere")
    assert result.status == ("completed" if approve else "failed")
    assert result.intents["Deploy"].attempts == (1 if approve else 0)


@pytest.mark.asyncio
async def test_virtual_time_jumps_while_the_run_watches_its_inbox(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    clock = VirtualClock(deadlock_after=HANG_GUARD)
    with anyio.fail_after(HANG_GUARD):
        async with runtime(url, clock) as rt:
            handle = await waiting_run(rt)
            await clock.sleep(3600)  # an hour of virtual time passes while the run waits
            other = open_backend(url)
            try:
                submit_decision(other, handle.portfolio_id, "Deploy", True, "alice")
                result = await handle.result()
            finally:
                other.close()
    [granted] = result.events.of_type(EventType.APPROVAL_GRANTED)
    [requested] = result.events.of_type(EventType.APPROVAL_REQUESTED)
    assert granted.time - requested.time >= 3600
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_the_command_side_refuses_what_the_journal_rules_out(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with anyio.fail_after(HANG_GUARD):
        async with runtime(url) as rt:
            handle = await waiting_run(rt)
            run_id = handle.portfolio_id
            other = open_backend(url)
            try:
                with pytest.raises(ApprovalError, match="'mallory' may not decide.*alice, bob"):
                    submit_decision(other, run_id, "Deploy", True, "mallory")
                with pytest.raises(ApprovalError, match="no intent with the id or title 'Nope'"):
                    submit_decision(other, run_id, "Nope", True, "alice")
                with pytest.raises(ApprovalError, match="no approval request is pending.*Build"):
                    submit_decision(other, run_id, "Build", True, "alice")
                with pytest.raises(RunNotFoundError, match="pf_unknown"):
                    submit_decision(other, "pf_unknown", "Deploy", True, "alice")
                with pytest.raises(ApprovalError, match="by='who decides'"):
                    submit_decision(other, run_id, "Deploy", True, "")
                assert other.inbox.waiting(run_id) == []  # nothing was recorded
                await handle.approve("Deploy", by="alice")
                result = await handle.result()
                with pytest.raises(ApprovalError, match="has ended"):
                    submit_decision(other, run_id, "Deploy", True, "alice")
            finally:
                other.close()
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_the_running_process_refuses_a_name_not_listed_and_says_why(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with anyio.fail_after(HANG_GUARD):
        async with runtime(url) as rt:
            handle = await waiting_run(rt)
            other = open_backend(url)
            try:
                # A row the command side would not write (another writer, or a list changed
                # on resume): the running process is the authority.
                row = other.inbox.submit(handle.portfolio_id, (await _deploy_id(handle)),
                                         True, "mallory", "")
                sent = submit_decision(other, handle.portfolio_id, "Deploy", True, "alice")
                result = await handle.result()
                refused, applied = decision_of(other, row), decision_of(other, sent.id)
            finally:
                other.close()
    assert refused is not None and refused.status == "refused"
    assert "'mallory' may not decide" in (refused.reason or "")
    assert applied is not None and applied.status == "applied"
    [granted] = result.events.of_type(EventType.APPROVAL_GRANTED)
    assert granted.data["by"] == "alice"
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_a_decision_taken_in_process_first_refuses_the_late_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with anyio.fail_after(HANG_GUARD):
        async with runtime(url) as rt:
            handle = await waiting_run(rt)
            other = open_backend(url)
            try:
                sent = submit_decision(other, handle.portfolio_id, "Deploy", False, "bob")
                await handle.approve("Deploy", by="alice")  # before the inbox is looked at
                result = await handle.result()
                late = decision_of(other, sent.id)
            finally:
                other.close()
    assert result.status == "completed"
    assert late is not None and late.status in ("refused", "pending")
    if late.status == "refused":
        assert late.reason == "already approved by alice"


async def _deploy_id(handle: Any) -> str:
    [request] = handle.pending_approvals()
    return str(request.intent_id)


def test_memory_has_no_other_process_to_send_from() -> None:
    backend = open_backend("memory://")
    try:
        with pytest.raises(StoreError, match="memory://.*handle.approve"):
            submit_decision(backend, "pf_x", "Deploy", True, "alice")
    finally:
        backend.close()


def test_a_version_2_journal_gets_the_inbox_and_stays_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step, statements in MIGRATIONS:
        if step <= 2:
            for statement in statements:
                conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO runs (id, name, timebase, started) VALUES ('pf_old', 'old', 0, 5)")
    conn.execute("INSERT INTO batches VALUES ('pf_old', 0, ?)", (
        '[["run_started",5.0,null,{"name":"old"}],'
        '["created",5.0,"in_old_0",["Deploy",[],"w",null]],'
        '["approval_requested",6.0,"in_old_0",{"approvers":[]}]]',))
    conn.close()
    backend = SqliteBackend(f"sqlite:///{path}")
    try:
        assert backend._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
        assert [info.portfolio_id for info in backend.runs()] == ["pf_old"]
        assert backend.read("pf_old")[1] == ("created", 5.0, "in_old_0", ("Deploy", [], "w", None))
        sent = submit_decision(backend, "pf_old", "Deploy", True, "anyone")
        assert (sent.intent_id, sent.status, sent.approve) == ("in_old_0", "pending", True)
    finally:
        backend.close()


# ---------------------------------------------------------------------------- two processes


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}


def start_child(store: str) -> tuple[subprocess.Popen[str], str]:
    """The child running the release; returns it and its run's id."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "approval_workflow.py"), store],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("started "):
        child.kill()
        raise AssertionError(f"the child did not start: {line!r} {child.communicate()}")
    return child, line.split()[1]


def journaled_types(database: Path, run_id: str) -> list[str]:
    """The types of the run's events on disk, read with plain SQL (read-only)."""
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute(
            "SELECT type FROM events WHERE run_id = ? ORDER BY seq", (run_id,))]
    finally:
        conn.close()


def wait_for_request(child: subprocess.Popen[str], database: Path, run_id: str) -> None:
    """Poll the file (bounded) until the child's run has journaled its approval request."""
    for _ in range(6_000):
        if EventType.APPROVAL_REQUESTED in journaled_types(database, run_id):
            return
        assert child.poll() is None, child.communicate()
        time.sleep(0.005)  # (a pause between looks, not a measurement)
    raise AssertionError("the child's run never asked for approval")


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openintent", *args], env=child_env(),
                          capture_output=True, text=True, timeout=HANG_GUARD, check=False)


def finish(child: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = child.communicate(timeout=HANG_GUARD)
    return child.returncode, out + err


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_a_waiting_run_is_decided_from_another_process(tmp_path: Path, verb: str) -> None:
    database = tmp_path / "runs.db"
    store = f"sqlite:///{database}"
    child, run_id = start_child(store)
    try:
        wait_for_request(child, database, run_id)
        before = journaled_types(database, run_id)
        decided = command(verb, str(database), run_id, "Deploy", "--by", "bob",
                          "--note", "from the other shell")
        status, output = finish(child)
    finally:
        child.kill()
    assert decided.returncode == 0, decided.stderr
    assert f"{'approval' if verb == 'approve' else 'denial'} of 'Deploy'" in decided.stdout
    assert "within about a second" in decided.stderr
    # The run waited for it: no decision was journaled before the command.
    assert EventType.APPROVAL_GRANTED not in before and EventType.APPROVAL_DENIED not in before
    types = journaled_types(database, run_id)
    kind = EventType.APPROVAL_GRANTED if verb == "approve" else EventType.APPROVAL_DENIED
    assert types.count(kind) == 1 and types[-1] == EventType.RUN_FINISHED
    if verb == "approve":
        assert (status, "status: completed" in output) == (0, True), output
    else:
        assert (status, "status: failed" in output) == (1, True), output
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT decided_by, note, status FROM approval_inbox").fetchall()
    finally:
        conn.close()
    assert rows == [("bob", "from the other shell", "applied")]


def test_refused_decisions_exit_2_and_the_run_still_waits(tmp_path: Path) -> None:
    database = tmp_path / "runs.db"
    store = f"sqlite:///{database}"
    child, run_id = start_child(store)
    try:
        wait_for_request(child, database, run_id)
        not_listed = command("approve", store, run_id, "Deploy", "--by", "mallory")
        unknown_intent = command("approve", store, run_id, "Launch", "--by", "alice")
        not_pending = command("deny", store, run_id, "Build", "--by", "alice")
        unknown_run = command("approve", store, "pf_nope", "Deploy", "--by", "alice")
        memory = command("approve", "memory://", run_id, "Deploy", "--by", "alice")
        still = journaled_types(database, run_id)
        assert child.poll() is None  # still waiting
        approved = command("approve", store, run_id, "Deploy", "--by", "alice")
        status, output = finish(child)
    finally:
        child.kill()
    assert not_listed.returncode == 2 and "'mallory' may not decide" in not_listed.stderr
    assert "approvers: alice, bob" in not_listed.stderr
    assert unknown_intent.returncode == 2 and "'Launch'" in unknown_intent.stderr
    assert not_pending.returncode == 2 and "no approval request is pending" in not_pending.stderr
    assert unknown_run.returncode == 2 and "pf_nope" in unknown_run.stderr
    assert memory.returncode == 2 and "memory://" in memory.stderr
    assert EventType.APPROVAL_GRANTED not in still and EventType.RUN_FINISHED not in still
    assert approved.returncode == 0, approved.stderr
    assert status == 0, output


@pytest.mark.asyncio
async def test_a_terminal_prompt_steps_aside_for_a_decision_from_another_process(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    typed = threading.Event()  # the answer nobody types (set at the end, to free the reader)
    err = io.StringIO()

    asking = threading.Event()

    def ask(prompt: str) -> str:
        asking.set()
        typed.wait(HANG_GUARD)
        return "n"

    try:
        with anyio.fail_after(HANG_GUARD):
            async with Runtime(agents=[SimulatedAgent("worker", result={"ok": True})],
                               store=url, guardrails=[APPROVAL]) as rt:
                handle = await waiting_run(rt)
                [request] = handle.pending_approvals()
                policy = ApprovalPolicy(handle, approve_all=False, by="alice", ask=ask, err=err)
                other = open_backend(url)
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(policy, request)
                        # The question is on the terminal before the decision is sent.
                        assert await anyio.to_thread.run_sync(asking.wait, HANG_GUARD)
                        submit_decision(other, handle.portfolio_id, "Deploy", True, "bob")
                        result = await handle.result()
                finally:
                    other.close()
    finally:
        typed.set()
    assert result.status == "completed" and policy.unanswered == []
    assert "'Deploy' was approved by bob from another process" in err.getvalue()


@pytest.mark.asyncio
async def test_a_sub_portfolios_approval_is_decided_through_the_store_too(
    tmp_path: Path,
) -> None:
    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent: Any) -> Any:
            sub = await self.execute(PortfolioSpec("sub", [IntentSpec("Deploy", assign="worker")]))
            return {"sub": str(sub.status)}

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = PortfolioSpec("outer", [IntentSpec("Plan", assign="planner")])
    clock = VirtualClock(deadlock_after=HANG_GUARD)
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[SimulatedAgent("worker", result={"ok": True}), Planner],
                           store=url, guardrails=[APPROVAL], clock=clock) as rt:
            handle = await rt.start(spec)
            while not rt.pending_approvals():
                await clock.sleep(1)
            [request] = rt.pending_approvals()
            assert request.portfolio_id != handle.portfolio_id  # the sub-portfolio's
            other = open_backend(url)
            try:
                sent = submit_decision(other, request.portfolio_id, "Deploy", True, "alice")
                result = await handle.result()
                applied = decision_of(other, sent.id)
            finally:
                other.close()
    assert result.status == "completed" and result.intents["Plan"].state["sub"] == "completed"
    assert applied is not None and applied.status == "applied"


WORKFLOW = """\
openintent: "1.0"
info:
  name: "Reviewed release"
coordinator:
  id: lead
  guardrails:
    - type: approval
      require_for: [ship]
      approvers: [alice]
workflow:
  build:
    title: "Build"
    assign: builder
  ship:
    title: "Ship It"
    assign: shipper
    depends_on: [build]
"""


def test_openintent_run_wait_approvals_waits_for_openintent_approve(tmp_path: Path) -> None:
    flow = tmp_path / "release.yaml"
    flow.write_text(WORKFLOW)
    database = tmp_path / "runs.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "openintent", "run", str(flow), "--simulate", "--store",
         str(database), "--wait-approvals"],
        env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        line = child.stderr.readline()  # openintent: run pf_... ('Reviewed release') is ...
        assert " is journaled in " in line, line
        run_id = line.split()[2]
        wait_for_request(child, database, run_id)
        hint = child.stderr.readline()
        approved = command("approve", str(database), run_id, "Ship It", "--by", "alice")
        status, output = finish(child)
    finally:
        child.kill()
    assert f"decide it from another shell: openintent approve {database} {run_id}" in hint
    assert approved.returncode == 0, approved.stderr
    assert status == 0 and "status: completed" in output, output


def test_wait_approvals_needs_a_durable_store(tmp_path: Path) -> None:
    flow = tmp_path / "release.yaml"
    flow.write_text(WORKFLOW)
    done = command("run", str(flow), "--simulate", "--wait-approvals")
    assert done.returncode == 2 and "durable store" in done.stderr


def test_a_decision_for_a_killed_run_is_applied_once_it_is_resumed(tmp_path: Path) -> None:
    database = tmp_path / "runs.db"
    store = f"sqlite:///{database}"
    child, run_id = start_child(store)
    try:
        wait_for_request(child, database, run_id)
    finally:
        child.kill()
        child.communicate(timeout=HANG_GUARD)
    approved = command("approve", str(database), run_id, "Deploy", "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    assert f"no process runs {run_id} now" in approved.stderr

    async def resume() -> Any:
        with anyio.fail_after(HANG_GUARD):
            async with runtime(store) as rt:
                return await rt.resume(run_id)

    result = anyio.run(resume)
    assert result.status == "completed"
    [granted] = result.events.of_type(EventType.APPROVAL_GRANTED)
    assert granted.data["by"] == "alice"
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("SELECT status FROM approval_inbox").fetchall() == [("applied",)]
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_a_client_on_the_store_decides_a_run_going_on_elsewhere(tmp_path: Path) -> None:
    from openintent import AsyncOpenIntentClient

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with anyio.fail_after(HANG_GUARD):
        async with runtime(url) as rt:
            handle = await waiting_run(rt)
            client = AsyncOpenIntentClient(agent_id="bob", base_url=url)
            try:
                with pytest.raises(ApprovalError, match="not an intent id"):
                    await client.approve("Deploy")  # a title needs its run
                with pytest.raises(ApprovalError, match="mallory"):
                    await client.approve("Deploy", portfolio_id=handle.portfolio_id,
                                         by="mallory")
                sent = await client.approve("Deploy", portfolio_id=handle.portfolio_id,
                                            note="ship it")
                result = await handle.result()
            finally:
                client.close()
    assert sent.status == "pending" and sent.by == "bob"
    [granted] = result.events.of_type(EventType.APPROVAL_GRANTED)
    assert (granted.data["by"], granted.data["note"]) == ("bob", "ship it")
    assert result.status == "completed"
