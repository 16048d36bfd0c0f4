"""The imperative client: portfolios built call by call, then run with the registered agents.

:class:`OpenIntentClient` is synchronous; :class:`AsyncOpenIntentClient` has the same methods,
awaited. Both act as their ``agent_id`` (the holder of their leases, the recorder of their
decisions) on the store ``base_url`` names (``memory://``: the process's store, shared by
every client and ``Runtime(store="memory://")``). The work is in :mod:`._client_core`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from ._client_core import COORDINATOR, ClientCore, running
from ._client_views import ClientIntent, ClientPortfolio
from ._clock import Clock
from ._handle import decide_approval, pending_approvals
from ._inbox import InboxDecision, submit_decision
from ._launch import run_fence
from ._leases import Lease
from ._plan import portfolio_of_intent
from .errors import ApprovalError, OpenIntentError
from .guardrails import ApprovalRequest
from .models import Decision, Event, RunResult

__all__ = ["AsyncOpenIntentClient", "OpenIntentClient"]


async def _run_portfolio(core: ClientCore, portfolio_id: str) -> RunResult:
    from .runtime import Runtime  # the facade the client drives (it never imports the client)

    core.check_runnable(portfolio_id)
    fenced = run_fence.set(core.fence_of(portfolio_id))
    try:
        async with Runtime(store=core.base_url, clock=core.clock) as runtime:
            running.add(runtime)
            try:
                return await runtime.resume(portfolio_id)
            finally:
                running.discard(runtime)
    finally:
        run_fence.reset(fenced)


async def _start_portfolio(core: ClientCore, portfolio_id: str) -> str:
    from ._detach import start_draft_detached
    from ._worker import task_queue_of
    from .runtime import Runtime

    call = "start_portfolio"
    task_queue_of(core.backend, f"{call}()")
    core.check_runnable(portfolio_id, call)
    async with Runtime(store=core.base_url, clock=core.clock) as runtime:
        return await start_draft_detached(runtime, portfolio_id, f"client.{call}()")


def _active_runs() -> list[Any]:
    return [run for runtime in list(running) for run in runtime._runs.active]


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
            return True
        except RuntimeError:
            pass
    return False


class _Methods:
    """The methods both clients share, synchronous (see each client)."""

    def __init__(self, *, agent_id: str, base_url: str = "memory://",
                 clock: Clock | None = None) -> None:
        self._core = ClientCore(agent_id, base_url, clock)

    def close(self) -> None:
        """Close the client's store connections (a SQLite file's); ``with client:`` does."""
        self._core.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def agent_id(self) -> str:
        """Who this client acts as: its leases' holder, its decisions' recorder."""
        return self._core.agent_id

    @property
    def base_url(self) -> str:
        """The store it works on."""
        return self._core.base_url

    def _create_portfolio(self, name: str, description: str = "",
                          metadata: Mapping[str, Any] | None = None,
                          guardrails: Sequence[Any] | None = None) -> ClientPortfolio:
        return self._core.create_portfolio(name, description, metadata, guardrails)

    def _create_intent(self, title: str, portfolio_id: str | None = None,
                       depends_on: Sequence[str] = (), description: str = "",
                       constraints: Any = None, initial_state: Mapping[str, Any] | None = None,
                       assign: str | Sequence[str] | None = None) -> ClientIntent:
        return self._core.create_intent(title, portfolio_id, depends_on, description,
                                        constraints, initial_state, assign)

    def _record_decision(self, portfolio_id: str | None = None, intent_id: str | None = None,
                         *, decision: str, rationale: str = "", **data: Any) -> Decision:
        return self._core.record_decision(portfolio_id, intent_id, decision, rationale, data)

    def _decide(self, intent_id: str, approve: bool, by: str | None, note: str,
                portfolio_id: str | None) -> ApprovalRequest | InboxDecision:
        who = by or self.agent_id
        runs = [run for run in _active_runs()
                if portfolio_id is None or run.portfolio_id == portfolio_id]
        if any(request.intent_id == intent_id or request.title == intent_id
               for request in pending_approvals(runs)):
            return decide_approval(runs, intent_id, approve, who, note)
        backend = self._core.backend
        if getattr(backend, "inbox", None) is not None:
            # A run going on in another process (or runtime): through the store's inbox.
            run_id = portfolio_id or portfolio_of_intent(intent_id)
            if run_id is None:
                raise ApprovalError(
                    f"{intent_id!r} is not an intent id; to decide by title, pass "
                    "portfolio_id= (the run whose request it is)")
            return submit_decision(backend, run_id, intent_id, approve, who, note)
        if not runs:
            raise OpenIntentError(
                f"no portfolio is running in this process, so nothing waits for approval of "
                f"{intent_id!r}; approve while run_portfolio runs (AsyncOpenIntentClient), or "
                "journal runs in a SQLite store to decide them from another process")
        return decide_approval(runs, intent_id, approve, who, note)


class OpenIntentClient(_Methods):
    """A synchronous client over a store (``base_url``: ``"memory://"``).

    >>> client = OpenIntentClient(agent_id="coordinator", base_url="memory://")
    >>> portfolio = client.create_portfolio(name="Manual Pipeline")

    ``clock`` (default: real time) dates its events and times its leases. Called inside a
    running event loop it raises :class:`~openintent.OpenIntentError` (it would block the
    loop): use :class:`AsyncOpenIntentClient` there.
    """

    def _sync(self, call: str) -> None:
        if _in_event_loop():
            raise OpenIntentError(
                f"OpenIntentClient.{call}() was called inside a running event loop, where a "
                "synchronous client would block it; use AsyncOpenIntentClient (the same "
                f"methods, awaited: `await client.{call}(...)`)")

    def create_portfolio(self, name: str, description: str = "",
                         metadata: Mapping[str, Any] | None = None,
                         guardrails: Sequence[Any] | None = None) -> ClientPortfolio:
        """Create an empty portfolio (a draft until :meth:`run_portfolio`); ``guardrails``
        as ``PortfolioSpec``'s (as data: ``{"type": "approval", "require_for": [...]}``)."""
        self._sync("create_portfolio")
        return self._create_portfolio(name, description, metadata, guardrails)

    def get_portfolio(self, portfolio_id: str) -> ClientPortfolio:
        """A portfolio by id (:class:`~openintent.errors.RunNotFoundError` if unknown)."""
        self._sync("get_portfolio")
        return self._core.portfolio(portfolio_id)

    def list_portfolios(self) -> list[ClientPortfolio]:
        """Every portfolio of the store (runs of ``rt.run`` too), oldest first."""
        self._sync("list_portfolios")
        return self._core.portfolios()

    def create_intent(self, title: str, portfolio_id: str | None = None,
                      depends_on: Sequence[str] = (), description: str = "",
                      constraints: Any = None, initial_state: Mapping[str, Any] | None = None,
                      assign: str | Sequence[str] | None = None) -> ClientIntent:
        """Add an intent to a draft portfolio (``depends_on``: intent ids of the same
        portfolio). Without ``portfolio_id``, a portfolio of its own is made for it."""
        self._sync("create_intent")
        return self._create_intent(title, portfolio_id, depends_on, description, constraints,
                                   initial_state, assign)

    def get_intent(self, intent_id: str) -> ClientIntent:
        """An intent by id."""
        self._sync("get_intent")
        return self._core.intent(intent_id)

    def list_intents(self, portfolio_id: str | None = None,
                     status: str | None = None) -> list[ClientIntent]:
        """The intents of a portfolio (or of all), optionally of one status."""
        self._sync("list_intents")
        return self._core.intents(portfolio_id, status)

    def add_dependency(self, intent_id: str, depends_on: str) -> ClientIntent:
        """Make ``intent_id`` wait for ``depends_on`` (a cycle is refused)."""
        self._sync("add_dependency")
        return self._core.add_dependency(intent_id, depends_on)

    def assign_agent(self, intent_id: str, agent_id: str) -> ClientIntent:
        """Add an agent to the intent's assignees (any id: an unknown one fails the run)."""
        self._sync("assign_agent")
        return self._core.assign(intent_id, agent_id, True)

    def unassign_agent(self, intent_id: str, agent_id: str | None = None) -> ClientIntent:
        """Remove an agent (or, with none given, all) from the intent's assignees."""
        self._sync("unassign_agent")
        return self._core.assign(intent_id, agent_id, False)

    def patch_state(self, intent_id: str, patch: Mapping[str, Any],
                    expected_version: int | None = None) -> ClientIntent:
        """Merge ``patch`` into the intent's state; with ``expected_version``, a
        :class:`~openintent.StateConflictError` when the intent is at another version."""
        self._sync("patch_state")
        return self._core.patch_state(intent_id, patch, expected_version)

    def acquire_coordinator_lease(self, portfolio_id: str, ttl_seconds: float = 60.0) -> Lease:
        """Take the portfolio's coordinator lease for ``ttl_seconds`` (see :class:`Lease`);
        :class:`~openintent.LeaseHeldError` while another holder's is live."""
        self._sync("acquire_coordinator_lease")
        return self._core.acquire(portfolio_id, COORDINATOR, ttl_seconds)

    def acquire_lease(self, target_id: str, scope: str, ttl_seconds: float = 60.0) -> Lease:
        """Take a lease on a portfolio or an intent for ``scope``."""
        self._sync("acquire_lease")
        return self._core.acquire(target_id, scope, ttl_seconds)

    def record_decision(self, portfolio_id: str | None = None, intent_id: str | None = None,
                        *, decision: str, rationale: str = "", **data: Any) -> Decision:
        """Append a decision record (by this client's ``agent_id``) to the portfolio's log."""
        self._sync("record_decision")
        return self._record_decision(portfolio_id, intent_id, decision=decision,
                                     rationale=rationale, **data)

    def list_decisions(self, portfolio_id: str | None = None,
                       intent_id: str | None = None) -> list[Decision]:
        """The decision records of a portfolio (or of one intent)."""
        self._sync("list_decisions")
        return self._core.decisions(portfolio_id, intent_id)

    def list_events(self, portfolio_id: str) -> list[Event]:
        """The portfolio's events, from its first."""
        self._sync("list_events")
        return self._core.events(portfolio_id)

    def pending_approvals(self) -> list[ApprovalRequest]:
        """The approval requests of the portfolios running in this process."""
        return pending_approvals(_active_runs())

    def approve(self, intent_id: str, *, by: str | None = None, note: str = "",
                portfolio_id: str | None = None) -> ApprovalRequest | InboxDecision:
        """Approve a pending request (``by``: this client's ``agent_id`` by default).

        A run going on in this process is decided at once (the :class:`ApprovalRequest`
        comes back); one going on in another process (a SQLite store) gets the decision
        through the store's inbox: the :class:`InboxDecision` sent comes back, and that
        process applies it within about a second (checking ``by`` against its approvers
        again). ``intent_id`` may be a title when ``portfolio_id`` is given."""
        return self._decide(intent_id, True, by, note, portfolio_id)

    def deny(self, intent_id: str, *, by: str | None = None, note: str = "",
             portfolio_id: str | None = None) -> ApprovalRequest | InboxDecision:
        """Deny a pending request: the intent fails without running (see :meth:`approve`)."""
        return self._decide(intent_id, False, by, note, portfolio_id)

    def run_portfolio(self, portfolio_id: str) -> RunResult:
        """Run the portfolio to its end with the registered agents (the same
        :class:`~openintent.RunResult` as ``Runtime.run``); refused while another holder's
        lease on it is live, and for a portfolio that ran."""
        self._sync("run_portfolio")
        return anyio.run(_run_portfolio, self._core, portfolio_id)

    def start_portfolio(self, portfolio_id: str) -> str:
        """Start the portfolio's run and leave it to the workers of the store
        (``rt.serve()`` / ``openintent worker``), as ``openintent run --detach`` does: its
        start is journaled, then a worker that can coordinate it adopts it and runs every
        intent through the store's task queue. Returns the run id (``portfolio_id``); follow
        it with :meth:`get_portfolio` / :meth:`list_events`. Needs a store with a task queue
        (``postgresql://``, or ``memory://?workers=1`` in one process); refused as
        :meth:`run_portfolio` is for a portfolio that ran or another holder's live lease."""
        self._sync("start_portfolio")
        return anyio.run(_start_portfolio, self._core, portfolio_id)


