"""The pieces a workflow check is made of: the checked values and a problem collector."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._workflow_yaml import Located, Problem

__all__ = ["OUTPUT_TYPES", "Checker", "CoordinatorConfig", "Parsed", "PhaseConfig", "hint", "kind"]

FORMAT_VERSIONS = ("1", "1.0")
TOP_KEYS = ("openintent", "info", "coordinator", "agents", "workflow")
INFO_KEYS = ("name", "description", "version")
COORDINATOR_KEYS = ("id", "strategy", "agents", "guardrails", "max_concurrency")
STEP_KEYS = ("title", "description", "assign", "depends_on", "constraints", "initial_state",
             "retry", "timeout", "tags", "requires_approval", "inputs", "outputs")
#: Keys of openintent 0.17 files that this version reads but ignores (a warning, not an error).
LEGACY_TOP_KEYS = ("governance", "llm", "identity", "verification", "types", "federation")
LEGACY_STEP_KEYS = ("leasing", "cost_tracking", "attachments", "permissions", "skip_when")
#: The types an ``outputs`` entry may declare, and the Python values each accepts.
OUTPUT_TYPES: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list | tuple),
    "any": lambda v: True,
}


@attrs.frozen
class PhaseConfig:
    """One step of the ``workflow:`` section (the name of openintent 0.17 kept).

    ``name`` is the step key; ``line``/``column`` are where the key is in the file.
    """

    name: str
    title: str
    assign: str | tuple[str, ...] | None
    description: str = ""
    depends_on: tuple[str, ...] = ()
    constraints: Any = ()
    initial_state: Mapping[str, Any] = attrs.field(factory=dict)
    retry: Mapping[str, Any] | None = None
    timeout: float | None = None
    tags: tuple[str, ...] = ()
    requires_approval: bool = False
    #: input name -> ``(step key, output key)``
    inputs: Mapping[str, tuple[str, str]] = attrs.field(factory=dict)
    #: output key -> type name (see ``OUTPUT_TYPES``)
    outputs: Mapping[str, str] = attrs.field(factory=dict)
    line: int = 1
    column: int = 1
    assign_line: int = 1
    assign_column: int = 1


@attrs.frozen
class CoordinatorConfig:
    """The ``coordinator:`` block: the coordinator a run uses unless another is given."""

    id: str
    strategy: str = "parallel"
    agents: tuple[str, ...] | None = None
    guardrails: tuple[Mapping[str, Any], ...] = ()
    max_concurrency: int | None = None
    line: int = 1
    column: int = 1
    #: The step names of approval guardrails' ``require_for``, with their positions.
    approval_names: tuple[tuple[str, int, int], ...] = ()


@attrs.frozen
class Parsed:
    """A checked document."""

    version: str
    name: str
    description: str
    workflow_version: str
    coordinator: CoordinatorConfig | None
    agents: Mapping[str, Mapping[str, Any]]
    phases: tuple[PhaseConfig, ...]
    warnings: tuple[str, ...]


class Checker:
    """Collects the problems (and warnings) of one file, each at its position."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def error(self, at: Located | tuple[int, int], message: str) -> None:
        line, column = (at.line, at.column) if isinstance(at, Located) else at
        self.problems.append(Problem(self.file, line, column, message))

    def warn(self, at: Located | tuple[int, int], message: str) -> None:
        line, column = (at.line, at.column) if isinstance(at, Located) else at
        self.warnings.append(str(Problem(self.file, line, column, message)))

    def mapping(self, node: Located | None, what: str) -> dict[str, Located] | None:
        if node is None or node.value is None:
            return {}
        if not isinstance(node.value, dict):
            self.error(node, f"{what} must be a mapping (key: value lines), got "
                             f"{kind(node.value)}")
            return None
        return node.value

    def keys(self, node: Located, allowed: tuple[str, ...], what: str,
             legacy: tuple[str, ...] = ()) -> None:
        for key, position in node.keys.items():
            if key in allowed:
                continue
            if key in legacy:
                self.warn(position, f"{what}: {key!r} (an openintent 0.17 key) is ignored by "
                                    "this version")
                continue
            self.error(position, f"unknown key {key!r} in {what}{hint(key, allowed)}; "
                                 f"valid keys: {', '.join(allowed)}")

    def text(self, node: Located | None, what: str, *, required: bool = False) -> str | None:
        if node is None or (node.value is None and not required):
            return None
        if isinstance(node.value, str | int | float) and not isinstance(node.value, bool):
            value = str(node.value)
            if value.strip() or not required:
                return value
        self.error(node, f"{what} must be a non-empty string, got {kind(node.value)}")
        return None

    def names(self, node: Located | None, what: str) -> tuple[Located, ...] | None:
        """A string or a list of strings (each kept with its position)."""
        if node is None or node.value is None:
            return ()
        items = [node] if isinstance(node.value, str) else node.value
        if not isinstance(items, list):
            self.error(node, f"{what} must be a string or a list of strings, got "
                             f"{kind(node.value)}")
            return None
        good = True
        for item in items:
            if not isinstance(item.value, str) or not item.value.strip():
                self.error(item, f"each entry of {what} must be a non-empty string, got "
                                 f"{kind(item.value)}")
                good = False
        return tuple(items) if good else None


def kind(value: Any) -> str:
    """What a value is, for messages: ``a list``, ``the string 'x'``, ``int 3``."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the {type(value).__name__} {value!r}"


def hint(name: str, allowed: Sequence[str]) -> str:
    """`` (did you mean `x`?)`` when a close candidate exists, else an empty string."""
    matches = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean `{matches[0]}`?)" if matches else ""
