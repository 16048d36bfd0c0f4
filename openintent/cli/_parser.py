"""The ``openintent`` command's arguments."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

__all__ = ["build_parser", "default_approver"]

_LATER = {
    "worker": "serve the runs of a durable store with this process's agents",
}


def default_approver() -> str:
    """Who approves when ``--by`` is not given: the user running the command."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): a fixed name still says who
        return "cli"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``openintent`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="openintent",
        description="Validate, draw and run openintent YAML workflows; journal runs in a "
        "durable store (--store sqlite:///runs.db), read them back and resume them.",
        epilog="Exit status: 0 completed (or valid), 1 failed or halted, 2 invalid input, "
        "130 interrupted (Ctrl-C).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check workflow files",
        description="Check YAML workflow files; print each problem as file:line:col: message.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="a YAML workflow file")
    _logging_options(validate)

    graph = commands.add_parser(
        "graph",
        help="draw a workflow's dependency graph",
        description="Print a workflow's DAG (assignees, approvals, guardrails) as Mermaid or "
        "Graphviz DOT text.",
    )
    graph.add_argument("file", metavar="FILE", help="a YAML workflow file")
    graph.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid"
    )
    _logging_options(graph)

    run = commands.add_parser(
        "run",
        help="run a workflow",
        description="Run a YAML workflow in this process and print how it went. With a "
        "durable store (--store sqlite:///runs.db) every event is journaled first; the run's "
        "id is printed at the start, and a run that stops before its end (Ctrl-C, a denied or "
        "unanswered approval, a halt) can be continued with `openintent resume STORE ID`.",
    )
    run.add_argument("file", metavar="FILE", help="a YAML workflow file")
    run.add_argument(
        "--simulate",
        action="store_true",
        help="give every agent id a simulated agent with plausible outputs",
    )
    run.add_argument(
        "--agents",
        action="append",
        default=[],
        metavar="MODULE[:ATTR]",
        help="import MODULE (its decorated agents register themselves), or use MODULE:ATTR "
        "(an agent class or instance, or a list of them); repeatable",
    )
    run.add_argument("--seed", type=int, default=None, metavar="N", help="reproducible run")
    _running_options(run, "the run's")
    run.add_argument(
        "--store",
        default="memory://",
        metavar="URL",
        help="where the run's events go: memory:// (the default: kept in this process "
        "only), sqlite:///PATH (a journal file; sqlite:////abs/path.db for an absolute path) "
        "or postgresql://USER@HOST/DB (a database several processes share)",
    )
    _logging_options(run)
    _resume_parser(commands)
    _runs_parser(commands)
    for verb in ("approve", "deny"):
        _decision_parser(commands, verb)

    for name, purpose in _LATER.items():
        if " " not in name:
            _later(commands, name, purpose)
    return parser


def _later(commands: Any, name: str, purpose: str) -> None:
    later = commands.add_parser(
        name, help=f"(not available yet) {purpose}", add_help=False, prefix_chars="\0"
    )
    later.add_argument("rest", nargs=argparse.REMAINDER)


_STORE_HELP = ("a store URL (sqlite:///runs.db, postgresql://user@host/db) or the path of a "
               "SQLite journal file")


def _resume_parser(commands: Any) -> None:
    resume = commands.add_parser(
        "resume",
        help="continue a journaled run",
        description="Continue a run journaled in STORE, in this process, with the progress, "
        "approvals and report of `openintent run`. Completed intents are not run again; those "
        "in flight, waiting for approval or cancelled run again. The workflow (its coordinator "
        "block, guardrails and agent ids) comes from FILE, else from the file the run was "
        "started from; --simulate and --agents, when not given, are those of the run. A run "
        "that completed or failed is reported and nothing runs.",
    )
    resume.add_argument("store", metavar="STORE", help=_STORE_HELP)
    resume.add_argument("id", metavar="ID", help="the run's portfolio id (openintent runs list)")
    resume.add_argument("file", metavar="FILE", nargs="?", default=None,
                        help="the run's YAML workflow (default: the file it was started from)")
    resume.add_argument("--simulate", action="store_true",
                        help="give every agent id a simulated agent (default: as the run did)")
    resume.add_argument(
        "--agents", action="append", default=[], metavar="MODULE[:ATTR]",
        help="the agents to continue with, as for `openintent run` (default: the run's)",
    )
    _running_options(resume, "the run's")
    _logging_options(resume)


def _decision_parser(commands: Any, verb: str) -> None:
    outcome = ("the intent is dispatched" if verb == "approve"
               else "the intent fails without running and its dependents are skipped")
    decide = commands.add_parser(
        verb,
        help=f"{verb} a pending approval of a run in a durable store, from any process",
        description=f"{verb.capitalize()} the pending approval request of INTENT in run ID, "
        "from another process than the one running the run (started with --store "
        "sqlite:///runs.db). The journal is checked at once (exit 2: unknown store, run or "
        "intent, nothing pending for INTENT, or NAME not among its approvers); then the "
        "decision is recorded in the store's inbox, and the process running the run applies "
        f"it within about a second ({outcome}) and journals it. A run no process runs now "
        "applies it once resumed.",
    )
    decide.add_argument("store", metavar="STORE", help=_STORE_HELP)
    decide.add_argument("id", metavar="ID", help="the run's portfolio id (openintent runs list)")
    decide.add_argument("intent", metavar="INTENT",
                        help="the intent waiting for approval: its id, or its title")
    decide.add_argument("--by", default=None, metavar="NAME",
                        help="who decides; must be one of the approval's approvers, when it "
                        "lists any (default: your login name)")
    decide.add_argument("--note", default="", metavar="TEXT",
                        help="why (journaled with the decision)")
    _logging_options(decide)


def _runs_parser(commands: Any) -> None:
    runs = commands.add_parser(
        "runs",
        help="list, show and read the events of journaled runs",
        description="Read the runs a durable store journaled, finished or not, from any "
        "process.",
    )
    which = runs.add_subparsers(dest="runs_command", metavar="COMMAND")
    listing = which.add_parser(
        "list", help="list the store's runs",
        description="List the runs of STORE, oldest first: id, name, status (running: not "
        "finished, or its process died), when it started and ended (UTC).")
    listing.add_argument("store", metavar="STORE", help=_STORE_HELP)
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    _logging_options(listing)
    show = which.add_parser(
        "show", help="show one run's intents, decisions and status",
        description="Print a run as `openintent run` ends: its intents (status, attempts, "
        "duration, cost, agent), its decisions and its status.")
    show.add_argument("store", metavar="STORE", help=_STORE_HELP)
    show.add_argument("id", metavar="ID", help="the run's portfolio id")
    show.add_argument("--json", action="store_true",
                      help="print the whole result (intents, events, decisions) as JSON")
    _logging_options(show)
    events = which.add_parser(
        "events", help="print one run's events",
        description="Print a run's events, one a line: sequence number, when (UTC), type, "
        "intent title, data.")
    events.add_argument("store", metavar="STORE", help=_STORE_HELP)
    events.add_argument("id", metavar="ID", help="the run's portfolio id")
    events.add_argument("--follow", "-f", action="store_true",
                        help="keep printing the events another process appends, until the run "
                        "finishes (Ctrl-C stops)")
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    _logging_options(events)
    fork = which.add_parser(
        "fork", help="run some intents of a journaled run again, as a new run",
        description="Start a new run in STORE that keeps what run ID completed and runs the "
        "--rerun intents and their descendants again (and those ID did not complete), in "
        "this process, with the progress, approvals and report of `openintent run`. Run ID "
        "is left as it is. The plan comes from FILE (an edited step comes along; the steps "
        "the fork keeps must be unchanged), else from the file the run was started from, "
        "else from ID's journal; --simulate and --agents, when not given, are those of ID.")
    fork.add_argument("store", metavar="STORE", help=_STORE_HELP)
    fork.add_argument("id", metavar="ID", help="the run to fork (openintent runs list)")
    fork.add_argument("file", metavar="FILE", nargs="?", default=None,
                      help="the YAML workflow (default: the file ID was started from)")
    fork.add_argument("--rerun", action="append", required=True, metavar="TITLE",
                      help="an intent (step title) to run again, with its descendants; "
                      "repeatable")
    fork.add_argument("--simulate", action="store_true",
                      help="give every agent id a simulated agent (default: as ID did)")
    fork.add_argument(
        "--agents", action="append", default=[], metavar="MODULE[:ATTR]",
        help="the agents to run with, as for `openintent run` (default: ID's)",
    )
    _running_options(fork, "the new run's")
    _logging_options(fork)


def _running_options(parser: argparse.ArgumentParser, whose: str) -> None:
    """The options of every command that runs a run (``run``, ``resume``, ``runs fork``):
    its report as JSON, and who decides its approvals, how."""
    parser.add_argument("--json", action="store_true",
                        help=f"print {whose} result as JSON on stdout")
    parser.add_argument("--approve-all", action="store_true",
                        help="grant every approval the run asks for")
    parser.add_argument("--wait-approvals", action="store_true",
                        help="with a durable store and no terminal: wait for each approval to "
                        "be decided from another shell (openintent approve STORE ID INTENT) "
                        "instead of cancelling the run")
    parser.add_argument("--by", default=None, metavar="NAME",
                        help="who approves (default: your login name)")


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-json", action="store_true", help="log as JSON lines on stderr"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log info lines too, not only warnings"
    )


def later_command(name: str) -> str | None:
    """The purpose of a command not available yet (``worker``)."""
    return _LATER.get(name)
