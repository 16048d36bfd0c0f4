"""Checking a workflow document: every key, type and reference, every problem with its place.

Input: the :class:`~._workflow_yaml.Located` tree of a file. Output: a :class:`Parsed`
(the steps and the coordinator block as plain, checked values), or every problem found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._guardrail_core import build_guardrails
from ._workflow_check import (
    COORDINATOR_KEYS,
    FORMAT_VERSIONS,
    INFO_KEYS,
    LEGACY_TOP_KEYS,
    TOP_KEYS,
    Checker,
    CoordinatorConfig,
    Parsed,
    hint,
    kind,
)
from ._workflow_steps import check_steps, ids
from ._workflow_yaml import Located, Problem
from .errors import OpenIntentError

__all__ = ["check_document"]


def check_document(root: Located | None, file: str) -> tuple[Parsed | None, list[Problem]]:
    """Check a whole document; return what it describes, or ``None`` and every problem."""
    checker = Checker(file)
    if root is None:
        checker.error((1, 1), 'the file is empty; a workflow starts with openintent: "1.0", '
                              "then info: and workflow:")
        return None, checker.problems
    top = checker.mapping(root, "a workflow file")
    if top is None:
        return None, checker.problems
    checker.keys(root, TOP_KEYS, "the top level", LEGACY_TOP_KEYS)
    version = _check_version(checker, top.get("openintent"))
    name, description, workflow_version = _check_info(checker, root, top.get("info"))
    coordinator = _check_coordinator(checker, top.get("coordinator"))
    agents = _check_agents(checker, top.get("agents"))
    phases = check_steps(checker, root, top.get("workflow"), coordinator)
    if phases:
        used = {a for p in phases for a in ids(p.assign)} | set(
            coordinator.agents or () if coordinator else ())
        for agent_id in agents:
            if agent_id not in used:
                position = top["agents"].keys[agent_id]
                checker.warn(position, f"agent {agent_id!r} is declared but no step uses it")
        for phase in phases if agents else ():
            for agent_id in ids(phase.assign):
                if agent_id not in agents:
                    checker.warn((phase.assign_line, phase.assign_column), (
                        f"step {phase.name!r} is assigned to {agent_id!r}, which is not "
                        f"declared under agents:{hint(agent_id, list(agents))}"))
    if checker.problems:
        return None, checker.problems
    assert name is not None
    return Parsed(version or "1.0", name, description, workflow_version, coordinator,
                  agents, tuple(phases), tuple(checker.warnings)), []


def _check_version(checker: Checker, node: Located | None) -> str | None:
    if node is None:
        checker.error((1, 1), 'missing the format version: add openintent: "1.0" as the '
                              "first line")
        return None
    version = checker.text(node, "openintent (the format version)", required=True)
    if version is not None and version not in FORMAT_VERSIONS:
        checker.error(node, f"unsupported format version {version!r}; this version of "
                            'openintent reads openintent: "1.0"')
    return version


def _check_info(
    checker: Checker, root: Located, node: Located | None
) -> tuple[str | None, str, str]:
    info = checker.mapping(node, "info")
    if info is None:
        return None, "", "1.0.0"
    if node is not None:
        checker.keys(node, INFO_KEYS, "info")
    name = checker.text(info.get("name"), "info.name", required=True)
    if name is None and "name" not in info:
        at: Located | tuple[int, int] = (
            node if node is not None and node.value is not None
            else root.keys.get("info", (1, 1)))
        checker.error(at, 'Missing workflow name: add name: "My Workflow" under info:')
    description = checker.text(info.get("description"), "info.description") or ""
    version = checker.text(info.get("version"), "info.version") or "1.0.0"
    return name, description, version


def _check_coordinator(checker: Checker, node: Located | None) -> CoordinatorConfig | None:
    block = checker.mapping(node, "coordinator")
    if node is None or node.value is None or block is None:
        return None
    checker.keys(node, COORDINATOR_KEYS, "coordinator")
    coordinator_id = checker.text(block.get("id"), "coordinator.id", required=True)
    if "id" not in block:
        checker.error(node, "the coordinator has no id: add id: lead (a name for it)")
    strategy = checker.text(block.get("strategy"), "coordinator.strategy") or "parallel"
    if strategy not in ("sequential", "parallel"):
        checker.error(block["strategy"], f"unknown strategy {strategy!r}"
                                         f"{hint(strategy, ('sequential', 'parallel'))}; "
                                         "use sequential or parallel")
    agents = checker.names(block.get("agents"), "coordinator.agents")
    guardrails: list[Mapping[str, Any]] = []
    approval_names: list[tuple[str, int, int]] = []
    rails = block.get("guardrails")
    if rails is not None and rails.value is not None:
        if not isinstance(rails.value, list):
            checker.error(rails, "coordinator.guardrails must be a list of mappings such as "
                                 "- type: budget")
        else:
            for item in rails.value:
                guardrails.extend(_check_guardrail(checker, item, coordinator_id or "?"))
                names = item.value.get("require_for") if isinstance(item.value, dict) else None
                if names is not None and isinstance(names.value, list):
                    approval_names.extend((n.value, n.line, n.column) for n in names.value
                                          if isinstance(n.value, str))
    limit = block.get("max_concurrency")
    max_concurrency = None
    if limit is not None and limit.value is not None:
        if isinstance(limit.value, bool) or not isinstance(limit.value, int) or limit.value < 1:
            checker.error(limit, f"coordinator.max_concurrency must be a whole number >= 1, "
                                 f"got {kind(limit.value)}")
        else:
            max_concurrency = limit.value
    return CoordinatorConfig(
        coordinator_id or "", strategy,
        tuple(a.value for a in agents) if agents and "agents" in block else None,
        tuple(guardrails), max_concurrency, node.line, node.column, tuple(approval_names),
    )


def _check_guardrail(
    checker: Checker, item: Located, coordinator_id: str
) -> list[Mapping[str, Any]]:
    if not isinstance(item.value, dict):
        checker.error(item, f"a guardrail is a mapping such as type: budget, got "
                            f"{kind(item.value)}")
        return []
    plain = item.plain()
    try:
        build_guardrails([plain], f"coordinator {coordinator_id!r}")
    except OpenIntentError as exc:
        # Point at the field the message names, else at the guardrail's type.
        message = str(exc)
        where = item.value.get("type", item)
        for key, value in item.value.items():
            if f"'{key}'" in message and key != "type":
                where = Located(None, *item.keys[key]) if "unexpected" in message else value
        checker.error(where, message)
        return []
    return [plain]


def _check_agents(checker: Checker, node: Located | None) -> dict[str, dict[str, Any]]:
    block = checker.mapping(node, "agents")
    agents: dict[str, dict[str, Any]] = {}
    for agent_id, value in (block or {}).items():
        if value.value is None:
            agents[agent_id] = {}
        elif isinstance(value.value, str):
            agents[agent_id] = {"description": value.value}
        elif isinstance(value.value, dict):
            agents[agent_id] = value.plain()
        else:
            checker.error(value, f"agent {agent_id!r}: give a description (a string), got "
                                 f"{kind(value.value)}")
    return agents

