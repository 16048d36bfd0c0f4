"""The `openintent` command, through `main(argv)`: exit statuses, output, approvals, logging."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest
import structlog

from openintent.cli import main

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
workflow:
  write:
    title: "Write Draft"
    description: "A first draft"
    assign: writer
  peer_review:
    title: "Peer Review"
    description: "Two reviewers read it"
    assign: [reviewer-a, reviewer-b]
    depends_on: [write]
  edit:
    title: "Final Edit"
    description: "The last pass"
    assign: editor
    depends_on: [peer_review]
"""

APPROVAL = WORKFLOW.replace(
    "      max_cost_usd: 10.0\n",
    "      max_cost_usd: 10.0\n    - type: approval\n      require_for: [edit]\n",
)


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "content.yaml"
    path.write_text(WORKFLOW)
    return str(path)


@pytest.fixture
def approval_workflow(tmp_path):
    path = tmp_path / "approval.yaml"
    path.write_text(APPROVAL)
    return str(path)


@pytest.fixture
def agents_module(tmp_path, monkeypatch):
    """Write a module of agents into tmp_path; return its (unique) import name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def write(source: str) -> str:
        name = f"cli_agents_{len(names)}_{tmp_path.name.replace('-', '_')}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------- validate


def test_validate_prints_ok_for_a_valid_file_and_exits_0(workflow, capsys):
    assert main(["validate", workflow]) == 0
    assert f"{workflow}: ok" in capsys.readouterr().out


def test_validate_prints_each_problem_as_file_line_col_and_exits_2(tmp_path, workflow, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(WORKFLOW.replace("workflow:\n", "workflw:\n"))
    assert main(["validate", workflow, str(bad)]) == 2
    out = capsys.readouterr().out
    assert f"{workflow}: ok" in out
    assert re.search(rf"^{re.escape(str(bad))}:\d+:\d+: ", out, re.MULTILINE), out


def test_validate_a_missing_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().out


# ---------------------------------------------------------------- graph


@pytest.mark.parametrize(("fmt", "start"), [("mermaid", "flowchart"), ("dot", "digraph")])
def test_graph_prints_the_dag(workflow, capsys, fmt, start):
    assert main(["graph", workflow, "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert start in out


def test_graph_of_an_invalid_file_exits_2_with_positions_on_stderr(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(WORKFLOW.replace("workflow:\n", "workflw:\n"))
    assert main(["graph", str(bad)]) == 2
    assert re.search(rf"{re.escape(str(bad))}:\d+:\d+: ", capsys.readouterr().err)


# ---------------------------------------------------------------- run


def test_run_simulate_completes_and_prints_summary_decisions_and_status(workflow, capsys):
    assert main(["run", workflow, "--simulate"]) == 0
    out = capsys.readouterr().out
    for title in ("Write Draft", "Peer Review", "Final Edit"):
        assert re.search(rf"^{title}\s+completed\s+1\s", out, re.MULTILINE), out
    assert "decisions:" in out
    assert "started    Write Draft" in out  # progress lines (plain: not a terminal)
    assert out.rstrip().splitlines()[-1] == "status: completed"


def test_run_json_prints_the_run_result(workflow, capsys):
    assert main(["run", workflow, "--simulate", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["status"] == "completed"
    assert set(result["intents"]) == {"Write Draft", "Peer Review", "Final Edit"}
    assert result["events"][0]["type"] == "run_started"
    assert captured.err.rstrip().splitlines()[-1] == "status: completed"


def test_run_a_failing_workflow_exits_1_and_says_why(workflow, agents_module, capsys):
    module = agents_module(
        """
        from openintent.testing import SimulatedAgent
        AGENTS = [SimulatedAgent("writer", result=RuntimeError("no ink"), register=False)]
        AGENTS += [SimulatedAgent(name, result={}, register=False)
                   for name in ("reviewer-a", "reviewer-b", "editor")]
        """
    )
    assert main(["run", workflow, "--agents", f"{module}:AGENTS"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^Write Draft\s+failed", out, re.MULTILINE)
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("status: failed") and "no ink" in last


def test_run_halted_by_a_guardrail_exits_1(tmp_path, agents_module, capsys):
    path = tmp_path / "budget.yaml"
    path.write_text(WORKFLOW.replace("max_cost_usd: 10.0", "max_cost_usd: 1.0"))
    module = agents_module(
        """
        from openintent.testing import SimulatedAgent
        AGENTS = [SimulatedAgent("writer", result={"draft": "x"}, cost_usd=5.0, register=False)]
        """
    )
    assert main(["run", str(path), "--simulate", "--agents", f"{module}:AGENTS"]) == 1
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("status: halted") and "budget" in last


def test_run_with_agents_registered_by_importing_a_module(workflow, agents_module, capsys):
    module = agents_module(
        """
        from openintent.agents import Agent, on_assignment

        def make(agent_id):
            @Agent(agent_id)
            class Worker:
                @on_assignment
                async def work(self, intent):
                    return {"done": True}
            return Worker

        for name in ("writer", "reviewer-a", "reviewer-b", "editor"):
            make(name)
        """
    )
    assert main(["run", workflow, "--agents", module, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["intents"]["Write Draft"]["assigned_to"] == "writer"
    assert result["intents"]["Final Edit"]["state"] == {"done": True}


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_here", "no module named 'no_such_module_here'"),
        ("json:NOPE", "has no attribute 'NOPE'"),
        (":X", "expected MODULE or MODULE:ATTR"),
    ],
)
def test_run_with_agents_that_cannot_be_imported_exits_2(workflow, capsys, reference, message):
    assert main(["run", workflow, "--agents", reference]) == 2
    assert message in capsys.readouterr().err


def test_run_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--simulate"]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_run_with_an_unknown_agent_exits_2_before_anything_runs(workflow, capsys):
    assert main(["run", workflow]) == 2  # no agent registered with the workflow's ids
    captured = capsys.readouterr()
    assert "writer" in captured.err
    assert "status:" not in captured.out


@pytest.mark.parametrize("url", ["mongodb://db/runs", "nonsense://x"])
def test_run_with_a_store_the_runtime_does_not_know_exits_2(workflow, capsys, url):
    assert main(["run", workflow, "--simulate", "--store", url]) == 2
    err = capsys.readouterr().err
    assert url in err and "not supported" in err


def test_run_with_the_memory_store_runs(workflow, capsys):
    assert main(["run", workflow, "--simulate", "--store", "memory://"]) == 0


def test_run_seed_makes_the_simulated_result_reproducible(workflow, capsys):
    def states() -> dict[str, object]:
        assert main(["run", workflow, "--simulate", "--seed", "7", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        return {title: item["state"] for title, item in result["intents"].items()}

    assert states() == states()


def test_a_closed_stdout_ends_the_command_quietly_with_its_status_on_stderr(
    workflow, capsys, monkeypatch
):
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["run", workflow, "--simulate", "--json"]) == 1
    assert capsys.readouterr().err.rstrip().splitlines()[-1] == "status: completed"


# ---------------------------------------------------------------- approvals


def test_approve_all_grants_every_approval(approval_workflow, capsys):
    assert main(["run", approval_workflow, "--simulate", "--approve-all", "--by", "ci"]) == 0
    out = capsys.readouterr().out
    assert "[Final Edit]: approval_granted - --approve-all" in out, out
    assert out.rstrip().endswith("status: completed")


def test_without_a_terminal_a_pending_approval_cancels_the_run_and_says_how(
    approval_workflow, capsys
):
    assert main(["run", approval_workflow, "--simulate"]) == 1
    captured = capsys.readouterr()
    assert "'Final Edit'" in captured.err and "--approve-all" in captured.err
    assert re.search(r"^Write Draft\s+completed", captured.out, re.MULTILINE)
    assert captured.out.rstrip().splitlines()[-1] == (
        "status: cancelled (waiting for approval: 'Final Edit')"
    )


@pytest.mark.parametrize(("answer", "status", "code"), [("y\n", "completed", 0),
                                                       ("n\n", "failed", 1)])
def test_on_a_terminal_approvals_are_asked_for(
    approval_workflow, capsys, monkeypatch, answer, status, code
):
    import io

    import openintent.cli._common as common

    monkeypatch.setattr(common, "is_terminal", lambda stream: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    assert main(["run", approval_workflow, "--simulate", "--by", "alice"]) == code
    captured = capsys.readouterr()
    assert "Approve 'Final Edit'" in captured.err and "as alice? [y/N]" in captured.err
    assert "waiting    Final Edit: needs approval" in captured.out
    assert captured.out.rstrip().splitlines()[-1].startswith(f"status: {status}")


def test_an_approver_not_allowed_is_reported_and_the_run_cancelled(tmp_path, capsys):
    path = tmp_path / "approvers.yaml"
    path.write_text(APPROVAL.replace("require_for: [edit]", "require_for: [edit]\n"
                                     "      approvers: [alice]"))
    assert main(["run", str(path), "--simulate", "--approve-all", "--by", "mallory"]) == 1
    captured = capsys.readouterr()
    assert "'mallory' may not decide" in captured.err and "--by" in captured.err
    assert captured.out.rstrip().splitlines()[-1].startswith("status: cancelled")


# ---------------------------------------------------------------- logging, usage


def test_log_json_writes_json_lines_on_stderr_and_restores_structlog(
    workflow, capsys, reset_structlog
):
    before = structlog.get_config()
    assert main(["run", workflow, "--simulate", "--log-json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert any(line["event"] == "run started" for line in lines)
    assert all("timestamp" in line and "level" in line for line in lines)
    assert structlog.get_config() == before


def test_without_verbose_info_lines_stay_quiet(workflow, capsys, reset_structlog):
    assert main(["run", workflow, "--simulate"]) == 0
    assert "run started" not in capsys.readouterr().err


def test_verbose_logs_info_lines_on_stderr(workflow, capsys, reset_structlog):
    assert main(["run", workflow, "--simulate", "-v"]) == 0
    assert "run started" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["worker"]])
def test_commands_of_later_releases_say_they_are_not_available_yet(capsys, command):
    assert main([*command, "runs.db", "x"]) == 2
    assert "not available yet" in capsys.readouterr().err


def test_runs_without_a_command_exits_2_and_names_the_commands(capsys):
    assert main(["runs"]) == 2
    assert "list, show, events or fork" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: openintent" in capsys.readouterr().err


def test_a_usage_error_exits_2(capsys):
    assert main(["run"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["run", "--help"]) == 0
    assert "--approve-all" in capsys.readouterr().out
