"""Resuming a run from its log (``rt.resume``, ``rt.start_resume``).

Everything a resume needs is in the run's log: the plan as data (:mod:`._plan_data`), and the
events, which the store projects back into the intents' records. :func:`open_resumption`
rebuilds the run from them and continues it with the runtime's agents:

* intents that completed, failed or were skipped stay so (nothing runs twice);
* intents that were dispatched but never finished (the process died, or the run was halted
  or cancelled), intents waiting for approval and cancelled ones are *reopened*: the
  ``run_resumed`` event sets them back to ``pending`` and they are dispatched again, with the
  next attempt number (even past ``max_attempts``: the interrupted attempt never ended);
* what the log counts carries over: attempts (so retries), spend and budget warnings,
  approvals granted, decisions (their ids go on), the run's time (a run timeout's deadline;
  the time the run was stopped does not count);
* the events go on in the same log, with contiguous ``seq``;
* on a store with a task queue, the tasks its earlier sitting queued and no worker finished
  are cancelled before it goes on (:mod:`._stale_tasks`).

A log that ended ``completed`` or ``failed`` is not run again: its result comes back and
nothing is written (unless ``rt.resolve_effect`` settled an effect in doubt since: the
``effect_resolved`` event reopened its intent, which then runs again). A coordinator's
sub-portfolio (``execute``) interrupted mid-way is not resumed on its own: its coordinator's
intent was interrupted with it, and its new attempt runs a new sub-portfolio (the old one
stays in the store, unfinished). Intents a coordinator added with ``add_intent`` are in the
log and are rebuilt like the others.

While a resume runs the run, it holds the run's lease in the store (``acquire_run``): a second
resume of the same run at once gets :class:`~openintent.errors.RunInUseError`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from typing import Any, cast

import attrs

from ._data import to_plain
from ._dispatch import BoundAgent
from ._guardrail_core import Guardrail, build_guardrails
from ._handle import RunHandle
from ._launch import Launcher, lease_holder, release_lease
from ._logging import logging_configured
from ._nodes import Node, wire
from ._plan import Planner
from ._plan_data import LoggedPlan, logged_plan, spec_diff
from ._readback import earlier_walls, wall_of
from ._results import ResultsView
from ._scheduler import Run
from ._specs import PortfolioSpec
from ._stale_tasks import drop_stale_tasks
from ._store import EventStore, IntentRecord, RawEvent
from ._stores import sittings
from ._workflow_port import RunnableWorkflow
from .errors import (
    OpenIntentError,
    ResumeMismatchError,
    RunInUseError,
    SpecError,
    StoreError,
    UnknownAgentError,
)
from .guardrails import Breach
from .models import EventLog, EventType, IntentStatus, RunResult, RunStatus

__all__ = ["Resumption", "bind_given", "count_waiting", "logged_guardrails", "open_resumption"]

#: What a resume sets back to ``pending``: work that was going on, or stopped, when the log
#: ended.
_REOPENED = (IntentStatus.RUNNING, IntentStatus.AWAITING_APPROVAL, IntentStatus.CANCELLED)
#: How a log may end and still be resumed (a crash leaves no end: "running").
_ENDED_FOR_GOOD = (RunStatus.COMPLETED, RunStatus.FAILED)


@attrs.define
class Resumption:
    """A run opened for resuming: the :class:`Run` to drive on, or (``result``) the result
    of a log that had ended for good; and the run's lease, held until :meth:`drive` ends."""

    launcher: Launcher
    store: EventStore
    holder: str
    run: Run | None = None
    result: RunResult | None = None

    async def drive(self) -> RunResult:
        """Run the resumed run to its end (or return the ended log's result); the lease is
        given back then, whatever happens (by the launcher, for a run it drives)."""
        if self.run is None:
            assert self.result is not None
            self.release()
            return self.result
        try:  # its earlier sitting's tasks are stale: its intents go out again
            await drop_stale_tasks(self.launcher.backend, self.store.portfolio_id)
        except StoreError as exc:  # the database is failing: the run's commits say so
            self.store.logger.error("cancelling the earlier sitting's tasks failed",
                                    error=str(exc))
        except BaseException:
            self.release()
            raise
        return await self.launcher.drive(self.run, nested=False)

    def release(self) -> None:
        """Give the run's lease back."""
        release_lease(self.launcher.backend, self.store.portfolio_id, self.holder,
                      self.store.logger)

    def handle(self) -> RunHandle:
        """A :class:`RunHandle` that drives this resumption (``rt.start_resume``)."""
        if self.run is None:
            assert self.result is not None
            return RunHandle.of_ended(self.store, self.result, self.drive)
        return RunHandle(self.run, self.drive)


