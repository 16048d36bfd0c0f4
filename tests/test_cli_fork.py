"""`openintent runs fork STORE ID --rerun TITLE [FILE]`: a new journaled run that keeps what
run ID completed and runs the named steps (and their descendants) again; what cannot be
forked exits 2 and says why."""

from __future__ import annotations

import json
import re
import sys

import anyio
import pytest

from openintent._stores import open_backend
from openintent.cli import main

WORKFLOW = """\
openintent: "1.0"
info:
  name: "Three Steps"
workflow:
  research:
    title: "Research"
    assign: researcher
  write:
    title: "Write Draft"
    assign: writer
    depends_on: [research]
  review:
    title: "Review"
    assign: reviewer
    depends_on: [write]
"""


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "steps.yaml"
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


def events_of(store: str, pid: str) -> list:
    async def read() -> list:
        backend = open_backend(store)
        try:
            return list(backend.read(pid))
        finally:
            backend.close()

    return anyio.run(read)


@pytest.fixture
def source(workflow, store, capsys):
    """A simulated run of the workflow, completed and journaled: its id."""
    assert main(["run", str(workflow), "--simulate", "--store", store]) == 0
    return run_id(capsys.readouterr().err)


def test_fork_reruns_the_named_step_and_keeps_the_others(source, store, capsys):
    before = events_of(store, source)
    # No FILE, no --simulate: the journal says which workflow file and that it simulated.
    assert main(["runs", "fork", store, source, "--rerun", "Write Draft", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    fork = result["portfolio_id"]
    assert fork != source and run_id(captured.err) == fork
    assert result["status"] == "completed"
    events = events_of(store, fork)
    started = events[0][3]
    assert started["forked_from"] == source and started["rerun"] == ["Write Draft"]
    dispatched = {result["intents"][title]["id"]: title for title in result["intents"]}
    assert sorted(dispatched[event[2]] for event in events if event[0] == "dispatched") == [
        "Review", "Write Draft"]
    copied = [event for event in events if event[0] == "intent_copied"]
    assert [dispatched[event[2]] for event in copied] == ["Research"]
    assert events_of(store, source) == before  # the source run is left as it was
    assert main(["runs", "show", store, fork]) == 0
    shown = capsys.readouterr().out
    assert "Research" in shown and "status: completed" in shown

    # The fork is an ordinary journaled run: listed, and forked again.
    assert main(["runs", "list", store, "--json"]) == 0
    listed = [run["portfolio_id"] for run in json.loads(capsys.readouterr().out)]
    assert listed == [source, fork]
    assert main(["runs", "fork", store, fork, "--rerun", "Review", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["status"] == "completed"
    assert events_of(store, again["portfolio_id"])[0][3]["forked_from"] == fork


def test_fork_prints_progress_with_the_copied_steps(source, store, capsys):
    assert main(["runs", "fork", store, source, "--rerun", "Review"]) == 0
    out = capsys.readouterr().out
    assert f"forked from {source}" in out
    assert "copied     Research" in out and "copied     Write Draft" in out
    assert "status: completed" in out


def test_an_unknown_title_exits_2_with_a_suggestion(source, store, capsys):
    assert main(["runs", "fork", store, source, "--rerun", "Reviw"]) == 2
    err = capsys.readouterr().err
    assert "'Reviw'" in err and "did you mean 'Review'?" in err
    assert main(["runs", "list", store, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_rerun_is_required_and_an_unknown_run_exits_2(source, store, capsys):
    assert main(["runs", "fork", store, source]) == 2
    assert "--rerun" in capsys.readouterr().err
    assert main(["runs", "fork", store, "pf_nope", "--rerun", "Review"]) == 2
    assert "pf_nope" in capsys.readouterr().err


def test_an_edited_step_in_the_file_comes_along_unedited_kept_steps_are_required(
    source, workflow, store, capsys
):
    edited = workflow.parent / "edited.yaml"
    edited.write_text(WORKFLOW.replace('    title: "Review"\n',
                                       '    title: "Review"\n    description: "stricter"\n'))
    assert main(["runs", "fork", store, source, str(edited), "--rerun", "Review",
                 "--simulate", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    events = events_of(store, result["portfolio_id"])
    review = result["intents"]["Review"]["id"]
    created = next(event for event in events if event[0] == "created" and event[2] == review)
    assert created[3][4]["description"] == "stricter"
    # Forks that re-run it (as a descendant) take it too.
    assert main(["runs", "fork", store, source, str(edited), "--rerun", "Write Draft",
                 "--simulate"]) == 0  # Review is downstream of Write Draft: it runs again
    capsys.readouterr()
    assert main(["runs", "fork", store, source, str(edited), "--rerun", "Research",
                 "--simulate"]) == 0
    capsys.readouterr()
    research = workflow.parent / "research.yaml"
    research.write_text(WORKFLOW.replace('    title: "Research"\n',
                                         '    title: "Research"\n    description: "new"\n'))
    # A step the fork would keep is edited: refused, nothing runs.
    assert main(["runs", "fork", store, source, str(research), "--rerun", "Review",
                 "--simulate"]) == 2
    err = capsys.readouterr().err
    assert "intent 'Research': description" in err and "rerun" in err


def test_a_run_started_from_python_forks_with_the_agents_given(tmp_path, store, capsys,
                                                               monkeypatch):
    from openintent import Runtime
    from openintent.agents import IntentSpec, PortfolioSpec
    from openintent.testing import SimulatedAgent

    spec = PortfolioSpec(name="From Python", intents=[
        IntentSpec(title="First", assign="w"),
        IntentSpec(title="Second", assign="w", depends_on=["First"])])

    async def finished_run() -> str:
        agent = SimulatedAgent("w", result={"ok": 1}, register=False)
        async with Runtime([agent], store=store) as rt:
            return (await rt.run(spec)).portfolio_id

    pid = anyio.run(finished_run)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "python_fork_agents.py").write_text(
        "from openintent.testing import SimulatedAgent\n"
        "AGENTS = [SimulatedAgent('w', result={'ok': 2}, register=False)]\n")
    try:
        assert main(["runs", "fork", store, pid, "--rerun", "Second", "--agents",
                     "python_fork_agents:AGENTS", "--json"]) == 0
    finally:
        sys.modules.pop("python_fork_agents", None)
    result = json.loads(capsys.readouterr().out)
    assert result["intents"]["First"]["state"] == {"ok": 1}  # copied
    assert result["intents"]["Second"]["state"] == {"ok": 2}  # run again
