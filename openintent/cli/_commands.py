"""``openintent validate`` and ``openintent graph``."""

from __future__ import annotations

import argparse

from ..workflow import (
    WorkflowNotFoundError,
    WorkflowSpec,
    WorkflowValidationError,
    validate_workflow,
)
from ._common import EXIT_INVALID, EXIT_OK, Streams
from ._loading import load

__all__ = ["graph_command", "validate_command"]


def validate_command(args: argparse.Namespace, streams: Streams) -> int:
    """Check each file; print its problems (``file:line:col: message``) or ``file: ok`` and
    its warnings. Exit 2 when any file is invalid."""
    status = EXIT_OK
    for path in args.files:
        try:
            warnings = validate_workflow(path)
        except WorkflowNotFoundError as exc:
            print(f"{path}: error: {exc}", file=streams.out)
            status = EXIT_INVALID
            continue
        except WorkflowValidationError as exc:
            print(str(exc), file=streams.out)
            status = EXIT_INVALID
            continue
        for warning in warnings:
            print(warning if warning.startswith(path) else f"{path}: warning: {warning}",
                  file=streams.out)
        print(f"{path}: ok", file=streams.out)
    streams.out.flush()
    return status


def graph_command(args: argparse.Namespace, streams: Streams) -> int:
    """Print the workflow's DAG as Mermaid (default) or DOT text."""
    workflow = load(args.file, streams)
    if workflow is None:
        return EXIT_INVALID
    print(picture(workflow, args.format).rstrip("\n"), file=streams.out, flush=True)
    return EXIT_OK


def picture(workflow: WorkflowSpec, fmt: str) -> str:
    """The workflow's DAG as ``fmt`` (``mermaid`` or ``dot``) text: its steps with their
    assignees, the steps that need approval, its coordinator and guardrails."""
    return workflow.to_dot() if fmt == "dot" else workflow.to_mermaid()