class AsyncOpenIntentClient(_Methods):
    """:class:`OpenIntentClient` with every method awaited."""

    async def create_portfolio(self, name: str, description: str = "",
                               metadata: Mapping[str, Any] | None = None,
                               guardrails: Sequence[Any] | None = None) -> ClientPortfolio:
        """See :meth:`OpenIntentClient.create_portfolio`."""
        return self._create_portfolio(name, description, metadata, guardrails)

    async def get_portfolio(self, portfolio_id: str) -> ClientPortfolio:
        """See :meth:`OpenIntentClient.get_portfolio`."""
        return self._core.portfolio(portfolio_id)

    async def list_portfolios(self) -> list[ClientPortfolio]:
        """See :meth:`OpenIntentClient.list_portfolios`."""
        return self._core.portfolios()

    async def create_intent(self, title: str, portfolio_id: str | None = None,
                            depends_on: Sequence[str] = (), description: str = "",
                            constraints: Any = None,
                            initial_state: Mapping[str, Any] | None = None,
                            assign: str | Sequence[str] | None = None) -> ClientIntent:
        """See :meth:`OpenIntentClient.create_intent`."""
        return self._create_intent(title, portfolio_id, depends_on, description, constraints,
                                   initial_state, assign)

    async def get_intent(self, intent_id: str) -> ClientIntent:
        """See :meth:`OpenIntentClient.get_intent`."""
        return self._core.intent(intent_id)

    async def list_intents(self, portfolio_id: str | None = None,
                           status: str | None = None) -> list[ClientIntent]:
        """See :meth:`OpenIntentClient.list_intents`."""
        return self._core.intents(portfolio_id, status)

    async def add_dependency(self, intent_id: str, depends_on: str) -> ClientIntent:
        """See :meth:`OpenIntentClient.add_dependency`."""
        return self._core.add_dependency(intent_id, depends_on)

    async def assign_agent(self, intent_id: str, agent_id: str) -> ClientIntent:
        """See :meth:`OpenIntentClient.assign_agent`."""
        return self._core.assign(intent_id, agent_id, True)

    async def unassign_agent(self, intent_id: str, agent_id: str | None = None) -> ClientIntent:
        """See :meth:`OpenIntentClient.unassign_agent`."""
        return self._core.assign(intent_id, agent_id, False)

    async def patch_state(self, intent_id: str, patch: Mapping[str, Any],
                          expected_version: int | None = None) -> ClientIntent:
        """See :meth:`OpenIntentClient.patch_state`."""
        return self._core.patch_state(intent_id, patch, expected_version)

    async def acquire_coordinator_lease(self, portfolio_id: str,
                                        ttl_seconds: float = 60.0) -> Lease:
        """See :meth:`OpenIntentClient.acquire_coordinator_lease`."""
        return self._core.acquire(portfolio_id, COORDINATOR, ttl_seconds)

    async def acquire_lease(self, target_id: str, scope: str,
                            ttl_seconds: float = 60.0) -> Lease:
        """See :meth:`OpenIntentClient.acquire_lease`."""
        return self._core.acquire(target_id, scope, ttl_seconds)

    async def record_decision(self, portfolio_id: str | None = None,
                              intent_id: str | None = None, *, decision: str,
                              rationale: str = "", **data: Any) -> Decision:
        """See :meth:`OpenIntentClient.record_decision`."""
        return self._record_decision(portfolio_id, intent_id, decision=decision,
                                     rationale=rationale, **data)

    async def list_decisions(self, portfolio_id: str | None = None,
                             intent_id: str | None = None) -> list[Decision]:
        """See :meth:`OpenIntentClient.list_decisions`."""
        return self._core.decisions(portfolio_id, intent_id)

    async def list_events(self, portfolio_id: str) -> list[Event]:
        """See :meth:`OpenIntentClient.list_events`."""
        return self._core.events(portfolio_id)

    async def pending_approvals(self) -> list[ApprovalRequest]:
        """See :meth:`OpenIntentClient.pending_approvals`."""
        return pending_approvals(_active_runs())

    async def approve(self, intent_id: str, *, by: str | None = None, note: str = "",
                      portfolio_id: str | None = None) -> ApprovalRequest | InboxDecision:
        """See :meth:`OpenIntentClient.approve`."""
        return self._decide(intent_id, True, by, note, portfolio_id)

    async def deny(self, intent_id: str, *, by: str | None = None, note: str = "",
                   portfolio_id: str | None = None) -> ApprovalRequest | InboxDecision:
        """See :meth:`OpenIntentClient.deny`."""
        return self._decide(intent_id, False, by, note, portfolio_id)

    async def run_portfolio(self, portfolio_id: str) -> RunResult:
        """See :meth:`OpenIntentClient.run_portfolio`."""
        return await _run_portfolio(self._core, portfolio_id)

    async def start_portfolio(self, portfolio_id: str) -> str:
        """See :meth:`OpenIntentClient.start_portfolio`."""
        return await _start_portfolio(self._core, portfolio_id)
