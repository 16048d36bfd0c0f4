"""Remote agents: an agent a run's process does not have, done by a worker of its store.

When the store has a task queue (``backend.tasks``: ``postgresql://``, or
``memory://?workers=1``) and an intent goes to an agent id this runtime has not got (not in
``Runtime(agents=[...])``, nor registered when no list is given), the runtime binds a
*remote agent* for that id: its one ``@on_assignment`` handler turns each attempt into a task
(:mod:`openintent._tasks`), waits for a worker (``openintent worker`` / ``rt.serve``) to run
it, then replays what the worker's handler did through this run's own context, in order
(state patches, costs, events, decisions, side effects: the log gets the same events as a
local run), and returns the worker's value or raises its error.

Everything else stays here, where the run's log is written: guardrails, retries, timeouts.
A cancelled attempt (a timeout, a halt, a cancelled run) cancels its task; a worker that
lost its claim (its lease expired) is replaced by another, and a ``handoff`` event says so.
A remote agent's other hooks (``@on_event``, ...) do not fire here: they are the worker's.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

import anyio

from . import errors
from ._context import active_run
from ._effect_records import EffectStatus
from ._json_data import plain_json
from ._registry import AgentDefinition, HookKind, HookSpec
from ._tasks import TaskOutcome, TaskQueue
from .errors import OpenIntentError, RemoteAgentError
from .models import EventType, Intent

__all__ = ["RemoteAgent", "intent_payload", "remote_definition", "remote_error"]


class _InDoubt(BaseException):  # noqa: N818 - a marker, never seen outside this module
    """Raised through ``context.effect`` to leave an effect ``started`` with no outcome (an
    ``Exception`` would log ``effect_failed``)."""


class RemoteAgent:
    """The stand-in for agent ``agent_id`` in a run's process (see the module docstring)."""

    def __init__(self, agent_id: str, queue: TaskQueue) -> None:
        self.__openintent_id__ = agent_id
        self.queue = queue

    async def work(self, intent: Intent) -> Any:
        """Have a worker do ``intent``'s attempt; replay what it did; its value or error."""
        context = active_run.get()
        bus = getattr(context, "bus", None)
        if context is None or bus is None:
            raise OpenIntentError(
                f"remote agent {self.__openintent_id__!r} was called outside a run's "
                "coordinator: it only works from the run that dispatches the intent")
        agent_id = self.__openintent_id__
        record = bus.store.records.get(intent.id)
        payload = plain_json(intent_payload(intent, getattr(record, "effects", None)),
                             f"the task of intent {intent.title!r} for remote agent "
                             f"{agent_id!r} (its constraints and inputs go to a worker)")
        queue = self.queue
        with anyio.CancelScope(shield=True):  # a task queued is a task known, to cancel
            task_id = await queue.submit(intent.portfolio_id, intent.id, intent.attempt,
                                         agent_id, payload)
        outcome: TaskOutcome | None = None
        try:
            outcome = await queue.outcome(task_id)
        finally:
            if outcome is None:  # cancelled (a timeout, a halt, the run): the task too
                with anyio.CancelScope(shield=True):
                    await queue.cancel(task_id)
        if outcome.claims > 1:
            bus.emit(EventType.HANDOFF, intent.id,
                     {"from": agent_id, "to": agent_id, "for": agent_id,
                      "reason": "worker lease expired", "worker": outcome.worker,
                      "claims": outcome.claims})
        result = outcome.result or {}
        await replay(context, agent_id, intent, result.get("ops") or ())
        if outcome.status == "done":
            return result.get("value")
        if outcome.status == "cancelled":
            raise remote_error("RemoteAgentError", (
                f"the task of intent {intent.title!r} (attempt {intent.attempt}, agent "
                f"{agent_id!r}, run {intent.portfolio_id}) was cancelled before a worker "
                "finished it"), {})
        raise remote_error(str(result.get("error_type") or "RemoteAgentError"),
                           str(result.get("error") or ""), result.get("error_data") or {})


def remote_definition(agent_id: str, queue: TaskQueue) -> AgentDefinition:
    """The definition of the remote agent ``agent_id`` (one instance, not registered)."""
    instance = RemoteAgent(agent_id, queue)
    return AgentDefinition(agent_id, "agent", RemoteAgent,
                           (HookSpec(HookKind.ASSIGNMENT, "work"),), instance=instance)


# ---------------------------------------------------------------------------- payloads


