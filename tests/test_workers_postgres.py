"""Workers on a real PostgreSQL store: a coordinator and a worker sharing one database in a
process, and `openintent run --detach` adopted by an `openintent worker` process. (They skip
with a reason until the postgresql:// store has its task queue.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from _serving import shape, voters

from openintent import Runtime, StoreError
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.cli import main

ROOT = Path(__file__).resolve().parent.parent

AGENTS = '''\
from openintent.agents import Agent, on_assignment


@Agent("writer")
class Writer:
    @on_assignment
    async def work(self, intent):
        await self.record_cost(intent, 1.0)
        return {"text": intent.title.lower()}
'''

WORKFLOW = """\
openintent: "1.0"
info:
  name: "Detached on PostgreSQL"
coordinator:
  id: pg-lead
  guardrails:
    - type: budget
      max_cost_usd: 10.0
workflow:
  write:
    title: "Write"
    assign: writer
  edit:
    title: "Edit"
    assign: writer
    depends_on: [write]
"""


def with_task_queue(url: str) -> str:
    """``url`` when its store has a task queue; else the test skips, saying why."""
    from openintent._stores import open_backend

    try:
        backend = open_backend(url)
    except StoreError as exc:
        pytest.skip(f"no postgresql:// store in this tree yet: {exc}")
    try:
        if getattr(backend, "tasks", None) is None:
            pytest.skip("the postgresql:// store has no task queue in this tree yet")
    finally:
        backend.close()
    return url


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_coordinator_and_a_worker_share_a_postgresql_store(
        postgres_url: str, anyio_backend: str) -> None:
    url = with_task_queue(postgres_url)

    dispatch_committed: list[bool] = []
    journal: dict[str, str] = {}  # the store the worker reads back, once the run is there

    @Agent("adder")
    class Adder:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if journal:  # the worker reads the journal: its dispatch is there already
                async with Runtime(store=journal["url"]) as reader:
                    logged = await reader.load(intent.portfolio_id)
                dispatch_committed.append(any(
                    event.type == "dispatched" and event.intent_id == intent.id
                    for event in logged.events))
            receipt = await self.effect(intent, "note", lambda: f"noted {intent.title}")
            await self.record_cost(intent, 0.5)
            return {"n": 1 + sum(v["n"] for v in intent.inputs.values()), "r": receipt}

    spec = PortfolioSpec("pg", [IntentSpec("A", assign="adder"),
                                IntentSpec("B", assign="adder", depends_on=["A"]),
                                IntentSpec("C", assign="adder", depends_on=["A", "B"])])
    async with Runtime(agents=[Adder]) as local:
        expected = await local.run(spec)
    journal["url"] = url
    with anyio.fail_after(60):
        async with Runtime(agents=[], store=url) as coordinator, \
                Runtime(agents=[Adder], store=url) as worker:
            async with anyio.create_task_group() as group:
                group.start_soon(worker.serve)
                result = await coordinator.run(spec)
                group.cancel_scope.cancel()
            loaded = await coordinator.load(result.portfolio_id)

    assert result.status == "completed", result.error
    assert result.intents["C"].state == {"n": 4, "r": "noted C"}
    assert [row[:2] for row in shape(result)] == [row[:2] for row in shape(expected)]
    assert shape(loaded) == shape(result)
    assert dispatch_committed == [True, True, True]  # journaled before any task was queued


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_each_remote_assignee_of_a_multi_agent_intent_gets_its_own_task(
        postgres_url: str, anyio_backend: str) -> None:
    url = with_task_queue(postgres_url)
    served: list[str] = []

    spec = PortfolioSpec("vote", [IntentSpec("Review", assign=["rev-a", "rev-b"])])
    with anyio.fail_after(60):
        async with Runtime(agents=[], store=url) as coordinator, \
                Runtime(agents=voters(served, "rev-a", "rev-b"), store=url) as worker:
            async with anyio.create_task_group() as group:
                group.start_soon(worker.serve)
                result = await coordinator.run(spec)
                group.cancel_scope.cancel()
    assert result.status == "completed", result.error
    assert sorted(served) == ["rev-a", "rev-b"]


@pytest.mark.parametrize("file_on_worker_host", [True, False],
                         ids=["file-there", "file-gone"])
def test_a_detached_run_is_adopted_by_a_worker_process(
        postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        file_on_worker_host: bool) -> None:
    url = with_task_queue(postgres_url)
    (tmp_path / "pg_agents.py").write_text(AGENTS)
    flow = tmp_path / "flow.yaml"
    flow.write_text(WORKFLOW)

    assert main(["run", str(flow), "--store", url, "--detach"]) == 0
    run_id = capsys.readouterr().out.strip()
    assert run_id.startswith("pf_")
    if not file_on_worker_host:
        # A worker on another host has no copy of the file: the journal holds its text.
        flow.unlink()

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "openintent", "worker", url, "--agents", "pg_agents",
         "--id", "w1", "--concurrency", "2"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        status = "running"
        deadline = time.monotonic() + 60
        while status == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = anyio.run(_status, url, run_id)
        assert status == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 130, err
    result = anyio.run(_load, url, run_id)
    assert result.intents["Edit"].state == {"text": "edit"} and result.cost_usd == 2.0
    assert len(result.events.of_type("run_resumed")) == 1


async def _status(url: str, run_id: str) -> str:
    return str((await _load(url, run_id)).status)


async def _load(url: str, run_id: str) -> Any:
    async with Runtime(store=url) as rt:
        return await rt.load(run_id)
