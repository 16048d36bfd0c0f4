"""Checking the ``workflow:`` section: each step's fields, then the references between steps
(``depends_on``, ``inputs``, approval ``require_for``) and the dependency graph."""

from __future__ import annotations

import graphlib
import math
from collections.abc import Mapping
from typing import Any

from ._json_data import json_data
from ._workflow_check import (
    LEGACY_STEP_KEYS,
    OUTPUT_TYPES,
    STEP_KEYS,
    Checker,
    CoordinatorConfig,
    PhaseConfig,
    hint,
    kind,
)
from ._workflow_yaml import Located
from .errors import OpenIntentError
from .models import RetryPolicy

__all__ = ["check_steps", "ids"]


def ids(assign: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The agent ids of an ``assign`` value."""
    if assign is None:
        return ()
    return (assign,) if isinstance(assign, str) else assign


def check_steps(
    checker: Checker, root: Located, node: Located | None,
    coordinator: CoordinatorConfig | None,
) -> list[PhaseConfig]:
    """The checked steps of the ``workflow:`` section, in file order."""
    if node is None or not node.value:
        # An empty section is reported at its key; a missing one at the top of the file.
        at: Located | tuple[int, int] = root.keys.get("workflow", (1, 1))
        checker.error(at, "Missing 'workflow' section: add workflow: with at least one step, "
                          "e.g. write: {assign: writer}")
        return []
    steps = checker.mapping(node, "workflow")
    if steps is None:
        return []
    phases: list[PhaseConfig] = []
    references: dict[str, dict[str, Any]] = {}
    for key, step in steps.items():
        checked = _check_step(checker, key, node.keys[key], step)
        if checked is not None:
            phases.append(checked[0])
            references[key] = checked[1]
    # The references are checked between the steps that checked out; a reference to a step
    # with problems of its own is not reported again.
    _check_graph(checker, phases, references, set(steps) - set(references))
    _check_approvals(checker, phases, coordinator)
    return phases


def _check_step(
    checker: Checker, key: str, position: tuple[int, int], node: Located
) -> tuple[PhaseConfig, dict[str, Any]] | None:
    what = f"step {key!r}"
    fields = checker.mapping(node, what)
    if fields is None:
        return None
    before = len(checker.problems)
    if node.value is not None:
        checker.keys(node, STEP_KEYS, what, LEGACY_STEP_KEYS)
    title = checker.text(fields.get("title"), f"{what} title", required=True) or key
    description = checker.text(fields.get("description"), f"{what} description")
    if description is None:
        checker.warn(position, f"{what} has no description; a line saying what it does helps "
                               "whoever reads the workflow (and the agent)")
    assign_node = fields.get("assign")
    assignees = checker.names(assign_node, f"{what} assign")
    assign: str | tuple[str, ...] | None = None
    if assignees:
        assign = assignees[0].value if isinstance(assign_node and assign_node.value, str) else (
            tuple(a.value for a in assignees))
    depends = checker.names(fields.get("depends_on"), f"{what} depends_on") or ()
    constraints: Any = ()
    if "constraints" in fields and fields["constraints"].value is not None:
        value = fields["constraints"].value
        if isinstance(value, str):
            constraints = (value,)
        elif isinstance(value, list | dict):
            constraints = fields["constraints"].plain()
        else:
            checker.error(fields["constraints"], f"{what} constraints must be a list or a "
                                                 f"mapping, got {kind(value)}")
    initial_state = _plain_mapping(checker, fields.get("initial_state"), f"{what} initial_state")
    retry = _retry(checker, fields.get("retry"), what)
    timeout = _timeout(checker, fields.get("timeout"), what)
    tags = tuple(t.value for t in checker.names(fields.get("tags"), f"{what} tags") or ())
    approval = fields.get("requires_approval")
    if approval is not None and not isinstance(approval.value, bool):
        checker.error(approval, f"{what} requires_approval must be true or false, got "
                                f"{kind(approval.value)}")
    outputs = _outputs(checker, fields.get("outputs"), what)
    inputs = _inputs(checker, fields.get("inputs"), what)
    if len(checker.problems) > before:
        return None
    assign_at = assign_node if assign_node is not None else Located(None, *position)
    phase = PhaseConfig(
        key, title, assign, description or "", tuple(d.value for d in depends), constraints,
        initial_state, retry, timeout, tags, bool(approval and approval.value),
        {name: ref for name, (ref, _) in inputs.items()}, outputs, position[0], position[1],
        assign_at.line, assign_at.column,
    )
    return phase, {"depends_on": depends, "inputs": inputs}


def _plain_mapping(checker: Checker, node: Located | None, what: str) -> dict[str, Any]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        checker.error(node, f"{what} must be a mapping, got {kind(node.value)}")
        return {}
    plain: dict[str, Any] = node.plain()
    try:
        json_data(plain, what)
    except OpenIntentError as exc:
        checker.error(node, str(exc))
    return plain


def _retry(checker: Checker, node: Located | None, what: str) -> Mapping[str, Any] | None:
    if node is None or node.value is None:
        return None
    value = node.plain()
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"max_attempts": value}
    try:
        RetryPolicy.coerce(value)
    except (OpenIntentError, TypeError, ValueError) as exc:
        checker.error(node, f"{what} retry: {exc}")
        return None
    return value  # type: ignore[no-any-return]


def _timeout(checker: Checker, node: Located | None, what: str) -> float | None:
    if node is None or node.value is None:
        return None
    value = node.value
    if (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            or not math.isfinite(value)):
        checker.error(node, f"{what} timeout must be a positive number of seconds, got "
                            f"{kind(value)}")
        return None
    return float(value)


def _outputs(checker: Checker, node: Located | None, what: str) -> dict[str, str]:
    if node is None or node.value is None:
        return {}
    if isinstance(node.value, list):  # a list of keys: any type
        names = checker.names(node, f"{what} outputs") or ()
        return {name.value: "any" for name in names}
    if not isinstance(node.value, dict):
        checker.error(node, f"{what} outputs must map each output key to a type "
                            f"({', '.join(OUTPUT_TYPES)}), got {kind(node.value)}")
        return {}
    outputs: dict[str, str] = {}
    for key, declared in node.items():
        type_node = declared
        if isinstance(declared.value, dict) and "type" in declared.value:
            type_node = declared.value["type"]
        name = type_node.value if type_node.value is not None else "any"
        if not isinstance(name, str) or name not in OUTPUT_TYPES:
            checker.error(type_node, f"{what} output {key!r}: unknown type {name!r}"
                                     f"{hint(str(name), list(OUTPUT_TYPES))}; valid types: "
                                     f"{', '.join(OUTPUT_TYPES)}")
            continue
        outputs[key] = name
    return outputs


def _inputs(
    checker: Checker, node: Located | None, what: str
) -> dict[str, tuple[tuple[str, str], Located]]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        checker.error(node, f"{what} inputs must map each input name to step.output (e.g. "
                            f"draft: write.text), got {kind(node.value)}")
        return {}
    inputs: dict[str, tuple[tuple[str, str], Located]] = {}
    for name, reference in node.items():
        value = reference.value
        if not isinstance(value, str) or value.count(".") < 1 or "" in value.split(".", 1):
            checker.error(reference, f"{what} input {name!r} must be step.output (e.g. "
                                     f"write.text), got {kind(value)}")
            continue
        step, output = value.split(".", 1)
        inputs[name] = ((step, output), reference)
    return inputs


def _check_graph(
    checker: Checker, phases: list[PhaseConfig], references: dict[str, dict[str, Any]],
    broken: set[str],
) -> None:
    by_key = {phase.name: phase for phase in phases}
    titles: dict[str, PhaseConfig] = {}
    for phase in phases:
        if phase.title in titles and titles[phase.title].name != phase.name:
            first = titles[phase.title]
            checker.error((phase.line, phase.column), (
                f"steps {first.name!r} (line {first.line}) and {phase.name!r} share the title "
                f"{phase.title!r}; give each step its own title"))
        titles.setdefault(phase.title, phase)
    graph: dict[str, list[str]] = {}
    for phase in phases:
        graph[phase.name] = []
        for entry in references[phase.name]["depends_on"]:
            target = entry.value if entry.value in by_key else (
                titles[entry.value].name if entry.value in titles else None)
            if entry.value in broken:
                continue
            if target is None:
                checker.error(entry, (
                    f"step {phase.name!r} depends on {entry.value!r}, which is not a step of "
                    f"this workflow{hint(entry.value, list(by_key))}; depends_on "
                    f"lists step keys ({', '.join([*by_key, *sorted(broken)])})"))
            elif target == phase.name:
                checker.error(entry, f"Circular dependency: step {phase.name!r} depends on "
                                     f"itself ({phase.name} -> {phase.name}); remove it from "
                                     "its depends_on")
            else:
                graph[phase.name].append(target)
        for name, ((step, output), at) in references[phase.name]["inputs"].items():
            if step in broken:
                continue
            if step not in by_key:
                checker.error(at, (
                    f"step {phase.name!r} input {name!r} reads {step}.{output}, but there is "
                    f"no step {step!r}{hint(step, list(by_key))}"))
            elif step not in graph[phase.name]:
                checker.error(at, (
                    f"step {phase.name!r} input {name!r} reads {step}.{output}, but "
                    f"{step!r} is not in its depends_on; add {step} to depends_on (inputs "
                    "come from steps that finish first)"))
            elif name in {by_key[d].title for d in graph[phase.name]}:
                checker.error(at, (
                    f"step {phase.name!r} input {name!r} has the title of one of its "
                    f"dependencies; intent.inputs holds both the dependencies' states by "
                    f"title and the inputs by name: rename the input"))
            elif by_key[step].outputs and output not in by_key[step].outputs:
                checker.error(at, (
                    f"step {phase.name!r} input {name!r} reads {step}.{output}, but step "
                    f"{step!r} declares no output {output!r}"
                    f"{hint(output, list(by_key[step].outputs))}; declared: "
                    f"{', '.join(by_key[step].outputs)}"))
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # graphlib lists "before"; we show "depends on"
        start = by_key[cycle[0]]
        entry = next(e for e in references[start.name]["depends_on"]
                     if e.value in (cycle[1], by_key[cycle[1]].title))
        checker.error(entry, f"Circular dependency: {' -> '.join(cycle)} (each step depends "
                             "on the next); remove one of these depends_on entries")


def _check_approvals(
    checker: Checker, phases: list[PhaseConfig], coordinator: CoordinatorConfig | None
) -> None:
    """Approval guardrails name steps by key, title or tag: each name must exist."""
    if coordinator is None:
        return
    known = {p.name for p in phases} | {p.title for p in phases} | {
        t for p in phases for t in p.tags}
    folded = {name.casefold() for name in known}
    for name, line, column in coordinator.approval_names:
        if name.casefold() not in folded:
            checker.error((line, column), (
                f"the approval guardrail's require_for names {name!r}, which is no step key, "
                f"title or tag{hint(name, sorted(known))}"))
