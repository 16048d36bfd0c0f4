"""Running a YAML workflow: its coordinator, its own guardrails, simulated agents.

- The coordinator: ``coordinator=`` when given; else a registered ``@Coordinator`` with the
  YAML coordinator's id; else the ``coordinator:`` block itself (strategy, agents,
  guardrails, max_concurrency) as a coordinator with no handlers.
- The workflow's own guardrails, whichever coordinator runs it: an approval for every step
  with ``requires_approval: true``, and the check of declared ``outputs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._authoring_checks import coordinator_options
from ._data import to_plain
from ._guardrail_core import DispatchContext, Guardrail, build_guardrails
from ._plan import Planner
from ._registry import DEFINITION_ATTR, AgentDefinition, HookKind, current_registry
from ._specs import IntentSpec, PortfolioSpec
from ._workflow_check import OUTPUT_TYPES, CoordinatorConfig, PhaseConfig
from ._workflow_steps import ids
from ._workflow_yaml import Problem
from .agents import CoordinatorMethods
from .errors import OpenIntentError, OutputCheckError, WorkflowValidationError
from .models import Intent
from .testing import SimulatedAgent

__all__ = [
    "OutputsGuardrail",
    "YamlCoordinator",
    "bind_workflow",
    "portfolio_spec",
    "simulated_agents",
    "simulated_value",
    "step_guardrails",
    "with_simulated_agents",
]


def portfolio_spec(name: str, description: str, phases: Sequence[PhaseConfig],
                   metadata: Mapping[str, Any]) -> PortfolioSpec:
    """The portfolio spec of a checked workflow: one intent per step, titled by ``title``."""
    titles = {phase.name: phase.title for phase in phases}
    return PortfolioSpec(
        name=name,
        description=description,
        metadata=metadata,
        intents=[
            IntentSpec(
                title=phase.title,
                description=phase.description,
                assign=phase.assign,
                depends_on=[titles.get(d, d) for d in phase.depends_on],
                constraints=phase.constraints,
                initial_state=phase.initial_state,
                timeout=phase.timeout,
                retry=phase.retry,
                tags=phase.tags,
                key=phase.name,
                inputs={name: (titles.get(step, step), output)
                        for name, (step, output) in phase.inputs.items()},
            )
            for phase in phases
        ],
    )


class YamlCoordinator(CoordinatorMethods):
    """The ``coordinator:`` block of a workflow, as a coordinator with no handlers."""

    def __init__(self, config: CoordinatorConfig) -> None:
        options = coordinator_options(config.id, config.agents, config.strategy,
                                      list(config.guardrails), config.max_concurrency)
        definition = AgentDefinition(config.id, "coordinator", type(self), (), options,
                                     instance=self)
        vars(self)["__openintent_id__"] = config.id
        vars(self)[DEFINITION_ATTR] = definition

    def __repr__(self) -> str:
        return f"YamlCoordinator({vars(self)['__openintent_id__']!r})"


class OutputsGuardrail(Guardrail):
    """Checks the declared ``outputs`` of each step when its attempt returns."""

    type = "workflow_outputs"

    def __init__(self, outputs: Mapping[str, Mapping[str, str]]) -> None:
        self.outputs = outputs  # step key -> output key -> type name

    def to_data(self) -> dict[str, Any]:
        return {"type": self.type, "outputs": to_plain(self.outputs)}

    async def after_result(self, ctx: DispatchContext, result: Any) -> Any:
        declared = self.outputs.get(ctx.key or "")
        if not declared:
            return result
        values = result if isinstance(result, Mapping) else {}
        for key, type_name in declared.items():
            if key not in values:
                raise OutputCheckError(
                    f"step {ctx.key!r} returned no output {key!r}; the workflow declares "
                    f"outputs {', '.join(declared)}: return a dict with each of them"
                )
            if not OUTPUT_TYPES[type_name](values[key]):
                raise OutputCheckError(
                    f"step {ctx.key!r} output {key!r} is a {type(values[key]).__name__}, but "
                    f"the workflow declares it as {type_name}"
                )
        return result


def _problem(file: str, line: int, column: int, message: str) -> WorkflowValidationError:
    return WorkflowValidationError([Problem(file, line, column, message)])


def bind_workflow(
    file: str,
    spec: PortfolioSpec,
    phases: Sequence[PhaseConfig],
    config: CoordinatorConfig | None,
    planner: Planner,
    coordinator: Any,
) -> tuple[PortfolioSpec, Any, tuple[Guardrail, ...]]:
    """What ``rt.run(wf)`` runs, checked against one runtime's agents."""
    if coordinator is None and config is not None:
        try:
            registered = planner.agent(config.id)
        except OpenIntentError:
            registered = None
        if registered is not None and registered.kind == "coordinator":
            coordinator = config.id
        else:
            coordinator = YamlCoordinator(config)
    bound = planner.coordinator(coordinator)  # the coordinator governing the run
    for phase in phases:
        for agent_id in ids(phase.assign):
            try:
                planner.agent(agent_id)
            except OpenIntentError as exc:
                raise _problem(file, phase.assign_line, phase.assign_column, (
                    f"step {phase.name!r} assign: {exc}; or run with simulate=True "
                    "(openintent run --simulate) to try the workflow with simulated agents"
                )) from None
        if phase.assign is None and (
            bound is None or not (bound.handlers_of(HookKind.ASSIGNMENT)
                                  or bound.definition.options.get("agents"))
        ):
            who = "no coordinator" if bound is None else f"coordinator {bound.id!r}"
            raise _problem(file, phase.line, phase.column, (
                f"step {phase.name!r} has no assign, and {who} cannot route it (no agents: list "
                "and no @on_assignment handler); add assign: agent-id to the step, or agents: "
                "[...] to the coordinator"
            ))
    return spec, coordinator, step_guardrails(spec.name, phases)


