"""The imperative client's work, shared by :class:`~openintent.OpenIntentClient` and
:class:`~openintent.AsyncOpenIntentClient` (see :mod:`openintent._client`).

One source of truth: a client's portfolio *is* a run's log in the store (its id is the run's
id). ``create_portfolio`` starts the log with a ``run_started`` marked ``draft`` (by the
client's ``agent_id``); each change is an event appended to it (``created``,
``dependency_added``, ``agent_assigned``, ``agent_unassigned``, ``state_patched``,
``decision_recorded``), projected like every run's events (``_store._APPLY``), so
``rt.load``, ``rt.runs`` and the testing kit's oracle read it as they read any run.
``run_portfolio`` then continues that log as ``rt.resume`` does (the plan from
``_plan_data.logged_plan``): its ``run_resumed`` says ``"from": "draft"``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ._client_views import ClientIntent, ClientPortfolio, intents_of, is_draft, portfolio_of
from ._clock import Clock, RealClock
from ._guardrail_core import build_guardrails
from ._json_data import json_data
from ._leases import Lease, LeaseTable
from ._plan import decision_id, intent_id_prefix, new_portfolio_id
from ._plan_data import intent_data
from ._readback import load_run
from ._specs import IntentSpec
from ._stores import EventBackend, open_backend
from .errors import (
    LeaseHeldError,
    LeaseLostError,
    OpenIntentError,
    RunNotFoundError,
    StateConflictError,
)
from .models import Decision, Event, EventType, IntentStatus, RunResult

__all__ = ["ClientCore", "COORDINATOR"]

#: The scope of a coordinator's lease on a portfolio.
COORDINATOR = "coordinator"

#: The runtimes running a client's portfolio in this process now (approvals reach them).
running: weakref.WeakSet[Any] = weakref.WeakSet()


def _backend(base_url: object) -> EventBackend:
    if not isinstance(base_url, str):
        raise OpenIntentError(f"base_url names a store, such as 'memory://', got {base_url!r}")
    if base_url.startswith(("http://", "https://")):
        raise OpenIntentError(
            f"base_url {base_url!r} names a server, but openintent runs in this process and "
            "has no network layer; pass a store URL instead: 'memory://' (shared by this "
            "process), 'sqlite:///path/to/runs.db' (shared by processes) or "
            "'postgresql://user@host/db' (shared by processes on several machines)")
    return open_backend(base_url)


class ClientCore:
    """What both clients do (see the module docstring): synchronous, no event loop needed
    (but for running a portfolio, which the facades drive)."""

    def __init__(self, agent_id: str, base_url: str, clock: Clock | None) -> None:
        if not isinstance(agent_id, str) or not agent_id:
            raise OpenIntentError(f"the client needs agent_id='who acts', got {agent_id!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise OpenIntentError(f"clock= takes a clock such as VirtualClock(), got {clock!r}")
        self.agent_id = agent_id
        self.base_url = base_url
        self.backend = _backend(base_url)
        self.clock: Clock = clock if clock is not None else RealClock()
        backend: Any = self.backend
        self.leases: LeaseTable = backend.lease_table()
        # Leases are on the client's clock in memory, on real time in a file shared by
        # processes (which share no other clock).
        self.lease_now: Callable[[], float] = (time.time if self.backend.durable
                                              else self.clock.now)
        self.held: dict[tuple[str, str], Lease] = {}  # this client's leases

    # ------------------------------------------------------------------ reading

    def log(self, portfolio_id: str) -> Any:
        """The raw log of a portfolio (a clear error for an unknown id)."""
        if not isinstance(portfolio_id, str):
            raise OpenIntentError(f"a portfolio id is a str (portfolio.id), got {portfolio_id!r}")
        backend: Any = self.backend
        try:
            return backend.read_list(portfolio_id)
        except (RunNotFoundError, KeyError):
            raise RunNotFoundError(
                f"the store {self.base_url} holds no portfolio {portfolio_id!r}; "
                "list_portfolios() lists the ones it holds") from None

    def loaded(self, portfolio_id: str) -> tuple[RunResult, Any]:
        events = self.log(portfolio_id)
        return load_run(self.backend, portfolio_id), events

    def portfolio(self, portfolio_id: str) -> ClientPortfolio:
        return portfolio_of(*self.loaded(portfolio_id))

    def portfolios(self) -> list[ClientPortfolio]:
        return [self.portfolio(info.portfolio_id) for info in self.backend.runs()
                if info.parent is None]

    def owner(self, intent_id: str) -> str:
        """The portfolio id of an intent id (``in_<hex>_<n>`` belongs to ``pf_<hex>``)."""
        if not isinstance(intent_id, str) or not intent_id.startswith("in_") or \
                "_" not in intent_id[3:]:
            raise OpenIntentError(f"{intent_id!r} is not an intent id (intent.id, 'in_...')")
        portfolio_id = "pf_" + intent_id[3:].rsplit("_", 1)[0]
        return portfolio_id

    def intent(self, intent_id: str) -> ClientIntent:
        try:
            found = [intent for intent in intents_of(*self.loaded(self.owner(intent_id)))
                     if intent.id == intent_id]
        except RunNotFoundError:
            found = []
        if not found:
            raise RunNotFoundError(f"the store {self.base_url} holds no intent {intent_id!r}; "
                                   "list_intents() lists the ones it holds")
        return found[0]

    def intents(self, portfolio_id: str | None, status: Any) -> list[ClientIntent]:
        ids = ([portfolio_id] if portfolio_id is not None
               else [portfolio.id for portfolio in self.portfolios()])
        wanted = None if status is None else IntentStatus(status)
        found: list[ClientIntent] = []
        for pid in ids:
            found.extend(intent for intent in intents_of(*self.loaded(pid))
                         if wanted is None or intent.status is wanted)
        return found

    def decisions(self, portfolio_id: str | None, intent_id: str | None) -> list[Decision]:
        if portfolio_id is None and intent_id is None:
            raise OpenIntentError("list_decisions needs portfolio_id= or intent_id=")
        pid = portfolio_id if portfolio_id is not None else self.owner(intent_id or "")
        result, _events = self.loaded(pid)
        return [decision for decision in result.decisions
                if intent_id is None or decision.intent_id == intent_id]

    def events(self, portfolio_id: str) -> list[Event]:
        result, _events = self.loaded(portfolio_id)
        return list(result.events)

    # ------------------------------------------------------------------ writing

    def _now(self) -> float:
        return self.clock.now()

    def _append(self, events: Any, type_: str, intent_id: str | None, data: Any) -> None:
        events.append((type_, self._now(), intent_id, data))

    @contextmanager
    def _writing(self, portfolio_id: str, what: str,
                 intent_id: str | None = None) -> Iterator[Any]:
        """The log of a draft portfolio ``what`` may append to, under this client's leases
        (refused while another holder's lease is live, or with a stale lease of ours), in
        one transaction of the store: a refused write is never applied."""
        self.log(portfolio_id)  # a clear error for an unknown id
        backend: Any = self.backend
        with backend.client_write(portfolio_id) as events:
            if not is_draft(events):
                ran = (events and (events[0][3] or {}).get("draft"))
                raise OpenIntentError(
                    f"{what}: portfolio {portfolio_id} "
                    + ("has run (run_portfolio), so its plan, state and decisions are its "
                       "run's now" if ran else
                       "is a run started by rt.run(), not a client's portfolio")
                    + "; create a new portfolio for more work")
            self.fence(portfolio_id, what, intent_id)
            yield events

    def fence(self, portfolio_id: str, what: str, intent_id: str | None = None) -> None:
        """Refuse a write while another holder's lease on the portfolio (or the intent) is
        live, and a write under a lease of ours that is stale (nothing is written)."""
        now = self.lease_now()
        for target in (portfolio_id, intent_id):
            if target is None:
                continue
            for (held_target, _scope), lease in list(self.held.items()):
                if held_target == target and not lease.released:
                    lease.check(what)
            for scope in self._scopes(target):
                live = self.leases.holder(target, scope, now)
                if live is not None and live[0] != self.agent_id:
                    raise LeaseHeldError(
                        f"{what} refused: the {scope} lease of {target} is held by "
                        f"{live[0]!r} until {self._when(live[1])} (now {self._when(now)}); "
                        "nothing was written", holder=live[0], expires_at=live[1])

    def _when(self, time_: float) -> str:
        """A lease time as a message shows it: UTC for a file's (real time), else the
        client clock's time."""
        if self.backend.durable:
            return datetime.fromtimestamp(time_, UTC).isoformat(timespec="milliseconds")
        return f"clock time {time_:g}"

    def _scopes(self, target: str) -> list[str]:
        return sorted({scope for (held, scope) in self.leases.targets() if held == target})

    def create_portfolio(self, name: str, description: str,
                         metadata: Mapping[str, Any] | None,
                         guardrails: Sequence[Any] | None = None) -> ClientPortfolio:
        if not isinstance(name, str) or not name.strip():
            raise OpenIntentError(f"create_portfolio needs a name, got {name!r}")
        if not isinstance(description, str):
            raise OpenIntentError(f"description is a str, got {description!r}")
        plan: dict[str, Any] = {}
        if description:
            plan["description"] = description
        if metadata:
            plan["metadata"] = json_data(dict(metadata), "create_portfolio(metadata=...)")
        if guardrails:  # kept as data in the log: run_portfolio rebuilds them from it
            plan["guardrails"] = [guardrail.to_data() for guardrail in
                                  build_guardrails(guardrails, "create_portfolio(...)")]
        portfolio_id = new_portfolio_id()
        now = self._now()
        timebase = datetime.now(UTC).timestamp() - now
        wall = getattr(self.clock, "wall", None)
        if wall is not None:
            timebase = wall(0.0).timestamp()
        created = self.backend.create_run(portfolio_id, name, timebase=timebase)
        keep = getattr(self.backend, "keep", None)
        if keep is not None:  # memory:// holds a client's portfolio as long as the store
            keep(portfolio_id)
        del created  # (a SQLite store's live log of it: the client writes through the file)
        backend: Any = self.backend
        with backend.client_write(portfolio_id) as events:
            events.append((EventType.RUN_STARTED, now, None,
                           {"name": name, "intents": 0, "coordinator": None, "plan": plan,
                            "draft": self.agent_id}))
        return self.portfolio(portfolio_id)

    def create_intent(self, title: str, portfolio_id: str | None, depends_on: Sequence[str],
                      description: str, constraints: Any, initial_state: Any,
                      assign: Any) -> ClientIntent:
        if portfolio_id is None:  # an intent of its own: a portfolio of one
            portfolio_id = self.create_portfolio(str(title), "", None).id
        with self._writing(portfolio_id, f"create_intent({title!r})") as events:
            if isinstance(depends_on, str) or not isinstance(depends_on, Sequence):
                raise OpenIntentError(f"depends_on lists intent ids, got {depends_on!r}")
            present = intents_of(*self.loaded(portfolio_id))
            titles = {intent.id: intent.title for intent in present}
            for dep in depends_on:
                if dep not in titles:
                    raise OpenIntentError(
                        f"create_intent({title!r}): depends_on names {dep!r}, which is not an "
                        f"intent of portfolio {portfolio_id} (its intents: {sorted(titles)})")
            if title in titles.values():
                raise OpenIntentError(
                    f"portfolio {portfolio_id} already has an intent titled {title!r}; titles are "
                    "unique within a portfolio")
            spec = IntentSpec(title=title, description=description, assign=assign,
                              depends_on=[titles[dep] for dep in depends_on],
                              constraints=constraints if constraints is not None else {},
                              initial_state=initial_state)
            intent_id = f"{intent_id_prefix(portfolio_id)}{len(present)}"
            self._append(events, EventType.CREATED, intent_id,
                         (spec.title, spec.depends_on, spec.assign, spec.initial_state or None,
                          intent_data(spec)))
        return self.intent(intent_id)

    def add_dependency(self, intent_id: str, depends_on: str) -> ClientIntent:
        what = f"add_dependency({intent_id!r}, {depends_on!r})"
        portfolio_id = self.owner(intent_id)
        with self._writing(portfolio_id, what, intent_id) as events:
            intents = {intent.id: intent for intent in intents_of(*self.loaded(portfolio_id))}
            if intent_id not in intents or depends_on not in intents:
                raise OpenIntentError(f"{what}: both must be intents of portfolio {portfolio_id}")
            if depends_on in intents[intent_id].depends_on:
                return intents[intent_id]
            # A cycle: the intent is upstream of its new dependency already.
            stack, seen = [depends_on], set()
            while stack:
                current = stack.pop()
                if current == intent_id:
                    raise OpenIntentError(f"{what} would make a dependency cycle; nothing changed")
                if current not in seen:
                    seen.add(current)
                    stack.extend(intents[current].depends_on)
            self._append(events, EventType.DEPENDENCY_ADDED, intent_id,
                         {"on": intents[depends_on].title})
        return self.intent(intent_id)

    def assign(self, intent_id: str, agent_id: str | None, add: bool) -> ClientIntent:
        call = "assign_agent" if add else "unassign_agent"
        if add and (not isinstance(agent_id, str) or not agent_id or "," in agent_id):
            raise OpenIntentError(f"{call} takes an agent id, got {agent_id!r}")
        portfolio_id = self.owner(intent_id)
        what = f"{call}({intent_id!r}, {agent_id!r})"
        with self._writing(portfolio_id, what, intent_id) as events:
            current = self.intent(intent_id)
            agents = current.assigned_to.split(",") if current.assigned_to else []
            if add:
                if agent_id in agents:
                    return current
                agents.append(agent_id or "")
            elif agent_id is None:
                agents = []
            elif agent_id in agents:
                agents.remove(agent_id)
            else:
                raise OpenIntentError(f"{call}: {agent_id!r} is not assigned to {intent_id} "
                                      f"(its agents: {agents})")
            self._append(events, EventType.AGENT_ASSIGNED if add else EventType.AGENT_UNASSIGNED,
                         intent_id, {"agent": agent_id, "assigned_to": ",".join(agents) or None,
                                     "by": self.agent_id})
        return self.intent(intent_id)

    def patch_state(self, intent_id: str, patch: Mapping[str, Any],
                    expected_version: int | None) -> ClientIntent:
        what = f"patch_state({intent_id!r})"
        portfolio_id = self.owner(intent_id)
        with self._writing(portfolio_id, what, intent_id) as events:
            current = self.intent(intent_id)
            if expected_version is not None and expected_version != current.version:
                raise StateConflictError(
                    f"{what}: expected version {expected_version}, but the intent is at version "
                    f"{current.version}; read it again (get_intent) and retry",
                    intent_id=intent_id, expected=expected_version, actual=current.version)
            if not isinstance(patch, Mapping):
                raise OpenIntentError(f"{what} takes a dict of changes, got {patch!r}")
            data = json_data(dict(patch), what)
            self._append(events, EventType.STATE_PATCHED, intent_id,
                         {"patch": data, "by": self.agent_id})
        return self.intent(intent_id)

    def record_decision(self, portfolio_id: str | None, intent_id: str | None, decision: str,
                        rationale: str, data: Mapping[str, Any]) -> Decision:
        if portfolio_id is None:
            if intent_id is None:
                raise OpenIntentError("record_decision needs portfolio_id= or intent_id=")
            portfolio_id = self.owner(intent_id)
        if not isinstance(decision, str) or not decision:
            raise OpenIntentError(f"record_decision needs decision='...', got {decision!r}")
        with self._writing(portfolio_id, f"record_decision({decision!r})", intent_id) as events:
            if intent_id is not None and self.owner(intent_id) != portfolio_id:
                raise OpenIntentError(f"intent {intent_id} is not in portfolio {portfolio_id}")
            number = sum(raw[0] == EventType.DECISION for raw in events)
            self._append(events, EventType.DECISION, intent_id, {
                "id": decision_id(portfolio_id, number), "coordinator_id": self.agent_id,
                "decision": decision, "rationale": str(rationale),
                "data": json_data(dict(data), f"record_decision({decision!r}) data")})
        return self.decisions(portfolio_id, None)[-1]

    def acquire(self, target: str, scope: str, ttl_seconds: float) -> Lease:
        if isinstance(target, str) and target.startswith("in_"):
            self.intent(target)  # a clear error for an unknown id
        else:
            self.log(target)
        now = self.lease_now()
        token, expires = self.leases.acquire(target, scope, self.agent_id, ttl_seconds, now)
        lease = Lease(self.leases, self.lease_now, target, scope, self.agent_id, ttl_seconds,
                      token, expires)
        self.held[(target, scope)] = lease
        return lease

    def fence_of(self, portfolio_id: str) -> Callable[[], str | None] | None:
        """What fences the completions of the portfolio's run: the caller's coordinator
        lease on it, if it holds one (``None``: nothing to check)."""
        lease = self.held.get((portfolio_id, COORDINATOR))
        if lease is None or lease.released:
            return None

        def refused() -> str | None:
            try:
                lease.check("a completion")
            except LeaseLostError as exc:
                return str(exc)
            return None

        return refused

    def close(self) -> None:
        """Close the store's connections (a SQLite file's; memory:// has none)."""
        self.backend.close()

    def check_runnable(self, portfolio_id: str, call: str = "run_portfolio") -> None:
        """``run_portfolio`` (or ``call``): a draft, not refused by another holder's live
        lease."""
        events = self.log(portfolio_id)
        if not is_draft(events):
            raise OpenIntentError(
                f"{call}: portfolio {portfolio_id} has run already (or is a run of "
                "rt.run()); read its result with get_portfolio / Runtime.load, or resume an "
                "interrupted run with rt.resume")
        if not any(raw[0] == EventType.CREATED for raw in events):
            raise OpenIntentError(f"{call}: portfolio {portfolio_id} has no intents; "
                                  "create_intent(...) first")
        self.fence(portfolio_id, f"{call}()")
