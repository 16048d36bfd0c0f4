"""Approvals from another process: a decision sent through a durable store's inbox, and the
watch that applies it in the process running the run.

``openintent approve STORE ID INTENT --by NAME`` (and, later, the client's ``approve``) calls
:func:`submit_decision`: it checks the run's journal at once (the run, the intent, a request
pending for it, ``by`` among the approvers that request names) and inserts a row into the
store's inbox. The run's log keeps one writer: the process running the run (it holds the
run's lease) notices the row (:class:`InboxWatch`), decides through the normal path (the log
gets ``approval_granted`` or ``approval_denied``, checked against the approvers again: that
process is the authority) and marks the row ``applied``, or ``refused`` with the reason.

Noticing is cheap: only while the run has an approval request pending, the watch compares
the inbox's ``data_version()`` every :data:`POLL` seconds of real time (SQLite's ``PRAGMA
data_version``, an in-memory counter; PostgreSQL's highest inbox row id and this process's
commit count) and reads the inbox only when it changed. An inbox that notifies (PostgreSQL:
``inbox.watch(run_id)``, the ``openintent_runs`` channel) is read at each notice of a
decision sent to the run instead, and every :data:`NOTIFIED_POLL` seconds as a fallback. The
wait is a cancel scope's deadline, so a :class:`~openintent.VirtualClock` still jumps
meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio

from ._handle import decide_approval, pending_approvals
from ._scheduler import Run
from ._stores import CommitFailed, EventBackend, RawEvent
from ._stores._sqlite_inbox import InboxDecision
from .errors import ApprovalError, StoreError
from .models import Event, EventType

__all__ = ["NOTIFIED_POLL", "POLL", "Inbox", "InboxDecision", "InboxWatch", "decision_of",
           "submit_decision"]

#: Seconds of real time between two looks at the inbox while a run waits for approval.
POLL = 0.25
#: The same for an inbox that notifies (PostgreSQL): a fallback for a notice lost.
NOTIFIED_POLL = 2.0


class Inbox(Protocol):
    """What a durable store's inbox does (:class:`~._stores._sqlite_inbox.SqliteInbox`,
    :class:`~._stores._pg_inbox.PgInbox`)."""

    def submit(self, run_id: str, intent_id: str, approve: bool, by: str, note: str) -> int: ...
    def data_version(self) -> int: ...
    def waiting(self, run_id: str) -> list[InboxDecision]: ...
    def get(self, decision_id: int) -> InboxDecision | None: ...
    def settle(self, decision_id: int, status: str, reason: str | None = None) -> bool: ...
    def lease_live(self, run_id: str) -> bool: ...


def inbox_of(backend: EventBackend) -> Inbox:
    """The inbox of a store that has one; :class:`StoreError` for ``memory://``."""
    inbox: Inbox | None = getattr(backend, "inbox", None)
    if inbox is None:
        raise StoreError(
            f"the store {backend.url} has no other process to send a decision from: a "
            "memory:// run is decided in the process running it (handle.approve(...), "
            "rt.approve(...)); journal runs in a SQLite file (store='sqlite:///runs.db') or a "
            "PostgreSQL database (store='postgresql://user@host/db') to approve them from "
            "another process"
        )
    return inbox


def submit_decision(
    backend: EventBackend, run_id: str, intent: str, approve: bool, by: str, note: str = ""
) -> InboxDecision:
    """Send a decision on run ``run_id``'s pending approval request for ``intent`` (an intent
    id, or a title one pending request has) to the process running it; the row recorded
    (``status == "pending"``: :func:`decision_of` tells later what became of it).

    Checked at once against the run's journal: :class:`~openintent.RunNotFoundError` for an
    unknown run; :class:`~openintent.ApprovalError` (nothing recorded) for an unknown intent,
    a run that has ended, no request pending for the intent, or ``by`` not among the
    approvers the request names; :class:`StoreError` for a store without an inbox
    (``memory://``).
    """
    inbox = inbox_of(backend)
    if not isinstance(by, str) or not by:
        raise ApprovalError("a decision needs by='who decides'; nothing was recorded")
    events = backend.read(run_id)  # RunNotFoundError for an unknown run
    titles, pending, ended = _approval_state(events)
    where = f"run {run_id} of the store {backend.url}"
    intent_id = _intent_id(intent, titles, pending, where)
    if ended is not None:
        raise ApprovalError(f"{where} has ended ({ended}); nothing in it waits for approval, "
                            f"so {intent!r} cannot be decided; nothing was recorded")
    if intent_id not in pending:
        waiting = ", ".join(f"{key} ({titles.get(key, '')!r})" for key in pending)
        raise ApprovalError(
            f"no approval request is pending for intent {titles.get(intent_id)!r} "
            f"({intent_id}) in {where}; pending: {waiting or 'none'}; nothing was recorded")
    approvers = pending[intent_id]
    if approvers and by not in approvers:
        raise ApprovalError(
            f"{by!r} may not decide on {titles.get(intent_id)!r} in {where}; approvers: "
            f"{', '.join(approvers)}; nothing was recorded")
    decision = inbox.get(inbox.submit(run_id, intent_id, approve, by, note))
    assert decision is not None
    return decision