def step_guardrails(name: str, phases: Sequence[PhaseConfig]) -> tuple[Guardrail, ...]:
    """The guardrails of a workflow's steps, whichever coordinator runs it: an approval for
    the steps with ``requires_approval``, the check of declared ``outputs``."""
    rails: list[Guardrail] = []
    approvals = [phase.name for phase in phases if phase.requires_approval]
    if approvals:
        rails += build_guardrails([{"type": "approval", "require_for": approvals}],
                                  f"workflow {name!r}")
    outputs = {phase.name: phase.outputs for phase in phases if phase.outputs}
    if outputs:
        rails.append(OutputsGuardrail(outputs))
    return tuple(rails)


def simulated_value(type_name: str, step: str, key: str) -> Any:
    """A plausible value of a declared output type."""
    return {
        "string": f"{key} of {step} (simulated)",
        "number": 1.0,
        "integer": 1,
        "boolean": True,
        "object": {"simulated": True},
        "array": [f"{key} (simulated)"],
    }.get(type_name, f"{key} of {step} (simulated)")


def simulated_agents(
    phases: Sequence[PhaseConfig], config: CoordinatorConfig | None, given: Iterable[str]
) -> list[SimulatedAgent]:
    """A simulated agent for every agent id of the workflow not in ``given``.

    Every agent of one step gives the same answer (so a multi-agent step agrees): the step's
    declared outputs with values of their types, or ``{"result": ...}``.
    """
    def answer(intent: Intent) -> dict[str, Any]:
        phase = next((p for p in phases if p.title == intent.title), None)
        if phase is None or not phase.outputs:
            return {"result": f"{intent.title} done (simulated)"}
        return {key: simulated_value(type_name, phase.name, key)
                for key, type_name in phase.outputs.items()}

    wanted: dict[str, None] = {}
    for phase in phases:
        wanted.update(dict.fromkeys(ids(phase.assign)))
    if config is not None:
        wanted.update(dict.fromkeys(config.agents or ()))
    skip = set(given)
    return [SimulatedAgent(agent_id, answer, register=False)
            for agent_id in wanted if agent_id not in skip]


def with_simulated_agents(
    phases: Sequence[PhaseConfig], config: CoordinatorConfig | None,
    agents: Sequence[Any] | None,
) -> tuple[list[Any], Any]:
    """The agents and coordinator of a simulated run (``wf.arun(simulate=True)``,
    ``openintent run --simulate``): ``agents`` plus a simulated agent for every agent id of
    the workflow they lack, and, when no ``agents`` were given, a registered coordinator of
    the workflow's coordinator id (else ``None``)."""
    given = [getattr(agent, "__openintent_id__", None) for agent in agents or ()]
    chosen = list(agents or []) + simulated_agents(
        phases, config, [agent_id for agent_id in given if isinstance(agent_id, str)])
    coordinator = None
    if config is not None and agents is None:
        coordinator = _registered_coordinator(config.id)
    return chosen, coordinator


def _registered_coordinator(coordinator_id: str) -> Any:
    """With simulated agents (an explicit agent list), a registered coordinator of the
    workflow's id still governs the run."""
    registry = current_registry()
    if coordinator_id in registry:
        definition = registry.get(coordinator_id)
        if definition.kind == "coordinator":
            return definition.instance if definition.instance is not None else definition.cls
    return None