def open_resumption(
    launcher: Launcher,
    portfolio_id: str,
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
    guardrails: Sequence[Any] | None,
    call: str = "rt.resume()",
) -> Resumption:
    """Check a resume, take the run's lease and rebuild the run from its log (see the module
    docstring). Nothing is written before every check passed; the only write is the
    ``run_resumed`` event (none for a log that ended for good)."""
    if not isinstance(portfolio_id, str):
        raise OpenIntentError(
            f"rt.resume() takes the portfolio id of a run (a str, result.portfolio_id), got "
            f"{portfolio_id!r}")
    backend = launcher.backend
    for run in launcher.active:
        if run.portfolio_id == portfolio_id:
            raise RunInUseError(
                f"run {portfolio_id} ({run.name!r}) is going on in this runtime; wait for it "
                "to end (await handle.result()) before resuming it")
    info = next((info for info in backend.runs() if info.portfolio_id == portfolio_id), None)
    if info is not None and info.parent is not None:
        raise OpenIntentError(
            f"run {portfolio_id} in {backend.url} is a sub-portfolio of run {info.parent} (a "
            f"coordinator's execute()); resume run {info.parent}: its coordinator runs a new "
            "sub-portfolio")
    holder = lease_holder(call)
    # The lease first, then the log: a process that held the run until now has committed
    # all it will (RunNotFoundError for an unknown id).
    backend.acquire_run(portfolio_id, holder)
    try:
        log = backend.open_run(portfolio_id)
        return _rebuild(launcher, log, portfolio_id, holder, spec, coordinator, guardrails)
    except BaseException:
        backend.release_run(portfolio_id, holder)
        raise


def _rebuild(
    launcher: Launcher,
    log: MutableSequence[RawEvent],
    portfolio_id: str,
    holder: str,
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
    guardrails: Sequence[Any] | None,
) -> Resumption:
    where = f"run {portfolio_id} in {launcher.backend.url}"
    if not log or log[0][0] != EventType.RUN_STARTED:
        raise StoreError(f"{where} cannot be resumed: its log does not start with "
                         "run_started, so it holds no plan")
    name = (log[0][3] or {}).get("name", "")
    ended = _ended(log)
    done = (ended is not None and ended.get("status") in _ENDED_FOR_GOOD
            and not _settled_since_end(log))
    if done and spec is None and coordinator is None:  # the common case, kept quick
        assert ended is not None
        store = _reopened(launcher, log, portfolio_id, name, IntentRecord, going_on=False)
        return Resumption(launcher, store, holder, result=_ended_result(store, name, ended))
    logged = logged_plan(log)
    chosen, extra = _checked(launcher.planner, where, logged, spec, coordinator)
    new_guardrails = (None if guardrails is None
                      else tuple(build_guardrails(guardrails, "rt.resume(...)")))
    store = _reopened(launcher, log, portfolio_id, name, Node, going_on=not done)
    if done:
        assert ended is not None
        return Resumption(launcher, store, holder, result=_ended_result(store, name, ended))
    plan = launcher.planner.compile(logged.spec, chosen)
    plan = attrs.evolve(
        plan,
        guardrails=(new_guardrails if new_guardrails is not None
                    else logged_guardrails(where, log, logged, plan.guardrails + extra)),
        max_concurrency=logged.max_concurrency, sequential=logged.sequential,
    )
    records = store.records
    ids = [raw[2] or "" for raw in log if raw[0] == EventType.CREATED]
    nodes = wire(plan, [cast(Node, records[intent_id]) for intent_id in ids])
    resumed: dict[str, Any] = {
        "from": (ended.get("status", "failed") if ended is not None
                 else "draft" if _is_draft(log) else "running"),
        "reopened": [node.id for node in nodes if node.status in _REOPENED],
        "timebase": store.source.wall(0.0).timestamp(),
    }
    if new_guardrails is not None:
        resumed["guardrails"] = [guardrail.to_data() for guardrail in new_guardrails]
    store.append(EventType.RUN_RESUMED, None, resumed)
    settled = count_waiting(nodes)
    run = launcher.assemble(plan, store, nodes, settled=settled)
    launcher.hold(run, holder)  # renewed while it goes on, given back when it ends
    if logging_configured():  # (as the launcher's info lines: see _launch._info)
        store.logger.info("run resumed", reopened=len(resumed["reopened"]),
                          left=len(nodes) - settled)
    return Resumption(launcher, store, holder, run=run)


