"""The intent as handlers see it: an :class:`~openintent.models.Intent` snapshot of a node and
its record, with ``inputs``, the final states of its dependencies (see
:func:`openintent._data.inputs`) and its wired inputs (see :mod:`openintent._wiring`)."""

from __future__ import annotations

from collections.abc import Mapping

from ._data import inputs
from ._nodes import Node
from ._wiring import wired
from .models import Intent

__all__ = ["Views"]


class Views:
    """Builds the :class:`Intent` views of one run's intents."""

    __slots__ = ("_ids", "_nodes", "_portfolio_id")

    def __init__(
        self, ids_by_title: Mapping[str, str], nodes_by_id: Mapping[str, Node], portfolio_id: str
    ) -> None:
        # A node is its intent's record: the nodes by id are the run's projection.
        self._ids = ids_by_title
        self._nodes = nodes_by_id
        self._portfolio_id = portfolio_id

    def of(self, node: Node, attempt: int, agent_id: str | None) -> Intent:
        """``node``'s intent as the handler of ``attempt`` by ``agent_id`` sees it."""
        spec = node.spec
        state = node.state  # frozen, and replaced on every change: a snapshot
        given = inputs(self._nodes, self._ids, spec.depends_on)
        if spec.inputs:
            given = wired(given, spec.inputs)
        return Intent(
            node.id,
            spec.title,
            spec.description,
            node.status,
            state,
            node.version,
            agent_id,
            spec.depends_on,
            spec.constraints,
            self._portfolio_id,
            attempt,
            given,
            spec.tags,
            node.id,
        )

    def now(self, intent_id: str) -> Intent:
        """An intent as it stands: its latest attempt, by its current assignee."""
        node = self._nodes[intent_id]
        return self.of(node, node.attempts, node.assigned_to)
