"""structlog set-up for the command line: the one place openintent configures logging.

The library never calls ``structlog.configure()`` (that is the application's job); the
``openintent`` command is an application, so it does, for the length of one command, and
puts the previous configuration back afterwards (``main()`` is also called from tests).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from ._common import is_terminal

__all__ = ["command_logging"]


@contextmanager
def command_logging(
    *, json_lines: bool, verbose: bool, stream: TextIO | None = None
) -> Iterator[None]:
    """Log to ``stream`` (stderr by default) while the block runs.

    ``json_lines``: one JSON object per line (for log collectors). Otherwise structlog's
    console renderer, coloured on a terminal. Warnings and errors only, unless ``verbose``
    (then info lines too: runs started and finished, retries, ...).
    """
    out = stream if stream is not None else sys.stderr
    renderer: Any
    if json_lines:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=is_terminal(out))
    previous = structlog.get_config()
    level = logging.INFO if verbose or json_lines else logging.WARNING
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json_lines else _keep,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**previous)


def _keep(_logger: Any, _name: str, event: Any) -> Any:
    return event
