"""What the imperative client hands back: portfolios and intents as their log shows them.

Both are read from the portfolio's log through the projection every reader uses
(:func:`openintent._readback.load_run`): a client's view never disagrees with ``rt.load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._data import to_plain
from ._store import RawEvent
from .models import EventType, IntentStatus, RunResult

__all__ = ["ClientIntent", "ClientPortfolio", "intents_of", "is_draft", "portfolio_of"]


@attrs.frozen
class ClientIntent:
    """An intent of a client's portfolio. ``depends_on`` lists its dependencies' ids;
    ``assigned_to`` its agents (``"a,b"`` for several, ``None`` when unassigned)."""

    id: str
    portfolio_id: str
    title: str
    status: IntentStatus
    state: Mapping[str, Any]
    version: int
    assigned_to: str | None
    depends_on: tuple[str, ...]
    description: str = ""
    constraints: Any = None
    attempts: int = 0
    error: str | None = None


@attrs.frozen
class ClientPortfolio:
    """A portfolio in a store (``id`` is also its run's id: ``rt.load(portfolio.id)``).

    ``status`` is ``"draft"`` until it runs (``run_portfolio``), then its run's status;
    ``intent_ids`` its intents in creation order; ``created_by`` the client that made it
    (``None`` for a run started by ``rt.run``)."""

    id: str
    name: str
    description: str
    metadata: Mapping[str, Any]
    status: str
    intent_ids: tuple[str, ...]
    created_by: str | None = None


def is_draft(events: list[RawEvent] | Any) -> bool:
    """Whether a log is a client's portfolio that has not run yet."""
    if not events or events[0][0] != EventType.RUN_STARTED:
        return False
    if not (events[0][3] or {}).get("draft"):
        return False
    return not any(raw[0] == EventType.RUN_RESUMED for raw in events)


def portfolio_of(result: RunResult, events: Any) -> ClientPortfolio:
    """The :class:`ClientPortfolio` a loaded run shows."""
    started: Mapping[str, Any] = (events[0][3] or {}) if events else {}
    plan: Mapping[str, Any] = started.get("plan") or {}
    return ClientPortfolio(
        id=result.portfolio_id,
        name=result.name,
        description=plan.get("description", ""),
        metadata=to_plain(plan.get("metadata") or {}),
        status="draft" if is_draft(events) else str(result.status),
        intent_ids=tuple(intent.id for intent in result.intents.values()),
        created_by=started.get("draft"),
    )


def intents_of(result: RunResult, events: Any) -> list[ClientIntent]:
    """The :class:`ClientIntent` of each intent of a loaded run, in creation order."""
    ids = {intent.title: intent.id for intent in result.intents.values()}
    specs: dict[str, Mapping[str, Any]] = {}
    for type_, _time, intent_id, data in events:
        if type_ == EventType.CREATED:
            extra = data[4] if isinstance(data, tuple | list) else (data or {}).get("spec")
            specs[intent_id or ""] = extra or {}
    return [
        ClientIntent(
            id=intent.id,
            portfolio_id=result.portfolio_id,
            title=intent.title,
            status=intent.status,
            state=to_plain(intent.state),
            version=intent.version,
            assigned_to=intent.assigned_to,
            depends_on=tuple(ids[title] for title in intent.depends_on),
            description=specs.get(intent.id, {}).get("description", ""),
            constraints=to_plain(specs.get(intent.id, {}).get("constraints")),
            attempts=intent.attempts,
            error=intent.error,
        )
        for intent in result.intents.values()
    ]
