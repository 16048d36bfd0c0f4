"""The runtime's clock: every timer of a run (backoff, timeouts) goes through one of these.

The scheduler never calls ``anyio.sleep`` or ``anyio.move_on_after`` itself, so a test clock
(the testing kit's virtual clock) can replace real time without touching the scheduler.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "RealClock"]


@runtime_checkable
class Clock(Protocol):
    """What the runtime needs from a clock."""

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
    """Real time: the monotonic clock asyncio's event loop uses."""

    __slots__ = ()

    # asyncio's loop.time() is time.monotonic(); using it directly skips anyio's backend
    # lookup, which matters when every event of a large run is timestamped.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        """``anyio.sleep(seconds)``."""
        await anyio.sleep(seconds)

    def timeout(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        """``anyio.move_on_after(seconds)``."""
        return anyio.move_on_after(seconds)

    def __repr__(self) -> str:
        return "RealClock()"
