"""The seam between the runtime and YAML workflows: the runtime runs anything that can turn
itself into a portfolio spec, a coordinator and extra guardrails for one runtime's agents.

(The runtime never imports :mod:`openintent.workflow`, which imports the runtime.)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ._guardrail_core import Guardrail
from ._plan import Planner
from ._specs import PortfolioSpec

__all__ = ["RunnableWorkflow"]


@runtime_checkable
class RunnableWorkflow(Protocol):
    """What ``rt.run(wf)`` needs of a workflow (``WorkflowSpec`` is one)."""

    def bind_runtime(
        self, planner: Planner, coordinator: Any
    ) -> tuple[PortfolioSpec, Any, tuple[Guardrail, ...]]:
        """The spec to run, the coordinator to run it with, and guardrails of the workflow
        itself (approvals of steps, declared outputs)."""
        ...