def decision_of(backend: EventBackend, decision_id: int) -> InboxDecision | None:
    """A decision sent with :func:`submit_decision`, as it is now (``pending``, ``applied``
    or ``refused`` with a reason); ``None`` for an id the inbox does not hold."""
    return inbox_of(backend).get(decision_id)


def _approval_state(
    events: Sequence[RawEvent],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]], str | None]:
    """A journal's intents (id -> title), its pending approval requests (intent id -> the
    approvers named), and how the run ended (``None``: it goes on, or its process died)."""
    titles: dict[str, str] = {}
    pending: dict[str, tuple[str, ...]] = {}
    ended: str | None = None
    for type_, _time, intent_id, data in events:
        if type_ == EventType.CREATED and intent_id is not None:
            titles[intent_id] = str(data[0])
        elif type_ == EventType.APPROVAL_REQUESTED and intent_id is not None:
            approvers = (data or {}).get("approvers") if isinstance(data, dict) else None
            pending[intent_id] = tuple(str(name) for name in approvers or ())
        elif type_ in (EventType.APPROVAL_GRANTED, EventType.APPROVAL_DENIED):
            pending.pop(intent_id or "", None)
        elif type_ == EventType.RUN_RESUMED:
            ended = None  # (requests still waiting are asked again: they stay pending)
        elif type_ == EventType.RUN_FINISHED:
            ended = str((data or {}).get("status", "failed"))
    return titles, pending, ended


def _intent_id(intent: str, titles: dict[str, str], pending: dict[str, Any], where: str) -> str:
    if intent in titles:
        return intent
    named = [key for key, title in titles.items() if title == intent]
    waiting = [key for key in named if key in pending]
    if len(waiting) == 1 or len(named) == 1:
        return (waiting or named)[0]
    if named:
        raise ApprovalError(f"{len(named)} intents of {where} are titled {intent!r}; pass the "
                            f"intent id instead: {', '.join(named)}; nothing was recorded")
    known = ", ".join(repr(title) for title in list(titles.values())[:10])
    raise ApprovalError(f"{where} has no intent with the id or title {intent!r} (its intents: "
                        f"{known or 'none'}); nothing was recorded")


