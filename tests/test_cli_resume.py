"""`openintent resume STORE ID [FILE]`: a journaled run that stopped (an unanswered approval,
a budget halt) continues where it stopped; what cannot be resumed exits 2 and says why."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from openintent._stores import open_backend
from openintent.cli import main

ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = """\
openintent: "1.0"
info:
  name: "Reviewed Content Pipeline"
coordinator:
  id: content-lead
  strategy: sequential
  guardrails:
    - type: budget
      max_cost_usd: 10.0
    - type: approval
      require_for: [edit]
workflow:
  write:
    title: "Write Draft"
    assign: writer
  edit:
    title: "Final Edit"
    assign: editor
    depends_on: [write]
"""


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "content.yaml"
    path.write_text(WORKFLOW)
    return path


@pytest.fixture
def store(journal_url):
    """A SQLite file, then a PostgreSQL database: the command works on both."""
    return journal_url


def run_id(err: str) -> str:
    found = re.search(r"run (pf_\w+) \(.*\) is journaled in", err)
    assert found, err
    return found.group(1)


@pytest.fixture
def waiting(workflow, store, capsys):
    """A simulated run cancelled because nobody could approve 'Final Edit': its id."""
    assert main(["run", str(workflow), "--simulate", "--store", store]) == 1
    err = capsys.readouterr().err
    pid = run_id(err)
    assert f"openintent resume {store} {pid} --approve-all" in err
    return pid


def events_of(store: str, pid: str) -> list:
    async def read() -> list:
        backend = open_backend(store)
        try:
            return list(backend.read(pid))
        finally:
            backend.close()

    return anyio.run(read)


def test_resume_approves_what_waited_and_completes_without_rerunning_the_rest(
    waiting, store, capsys
):
    # No FILE, no --simulate: the journal says which workflow file and that it simulated.
    assert main(["resume", store, waiting, "--approve-all", "--by", "ci", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["portfolio_id"] == waiting
    assert result["status"] == "completed"
    assert result["intents"]["Write Draft"]["attempts"] == 1  # not run again
    assert result["intents"]["Final Edit"]["status"] == "completed"
    assert "content.yaml" in captured.err  # says where the workflow came from
    assert "guardrails" not in captured.err  # the same as the run's: nothing to say
    types = [event[0] for event in events_of(store, waiting)]
    assert "run_resumed" in types and types[-1] == "run_finished"


def test_resume_prints_progress_and_status_like_run(waiting, store, capsys):
    assert main(["resume", store, waiting, "--approve-all"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Final Edit\s+completed", out, re.MULTILINE), out
    assert out.rstrip().splitlines()[-1] == "status: completed"


def test_resume_without_approvals_cancels_again_and_says_how_to_continue(
    waiting, store, capsys
):
    assert main(["resume", store, waiting]) == 1
    captured = capsys.readouterr()
    assert captured.out.rstrip().splitlines()[-1] == (
        "status: cancelled (waiting for approval: 'Final Edit')")
    assert f"openintent resume {store} {waiting} --approve-all" in captured.err


def test_resuming_a_completed_run_reports_it_and_runs_nothing(workflow, store, capsys):
    assert main(["run", str(workflow), "--simulate", "--store", store,
                 "--approve-all"]) == 0
    pid = run_id(capsys.readouterr().err)
    before = events_of(store, pid)
    assert main(["resume", store, pid]) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "status: completed"
    assert events_of(store, pid) == before


def test_a_run_halted_by_its_budget_resumes_with_the_raised_budget_of_the_file(
    tmp_path, store, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "costly_agents.py").write_text(
        "from openintent.testing import SimulatedAgent\n"
        "AGENTS = [SimulatedAgent('writer', result={'draft': 'x'}, cost_usd=5.0,"
        " register=False)]\n"
    )
    path = tmp_path / "budget.yaml"
    path.write_text(WORKFLOW.replace("max_cost_usd: 10.0", "max_cost_usd: 1.0"))
    assert main(["run", str(path), "--simulate", "--agents", "costly_agents:AGENTS",
                 "--store", store, "--approve-all"]) == 1
    captured = capsys.readouterr()
    pid = run_id(captured.err)
    assert captured.out.rstrip().splitlines()[-1].startswith("status: halted")
    assert f"openintent resume {store} {pid}" in captured.err
    path.write_text(WORKFLOW.replace("max_cost_usd: 10.0", "max_cost_usd: 100.0"))
    assert main(["resume", store, pid, str(path), "--approve-all", "--json"]) == 0
    captured = capsys.readouterr()
    assert "differ from the run's" in captured.err and "100.0" in captured.err
    result = json.loads(captured.out)
    assert result["status"] == "completed"
    assert result["cost_usd"] == 10.0  # the halted attempt's spend carried over, and one more
    assert [event["type"] for event in result["events"]].count("run_resumed") == 1


# ---------------------------------------------------------------- what cannot be resumed


def test_resume_an_unknown_run_exits_2(waiting, store, capsys):
    assert main(["resume", store, "pf_nope"]) == 2
    err = capsys.readouterr().err
    assert "pf_nope" in err and store in err


def test_resume_with_a_changed_workflow_exits_2_and_shows_the_difference(
    waiting, workflow, store, tmp_path, capsys
):
    changed = tmp_path / "changed.yaml"
    changed.write_text(WORKFLOW + "  publish:\n    title: \"Publish\"\n    assign: editor\n"
                       "    depends_on: [edit]\n")
    assert main(["resume", store, waiting, str(changed), "--approve-all"]) == 2
    err = capsys.readouterr().err
    assert "Publish" in err and waiting in err
    assert "run_resumed" not in [event[0] for event in events_of(store, waiting)]


def test_resume_when_the_journaled_workflow_file_is_gone_asks_for_it(
    waiting, workflow, store, capsys
):
    workflow.unlink()
    assert main(["resume", store, waiting, "--approve-all"]) == 2
    err = capsys.readouterr().err
    assert "content.yaml" in err and f"openintent resume {store} {waiting} FILE" in err


def test_resume_a_run_another_process_holds_exits_2(waiting, store, capsys):
    backend = open_backend(store)
    try:
        backend.acquire_run(waiting, "another resume")  # this process is alive: it holds
        assert main(["resume", store, waiting, "--approve-all"]) == 2
    finally:
        backend.release_run(waiting, "another resume")
        backend.close()
    assert "another resume" in capsys.readouterr().err


# ---------------------------------------------------------------- as real processes


def command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.run([sys.executable, "-m", "openintent", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_journaled_run_is_read_and_resumed_by_other_processes(tmp_path):
    (tmp_path / "flow.yaml").write_text(WORKFLOW)
    ran = command("run", "flow.yaml", "--simulate", "--store", "sqlite:///runs.db",
                  cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr  # nobody could approve 'Final Edit'
    pid = run_id(ran.stderr)

    listed = command("runs", "list", "runs.db", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^{pid}\s+Reviewed Content Pipeline\s+cancelled\s", listed.stdout,
                     re.MULTILINE), listed.stdout

    shown = command("runs", "show", "runs.db", pid, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^Write Draft\s+completed\s+1\s", shown.stdout, re.MULTILINE)
    assert shown.stdout.rstrip().splitlines()[-1] == "status: cancelled"

    events = command("runs", "events", "runs.db", pid, cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    assert events.stdout.splitlines()[-1].split()[3] == "run_finished"

    resumed = command("resume", "runs.db", pid, "--approve-all", "--by", "ci", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.rstrip().splitlines()[-1] == "status: completed"

    listed = command("runs", "list", "runs.db", "--json", cwd=tmp_path)
    assert [(run["portfolio_id"], run["status"]) for run in json.loads(listed.stdout)] == [
        (pid, "completed")]


TWO_STEPS = """\
openintent: "1.0"
info:
  name: "Two Steps"