def intent_payload(intent: Intent, effects: Mapping[str, Any] | None) -> dict[str, Any]:
    """A task's payload: the intent as the handler sees it and the effects the run's log
    records for it (see :mod:`openintent._tasks`)."""
    fields = {name: getattr(intent, name) for name in Intent.__slots__}
    fields["status"] = str(getattr(intent.status, "value", intent.status))
    fields["depends_on"] = list(intent.depends_on)
    fields["tags"] = list(intent.tags)
    logged: dict[str, Any] = {}
    for name, state in (effects or {}).items():
        status, happened = state.status, True
        if state.resolved:
            status, happened = "resolved", state.status != EffectStatus.NOT_HAPPENED
        elif status == EffectStatus.NOT_HAPPENED:
            status, happened = "resolved", False
        logged[name] = {"status": status, "value": state.value, "happened": happened}
    return {"intent": fields, "effects": logged}


# ---------------------------------------------------------------------------- replaying


async def replay(context: Any, agent_id: str, intent: Intent, ops: Any) -> None:
    """Do again, through the run's own ``context``, what a worker's handler did (``ops``)."""
    for op in ops:
        kind = op[0]
        if kind == "patch":
            await context.patch_state(intent, op[1], op[2])
        elif kind == "cost":
            await context.record_cost(op[1], intent, op[2], op[3])
        elif kind == "event":
            on_intent = op[4] if len(op) > 4 else True
            await context.record_event(op[1], intent if on_intent else None, op[2], op[3])
        elif kind == "decision":
            on_intent = op[5] if len(op) > 5 else True
            context.record_decision(op[1], intent.id if on_intent else None, op[2], op[3],
                                    op[4])
        elif kind == "effect":
            await _replay_effect(context, intent, op[1], op[2], op[3])


async def _replay_effect(context: Any, intent: Intent, name: str, status: str,
                         outcome: Any) -> None:
    """One effect op through the real ``context.effect``: the same ``effect_*`` events (and,
    in doubt, the same decision record) as the effect would have logged here."""
    async def recorded() -> Any:
        if status == "completed":
            return outcome
        if status == "failed":
            detail = outcome if isinstance(outcome, Mapping) else {"error": str(outcome)}
            raise remote_error(str(detail.get("error_type") or "RemoteAgentError"),
                               str(detail.get("error") or ""), {})
        raise _InDoubt

    async def checked() -> Any:  # the log has it in doubt: the worker's outcome settles it
        return outcome if status == "completed" else None

    check = None if status == "started" else checked
    try:
        await context.effect(intent, name, recorded, (), {}, check)
    except _InDoubt:
        # Logged as started, with no outcome: ask again, as a later attempt here would
        # (its decision record, and EffectInDoubtError, which the worker raised too).
        try:
            await context.effect(intent, name, recorded, (), {}, None)
        except errors.EffectInDoubtError:
            pass
    except errors.EffectInDoubtError:
        pass  # in doubt in the log already: its decision record is logged now
    except Exception:  # noqa: BLE001 - the effect's own failure, which the handler saw
        pass


# ---------------------------------------------------------------------------- errors

_REMOTE_CLASSES: dict[str, type[RemoteAgentError]] = {}


def remote_error(error_type: str, message: str, data: Mapping[str, Any]) -> Exception:
    """The exception a worker's ``error_type`` / ``error`` stand for here: the openintent
    error class of that name (its attributes from ``data``), else a cached subclass of
    :class:`RemoteAgentError` of that name (also a subclass of the built-in exception of
    that name, if there is one)."""
    real = getattr(errors, error_type, None)
    if (error_type in errors.__all__ and isinstance(real, type)
            and issubclass(real, OpenIntentError)):
        exc = real.__new__(real)
        Exception.__init__(exc, message)
        for key, value in data.items():
            setattr(exc, key, value)
        return exc
    cls = _REMOTE_CLASSES.get(error_type)
    if cls is None:
        cls = _REMOTE_CLASSES[error_type] = _remote_class(error_type)
    return cls(message)


def _remote_class(error_type: str) -> type[RemoteAgentError]:
    name = error_type if error_type.isidentifier() else "RemoteAgentError"
    builtin = getattr(builtins, name, None)
    bases: tuple[type, ...] = (RemoteAgentError,)
    if (isinstance(builtin, type) and issubclass(builtin, Exception)
            and not issubclass(builtin, OSError | UnicodeError)):
        bases = (RemoteAgentError, builtin)
    try:
        cls = type(name, bases, {"__module__": "openintent.errors"})
        cls("probe")
    except TypeError:
        cls = type(name, (RemoteAgentError,), {"__module__": "openintent.errors"})
    return cls