def _reopened(
    launcher: Launcher,
    log: MutableSequence[RawEvent],
    portfolio_id: str,
    name: str,
    record_type: type[IntentRecord],
    *,
    going_on: bool,
) -> EventStore:
    """The store of a run over its log, with the log's events projected (records, spend,
    decisions) and dated as they were: each stretch of the run by its own time base. A run
    ``going_on`` (resumed) adds a stretch of this process; else the log's last stretch is
    the run's current one (its ``run_finished`` ends the run's streams)."""
    store = EventStore(launcher.backend, portfolio_id, launcher.clock, name,
                       record_type=record_type, log=log)
    starts, bases = sittings(log, launcher.backend.timebase(portfolio_id))
    source = store.source
    source.earlier = earlier_walls(starts, bases)
    if going_on:
        source.since = len(log)
    else:
        source.since = starts[-1]
        source.wall = wall_of(bases[-1])
    store.replay()
    return store


def _checked(
    planner: Planner,
    where: str,
    logged: LoggedPlan,
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
) -> tuple[BoundAgent | None, tuple[Guardrail, ...]]:
    """The coordinator to resume with (the given one, else the log's), and a YAML
    workflow's own guardrails; :class:`ResumeMismatchError` when what was given is not
    the run's own."""
    spec, chosen, extra = bind_given(planner, where, logged, spec, coordinator, "rt.resume()")
    _check_same(where, logged, spec,
                chosen.id if coordinator is not None and chosen else None)
    return chosen, extra


def bind_given(
    planner: Planner,
    where: str,
    logged: LoggedPlan,
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
    call: str,
) -> tuple[PortfolioSpec | None, BoundAgent | None, tuple[Guardrail, ...]]:
    """What a call over a logged run (``rt.resume()``, ``rt.fork()``) was given: the spec
    (a YAML workflow's as a :class:`PortfolioSpec`), the coordinator (the given one, else
    the log's) and a YAML workflow's own guardrails."""
    extra: tuple[Guardrail, ...] = ()
    if spec is not None and not isinstance(spec, PortfolioSpec):
        if not isinstance(spec, RunnableWorkflow):
            raise SpecError(f"{call} takes a PortfolioSpec or a WorkflowSpec as spec, got "
                            f"{type(spec).__name__}")
        spec, coordinator, extra = spec.bind_runtime(planner, coordinator)
    try:
        chosen = planner.coordinator(coordinator if coordinator is not None
                                     else logged.coordinator)
    except UnknownAgentError as exc:
        if coordinator is not None:
            raise
        raise UnknownAgentError(
            f"{where} was run by coordinator {logged.coordinator!r}, which this runtime does "
            f"not know ({exc}); give the Runtime that coordinator, or pass it (or the YAML "
            f"workflow that declares it) to {call}") from None
    return spec, chosen, extra


def _check_same(
    where: str, logged: LoggedPlan, spec: PortfolioSpec | None, coordinator: str | None
) -> None:
    """Refuse a spec or coordinator other than the log's (:class:`ResumeMismatchError`)."""
    lines: list[str] = []
    if coordinator is not None and coordinator != logged.coordinator:
        lines.append(f"coordinator {logged.coordinator!r} -> {coordinator!r}")
    if spec is not None:
        # The spec the run was given: intents added during the run are the log's own.
        given = attrs.evolve(logged.spec, intents=logged.spec.intents[:logged.planned])
        lines.extend(spec_diff(given, spec))
    if lines:
        raise ResumeMismatchError(
            f"{where} was journaled with another plan than the one given to rt.resume(); "
            "nothing was run or written. Resume it with its own spec (or none: the log's is "
            "used), or start a new run with rt.run(). What differs (journaled -> given):\n  "
            + "\n  ".join(lines))


