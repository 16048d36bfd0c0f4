"""`openintent run --store` journals a run; `openintent runs list|show|events` read it back
(through `main(argv)`, in this process)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import anyio
import pytest

import openintent.cli._event_log as event_log
from openintent._stores import open_backend
from openintent.cli import main

WORKFLOW = """\
openintent: "1.0"
info:
  name: "Reviewed Content Pipeline"
coordinator:
  id: content-lead
  strategy: sequential
workflow:
  write:
    title: "Write Draft"
    assign: writer
  review:
    title: "Peer Review"
    assign: reviewer
    depends_on: [write]
"""


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "content.yaml"
    path.write_text(WORKFLOW)
    return str(path)


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'runs.db'}"


def run_id(err: str) -> str:
    found = re.search(r"run (pf_\w+) \(.*\) is journaled in", err)
    assert found, err
    return found.group(1)


@pytest.fixture
def journaled(workflow, store, capsys):
    """A completed run journaled in ``store``: its portfolio id."""
    assert main(["run", workflow, "--simulate", "--store", store]) == 0
    return run_id(capsys.readouterr().err)


# ---------------------------------------------------------------- run --store


def test_run_with_a_sqlite_store_prints_the_run_id_and_journals_it(workflow, tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["run", workflow, "--simulate", "--store", store]) == 0
    captured = capsys.readouterr()
    pid = run_id(captured.err)
    assert f"({pid}) started" in captured.out  # the progress header names it too
    assert captured.out.rstrip().splitlines()[-1] == "status: completed"
    assert "openintent resume" not in captured.err  # a completed run needs no resume
    assert (tmp_path / "runs.db").is_file()


def test_run_json_with_a_store_has_the_run_id(workflow, store, capsys):
    assert main(["run", workflow, "--simulate", "--store", store, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["portfolio_id"] == run_id(captured.err)


def test_a_store_path_without_a_scheme_is_a_sqlite_file(workflow, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", workflow, "--simulate", "--store", "journal.db"]) == 0
    pid = run_id(capsys.readouterr().err)
    assert (tmp_path / "journal.db").is_file()
    assert main(["runs", "list", "journal.db"]) == 0
    assert pid in capsys.readouterr().out


# ---------------------------------------------------------------- runs list


def test_runs_list_prints_id_name_status_and_times(journaled, store, capsys):
    assert main(["runs", "list", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "name", "status", "started", "(UTC)", "ended", "(UTC)"]
    row = next(line for line in lines if line.startswith(journaled))
    assert "Reviewed Content Pipeline" in row and "completed" in row
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row)) == 2


def test_runs_list_json(journaled, store, capsys):
    assert main(["runs", "list", store, "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["portfolio_id"] == journaled
    assert run["name"] == "Reviewed Content Pipeline"
    assert run["status"] == "completed"
    assert run["started_at"] <= run["ended_at"]


def test_runs_list_of_an_empty_store_says_so(tmp_path, capsys):
    async def create() -> None:
        open_backend(f"sqlite:///{tmp_path / 'empty.db'}").close()

    anyio.run(create)
    assert main(["runs", "list", str(tmp_path / "empty.db")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no runs in" in captured.err


@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "show"], ["runs", "events"],
                                     ["resume"]])
def test_a_missing_store_file_is_an_error_naming_it_and_is_not_created(
    tmp_path, capsys, command
):
    missing = tmp_path / "missing.db"
    ids = [] if command == ["runs", "list"] else ["pf_x"]
    assert main([*command, str(missing), *ids]) == 2
    err = capsys.readouterr().err
    assert "missing.db" in err and "not found" in err
    assert not missing.exists()


def test_the_memory_store_keeps_no_runs_to_list(capsys):
    assert main(["runs", "list", "memory://"]) == 2
    assert "memory:// keeps no runs" in capsys.readouterr().err


def test_a_file_that_is_not_a_journal_is_an_error_and_left_untouched(tmp_path, capsys):
    other = tmp_path / "notes.db"
    other.write_bytes(b"not a database at all" * 10)
    assert main(["runs", "list", str(other)]) == 2
    assert "notes.db" in capsys.readouterr().err
    assert other.read_bytes() == b"not a database at all" * 10


# ---------------------------------------------------------------- runs show


def test_runs_show_prints_the_summary_decisions_and_status(journaled, store, capsys):
    assert main(["runs", "show", store, journaled]) == 0
    out = capsys.readouterr().out
    assert f"Reviewed Content Pipeline ({journaled}): completed" in out
    for title in ("Write Draft", "Peer Review"):
        assert re.search(rf"^{title}\s+completed\s+1\s", out, re.MULTILINE), out
    assert out.rstrip().splitlines()[-1] == "status: completed"


def test_runs_show_json_is_the_run_result_the_run_printed(workflow, store, capsys):
    assert main(["run", workflow, "--simulate", "--store", store, "--json"]) == 0
    captured = capsys.readouterr()
    live = json.loads(captured.out)
    assert main(["runs", "show", store, run_id(captured.err), "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["status"] == live["status"] == "completed"
    assert loaded["intents"] == live["intents"]
    assert loaded["decisions"] == live["decisions"]
    assert [e["type"] for e in loaded["events"]] == [e["type"] for e in live["events"]]


def test_runs_show_an_unknown_id_exits_2_and_says_where_it_looked(journaled, store, capsys):
    assert main(["runs", "show", store, "pf_nope"]) == 2
    err = capsys.readouterr().err
    assert "pf_nope" in err and "runs.db" in err
    assert f"`openintent runs list {store}` lists them" in err


# ---------------------------------------------------------------- runs events


def test_runs_events_prints_one_line_per_event(journaled, store, capsys):
    assert main(["runs", "events", store, journaled]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"\s+0  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  run_started\s", lines[0])
    assert lines[-1].split()[3] == "run_finished" and '"status":"completed"' in lines[-1]
    seqs = [int(line.split()[0]) for line in lines]
    assert seqs == list(range(len(lines)))
    assert any(re.search(r"\scompleted\s+Write Draft\s", line) for line in lines), lines


def test_runs_events_json_lines(journaled, store, capsys):
    assert main(["runs", "events", store, journaled, "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert {event["portfolio_id"] for event in events} == {journaled}
    assert [event["seq"] for event in events] == list(range(len(events)))


def test_follow_of_a_finished_run_prints_its_events_and_ends(journaled, store, capsys,
                                                             monkeypatch):
    async def never() -> None:
        raise AssertionError("a finished run is not polled")

    monkeypatch.setattr(event_log, "_poll_wait", never)
    assert main(["runs", "events", store, journaled, "--follow"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[3] == "run_finished"


def test_follow_prints_the_events_another_writer_appends_until_run_finished(
    journaled, store, capsys, monkeypatch
):
    """A second run is journaled piece by piece (as another process would) while the
    command follows it: each look at the store prints what was appended since."""

    async def read() -> list:
        backend = open_backend(store)
        try:
            return list(backend.read(journaled))
        finally:
            backend.close()

    events = anyio.run(read)
    pieces = [events[:3], events[3:6], events[6:]]
    writer = open_backend(store)
    log = writer.create_run("pf_followed", "Reviewed Content Pipeline",
                            timebase=1_700_000_000.0)

    async def append(piece: list) -> None:
        log.extend(piece)
        await log.wait_committed(len(log))

    anyio.run(append, pieces[0])
    looks = []

    async def next_piece() -> None:  # instead of a real pause between two looks
        looks.append(len(log))
        if len(looks) <= 2:
            await append(pieces[len(looks)])

    monkeypatch.setattr(event_log, "_poll_wait", next_piece)
    try:
        assert main(["runs", "events", store, "pf_followed", "--follow", "--json"]) == 0
    finally:
        writer.close()
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [event["seq"] for event in printed] == list(range(len(events)))
    assert [event["type"] for event in printed] == [event[0] for event in events]
    assert len(looks) == 2  # after the last piece's run_finished, it stopped looking


def test_ctrl_c_stops_following_with_exit_130(journaled, store, capsys, monkeypatch):
    async def unfinished() -> None:
        backend = open_backend(store)
        try:
            first = list(backend.read(journaled))[:2]
            log = backend.create_run("pf_unfinished", "Reviewed Content Pipeline")
            log.extend(first)
            await log.wait_committed(len(log))
        finally:
            backend.close()

    anyio.run(unfinished)

    async def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(event_log, "_poll_wait", interrupt)
    assert main(["runs", "events", store, "pf_unfinished", "--follow"]) == 130
    assert capsys.readouterr().out.splitlines()[0].split()[3] == "run_started"


def test_runs_list_on_a_terminal_is_a_rich_table(journaled, store, capsys, monkeypatch):
    pytest.importorskip("rich")
    import openintent.cli._runs as runs

    monkeypatch.setattr(runs, "is_terminal", lambda stream: True)
    assert main(["runs", "list", store]) == 0
    out = capsys.readouterr().out
    assert "┃ id" in out and journaled in out and "completed" in out


@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "show"], ["resume"]])
def test_a_store_the_runtime_does_not_know_exits_2(capsys, command):
    ids = [] if command == ["runs", "list"] else ["pf_x"]
    assert main([*command, "mongodb://db/runs", *ids]) == 2
    assert "'mongodb://db/runs' is not supported" in capsys.readouterr().err


def test_run_into_a_file_that_is_not_a_journal_exits_2_and_leaves_it(workflow, tmp_path,
                                                                      capsys):
    other = tmp_path / "notes.db"
    other.write_bytes(b"my notes" * 100)
    assert main(["run", workflow, "--simulate", "--store", str(other)]) == 2
    captured = capsys.readouterr()
    assert "notes.db" in captured.err and "status:" not in captured.out
    assert other.read_bytes() == b"my notes" * 100


GATED_AGENT = """\
from pathlib import Path

