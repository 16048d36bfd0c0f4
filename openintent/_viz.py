"""Pictures of portfolios and runs as text: Mermaid flowcharts and Gantt charts, Graphviz DOT.

Behind ``PortfolioSpec.to_mermaid()`` / ``to_dot()``, ``WorkflowSpec.to_mermaid()`` /
``to_dot()`` and ``RunResult.to_mermaid()`` / ``to_dot()``. This module reads specs and
results by duck typing and imports neither: the classes that expose these methods import it.

Every piece of user text (titles, agent ids, guardrail fields) goes through one escaping
function per place it can go (:mod:`._viz_text`), so no title can break out of its label:
Mermaid labels are quoted with every character outside a small safe set written as an entity
code (``#34;``), Mermaid titles are YAML double-quoted strings in the front matter, Gantt task
names (which Mermaid cannot quote) have their few syntax characters replaced by look-alikes,
and DOT strings are quoted with ``\\`` and ``"`` escaped. The Gantt chart is built in
:mod:`._viz_gantt`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._registry import definition_of
from ._viz_gantt import gantt_of_events
from ._viz_text import dot_string, front_matter, mermaid_text
from .errors import SpecError

__all__ = [
    "Graph",
    "Node",
    "graph_of_result",
    "graph_of_spec",
    "graph_of_workflow",
    "result_to_mermaid",
    "to_dot",
    "to_mermaid",
]

# Fill colours of intent statuses (results), shared by Mermaid and DOT.
STATUS_COLOURS = {
    "completed": "#c8f7c5",
    "failed": "#f8c4c4",
    "cancelled": "#fde2b8",
    "skipped": "#e5e7eb",
    "pending": "#ffffff",
    "running": "#c7ddfb",
    "awaiting_approval": "#fef3b4",
}
_APPROVAL_BORDER = "#d97706"


@attrs.frozen
class Node:
    """One intent of a picture: its title and the lines drawn under it."""

    title: str
    details: tuple[str, ...] = ()
    style: str | None = None  # a status (results) or "approval" (specs)


@attrs.frozen
class Graph:
    """What a flowchart shows, whatever the output language."""

    title: str
    nodes: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]
    notes: tuple[str, ...] = ()  # the coordinator and guardrails box


# ---------------------------------------------------------------------------- building graphs


def _edges(titles: Sequence[str], depends: Sequence[Sequence[str]]) -> tuple[tuple[int, int], ...]:
    index: dict[str, int] = {}
    for position, title in enumerate(titles):
        index.setdefault(title, position)
    return tuple(
        (index[upstream], position)
        for position, upstream_titles in enumerate(depends)
        for upstream in upstream_titles
        if upstream in index  # an unknown title is the spec's error to report, not ours
    )


def _scalar(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        return str(value)
    if callable(value):
        return str(getattr(value, "__name__", type(value).__name__))
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    return type(value).__name__


def describe_guardrail(item: Any) -> str:
    """One line for a guardrail given as a dict, a Guardrail object or a function."""
    if isinstance(item, Mapping):
        kind = str(item.get("type", "guardrail"))
        fields = {key: value for key, value in item.items() if key != "type"}
    elif callable(item) and not hasattr(item, "before_dispatch"):
        return f"{_scalar(item)} (middleware)"
    else:
        kind = str(getattr(item, "type", None) or type(item).__name__)
        fields = {
            key: value
            for key, value in vars(item).items()
            if not key.startswith("_") and key != "requests" and value not in (None, (), [])
        }
        if list(fields) == ["function"]:  # an async function given as a guardrail
            return f"{_scalar(fields['function'])} (middleware)"
    shown = " ".join(f"{key}={_scalar(value)}" for key, value in fields.items())
    return f"{kind} {shown}".strip()


def _approval_names(guardrails: Iterable[Any]) -> set[str]:
    names: set[str] = set()
    for item in guardrails:
        if isinstance(item, Mapping):
            kind, wanted = item.get("type"), item.get("require_for")
        else:
            kind, wanted = getattr(item, "type", None), getattr(item, "require_for", None)
        if kind != "approval" or wanted is None:
            continue
        for name in [wanted] if isinstance(wanted, str) else wanted:
            if isinstance(name, str):
                names.add(name.casefold())
    return names


def _coordinator(coordinator: Any) -> tuple[str | None, str | None, tuple[Any, ...]]:
    """(id, strategy, guardrails) of a decorated coordinator class or instance, or an id."""
    if coordinator is None:
        return None, None, ()
    if isinstance(coordinator, str):
        return coordinator, None, ()
    definition = definition_of(coordinator)
    if definition is None:
        name = getattr(coordinator, "__name__", type(coordinator).__name__)
        return str(name), None, ()
    options = definition.options
    return definition.id, options.get("strategy"), tuple(options.get("guardrails") or ())


def graph_of_spec(
    spec: Any,
    *,
    coordinator: Any = None,
    strategy: str | None = None,
    guardrails: Iterable[Any] | None = None,
    title: str | None = None,
    approvals: Iterable[str] = (),
    details: Mapping[str, Sequence[str]] | None = None,
) -> Graph:
    """The picture of a portfolio spec: each intent with its assignees, whether it waits for
    approval, and a box naming the coordinator and the guardrails.

    ``approvals`` adds names (titles, step keys, tags) of intents that wait for approval;
    ``details`` adds lines under intents, by title."""
    coordinator_id, coordinator_strategy, coordinator_guardrails = _coordinator(coordinator)
    every_guardrail = [*(guardrails or ()), *coordinator_guardrails]
    approvals = _approval_names(every_guardrail) | {name.casefold() for name in approvals}
    nodes = []
    for intent in spec.intents:
        lines = []
        assignees = tuple(intent.assignees)
        if assignees:
            label = "agent" if len(assignees) == 1 else "agents"
            lines.append(f"{label}: {', '.join(assignees)}")
        else:
            lines.append("routed by the coordinator" if coordinator_id else "unassigned")
        names = {intent.title, *intent.tags} | ({intent.key} if intent.key else set())
        needs_approval = any(name.casefold() in approvals for name in names)
        if needs_approval:
            lines.append("needs approval")
        if intent.timeout is not None:
            lines.append(f"timeout {intent.timeout:g}s")
        attempts = getattr(intent.retry, "max_attempts", 1)
        if attempts > 1:
            lines.append(f"up to {attempts} attempts")
        lines.extend((details or {}).get(intent.title, ()))
        nodes.append(Node(intent.title, tuple(lines), "approval" if needs_approval else None))
    notes = []
    if coordinator_id is not None:
        shown_strategy = strategy or coordinator_strategy
        notes.append(
            f"coordinator: {coordinator_id}" + (f" ({shown_strategy})" if shown_strategy else "")
        )
    notes.extend(f"guardrail: {describe_guardrail(item)}" for item in every_guardrail)
    edges = _edges(
        [intent.title for intent in spec.intents],
        [intent.depends_on for intent in spec.intents],
    )
    return Graph(title or spec.name, tuple(nodes), edges, tuple(notes))


def graph_of_workflow(workflow: Any) -> Graph:
    """The picture of a YAML workflow: its steps as :func:`graph_of_spec` draws them, with
    the step key (when the title differs), inputs and declared outputs, and the YAML
    coordinator's strategy and guardrails."""
    config = workflow.coordinator
    details: dict[str, list[str]] = {}
    for phase in workflow.phases:
        lines = details.setdefault(phase.title, [])
        if phase.name != phase.title:
            lines.append(f"step: {phase.name}")
        if phase.inputs:
            lines.append("inputs: " + ", ".join(
                f"{name} = {step}.{key}" for name, (step, key) in phase.inputs.items()))
        if phase.outputs:
            lines.append("outputs: " + ", ".join(
                f"{key} ({kind})" for key, kind in phase.outputs.items()))
    return graph_of_spec(
        workflow.to_portfolio_spec(),
        coordinator=config.id if config is not None else None,
        strategy=config.strategy if config is not None else None,
        guardrails=config.guardrails if config is not None else (),
        approvals=[phase.name for phase in workflow.phases if phase.requires_approval],
        details=details,
    )