workflow:
  write:
    title: "Write Draft"
    assign: writer
  edit:
    title: "Final Edit"
    assign: editor
    depends_on: [write]
"""

HANGING_AGENTS = """\
from pathlib import Path

import anyio

from openintent.agents import Agent, on_assignment

HERE = Path(__file__).parent


@Agent("writer")
class Writer:
    @on_assignment
    async def work(self, intent):
        return {"draft": "x"}


@Agent("editor")
class HangingEditor:
    @on_assignment
    async def work(self, intent):
        (HERE / "editing").write_text("yes")
        await anyio.sleep(600)
"""

QUICK_AGENTS = """\
from openintent.testing import SimulatedAgent

AGENTS = [SimulatedAgent(name, result={"done": True}, register=False)
          for name in ("writer", "editor")]
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_run_whose_process_was_killed_is_resumed_from_the_journal(tmp_path, capsys,
                                                                    monkeypatch):
    import signal
    import time

    (tmp_path / "flow.yaml").write_text(TWO_STEPS)
    (tmp_path / "hanging_agents.py").write_text(HANGING_AGENTS)
    (tmp_path / "quick_agents.py").write_text(QUICK_AGENTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "openintent", "run", "flow.yaml", "--agents", "hanging_agents",
         "--store", "runs.db"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # generous: the machine is shared
        while not (tmp_path / "editing").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the editor never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    pid = run_id(err)

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["runs", "list", "runs.db", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "running"  # no end in its log
    try:
        assert main(["resume", "runs.db", pid, "--agents", "quick_agents:AGENTS",
                     "--json"]) == 0
    finally:
        sys.modules.pop("quick_agents", None)
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "completed"
    assert result["intents"]["Write Draft"]["attempts"] == 1  # its completion was journaled
    assert result["intents"]["Final Edit"]["attempts"] == 2  # in flight at the kill: again
    assert result["intents"]["Final Edit"]["state"] == {"done": True}


def test_a_run_started_from_python_resumes_with_the_agents_given(tmp_path, store, capsys,
                                                                 monkeypatch):
    from openintent import Runtime
    from openintent.agents import IntentSpec, PortfolioSpec
    from openintent.testing import SimulatedAgent

    spec = PortfolioSpec(name="From Python", intents=[IntentSpec(title="Only", assign="w")])

    async def cancelled_run() -> str:
        agent = SimulatedAgent("w", result={"ok": True}, register=False)
        async with Runtime([agent], store=store) as rt:
            handle = await rt.start(spec)
            await handle.cancel()
            return (await handle.result()).portfolio_id

    pid = anyio.run(cancelled_run)
    assert main(["resume", store, pid, "--simulate"]) == 2  # no workflow file to simulate
    assert "--simulate needs the run's workflow file" in capsys.readouterr().err

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "python_run_agents.py").write_text(
        "from openintent.testing import SimulatedAgent\n"
        "AGENTS = [SimulatedAgent('w', result={'ok': True}, register=False)]\n")
    try:
        assert main(["resume", store, pid, "--agents", "python_run_agents:AGENTS",
                     "--json"]) == 0
    finally:
        sys.modules.pop("python_run_agents", None)
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "completed" and result["intents"]["Only"]["state"] == {
        "ok": True}
