"""Loading a workflow file for a command, with its problems printed as
``file:line:col: message``."""

from __future__ import annotations

from ..workflow import (
    WorkflowNotFoundError,
    WorkflowSpec,
    WorkflowValidationError,
    load_workflow,
)
from ._common import Streams, fail

__all__ = ["load"]


def load(path: str, streams: Streams) -> WorkflowSpec | None:
    """The workflow of ``path``, or ``None`` once its problems are printed on stderr."""
    try:
        return load_workflow(path)
    except WorkflowNotFoundError as exc:
        fail(streams, str(exc))
    except WorkflowValidationError as exc:
        print(str(exc), file=streams.err, flush=True)
    return None