def graph_of_result(result: Any) -> Graph:
    """The picture of a run: each intent coloured by its final status."""
    decided: dict[str, str] = {}
    for event in result.events:
        if event.type in ("approval_granted", "approval_denied") and event.intent_id:
            verb = "approved" if event.type == "approval_granted" else "denied"
            decided[event.intent_id] = f"{verb} by {(event.data or {}).get('by', '?')}"
    nodes = []
    for item in result.intents.values():
        status = str(item.status)
        details = [status + (f", {item.attempts} attempts" if item.attempts > 1 else "")]
        if item.assigned_to:
            details.append(f"agent: {item.assigned_to}")
        if item.id in decided:
            details.append(decided[item.id])
        if item.cost_usd:
            details.append(f"${item.cost_usd:,.2f}")
        if item.error_type:
            details.append(f"{item.error_type}: {_shorten(item.error or '')}")
        nodes.append(Node(item.title, tuple(details), status))
    items = list(result.intents.values())
    edges = _edges([item.title for item in items], [item.depends_on for item in items])
    notes = (f"run {result.portfolio_id}: {result.status}, ${result.cost_usd:,.2f}",)
    return Graph(result.name, tuple(nodes), edges, notes)


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- Mermaid


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart of ``graph`` (top to bottom)."""
    lines = [*front_matter(graph.title), "flowchart TD"]
    for index, node in enumerate(graph.nodes):
        label = "<br/>".join(mermaid_text(line) for line in (node.title, *node.details))
        lines.append(f'    n{index}["{label}"]')
    for upstream, downstream in graph.edges:
        lines.append(f"    n{upstream} --> n{downstream}")
    if graph.notes:
        label = "<br/>".join(mermaid_text(note) for note in graph.notes)
        lines.append(f'    notes[/"{label}"/]')
        lines.append("    classDef notes fill:#f3f4f6,stroke:#9ca3af,color:#111827")
        lines.append("    class notes notes")
    styles = sorted({node.style for node in graph.nodes if node.style})
    for style in styles:
        if style == "approval":
            lines.append(
                f"    classDef {_class_name(style)} stroke:{_APPROVAL_BORDER},stroke-width:3px"
            )
        else:
            fill = STATUS_COLOURS.get(style, "#ffffff")
            lines.append(f"    classDef {_class_name(style)} fill:{fill},color:#111827")
        members = ",".join(f"n{i}" for i, node in enumerate(graph.nodes) if node.style == style)
        lines.append(f"    class {members} {_class_name(style)}")
    return "\n".join(lines) + "\n"


def _class_name(style: str) -> str:
    # Statuses are identifiers already; anything else is reduced to one.
    return "s_" + "".join(char if char.isascii() and char.isalnum() else "_" for char in style)


# ---------------------------------------------------------------------------- DOT


def to_dot(graph: Graph) -> str:
    """A Graphviz DOT digraph of ``graph`` (top to bottom)."""
    lines = [
        f"digraph {dot_string(graph.title)} {{",
        f"    graph [label={dot_string(graph.title)}, labelloc=t, rankdir=TB];",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff"];',
    ]
    for index, node in enumerate(graph.nodes):
        attributes = [f"label={dot_string(chr(10).join([node.title, *node.details]))}"]
        if node.style == "approval":
            attributes.append(f'color="{_APPROVAL_BORDER}", penwidth=3')
        elif node.style:
            attributes.append(f'fillcolor="{STATUS_COLOURS.get(node.style, "#ffffff")}"')
        lines.append(f"    n{index} [{', '.join(attributes)}];")
    for upstream, downstream in graph.edges:
        lines.append(f"    n{upstream} -> n{downstream};")
    if graph.notes:
        label = dot_string("\n".join(graph.notes))
        lines.append(f'    notes [shape=note, style=filled, fillcolor="#f3f4f6", label={label}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def result_to_mermaid(result: Any, kind: str) -> str:
    """``result.to_mermaid(kind)``."""
    if kind == "flowchart":
        return to_mermaid(graph_of_result(result))
    if kind == "gantt":
        return gantt_of_events(result.name, result.events)
    raise SpecError(f'result.to_mermaid(kind={kind!r}): kind is "flowchart" or "gantt"')
