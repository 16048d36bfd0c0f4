"""What a handler reaches in a worker (``rt.serve`` / ``openintent worker``): ``self.patch_state``,
``record_cost``, ``record_event``, ``record_decision`` and ``effect`` work as in the run's own
process, recorded as the task's ``ops`` (see :mod:`openintent._tasks`), which the run's
coordinator replays into its log in order. ``delegate``, ``add_intent`` and ``execute`` are a
coordinator's: a worker refuses them with a clear error.

Side effects keep their exactly-once gate across workers: ``effect_started`` is recorded in
the store (fenced by the claim's token) before ``fn`` runs and ``effect_ended`` after, so a
worker that claims the task again after another one was lost finds what happened: a recorded
value is returned, a start with no end is *in doubt* (``check=``, else
:class:`~openintent.errors.EffectInDoubtError`, never retried), as in :mod:`._effects`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from ._clock import Clock
from ._coordination import decision_data
from ._data import merged, read_only, to_plain
from ._effects import NOT_FOUND, InDoubt, ask_check, check_effect_args, effect_calls
from ._effects import _call as call_effect_fn
from ._event_types import check_recorded_event
from ._json_data import json_data, plain_json
from ._store import is_valid_cost
from ._tasks import Task, TaskQueue
from .errors import CostError, DataError, EffectInDoubtError, OpenIntentError, StateConflictError
from .models import Decision, Intent, IntentStatus

__all__ = ["ClaimLost", "WorkerContext", "intent_of"]


class ClaimLost(Exception):  # noqa: N818 - an outcome, not a bug
    """The worker's claim on the task is no longer current (cancelled, or claimed again by
    another worker): the handler stops, and the task is not finished here."""


def intent_of(task: Task) -> Intent:
    """The intent a task's handler sees: the payload's, at attempt ``attempt + claims - 1``."""
    fields = dict(task.payload["intent"])
    return Intent(
        fields["id"], fields["title"], fields["description"],
        IntentStatus(fields["status"]), read_only(fields["state"] or {}), fields["version"],
        fields["assigned_to"], tuple(fields["depends_on"]), read_only(fields["constraints"]),
        fields["portfolio_id"], task.attempt + task.claims - 1,
        read_only(fields["inputs"] or {}), tuple(fields["tags"]), fields["idempotency_key"],
    )


class WorkerContext:
    """The run context of one claimed task in a worker (implements
    ``openintent._context.RunContext``)."""

    def __init__(self, task: Task, intent: Intent, queue: TaskQueue, clock: Clock) -> None:
        self.task = task
        self.intent = intent
        self.queue = queue
        self._clock = clock
        self.ops: list[list[Any]] = []
        self._running: set[str] = set()

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def portfolio_id(self) -> str:
        return self.task.run_id

    def _check(self, intent: Intent | None, method: str) -> None:
        if intent is not None and getattr(intent, "id", None) != self.task.intent_id:
            raise OpenIntentError(
                f"{method}(): {intent!r} is not the intent this worker runs "
                f"({self.task.intent_id} of run {self.task.run_id}); pass the intent your "
                "handler was given")

    async def patch_state(
        self, intent: Intent, patch: Mapping[str, Any], expected_version: int | None
    ) -> int:
        self._check(intent, "patch_state")
        if not isinstance(patch, Mapping):
            raise DataError(f"patch_state takes a dict of changes, got {type(patch).__name__}")
        patch = json_data(patch, f"patch_state of intent {intent.title!r}")
        mine = self.intent
        if expected_version is not None and expected_version != mine.version:
            raise StateConflictError(
                f"intent {intent.title!r} is at version {mine.version}, not the expected "
                f"{expected_version}; re-read its state and try again",
                intent_id=intent.id, expected=expected_version, actual=mine.version)
        self.ops.append(["patch", to_plain(patch), expected_version])
        if patch:
            mine.state = merged(mine.state, patch)
            mine.version += 1
        intent.state, intent.version = mine.state, mine.version
        return mine.version

    async def record_cost(
        self, agent_id: str, intent: Intent, usd: float, details: Mapping[str, Any]
    ) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not is_valid_cost(usd):
            raise CostError(f"record_cost takes a finite amount >= 0 in USD, got {usd!r}")
        self._check(intent, "record_cost")
        self.ops.append(["cost", agent_id, float(usd),
                         plain_json(details, "record_cost details")])

    async def renew_lease(self, intent: Intent) -> float | None:
        """Renew this worker's claim on the task (its lease in the store)."""
        self._check(intent, "renew_lease")
        lost = await self.queue.renew([self.task])
        if lost:
            raise ClaimLost(f"task {self.task.id} is no longer this worker's")
        return self._clock.now() + self.queue.task_ttl

    async def record_event(
        self, agent_id: str, intent: Intent | None, event_type: str, data: Mapping[str, Any]
    ) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        where = f"record_event({event_type!r}) by {agent_id!r}"
        check_recorded_event(event_type, data, where)
        self._check(intent, "record_event")
        self.ops.append(["event", agent_id, event_type, plain_json(data, where),
                         intent is not None])

    def record_decision(
        self, coordinator_id: str, intent_id: str | None, decision: str, rationale: str,
        data: Mapping[str, Any],
    ) -> Decision:
        frozen = decision_data(decision, data)
        self.ops.append(["decision", coordinator_id, decision, str(rationale), to_plain(frozen),
                         intent_id is not None])
        now = self._clock.now()
        return Decision(f"dc_{self.task.run_id[3:]}_remote", coordinator_id, self.task.run_id,
                        intent_id, now, datetime.fromtimestamp(0, UTC), decision,
                        str(rationale), frozen)

    # ------------------------------------------------------------------ effects

    async def effect(
        self,
        intent: Intent,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        check: Callable[..., Any] | None,
    ) -> Any:
        await anyio.lowlevel.checkpoint_if_cancelled()
        check_effect_args(name, fn)
        self._check(intent, "effect")
        if name in self._running:
            raise OpenIntentError(
                f"effect {name!r} of intent {intent.title!r} is already being called (two "
                "calls at once): give each side effect of an intent its own name")
        self._running.add(name)
        try:
            return await self._effect(intent, name, fn, args, kwargs, check)
        finally:
            self._running.discard(name)

    async def _effect(self, intent: Intent, name: str, fn: Callable[..., Any],
                      args: tuple[Any, ...], kwargs: Mapping[str, Any],
                      check: Callable[..., Any] | None) -> Any:
        logged = (self.task.payload.get("effects") or {}).get(name)
        status = logged["status"] if logged is not None else None
        if logged is not None and (status == "completed" or (
                status == "resolved" and logged.get("happened", True))):
            return self._recorded(name, logged.get("value"))  # the log's settled value wins
        if status != "resolved":  # (resolved as not happened: it runs again)
            row = (await self.queue.effects(self.task.run_id, self.task.intent_id)).get(name)
            if row is not None and row.status == "completed":
                return self._recorded(name, row.value)
            if status == "started" or (row is not None and row.status == "started"):
                found = await self._ask(intent, name, check, args, kwargs)
                if found is not NOT_FOUND:
                    return found
        return await self._call(intent, name, fn, args, kwargs)

    def _recorded(self, name: str, value: Any) -> Any:
        self.ops.append(["effect", name, "completed", to_plain(value)])
        return to_plain(value)

    async def _ask(self, intent: Intent, name: str, check: Callable[..., Any] | None,
                   args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        try:
            value = await ask_check(check, args, kwargs, self._clock, name, intent.title)
        except InDoubt as unknown:
            why = unknown.why
        else:
            if value is NOT_FOUND:
                return NOT_FOUND
            await self.queue.effect_ended(self.task, name, "completed", to_plain(value))
            return self._recorded(name, value)
        self.ops.append(["effect", name, "started", None])
        run_id = self.task.run_id
        raise EffectInDoubtError(
            f"effect {name!r} of intent {intent.title!r} (run {run_id}) started in a worker "
            f"that was lost and never finished, so whether it happened is unknown ({why}). "
            "It is not called again and the intent is not retried: find out whether it "
            f"happened, then `await rt.resolve_effect({run_id!r}, {intent.title!r}, "
            f"{name!r}, value=...)` (or `happened=False`) and `await rt.resume({run_id!r})`; "
            "or give the effect a check= that asks the outside world",
            effect=name, intent_id=intent.id, title=intent.title, portfolio_id=run_id)

    async def _call(self, intent: Intent, name: str, fn: Callable[..., Any],
                    args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if not await self.queue.effect_started(self.task, name):
            raise ClaimLost(f"task {self.task.id} is no longer this worker's; effect {name!r} "
                            "was not called")
        calls = effect_calls.get()
        if calls is not None:
            calls.append((self.task.run_id, intent.id, name))
        try:
            result = await call_effect_fn(fn, args, kwargs, self._clock, shield=True)
        except Exception as exc:
            with anyio.CancelScope(shield=True):
                await self.queue.effect_ended(self.task, name, "failed", error=str(exc))
            self.ops.append(["effect", name, "failed",
                             {"error": str(exc), "error_type": type(exc).__name__}])
            raise
        value = json_data(result, f"effect {name!r} of intent {intent.title!r}")
        with anyio.CancelScope(shield=True):
            await self.queue.effect_ended(self.task, name, "completed", to_plain(value))
        self.ops.append(["effect", name, "completed", to_plain(value)])
        return to_plain(value)

    # ------------------------------------------------------------------ coordinators' only

    def _coordinators_only(self, method: str) -> OpenIntentError:
        return OpenIntentError(
            f"{method}() was called in a worker (task {self.task.id}, intent "
            f"{self.intent.title!r} of run {self.task.run_id}): it is for coordinators, which "
            "run in the process that holds the run; call it from a @Coordinator, or give this "
            "agent to the run's own Runtime")

    async def delegate(self, coordinator_id: str, intent: Intent, to: str) -> Any:
        raise self._coordinators_only("delegate")

    async def add_intent(self, spec: Any) -> str:
        raise self._coordinators_only("add_intent")

    async def execute_portfolio(self, spec: Any, coordinator_id: str) -> Any:
        raise self._coordinators_only("execute")
