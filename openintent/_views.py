"""The intent as handlers see it: an :class:`~openintent.models.Intent` snapshot of a node and
its record, with ``inputs``, the final states of its dependencies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._data import EMPTY, FrozenDict, to_plain
from ._nodes import Node
from ._store import IntentRecord
from .models import Intent

__all__ = ["Inputs", "Views"]


class Views:
    """Builds the :class:`Intent` views of one run's intents."""

    __slots__ = ("_records", "_ids", "_nodes", "_portfolio_id")

    def __init__(
        self,
        records: Mapping[str, IntentRecord],
        ids_by_title: Mapping[str, str],
        nodes_by_id: Mapping[str, Node],
        portfolio_id: str,
    ) -> None:
        self._records = records
        self._ids = ids_by_title
        self._nodes = nodes_by_id
        self._portfolio_id = portfolio_id

    def of(self, node: Node, attempt: int, agent_id: str | None) -> Intent:
        """``node``'s intent as the handler of ``attempt`` by ``agent_id`` sees it."""
        record = node.record
        spec = node.spec
        state = record.state  # replaced on every change, never changed in place: a snapshot
        return Intent(
            node.id,
            spec.title,
            spec.description,
            record.status,
            FrozenDict(state) if state else EMPTY,
            record.version,
            agent_id,
            spec.depends_on,
            spec.constraints,
            self._portfolio_id,
            attempt,
            Inputs(self._records, self._ids, spec.depends_on) if spec.depends_on else EMPTY,
            spec.tags,
            node.id,
        )

    def now(self, intent_id: str) -> Intent:
        """An intent as it stands: its latest attempt, by its current assignee."""
        record = self._records[intent_id]
        return self.of(self._nodes[intent_id], record.attempts, record.assigned_to)


class Inputs(Mapping[str, Mapping[str, Any]]):
    """``intent.inputs``: each dependency's title mapped to its final state (deep read-only
    views)."""

    __slots__ = ("_records", "_ids", "_titles")

    def __init__(
        self, records: Mapping[str, IntentRecord], ids: Mapping[str, str],
        titles: tuple[str, ...],
    ) -> None:
        self._records = records
        self._ids = ids
        self._titles = titles

    def __getitem__(self, title: str) -> Mapping[str, Any]:
        if title not in self._titles:
            raise KeyError(
                f"{title!r} is not a dependency of this intent; inputs has {list(self._titles)}"
            )
        state = self._records[self._ids[title]].state
        return FrozenDict(state) if state else EMPTY

    def __iter__(self) -> Iterator[str]:
        return iter(self._titles)

    def __len__(self) -> int:
        return len(self._titles)

    def to_plain(self) -> dict[str, Any]:
        """A plain, mutable deep copy, as views give."""
        return {title: to_plain(self[title]) for title in self._titles}

    copy = __copy__ = to_plain

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return self.to_plain()

    def __repr__(self) -> str:
        return repr(self.to_plain())
