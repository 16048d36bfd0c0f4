"""``openintent worker`` and ``openintent run --detach``: their refusals (exit 2, nothing
runs) on a store without a task queue, and their options. (Serving a postgresql:// store end
to end is tested once that store is in.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openintent.cli import main

WORKFLOW = """\
openintent: "1.0"
info:
  name: "Detachable"
workflow:
  write:
    title: "Write"
    assign: writer
"""


@pytest.fixture
def workflow(tmp_path: Path) -> str:
    path = tmp_path / "detach.yaml"
    path.write_text(WORKFLOW)
    return str(path)


@pytest.mark.parametrize("store", ["runs.db", "sqlite:///runs.db", "memory://",
                                   "memory://?workers=1"])
def test_a_worker_needs_a_postgresql_store(capsys: pytest.CaptureFixture[str], store: str,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["worker", store, "--agents", "json"]) == 2
    err = capsys.readouterr().err
    assert "workers need a postgresql:// store" in err and store in err
    assert not (tmp_path / "runs.db").exists()  # nothing was opened


def test_a_worker_needs_agents_and_a_sane_concurrency(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert main(["worker", "postgresql://nobody@localhost/none"]) == 2
    assert "--agents" in capsys.readouterr().err
    assert main(["worker", "postgresql://nobody@localhost/none", "--agents", "json",
                 "--concurrency", "0"]) == 2
    assert "--concurrency takes a whole number >= 1" in capsys.readouterr().err
    assert main(["worker", "postgresql://nobody@localhost/none", "--agents",
                 "no_such_module_here"]) == 2
    assert "no_such_module_here" in capsys.readouterr().err


def test_worker_help_names_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--agents", "--concurrency", "--id"):
        assert option in out


@pytest.mark.parametrize("store", ["sqlite:///runs.db", "memory://"])
def test_detach_is_refused_on_a_store_without_a_task_queue(
        capsys: pytest.CaptureFixture[str], workflow: str, store: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", workflow, "--store", store, "--detach"]) == 2
    captured = capsys.readouterr()
    assert "--detach" in captured.err and "postgresql://" in captured.err
    assert captured.out == "" and not (tmp_path / "runs.db").exists()


def test_detach_with_simulated_agents_is_refused(capsys: pytest.CaptureFixture[str],
                                                 workflow: str) -> None:
    assert main(["run", workflow, "--store", "postgresql://x@localhost/db", "--detach",
                 "--simulate"]) == 2
    assert "--simulate" in capsys.readouterr().err


COORDINATED = """\
openintent: "1.0"
info:
  name: "Coordinated"
coordinator:
  id: yaml-lead
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


@pytest.mark.asyncio
async def test_a_worker_adopts_a_detached_run_of_a_workflow_file_with_its_coordinator_block(
        tmp_path: Path) -> None:
    import io

    import anyio

    from openintent import Runtime, VirtualClock
    from openintent._detach import start_detached
    from openintent._serve import serve
    from openintent.agents import Agent, on_assignment
    from openintent.cli._common import Streams
    from openintent.cli._origin import CommandWorkflow, origin_metadata
    from openintent.cli._worker import _rebuild
    from openintent.workflow import load_workflow

    @Agent("writer")
    class Writer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await self.record_cost(intent, 1.0)
            return {"text": intent.title.lower()}

    path = tmp_path / "coordinated.yaml"
    path.write_text(COORDINATED)
    workflow = load_workflow(str(path))
    store, clock = "memory://?workers=1", VirtualClock()
    streams = Streams(io.StringIO(), io.StringIO(), False)
    with anyio.fail_after(20):
        async with Runtime(agents=[], store=store, clock=clock) as starter:
            run_id = await start_detached(
                starter, CommandWorkflow(workflow, origin_metadata(workflow, False, [])))
        async with Runtime(agents=[Writer], store=store, clock=clock) as rt:
            async with anyio.create_task_group() as group:
                # The worker command's adoption: the run's coordinator from its workflow file.
                group.start_soon(serve, rt._runs, rt._agents, rt._guardrails, None, 4, "w",
                                 _rebuild(rt, streams))
                while (await rt.load(run_id)).status == "running":
                    await clock.sleep(1)
                group.cancel_scope.cancel()
            result = await rt.load(run_id)

    assert result.status == "completed", result.error
    assert result.intents["Edit"].state == {"text": "edit"}
    assert result.cost_usd == 2.0
    started = result.events.of_type("run_started")[0].data
    assert started["coordinator"] == "yaml-lead"