class InboxWatch:
    """Applies the decisions other processes send to one run (see the module docstring);
    :meth:`serve` runs while the run goes on, beside its lease renewal. ``poll``: seconds
    between two looks (default :data:`POLL`; :data:`NOTIFIED_POLL` for an inbox that
    notifies, where the look is only the fallback)."""

    def __init__(self, run: Run, inbox: Inbox, poll: float | None = None) -> None:
        self.run = run
        self.inbox = inbox
        #: ``inbox.watch(run_id)``: the inbox's notices of decisions sent to a run (the
        #: PostgreSQL store's), else ``None``.
        self._notices: Callable[[str], Any] | None = getattr(inbox, "watch", None)
        self.poll = poll if poll is not None else (
            POLL if self._notices is None else NOTIFIED_POLL)
        self._asked: anyio.Event | None = None
        run.bus.observe(self._on_event)

    def _on_event(self, event: Event) -> None:
        asked = self._asked
        if asked is not None and event.type == EventType.APPROVAL_REQUESTED:
            asked.set()

    async def serve(self) -> None:
        """Until cancelled: while an approval request of the run is pending, look at the
        inbox every ``poll`` seconds (when the file changed), or at each notice of a decision
        sent to the run (an inbox that notifies); else wait for a request."""
        if self._notices is None:
            await self._serve_polling()
            return
        watch = None
        again = False  # looking again once the run's events are on disk
        try:
            while True:
                if not await self._ready():
                    continue
                if watch is None:  # the first request: from now on, notices wake the look
                    watch = self._notices(self.run.store.portfolio_id)
                watch.clear()  # about to look
                try:
                    deferred = await self._apply()
                except CommitFailed:
                    raise
                except StoreError as exc:  # the run goes on; the next look tries again
                    deferred = False
                    self.run.store.logger.error("reading the approval inbox failed",
                                                error=str(exc))
                journal = self.run.store.journal
                if deferred and journal is not None and not again:
                    again = True  # once: a request still not on disk after it waits below
                    await journal.wait_committed(len(self.run.store.events))
                    continue
                again = False
                await self._notice_or_request(watch)
        finally:
            if watch is not None:
                watch.close()

    async def _ready(self) -> bool:
        """Whether a request is pending and on disk; else wait for that, and ``False``."""
        run, store = self.run, self.run.store
        chain = run.guardrails
        assert chain is not None
        if not chain.pending_approvals():
            self._asked = asked = anyio.Event()
            await asked.wait()
            self._asked = None
            return False
        if store.journal is not None and not pending_approvals([run]):
            await store.journal.wait_committed(len(store.events))  # asked, not yet on disk
            return False
        return True

    async def _notice_or_request(self, watch: Any) -> None:
        """Wait for a notice, a new approval request of the run (a decision sent before it
        was asked applies then), or ``poll`` seconds."""
        self._asked = asked = anyio.Event()
        try:
            async with anyio.create_task_group() as group:
                async def noticed() -> None:
                    await watch.wait(self.poll)
                    group.cancel_scope.cancel()

                group.start_soon(noticed)
                await asked.wait()
                group.cancel_scope.cancel()
        finally:
            self._asked = None

    async def _serve_polling(self) -> None:
        """:meth:`serve` for an inbox that does not notify: its ``data_version()``, every
        ``poll`` seconds."""
        store = self.run.store
        seen: int | None = None
        while True:
            if not await self._ready():
                continue
            try:
                version = self.inbox.data_version()
                if version != seen:
                    seen = version
                    await self._apply()
                    continue
            except CommitFailed:
                raise
            except StoreError as exc:  # the run goes on; the next look tries again
                seen = None
                store.logger.error("reading the approval inbox failed", error=str(exc))
            # A cancel scope's deadline, not a sleep: a virtual clock still jumps meanwhile.
            with anyio.move_on_after(self.poll):
                await anyio.Event().wait()

    async def _apply(self) -> bool:
        """Apply the decisions waiting in the inbox; whether one waits for its request to
        be on disk (look again once it is)."""
        run, store = self.run, self.run.store
        deferred = False
        chain = run.guardrails
        assert chain is not None
        for row in self.inbox.waiting(store.portfolio_id):
            requests = [guardrail.requests[row.intent_id] for guardrail in chain.approvals()
                        if row.intent_id in guardrail.requests]
            waiting = [request for request in requests if request.decision is None]
            if waiting and row.intent_id not in {
                    request.intent_id for request in pending_approvals([run])}:
                deferred = True
                continue  # asked, not on disk yet: the next look applies it
            if not requests:
                continue  # not asked (yet) in this sitting: a resumed run asks again
            if not waiting:
                done = requests[-1]
                self.inbox.settle(row.id, "refused",
                                  f"already {done.decision} by {done.decided_by}")
                continue
            try:
                decide_approval([run], row.intent_id, row.approve, row.by, row.note)
            except ApprovalError as exc:
                self.inbox.settle(row.id, "refused", str(exc))
                continue
            # Applied once its decision is on disk; shielded: the decision may end the run
            # (a denial), which cancels this watch.
            with anyio.CancelScope(shield=True):
                if store.journal is not None:
                    await store.journal.wait_committed(len(store.events))
                self.inbox.settle(row.id, "applied")
        return deferred