import anyio

from openintent.agents import Agent, on_assignment

HERE = Path(__file__).parent


@Agent("writer")
class GatedWriter:
    @on_assignment
    async def work(self, intent):
        while not (HERE / "go").exists():  # the test says when
            await anyio.sleep(0.02)
        return {"draft": "x"}
"""

ONE_STEP = """\
openintent: "1.0"
info:
  name: "Gated"
workflow:
  write:
    title: "Write Draft"
    assign: writer
"""


@pytest.mark.skipif(sys.platform == "win32", reason="select() on pipes is POSIX")
def test_follow_in_another_process_prints_events_as_the_run_appends_them(tmp_path):
    import select
    import subprocess
    import time

    (tmp_path / "flow.yaml").write_text(ONE_STEP)
    (tmp_path / "gated_agents.py").write_text(GATED_AGENT)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(root), os.environ.get("PYTHONPATH", "")]))}

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "openintent", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    run = start("run", "flow.yaml", "--agents", "gated_agents", "--store", "runs.db")
    follower = None
    try:
        pid = run_id(run.stderr.readline())
        follower = start("runs", "events", "runs.db", pid, "--follow")
        seen, deadline = "", time.monotonic() + 120  # generous: the machine is shared
        while "dispatched" not in seen:  # it printed the run so far, and waits for more
            assert follower.poll() is None, follower.communicate()
            assert time.monotonic() < deadline, seen
            if select.select([follower.stdout], [], [], 0.1)[0]:  # unbuffered: os.read
                seen += os.read(follower.stdout.fileno(), 65536).decode()
        (tmp_path / "go").write_text("yes")
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err
        run.communicate(timeout=120)  # (closes its pipes)
        assert run.returncode == 0
    finally:
        for process in (run, follower):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    lines = (seen + out).splitlines()
    assert [line.split()[3] for line in lines] == [
        "run_started", "created", "ready", "dispatched", "completed", "run_finished"]
