"""Validation of a portfolio's dependency graph before anything runs."""

from __future__ import annotations

import graphlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._registry import suggest
from .errors import DependencyCycleError, DuplicateIntentError, UnknownDependencyError

if TYPE_CHECKING:
    from ._specs import IntentSpec

__all__ = ["check_graph"]


def check_graph(name: str, intents: Sequence[IntentSpec]) -> None:
    """Raise a :class:`~openintent.errors.SpecError` for duplicate titles, unknown
    dependencies or a dependency cycle; each message says how to fix it."""
    where = f"portfolio {name!r}"
    seen: dict[str, int] = {}
    for index, spec in enumerate(intents):
        if spec.title in seen:
            raise DuplicateIntentError(
                f"{where}: intents[{seen[spec.title]}] and intents[{index}] are both titled "
                f"{spec.title!r}; titles name intents in depends_on, so give each a unique title"
            )
        seen[spec.title] = index
    titles = list(seen)
    # Declaration order is usually already a topological order (every dependency declared
    # before its dependents); then there can be no cycle and graphlib is not needed.
    ordered = True
    for index, spec in enumerate(intents):
        for dependency in spec.depends_on:
            position = seen.get(dependency)
            if position is None:
                raise UnknownDependencyError(
                    f"{where}: intent {spec.title!r} depends on {dependency!r}, which is not an "
                    f"intent of this portfolio{suggest(dependency, titles)}; depends_on takes "
                    "titles of other intents"
                )
            if position >= index:
                ordered = False
    if ordered:
        return
    sorter = graphlib.TopologicalSorter({spec.title: spec.depends_on for spec in intents})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the node that depends on it; we show "depends on".
        cycle = list(reversed(exc.args[1]))
        arrows = " -> ".join(cycle)
        raise DependencyCycleError(
            f"{where}: dependency cycle {arrows} (each intent depends on the next); remove one "
            "of these depends_on entries",
            cycle,
        ) from None
