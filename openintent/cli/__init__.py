"""The ``openintent`` command: validate, draw and run YAML workflows.

Installed as the ``openintent`` console script (``pip install "openintent[cli]"`` adds
``rich`` for live progress and tables) and runnable as ``python -m openintent``::

    openintent validate workflow.yaml
    openintent graph workflow.yaml --format dot
    openintent run workflow.yaml --simulate
    openintent run workflow.yaml --store sqlite:///runs.db
    openintent runs list runs.db
    openintent runs show runs.db ID
    openintent runs events runs.db ID --follow
    openintent resume runs.db ID --approve-all
    openintent runs fork runs.db ID --rerun Review
    openintent approve runs.db ID Deploy --by alice
    openintent deny runs.db ID Deploy --by alice --note "not today"
    openintent worker postgresql://host/db --agents my_agents --concurrency 8
    openintent run workflow.yaml --store postgresql://host/db --detach

:func:`main` takes the arguments as a list and returns the exit status, so tests call it
directly: 0 completed (or valid), 1 failed or halted, 2 invalid input, 130 interrupted.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from ._approve import approve_command, deny_command
from ._commands import graph_command, validate_command
from ._common import EXIT_FAILED, EXIT_INVALID, EXIT_OK, Streams, fail
from ._event_log import runs_events_command
from ._fork import fork_command
from ._logs import command_logging
from ._parser import build_parser, later_command
from ._resume import resume_command
from ._run import run_command
from ._runs import runs_list_command, runs_show_command
from ._worker import worker_command

__all__ = ["main"]

_COMMANDS = {
    "validate": validate_command,
    "graph": graph_command,
    "run": run_command,
    "resume": resume_command,
    "runs list": runs_list_command,
    "runs show": runs_show_command,
    "runs events": runs_events_command,
    "runs fork": fork_command,
    "approve": approve_command,
    "deny": deny_command,
    "worker": worker_command,
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``openintent`` command with ``argv`` (default: ``sys.argv[1:]``) and return
    its exit status.

    >>> main(["validate", "examples/reviewed_content.yaml"])
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error (argparse printed it)
        return exit_.code if isinstance(exit_.code, int) else EXIT_INVALID
    streams = Streams.current()
    if args.version:
        print(f"openintent {__version__}", file=streams.out)
        return EXIT_OK
    if args.command is None:
        parser.print_help(streams.err)
        return EXIT_INVALID
    name = args.command
    if name == "runs":
        if args.runs_command is None:
            print("usage: openintent runs {list,show,events,fork} ...\nopenintent runs: error: "
                  "name a command: list, show, events or fork (openintent runs --help)",
                  file=streams.err, flush=True)
            return EXIT_INVALID
        name = f"runs {args.runs_command}"
    purpose = later_command(name)
    if purpose is not None:
        return fail(
            streams,
            f"`openintent {name}` ({purpose}) is not available yet; it comes in a later "
            "release. Journaled runs can be listed, shown, followed and resumed: "
            "`openintent runs list|show|events STORE`, `openintent resume STORE ID`",
        )
    command = _COMMANDS[name]
    try:
        with command_logging(json_lines=getattr(args, "log_json", False),
                             verbose=getattr(args, "verbose", False)):
            return command(args, streams)
    except BrokenPipeError:  # the reader went away (`openintent run ... --json | head`)
        _silence_stdout()
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass
