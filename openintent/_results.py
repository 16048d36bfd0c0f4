"""Results: a run's intent records seen by title, as ``result.intents`` (and, read-only, as
``portfolio.results`` for ``@on_all_complete``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ._registry import suggest
from ._store import Records
from .models import IntentResult

__all__ = ["ResultsView"]


class ResultsView(Mapping[str, IntentResult]):
    """Intent results by title, in declaration order, built from the projection on access.

    Each result's state is its own deep copy, or with ``views`` a read-only view.
    """

    __slots__ = ("_records", "_ids", "_cache", "_views")

    def __init__(
        self, records: Records, ids_by_title: Mapping[str, str], *, views: bool = False
    ) -> None:
        self._records = records
        self._ids = ids_by_title
        self._cache: dict[str, IntentResult] = {}
        self._views = views

    def __getitem__(self, title: str) -> IntentResult:
        cached = self._cache.get(title)
        if cached is None:
            intent_id = self._ids.get(title)
            if intent_id is None:
                raise KeyError(_unknown_title(title, list(self._ids)))
            cached = self._cache[title] = self._records[intent_id].to_result(view=self._views)
        return cached

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<{len(self._ids)} intent results>"


def _unknown_title(title: str, titles: list[str]) -> str:
    known = ", ".join(titles) or "none"
    return f"no intent titled {title!r}{suggest(title, titles)}; titles: {known}"
