"""YAML workflows: a portfolio, its coordinator and its guardrails, written down in a file.

>>> from openintent.workflow import load_workflow
>>> wf = load_workflow("examples/reviewed_content.yaml")   # checked, or WorkflowValidationError
>>> result = wf.run(simulate=True)                          # or: await wf.arun(...)

A file has ``openintent: "1.0"`` (the format version), ``info`` (``name``, ``description``,
``version``), an optional ``coordinator`` (``id``, ``strategy``, ``agents``, ``guardrails``,
``max_concurrency``), optional ``agents`` (id -> description) and ``workflow``: one step per
key, with ``title``, ``description``, ``assign``, ``depends_on``, ``constraints``,
``initial_state``, ``retry``, ``timeout``, ``tags``, ``requires_approval``, ``inputs`` and
``outputs``. See the README's "YAML workflows" section.

Every problem of a file is reported at once, each with its file, line and column
(:class:`WorkflowValidationError`). Reading never runs code: only plain YAML is accepted (no
``!!python/...`` or other tags), a file over ``max_bytes`` (default 1 MiB) is refused before
parsing, and aliases (``*name``) may repeat at most ``max_alias_nodes`` values in all
(default 100,000): a "billion laughs" document is refused at once, in bounded time and memory.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs

from ._guardrail_core import Guardrail
from ._plan import Planner
from ._specs import PortfolioSpec
from ._workflow_check import CoordinatorConfig, PhaseConfig
from ._workflow_run import bind_workflow, portfolio_spec, with_simulated_agents
from ._workflow_schema import check_document
from ._workflow_yaml import (
    DEFAULT_MAX_ALIAS_NODES,
    DEFAULT_MAX_BYTES,
    Problem,
    YamlProblems,
    decode,
    parse,
)
from .errors import (
    OpenIntentError,
    UnresolvableInputError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowValidationError,
)
from .models import Intent, RunResult
from .runtime import Runtime

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ALIAS_NODES",
    "CoordinatorConfig",
    "PhaseConfig",
    "Problem",
    "UnresolvableInputError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowSpec",
    "WorkflowValidationError",
    "load_workflow",
    "validate_workflow",
]


@attrs.frozen(eq=False)
class WorkflowSpec:
    """A checked YAML workflow. Build one with :func:`load_workflow`,
    :meth:`from_yaml` or :meth:`from_string`; run it with :meth:`run` / :meth:`arun` or
    ``rt.run(wf)``.

    The attribute names of openintent 0.17 are kept: ``name``, ``description``,
    ``workflow_version``, ``version`` (the format version), ``agents`` (id -> dict) and
    ``phases`` (one :class:`PhaseConfig` per step, in file order).
    """

    version: str
    name: str
    description: str
    workflow_version: str
    agents: Mapping[str, Mapping[str, Any]]
    phases: tuple[PhaseConfig, ...]
    coordinator: CoordinatorConfig | None
    source_path: Path | None
    source_name: str
    #: What :func:`validate_workflow` reports: ``file:line:col: message`` lines.
    warnings: tuple[str, ...] = ()

    # ------------------------------------------------------------------ building

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
        max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    ) -> WorkflowSpec:
        """Read and check the workflow file at ``path``.

        Raises :class:`WorkflowNotFoundError` when there is no such file and
        :class:`WorkflowValidationError` (every problem, with line and column) when it is
        invalid, larger than ``max_bytes`` or its aliases repeat more than ``max_alias_nodes``
        values.
        """
        file = Path(path)
        try:
            with file.open("rb") as stream:
                data = stream.read(max_bytes + 1)  # never more than the limit, whatever size
        except FileNotFoundError:
            raise WorkflowNotFoundError(
                f"workflow file {str(file)!r} not found (working directory: {os.getcwd()}); "
                "check the path"
            ) from None
        except IsADirectoryError:
            raise WorkflowNotFoundError(
                f"{str(file)!r} is a directory, not a workflow file"
            ) from None
        return cls._build(data, str(file), file, max_bytes, max_alias_nodes)

    @classmethod
    def from_string(
        cls, text: str | bytes, source_name: str = "<string>", *,
        max_bytes: int = DEFAULT_MAX_BYTES, max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    ) -> WorkflowSpec:
        """Check a workflow given as text; problems name ``source_name`` as their file."""
        if not isinstance(text, str | bytes):
            raise WorkflowValidationError([Problem(
                source_name, 1, 1, f"a workflow is text, got {type(text).__name__}")])
        return cls._build(text, source_name, None, max_bytes, max_alias_nodes)

    @classmethod
    def _build(cls, data: str | bytes, file: str, path: Path | None, max_bytes: int,
               max_alias_nodes: int) -> WorkflowSpec:
        try:
            root = parse(decode(data, file, max_bytes), file, max_alias_nodes)
        except YamlProblems as exc:
            raise WorkflowValidationError(exc.problems) from None
        parsed, problems = check_document(root, file)
        if parsed is None:
            raise WorkflowValidationError(sorted(problems, key=lambda p: (p.line, p.column)))
        return cls(parsed.version, parsed.name, parsed.description, parsed.workflow_version,
                   parsed.agents, parsed.phases, parsed.coordinator, path, file,
                   parsed.warnings)

    # ------------------------------------------------------------------ views

    def phase(self, key: str) -> PhaseConfig:
        """The step with key ``key`` (:class:`KeyError` if none)."""
        for phase in self.phases:
            if phase.name == key:
                return phase
        raise KeyError(key)

    def to_portfolio_spec(self) -> PortfolioSpec:
        """The :class:`~openintent.agents.PortfolioSpec` of this workflow: one intent per
        step, titled by the step's ``title``, with ``key`` set to the step key."""
        metadata = {"workflow": self.source_name, "workflow_version": self.workflow_version}
        if self.coordinator is not None:
            metadata["coordinator"] = self.coordinator.id
        return portfolio_spec(self.name, self.description, self.phases, metadata)

    def to_mermaid(self) -> str:
        """A Mermaid flowchart of the steps and their dependencies, with assignees, inputs,
        outputs, the steps that wait for approval, and the coordinator and its guardrails.
        Titles are escaped: any text is safe."""
        from . import _viz

        return _viz.to_mermaid(_viz.graph_of_workflow(self))

    def to_dot(self) -> str:
        """The picture of :meth:`to_mermaid` as a Graphviz DOT digraph."""
        from . import _viz

        return _viz.to_dot(_viz.graph_of_workflow(self))

    def resolve_inputs(self, intent: Intent) -> dict[str, Any]:
        """The declared ``inputs`` of ``intent``'s step, read from its dependencies' final
        states (``{draft: write.text}`` gives ``{"draft": <write's state["text"]>}``).

        Kept for existing handlers: a workflow's runs put these values in ``intent.inputs``
        by name already (``intent.inputs["draft"]``)."""
        phase = next((p for p in self.phases if p.title == intent.title), None)
        if phase is None:
            return {}
        titles = {p.name: p.title for p in self.phases}
        values: dict[str, Any] = {}
        for name, (step, output) in phase.inputs.items():
            state = intent.inputs.get(titles[step], {})
            if output in state:
                values[name] = state[output]
        return values

    def bind_runtime(
        self, planner: Planner, coordinator: Any
    ) -> tuple[PortfolioSpec, Any, tuple[Guardrail, ...]]:
        """Used by ``rt.run(wf)``: the spec, its coordinator and the workflow's guardrails."""
        return bind_workflow(self.source_name, self.to_portfolio_spec(), self.phases,
                             self.coordinator, planner, coordinator)

    # ------------------------------------------------------------------ running

    async def arun(
        self, agents: Iterable[Any] | None = None, simulate: bool = False, *,
        coordinator: Any = None, **runtime_options: Any,
    ) -> RunResult:
        """Run the workflow in a new :class:`~openintent.Runtime` and return its result.

        ``agents``: as ``Runtime(agents=...)`` (default: the registered agents, by id).
        ``simulate=True``: every agent id of the workflow without an agent in ``agents``
        gets a :class:`~openintent.testing.SimulatedAgent` answering with plausible values
        of the step's declared ``outputs``. ``runtime_options`` go to ``Runtime(...)``
        (``clock=``, ``seed=``, ``guardrails=``, ...). An unknown agent id raises
        :class:`WorkflowValidationError` at the step's ``assign`` before anything runs.
        """
        chosen = list(agents) if agents is not None else None
        if simulate:
            chosen, registered = with_simulated_agents(self.phases, self.coordinator, chosen)
            coordinator = coordinator if coordinator is not None else registered
        async with Runtime(chosen, **runtime_options) as rt:
            return await rt.run(self, coordinator=coordinator)

    def run(
        self, agents: Iterable[Any] | None = None, simulate: bool = False, *,
        coordinator: Any = None, **runtime_options: Any,
    ) -> RunResult:
        """:meth:`arun`, for code outside an event loop (a script, a notebook cell run
        without ``await``). Inside a running loop, ``await wf.arun(...)`` instead."""
        if _in_event_loop():
            raise OpenIntentError(
                "wf.run() was called inside a running event loop, where it would block it; "
                "use `await wf.arun(...)` there"
            )

        async def main() -> RunResult:
            return await self.arun(agents, simulate, coordinator=coordinator,
                                   **runtime_options)

        return anyio.run(main)

    def __repr__(self) -> str:
        return f"WorkflowSpec({self.name!r}, steps={[p.name for p in self.phases]})"


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        return bool(trio is not None and trio.lowlevel.in_trio_run())
    return True


def load_workflow(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
) -> WorkflowSpec:
    """Read and check a workflow file: :meth:`WorkflowSpec.from_yaml`."""
    return WorkflowSpec.from_yaml(path, max_bytes=max_bytes, max_alias_nodes=max_alias_nodes)


def validate_workflow(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
) -> list[str]:
    """Check a workflow file and return its warnings (``file:line:col: message``): a step
    without a description, an agent declared but unused (or used but not declared, when the
    file has an ``agents:`` section), an openintent 0.17 key this version ignores.
    Raises :class:`WorkflowValidationError` when the file is invalid."""
    return list(load_workflow(path, max_bytes=max_bytes, max_alias_nodes=max_alias_nodes).warnings)
