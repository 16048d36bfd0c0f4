"""What the commands share: exit statuses, output streams, error lines."""

from __future__ import annotations

import sys
from typing import TextIO

import attrs

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "Streams",
    "fail",
    "is_terminal",
]

EXIT_OK = 0  # completed (or: every file is valid)
EXIT_FAILED = 1  # the run failed, was halted, or was cancelled (not by Ctrl-C)
EXIT_INVALID = 2  # invalid input: a bad file, option or agent module; nothing ran
EXIT_INTERRUPTED = 130  # Ctrl-C: the run was cancelled cleanly (128 + SIGINT)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@attrs.frozen
class Streams:
    """Where a command writes: ``out`` (results), ``err`` (errors, prompts, logs).

    ``interactive``: stdin and stderr are a terminal, so approvals are asked for there.
    """

    out: TextIO
    err: TextIO
    interactive: bool

    @classmethod
    def current(cls) -> Streams:
        """The process's standard streams, as they are now (pytest's capsys replaces them)."""
        return cls(sys.stdout, sys.stderr, is_terminal(sys.stdin) and is_terminal(sys.stderr))


def fail(streams: Streams, message: str, status: int = EXIT_INVALID) -> int:
    """Print ``openintent: error: message`` on stderr and return ``status``."""
    print(f"openintent: error: {message}", file=streams.err, flush=True)
    return status
