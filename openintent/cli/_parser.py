"""The ``openintent`` command's arguments."""

from __future__ import annotations

import argparse
import getpass

__all__ = ["build_parser", "default_approver"]

_LATER = {
    "resume": "continue an interrupted run from a durable store",
    "runs": "list, show, inspect and fork the runs of a durable store",
    "approve": "decide a pending approval of a run in a durable store",
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
        description="Validate, draw and run openintent YAML workflows.",
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
        description="Run a YAML workflow in this process and print how it went.",
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
    run.add_argument(
        "--json", action="store_true", help="print the run's result as JSON on stdout"
    )
    run.add_argument(
        "--approve-all", action="store_true", help="grant every approval the run asks for"
    )
    run.add_argument(
        "--by",
        default=None,
        metavar="NAME",
        help="who approves (default: your login name)",
    )
    run.add_argument(
        "--store",
        default="memory://",
        metavar="URL",
        help="where the run's events go (only memory://, the default, for now)",
    )
    _logging_options(run)

    for name, purpose in _LATER.items():
        later = commands.add_parser(
            name, help=f"(not available yet) {purpose}", add_help=False, prefix_chars="\0"
        )
        later.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-json", action="store_true", help="log as JSON lines on stderr"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log info lines too, not only warnings"
    )


def later_command(name: str) -> str | None:
    """The purpose of a command that needs a durable store (not available yet)."""
    return _LATER.get(name)
