"""The runtime's clock: every timer of a run (backoff, timeouts) goes through one of these.

The scheduler never calls ``anyio.sleep`` or ``anyio.move_on_after`` itself, so a test clock
(the testing kit's virtual clock) can replace real time without touching the scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "RealClock", "run_timebase"]


@runtime_checkable
class Clock(Protocol):
    """What the runtime needs from a clock.

    Two optional methods, looked up with ``getattr``: ``wall(time) -> datetime`` gives the UTC
    time of a clock time (the ``at`` of events and decisions); a clock without one (the real
    clock) is anchored to ``datetime.now(UTC)`` once per run. ``check_event_loop()`` raises
    when the clock cannot run on the current event loop; the runtime calls it before a run
    logs anything.
    """

    def now(self) -> float:
        """Seconds on this clock; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def timeout(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        """A cancel scope that cancels its body after ``seconds`` of this clock's time.

        After the block, ``scope.cancelled_caught`` tells whether the deadline fired.
        """
        ...


class RealClock:
    """Real time: ``time.monotonic()`` for ``now()``, anyio's timers (any backend) for waits."""

    __slots__ = ()

    # asyncio's loop.time() is time.monotonic(); using it directly skips anyio's backend
    # lookup, which matters when every event of a large run is timestamped. (trio's loop has
    # a clock of its own, but only differences of now() mean anything.)
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        """``anyio.sleep(seconds)``."""
        await anyio.sleep(seconds)

    def timeout(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        """``anyio.move_on_after(seconds)``."""
        return anyio.move_on_after(seconds)

    def __repr__(self) -> str:
        return "RealClock()"


def run_timebase(clock: Clock) -> Callable[[float], datetime]:
    """Check that ``clock`` can run here, and return how one run dates its events.

    The clock's own ``wall(time)`` when it has one; otherwise UTC wall time read once, now,
    and anchored to the clock's time, so every ``at`` of the run is ``time`` apart from the
    others exactly as the clock says (wall-clock adjustments during a run do not show).
    """
    check = getattr(clock, "check_event_loop", None)
    if check is not None:
        check()
    wall: Callable[[float], datetime] | None = getattr(clock, "wall", None)
    if wall is not None:
        return wall
    # Clock time 0 as a UTC datetime, so ``at(t)`` is ``base + t`` exactly as a run read
    # back from its store dates it (from ``base.timestamp()``, its ``timebase``).
    base = datetime.now(UTC) - timedelta(seconds=clock.now())

    def at(time: float) -> datetime:
        return base + timedelta(seconds=time)

    return at
