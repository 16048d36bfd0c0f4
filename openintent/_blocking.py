"""Noticing handlers that block the event loop.

An ``async def`` handler that calls ``time.sleep(2)`` (or any slow synchronous code) holds the
event loop: no other intent moves, and its own ``timeout=`` cannot fire until it yields. Every
async handler is therefore awaited through :func:`timed`, which drives the coroutine step by
step (each ``send``/``throw`` up to its next suspension) and times each step on the wall
clock. A step longer than ``Runtime(blocking_threshold=...)`` seconds is reported: a
``loop_blocked`` event on the intent and a warning that says how to fix it.

The wall clock is the right one even under a virtual clock: blocking is real time.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from time import perf_counter
from typing import Any, Protocol

from ._json_data import is_finite_number
from .errors import OpenIntentError
from .models import Event, EventType, Intent

__all__ = [
    "DEFAULT_BLOCKING_THRESHOLD",
    "BlockingWatch",
    "check_blocking_threshold",
    "current_watch",
    "timed",
]

#: Seconds one step of an async handler may hold the event loop before it is reported.
DEFAULT_BLOCKING_THRESHOLD = 0.1

_HINT = (
    "make it a plain `def` handler (it then runs in a worker thread), or move the blocking "
    "call into `await anyio.to_thread.run_sync(...)`"
)

# Seconds of steps accounted for elsewhere, over every watch of this process: a handler that
# runs inline inside another one's step (a delegate inside its coordinator's handler) is
# reported itself, and garbage collection pauses are no handler's doing. A step is blamed only
# for the rest of its time.
_blamed = 0.0
_collecting_since = 0.0


def _on_collection(phase: str, info: dict[str, int]) -> None:
    global _blamed, _collecting_since
    if phase == "start":
        _collecting_since = perf_counter()
    else:
        _blamed += perf_counter() - _collecting_since


class _Handler(Protocol):
    name: str
    agent_id: str


def check_blocking_threshold(value: object) -> float | None:
    """``Runtime(blocking_threshold=...)``, validated: a positive number of seconds, or None."""
    if value is None:
        return None
    if not is_finite_number(value) or value <= 0:
        raise OpenIntentError(
            f"Runtime(blocking_threshold=...) takes a positive number of seconds (default "
            f"{DEFAULT_BLOCKING_THRESHOLD}), or None to turn loop-blocking detection off; "
            f"got {value!r}"
        )
    return float(value)


class BlockingWatch:
    """Reports the handler steps of one run that held the event loop too long."""

    __slots__ = ("threshold", "_emit", "_log")

    def __init__(
        self, threshold: float, emit: Callable[[str, str | None, Any], None], log: Any
    ) -> None:
        self.threshold = threshold
        self._emit = emit
        self._log = log
        if _on_collection not in gc.callbacks:
            gc.callbacks.append(_on_collection)

    def blocked(self, handler: _Handler, subject: object, seconds: float) -> None:
        """Record that one step of ``handler`` held the loop for ``seconds``.

        ``subject`` is what the handler was called with (its intent, its arguments, or an
        intent id): the event goes on that intent, or on the run when there is none.
        """
        global _blamed
        _blamed += seconds
        intent_id = _intent_of(subject)
        data = {"agent": handler.agent_id, "handler": handler.name, "seconds": round(seconds, 6)}
        if not _about_blocking(subject):  # a loop_blocked hook that blocks: no feedback loop
            self._emit(EventType.LOOP_BLOCKED, intent_id, data)
        first = subject[0] if isinstance(subject, tuple) and subject else subject
        self._log.warning(
            "a handler blocked the event loop", **data, intent_id=intent_id,
            intent=first.title if isinstance(first, Intent | Event) else None,
            threshold=self.threshold, hint=_HINT,
        )


#: The watch of the run whose handlers the current task calls (None: detection is off).
current_watch: ContextVar[BlockingWatch | None] = ContextVar(
    "openintent_blocking_watch", default=None
)


@types.coroutine
def timed(
    coroutine: Coroutine[Any, Any, Any], watch: BlockingWatch, handler: _Handler, subject: object
) -> Generator[Any, Any, Any]:
    """Await ``coroutine``, timing each of its steps; report the ones over the threshold.

    The same as ``await coroutine`` otherwise: values, exceptions, cancellation and closing
    pass through unchanged.
    """
    # The first step apart: most handlers finish in it, and this is the hot path.
    blamed = _blamed
    started = perf_counter()
    try:
        request = coroutine.send(None)
    except StopIteration as finished:
        if perf_counter() - started > watch.threshold:
            _report(watch, handler, subject, perf_counter() - started, blamed)
        return finished.value
    except BaseException:
        if perf_counter() - started > watch.threshold:
            _report(watch, handler, subject, perf_counter() - started, blamed)
        raise
    return (yield from _later_steps(coroutine, watch, handler, subject, request, started, blamed))


def _later_steps(
    coroutine: Coroutine[Any, Any, Any],
    watch: BlockingWatch,
    handler: _Handler,
    subject: object,
    request: Any,
    started: float,
    blamed: float,
) -> Generator[Any, Any, Any]:
    threshold = watch.threshold
    message: Any = None
    error: BaseException | None = None
    while True:
        took = perf_counter() - started
        if took > threshold:
            _report(watch, handler, subject, took, blamed)
        try:
            message = yield request
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as exc:  # cancellation, or anything thrown into the task
            error = exc
        blamed = _blamed
        started = perf_counter()
        try:
            if error is None:
                request = coroutine.send(message)
            else:
                thrown, error = error, None
                request = coroutine.throw(thrown)
        except StopIteration as finished:
            took = perf_counter() - started
            if took > threshold:
                _report(watch, handler, subject, took, blamed)
            return finished.value
        except BaseException:
            took = perf_counter() - started
            if took > threshold:
                _report(watch, handler, subject, took, blamed)
            raise


def _report(
    watch: BlockingWatch, handler: _Handler, subject: object, took: float, blamed: float
) -> None:
    own = took - (_blamed - blamed)  # less what handlers run inside this step were blamed for
    if own > watch.threshold:
        watch.blocked(handler, subject, own)


def _intent_of(subject: object) -> str | None:
    if isinstance(subject, tuple):
        subject = subject[0] if subject else None
    if subject is None or isinstance(subject, str):
        return subject
    if isinstance(subject, Intent):
        return subject.id
    intent_id = getattr(subject, "intent_id", None)  # an event, a breach, an approval request
    return intent_id if isinstance(intent_id, str) else None


def _about_blocking(subject: object) -> bool:
    first = subject[0] if isinstance(subject, tuple) and subject else subject
    return isinstance(first, Event) and first.type == EventType.LOOP_BLOCKED
