"""Side effects exactly once: ``value = await self.effect(intent, name, fn, *args, **kwargs)``.

The journal is the gate. Before ``fn`` is called, ``effect_started`` is committed; once it
returns, ``effect_completed`` (its JSON value) is committed before ``effect()`` returns; if it
raises, ``effect_failed`` is, and the exception goes on to the handler. So an effect whose
value the log holds is never called again (a retry, a resume, a later attempt, a second call:
each gets the recorded value), and one the log shows ``started`` with no outcome, when its
attempt is over, is *in doubt*: the process died inside ``fn`` or a timeout cut it short.
Then ``check(*args, **kwargs)`` decides (a value: it happened; ``None``: it did not, and
``fn`` runs), or without one the intent fails with :class:`EffectInDoubtError` and a
decision record says a person must decide (``rt.resolve_effect``, :mod:`._resolve`).

With ``memory://`` nothing waits: the same gate costs no commit. :data:`effect_calls` lets a
test (the crash explorer) count the real calls of every effect's ``fn``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._bus import EventBus
from ._clock import Clock
from ._data import to_plain
from ._effect_records import EffectState, EffectStatus
from ._json_data import json_data
from ._store import IntentRecord
from .errors import EffectInDoubtError, OpenIntentError
from .models import EventType, Intent

__all__ = ["NOT_FOUND", "Effects", "InDoubt", "ask_check", "check_effect_args", "effect_calls"]

#: When set (to a list), every real call of an effect's ``fn`` appends ``(portfolio_id,
#: intent_id, name)`` to it, just before the call: the crash explorer counts calls with it.
effect_calls: ContextVar[list[tuple[str, str, str]] | None] = ContextVar(
    "openintent_effect_calls", default=None)

Decide = Callable[[str, str, str, Mapping[str, Any]], Any]
#: What an effect's check answers when the effect did not happen (:func:`ask_check`).
NOT_FOUND: Any = object()


class Effects:
    """The named side effects of one run's intents (``HandlerContext.effect``)."""

    __slots__ = ("_bus", "_store", "_clock", "_decide", "_running")

    def __init__(self, bus: EventBus, clock: Clock, decide: Decide) -> None:
        self._bus = bus
        self._store = bus.store
        self._clock = clock
        #: record_decision(intent_id, decision, rationale, data), on the runtime's behalf
        self._decide = decide
        self._running: set[tuple[str, str]] = set()  # (intent id, name) being called now

    async def run(
        self,
        intent: Intent,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        check: Callable[..., Any] | None,
    ) -> Any:
        """Run the effect ``name`` of ``intent`` once (see the module docstring)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        check_effect_args(name, fn)
        if check is not None and not callable(check):
            raise OpenIntentError(f"self.effect(..., check=...) of effect {name!r} takes a "
                                  f"function (or None), got {check!r}")
        record = self._store.records.get(getattr(intent, "id", ""))
        if record is None:
            raise OpenIntentError(f"self.effect({name!r}): {intent!r} is not an intent of "
                                  "this run; pass the intent your handler was given")
        if record.status.is_terminal:
            raise OpenIntentError(f"self.effect({name!r}): intent {record.title!r} is "
                                  f"{record.status}; an effect belongs to its running attempt")
        key = (record.id, name)
        if key in self._running:
            raise OpenIntentError(
                f"effect {name!r} of intent {record.title!r} is already being called (two "
                "calls at once): give each side effect of an intent its own name")
        self._running.add(key)
        try:
            state = record.effects.get(name) if record.effects is not None else None
            if state is not None:
                if state.status == EffectStatus.COMPLETED:
                    return to_plain(state.value)  # done once: never called again
                if state.status == EffectStatus.STARTED:  # and not running now: in doubt
                    found = await self._ask(record, state, check, args, kwargs)
                    if found is not NOT_FOUND:
                        return found
            return await self._call(record, intent.attempt, name, fn, args, kwargs)
        finally:
            self._running.discard(key)

    async def _ask(
        self,
        record: IntentRecord,
        state: EffectState,
        check: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """An effect in doubt: its check's value (journaled as ``checked``), ``NOT_FOUND``
        when the check says it did not happen, else :class:`EffectInDoubtError`."""
        name = state.name
        try:
            value = await ask_check(check, args, kwargs, self._clock, name, record.title)
        except InDoubt as unknown:
            raise self._in_doubt(record, state, unknown.why) from unknown.__cause__
        if value is NOT_FOUND:
            return NOT_FOUND
        self._bus.emit(EventType.EFFECT_COMPLETED, record.id,
                       {"name": name, "value": value, "checked": True})
        await self._committed()
        return to_plain(value)

    async def _call(
        self,
        record: IntentRecord,
        attempt: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Journal ``effect_started``, call ``fn``, journal how it ended."""
        emit = self._bus.emit
        emit(EventType.EFFECT_STARTED, record.id, {"name": name, "attempt": attempt})
        try:
            await self._committed()
        except BaseException:  # cancelled (or the journal broke) before fn was called
            emit(EventType.EFFECT_FAILED, record.id,
                 {"name": name, "error": "stopped before it was called",
                  "error_type": "NotCalled"})
            raise
        calls = effect_calls.get()
        if calls is not None:
            calls.append((self._store.portfolio_id, record.id, name))
        try:
            result = await _call(fn, args, kwargs, self._clock, shield=True)
        except Exception as exc:
            emit(EventType.EFFECT_FAILED, record.id,
                 {"name": name, "error": str(exc), "error_type": type(exc).__name__})
            await self._committed()
            raise
        # A value that is not JSON data: it happened, but what it returned cannot be kept, so
        # the effect stays in doubt (DataError, never retried) rather than run again.
        value = json_data(result, f"effect {name!r} of intent {record.title!r}")
        emit(EventType.EFFECT_COMPLETED, record.id, {"name": name, "value": value})
        await self._committed()
        return to_plain(value)

    def _in_doubt(self, record: IntentRecord, state: EffectState, why: str
                  ) -> EffectInDoubtError:
        """The error (and the runtime's decision record) of an effect in doubt."""
        run_id, name, title = self._store.portfolio_id, state.name, record.title
        settle = f"rt.resolve_effect({run_id!r}, {title!r}, {name!r}, value=...)"
        self._decide(
            record.id, "effect_in_doubt",
            f"effect {name!r} started in attempt {state.attempt} and never finished: it may "
            f"or may not have happened, and {why}. A person must decide: find out, then "
            f"{settle} (or happened=False) and resume the run",
            {"effect": name, "attempt": state.attempt},
        )
        return EffectInDoubtError(
            f"effect {name!r} of intent {title!r} (run {run_id}) started in attempt "
            f"{state.attempt} and never finished, so whether it happened is unknown ({why}). "
            "It is not called again and the intent is not retried: find out whether it "
            f"happened, then `await {settle}` (what it returned) or `happened=False` (it is "
            f"called again), and `await rt.resume({run_id!r})`; or give the effect a "
            "check= that asks the outside world",
            effect=name, intent_id=record.id, title=title, portfolio_id=run_id,
        )

    async def _committed(self) -> None:
        """Wait until everything logged so far is committed (a durable store only)."""
        journal = self._store.journal
        if journal is not None:
            await journal.wait_committed(len(self._store.events))


