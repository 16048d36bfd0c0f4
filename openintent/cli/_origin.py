"""Where a journaled run came from: the workflow file and options of ``openintent run``,
kept in the run's spec metadata (and so in the plan data of its log), which
``openintent resume`` reads back to rebuild the run's agents and coordinator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._guardrail_core import Guardrail
from .._plan import Planner
from .._specs import PortfolioSpec
from .._workflow_run import with_simulated_agents
from ..errors import OpenIntentError
from ..workflow import WorkflowSpec

__all__ = ["ORIGIN_KEYS", "CommandWorkflow", "JournaledAgents", "origin_metadata"]

#: The metadata keys the command adds to a run's spec: the workflow file's absolute path,
#: whether its agents were simulated, the ``--agents`` references, and (a detached run) the
#: workflow file's text, so a worker on another host rebuilds the run without the file.
ORIGIN_KEYS = ("workflow_file", "simulate", "agents", "workflow_text")


def origin_metadata(
    workflow: WorkflowSpec, simulate: bool, agents: Sequence[str], *, text: bool = False
) -> dict[str, Any]:
    """The metadata saying how ``openintent run`` ran ``workflow`` (``text``: with the
    workflow file's text, for ``--detach``)."""
    data: dict[str, Any] = {"simulate": simulate}
    if workflow.source_path is not None:
        data["workflow_file"] = str(Path(workflow.source_path).resolve())
        if text:
            data["workflow_text"] = Path(workflow.source_path).read_text(encoding="utf-8")
    if agents:
        data["agents"] = list(agents)
    return data


@attrs.frozen
class CommandWorkflow:
    """A YAML workflow run by the command: the workflow's own spec, coordinator and
    guardrails (``rt.run(wf)`` takes it like the workflow itself), with ``metadata`` added to
    the spec's metadata."""

    workflow: WorkflowSpec
    metadata: Mapping[str, Any]

    def bind_runtime(
        self, planner: Planner, coordinator: Any
    ) -> tuple[PortfolioSpec, Any, tuple[Guardrail, ...]]:
        spec, coordinator, rails = self.workflow.bind_runtime(planner, coordinator)
        spec = attrs.evolve(spec, metadata={**spec.metadata, **self.metadata})
        return spec, coordinator, rails


@attrs.frozen
class JournaledAgents:
    """The agents to go on with a journaled run (``resume``, ``runs fork``): ``--simulate``
    and ``--agents`` as given, else as the run was started."""

    simulate: bool
    references: list[str]
    imported: list[Any] | None

    @classmethod
    def of(cls, args: Any, origin: Mapping[str, Any], workflow: WorkflowSpec | None,
           usage: str) -> JournaledAgents:
        """Raises :class:`~openintent.errors.OpenIntentError` (the message says what to do)
        for ``--simulate`` without a workflow, or agents that cannot be imported; ``usage``
        is the command line that gives the workflow file."""
        from ._agents import import_agents

        if args.simulate and workflow is None:
            raise OpenIntentError(f"--simulate needs the run's workflow file, and run "
                                  f"{args.id} did not journal one: {usage} --simulate")
        references = list(args.agents or origin.get("agents") or ())
        return cls(bool(args.simulate or origin.get("simulate")), references,
                   import_agents(references))

    def chosen(self, workflow: WorkflowSpec | None) -> tuple[list[Any] | None, Any]:
        """The agents for ``Runtime(agents=...)`` (with simulated ones for the workflow's
        agent ids when asked; ``None``: the registered ones) and the coordinator to run
        with."""
        if self.simulate and workflow is not None:
            return with_simulated_agents(workflow.phases, workflow.coordinator, self.imported)
        return self.imported, None