def _ended(log: Sequence[RawEvent]) -> Mapping[str, Any] | None:
    """The ``run_finished`` data the log's last stretch ended with, or ``None`` when it has
    none (the process running it died)."""
    for type_, _time, _intent, data in reversed(log):
        if type_ == EventType.RUN_FINISHED:
            return cast(Mapping[str, Any], data or {})
        if type_ == EventType.RUN_RESUMED:
            return None
    return None


def _is_draft(log: Sequence[RawEvent]) -> bool:
    """A client's portfolio that never ran: its first run goes on its log (``run_portfolio``)."""
    return bool((log[0][3] or {}).get("draft")) and not any(
        raw[0] == EventType.RUN_RESUMED for raw in log)


def _settled_since_end(log: Sequence[RawEvent]) -> bool:
    """Whether an effect in doubt was settled (``rt.resolve_effect``) after the log's last
    end: its intent was reopened, so a run that had ended for good goes on."""
    for type_, _time, _intent, _data in reversed(log):
        if type_ == EventType.EFFECT_RESOLVED:
            return True
        if type_ in (EventType.RUN_FINISHED, EventType.RUN_RESUMED):
            return False
    return False


def logged_guardrails(
    where: str,
    log: Sequence[RawEvent],
    logged: LoggedPlan,
    live: tuple[Guardrail, ...],
    call: str = "rt.resume()",
) -> tuple[Guardrail, ...]:
    """The guardrails the log names (``run_started``'s, or the last resume's new ones):
    each the runtime's or the coordinator's guardrail of the same settings when there is
    one (a function or a custom guardrail keeps its code), else built from its data."""
    wanted: Sequence[Mapping[str, Any]] = logged.guardrails
    for type_, _time, _intent, data in log:
        if type_ == EventType.RUN_RESUMED and "guardrails" in (data or {}):
            wanted = data["guardrails"]
    spare = list(live)
    chosen: list[Guardrail] = []
    for item in wanted:
        item = to_plain(item)
        match = next((guardrail for guardrail in spare if guardrail.to_data() == item), None)
        if match is not None:
            spare.remove(match)
            chosen.append(match)
            continue
        try:
            chosen.extend(build_guardrails([item], f"{where}: its log's"))
        except SpecError as exc:
            raise ResumeMismatchError(
                f"{where} ran with the guardrail {item}, which cannot be rebuilt from its "
                f"data ({exc}) and which this runtime does not have; nothing was run or "
                f"written. Give the Runtime (or the coordinator) that guardrail again, pass "
                f"{call} the YAML workflow that declares it, or pass "
                f"{call[:-1]}..., guardrails=[...]) to run on with other ones") from None
    return tuple(chosen)


def count_waiting(nodes: list[Node]) -> int:
    """Set how many dependencies each open node still waits for; return how many intents
    already ended."""
    by_title = {node.spec.title: node for node in nodes}
    settled = 0
    for node in nodes:
        if node.status.is_terminal:
            settled += 1
        else:
            node.waiting = sum(by_title[title].status is not IntentStatus.COMPLETED
                               for title in node.spec.depends_on)
    return settled


def _ended_result(store: EventStore, name: str, ended: Mapping[str, Any]) -> RunResult:
    """The result of a log that ended for good, as its run returned it."""
    breach = None
    for type_, _time, _intent, data in reversed(store.events):  # in the run's last stretch
        if type_ == EventType.GUARDRAIL_BREACH:
            breach = Breach(**to_plain(data))
            break
        if type_ == EventType.RUN_RESUMED:
            break
    records = store.records
    return RunResult(
        portfolio_id=store.portfolio_id,
        name=name,
        status=RunStatus(ended.get("status", RunStatus.FAILED)),
        output=to_plain(ended.get("output")),
        intents=ResultsView(records, {record.title: intent_id
                                      for intent_id, record in records.items()}),
        events=EventLog(store.events, store.source, range(len(store.events))),
        decisions=tuple(store.decisions),
        cost_usd=store.total_cost,
        error=ended.get("error"),
        breach=breach,
    )