def check_effect_args(name: Any, fn: Any) -> None:
    """The checks of ``self.effect(intent, name, fn, ...)``'s name and function."""
    if not isinstance(name, str) or not name:
        raise OpenIntentError(f"self.effect() takes a non-empty name (a str) after the "
                              f"intent, e.g. 'charge-card'; got {name!r}")
    if not callable(fn):
        raise OpenIntentError(f"self.effect(intent, {name!r}, fn, ...) takes a function "
                              f"to call as fn, got {fn!r}")


class InDoubt(Exception):
    """An effect in doubt that its check could not settle; ``why`` says why."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


async def ask_check(check: Callable[..., Any] | None, args: tuple[Any, ...],
                    kwargs: Mapping[str, Any], clock: Clock, name: str, title: str) -> Any:
    """Ask the check of effect ``name`` (of intent ``title``), in doubt, whether it happened:
    the value it found (JSON data), :data:`NOT_FOUND` when it did not happen, or
    :class:`InDoubt` when there is no check or it raised (its ``__cause__``)."""
    if check is None:
        raise InDoubt("no check= was given to ask whether it did")
    try:
        found = await _call(check, args, kwargs, clock, shield=False)
    except Exception as exc:
        raise InDoubt(f"its check raised {type(exc).__name__}: {exc}") from exc
    if found is None:
        return NOT_FOUND
    return json_data(found, f"the check of effect {name!r} of intent {title!r}")


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # an object with an async __call__
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any],
                clock: Clock, *, shield: bool) -> Any:
    """Call an effect's ``fn`` (or its ``check``): awaited when async; a plain function in a
    worker thread (while the virtual clock holds still), which with ``shield`` runs to its
    end even when the attempt is cancelled, so how it ended is journaled."""
    if _is_async(fn):
        return await fn(*args, **kwargs)
    hold = getattr(clock, "hold", None)
    with anyio.CancelScope(shield=shield), hold() if hold is not None else nullcontext():
        result = await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        result = await result
    return result
