"""A run from its start to its result, and seen from outside: run handles and approval
decisions (event streams are in :mod:`._streams`).

``rt.start(spec)`` returns a :class:`RunHandle` while the run goes on in the runtime's task
group; ``rt.run(spec)`` is start + result in the caller's own task. Both drive the run with
:func:`drive_run`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._all_complete import fire_all_complete
from ._results import ResultsView
from ._scheduler import Run
from ._store import EventStore
from ._streams import follow_run
from .errors import ApprovalError, OpenIntentError, StoreError
from .guardrails import ApprovalRequest
from .models import Event, EventLog, EventType, RunResult, RunStatus

__all__ = [
    "RunHandle",
    "StartedRuns",
    "decide_approval",
    "drive_run",
    "pending_approvals",
    "run_result",
]


class RunHandle:
    """A run started with :meth:`Runtime.start <openintent.Runtime.start>`, going on in the
    runtime's task group: watch it, decide its approvals, cancel it, await its result.

    >>> async with Runtime(agents=[Builder, Deployer]) as rt:
    ...     handle = await rt.start(spec, coordinator=Release)
    ...     async for event in handle.events():
    ...         if event.type == "approval_requested":
    ...             await handle.approve(event.intent_id, by="alice")
    ...     result = await handle.result()

    .. versionadded:: 0.1
    """

    __slots__ = ("_run", "_store", "_name", "_drive", "_scope", "_done", "_result", "_error")

    def __init__(self, run: Run, drive: Callable[[], Awaitable[RunResult]]) -> None:
        self._run: Run | None = run
        self._store = run.store
        self._name = run.spec.name
        self._drive = drive
        # Made now, entered when the run's task starts: a cancel() before then still counts.
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._result: RunResult | None = None
        self._error: Exception | None = None

    @classmethod
    def of_ended(
        cls, store: EventStore, result: RunResult, drive: Callable[[], Awaitable[RunResult]]
    ) -> RunHandle:
        """The handle of a run whose log had ended for good (``rt.start_resume`` of a
        completed run): ``drive`` returns its ``result``; nothing runs."""
        handle = cls.__new__(cls)
        handle._run = None
        handle._store = store
        handle._name = result.name
        handle._drive = drive
        handle._scope = anyio.CancelScope()
        handle._done = anyio.Event()
        handle._result = None
        handle._error = None
        return handle

    @property
    def portfolio_id(self) -> str:
        """The id of this run (``result.portfolio_id``, every event's ``portfolio_id``)."""
        return self._store.portfolio_id

    @property
    def name(self) -> str:
        """The name of the portfolio this run runs."""
        return self._name

    @property
    def status(self) -> RunStatus:
        """``running`` until the run ends, then how it ended (``completed``, ``failed``,
        ``halted`` or ``cancelled``)."""
        if self._result is not None:
            return self._result.status
        return RunStatus.FAILED if self._done.is_set() else RunStatus.RUNNING

    @property
    def done(self) -> bool:
        """Whether the run has ended (``await handle.result()`` returns at once)."""
        return self._done.is_set()

    def events(self) -> AsyncIterator[Event]:
        """This run's events, from its first (``run_started``) to its last (``run_finished``).

        Each call starts at the beginning of the log, so a consumer that starts late (even
        after the run ended) misses nothing; the iteration ends after ``run_finished``.
        """
        return follow_run(self._store)

    def pending_approvals(self) -> list[ApprovalRequest]:
        """This run's approval requests still waiting for a decision."""
        return [] if self.done or self._run is None else pending_approvals([self._run])

    async def approve(self, intent: str, *, by: str, note: str = "") -> ApprovalRequest:
        """Approve this run's pending request for ``intent`` (an intent id, or a title): the
        intent is dispatched.

        Raises :class:`~openintent.ApprovalError` (and changes nothing) when ``by`` may not
        decide, nothing is pending for ``intent``, or the run has ended.
        """
        return self._decide(intent, True, by, note)

    async def deny(self, intent: str, *, by: str, note: str = "") -> ApprovalRequest:
        """Deny this run's pending request for ``intent`` (an intent id, or a title): the
        intent fails without running (``attempts == 0``) and its dependents are skipped."""
        return self._decide(intent, False, by, note)

    def _decide(self, intent: str, approve: bool, by: str, note: str) -> ApprovalRequest:
        if self.done or self._run is None:
            raise ApprovalError(
                f"run {self.portfolio_id} ({self.name!r}) has ended ({self.status}); nothing "
                f"in it waits for approval, so {intent!r} cannot be decided"
            )
        return decide_approval([self._run], intent, approve, by, note)

    async def cancel(self) -> None:
        """Cancel the run and wait until it has ended.

        Running handlers are cancelled (their ``finally:`` blocks run), unfinished intents are
        recorded as ``cancelled``, and ``await handle.result()`` returns a ``RunResult`` with
        status ``cancelled``. A run that has already ended keeps its result.
        """
        self._scope.cancel()
        await self._done.wait()

    async def result(self) -> RunResult:
        """Wait for the run to end and return its result (any number of times, from any
        number of tasks)."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def serve(self) -> None:
        """Drive the run to its end (the runtime runs this in its task group)."""
        cancelled = anyio.get_cancelled_exc_class()
        try:
            with self._scope:
                self._result = await self._drive()
            if self._result is None:  # cancel() stopped it; the log already ends "cancelled"
                assert self._run is not None  # (an ended run's drive never waits)
                self._result = run_result(self._run, RunStatus.CANCELLED)
        except cancelled:  # the runtime's block was left with an error, or was cancelled
            if self._run is not None:
                self._result = run_result(self._run, RunStatus.CANCELLED)
            raise
        except Exception as exc:  # a fault of the runtime itself, already logged
            self._error = exc
        finally:
            self._done.set()

    def __repr__(self) -> str:
        return f"<RunHandle {self.portfolio_id} {self.name!r} {self.status}>"


class StartedRuns:
    """The task group of the runs started with ``rt.start``, open for the length of the
    runtime's ``async with`` block."""

    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        self._task = anyio.get_current_task().id
        self._handles: list[RunHandle] = []

    @classmethod
    async def open(cls) -> StartedRuns:
        group = anyio.create_task_group()
        await group.__aenter__()
        return cls(group)

    def start(self, handle: RunHandle) -> None:
        """Run ``handle``'s run in the group."""
        self._handles = [known for known in self._handles if not known.done]
        self._handles.append(handle)
        self._group.start_soon(handle.serve, name=f"openintent run {handle.portfolio_id}")

    async def close(self, *, cancel: bool) -> None:
        """Wait for every run started (after cancelling them, with ``cancel``)."""
        if anyio.get_current_task().id == self._task:
            if cancel:
                self._group.cancel_scope.cancel()
            # The group never sees the block's exception, so that exception reaches the
            # caller as itself, not in an ExceptionGroup (runs never raise into the group).
            await self._group.__aexit__(None, None, None)
            return
        # Left in another task than the one that entered it (pytest-asyncio sets an async
        # fixture up and tears it down in two tasks): only the task that opened a task group
        # may close it, so wait for each run instead; the group has nothing left to do.
        for handle in self._handles:
            if cancel:
                handle._scope.cancel()
            await handle._done.wait()


async def drive_run(
    run: Run, *, nested: bool, end: Callable[[Run, RunStatus, Any, str | None], None]
) -> RunResult:
    """Run a begun run (its ``run_started`` logged) to its end and return its result.

    ``end(run, status, output, error)`` logs the end; it is called exactly once, whatever
    happens. A
    cancellation ends the run ``cancelled`` (every running handler cancelled, unfinished
    intents recorded as cancelled) and propagates: no result then.
    """
    store = run.store
    spec = run.spec
    outcome: dict[str, Any] = {"output": None, "error": None}

    async def finish() -> None:
        outcome["output"], outcome["error"] = await fire_all_complete(run)

    try:
        await anyio.lowlevel.checkpoint_if_cancelled()  # cancelled before it began: no dispatch
        # A sub-portfolio (a coordinator's execute) does not fire @on_all_complete: it fires
        # once, for the portfolio the coordinator was given.
        status = await run.run_to_end(None if nested else finish)
    except anyio.get_cancelled_exc_class():
        # Also when the cancel lands in @on_all_complete: the log always gets its end.
        run.cancel_unfinished()
        end(run, RunStatus.CANCELLED, None, None)
        await _ended_durably(store, failing=True)
        raise
    except BaseException as exc:
        # An error of the runtime itself (never a handler's): still end the log, so event
        # streams are not left waiting.
        run.cancel_unfinished()
        end(run, RunStatus.FAILED, None, f"the runtime failed: {type(exc).__name__}: {exc}")
        store.logger.exception("run crashed", portfolio=spec.name)
        await _ended_durably(store, failing=True)
        failure = _store_failure(exc) if store.journal is not None else None
        if failure is not None:
            # The journal broke: say so plainly, not inside the task group's exception group.
            raise failure from exc
        raise
    output, error = outcome["output"], outcome["error"]
    if error is not None and status == RunStatus.COMPLETED:
        status = RunStatus.FAILED
    if run.breach is not None:
        error = f"the {run.breach.guardrail} guardrail halted the run: {run.breach.reason}"
    end(run, status, output, error)
    await _ended_durably(store)
    return run_result(run, status, output, error)


def _store_failure(exc: BaseException) -> StoreError | None:
    """The StoreError inside a task group's exception group (``None``: none, or ``exc`` is
    one already)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = inner if isinstance(inner, StoreError) else _store_failure(inner)
            if found is not None:
                return found
    return None


async def _ended_durably(store: EventStore, *, failing: bool = False) -> None:
    """With a durable store, wait until the whole log (its ``run_finished`` last) is
    committed: a run's result is returned only then. Shielded: a cancelled run still waits
    for its end to be on disk. ``failing``: the run is already raising; a failed commit is
    logged, not raised over it."""
    journal = store.journal
    if journal is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await journal.wait_committed(len(store.events))
        except StoreError as exc:
            if not failing:
                raise
            store.logger.error("journal commit failed", error=str(exc))


def run_result(
    run: Run, status: RunStatus, output: object = None, error: str | None = None
) -> RunResult:
    """The result of a run that has ended (its log ends with ``run_finished``)."""
    store = run.store
    return RunResult(
        portfolio_id=store.portfolio_id,
        name=run.spec.name,
        status=status,
        output=output,
        intents=ResultsView(store.records, run.id_of_title),
        # The log up to its run_finished: a later resume appends to the same log.
        events=EventLog(store.events, store.source, range(len(store.events))),
        decisions=tuple(store.decisions),
        cost_usd=store.total_cost,
        error=error,
        breach=run.breach,
        errors=run.errors,
    )


# ---------------------------------------------------------------------------- approvals


def pending_approvals(runs: Iterable[Run]) -> list[ApprovalRequest]:
    """The approval requests of ``runs`` still waiting for a decision."""
    pending = []
    for run in runs:
        if run.guardrails is None:
            continue
        requests = run.guardrails.pending_approvals()
        journal = run.store.journal
        if journal is not None and requests:
            # A durable store: a request is pending once its approval_requested is on disk.
            events = run.store.events
            unsaved = {raw[2] for raw in events[journal.committed:]
                       if raw[0] == EventType.APPROVAL_REQUESTED}
            requests = [request for request in requests if request.intent_id not in unsaved]
        pending.extend(requests)
    return pending


def decide_approval(
    runs: Sequence[Run], intent: str, approve: bool, by: str, note: str
) -> ApprovalRequest:
    """Decide the request for ``intent`` (an id, or the title of one pending request)."""
    if not isinstance(by, str) or not by:
        raise ApprovalError("approve()/deny() need by='who decides'")
    for run in runs:
        if run.guardrails is not None:
            request = run.guardrails.decide(intent, approve, by, note)
            if request is not None:
                return request
    pending = pending_approvals(runs)
    by_title = [request for request in pending if request.title == intent]
    if len(by_title) == 1:  # a title is as good as an id when it is unambiguous
        return decide_approval(runs, by_title[0].intent_id, approve, by, note)
    waiting = ", ".join(f"{request.intent_id} ({request.title!r})" for request in pending)
    if by_title:
        raise ApprovalError(
            f"{len(by_title)} pending approval requests are titled {intent!r}; pass the "
            f"intent id instead: {waiting}"
        )
    raise ApprovalError(
        f"no approval request is pending for intent {intent!r}; pending: {waiting or 'none'}"
    )


def not_open_error(call: str) -> OpenIntentError:
    """The error of ``rt.start`` outside ``async with Runtime(...)``."""
    return OpenIntentError(
        f"{call} runs the portfolio in the runtime's task group, which only exists inside "
        "`async with Runtime(...) as rt:`; call it in that block (or use `await rt.run(spec)`, "
        "which runs in the calling task)"
    )
