"""A virtual clock: time stands still while anything can run, then jumps to the next deadline.

Like trio's ``MockClock(autojump_threshold=0)``: when every task of the event loop is blocked
and the only thing that could wake one is a deadline on this clock, time jumps to the earliest
such deadline. A run with a 300 s timeout, retry backoff and slow simulated agents finishes in
milliseconds of wall time, and with a seed it produces the same events (timestamps included)
every time.

How "every task is blocked" is detected (asyncio): trio's scheduler knows when no task can
run, and ``looptime`` hooks asyncio's selector call, which is reached only when no callback is
ready. Without patching the loop, a driver task does the same from the outside: it yields to
the event loop and looks at what the loop could do next. Time jumps only when the loop has no
ready callbacks, no real-time timer other than the driver's own, no file descriptor to watch
beyond its internal wake-up pipe, and no worker thread the runtime is waiting for (``hold()``).
So a task waiting on real I/O, a real sleep or a thread keeps time from jumping, and no
deadline fires early. The runtime runs a driver for the length of each run; a ``sleep`` outside
any run runs one of its own for as long as it waits, so time never moves while another task
can still run (a run about to start, say), however many steps it takes to get there.

``at`` (the UTC time of events and decisions) is ``start + now()`` for a ``datetime`` start,
else the Unix epoch plus ``now()``: a seeded run logs the same datetimes every time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel

from ._context import active_run
from ._loop_watch import Registration, asyncio_loop, wake_watch, watch_of
from .errors import OpenIntentError

__all__ = ["VirtualClock"]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Timer:
    __slots__ = ("deadline", "order", "callback", "active")

    def __init__(self, deadline: float, order: int, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.order = order
        self.callback = callback
        self.active = True

    def __lt__(self, other: _Timer) -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)


class VirtualClock:
    """A clock whose time only moves when every task is waiting on it.

    Pass it as ``Runtime(clock=VirtualClock())``. Every timer of the library goes through it:
    intent timeouts, retry backoff, simulated agents' delays, and ``openintent.sleep()`` /
    ``rt.clock.sleep()`` in your handlers. Outside a run, ``sleep`` too waits until every task
    of the event loop waits, then jumps: alone, it returns at once.

    ``start`` is where ``now()`` begins (seconds), or a timezone-aware ``datetime``: ``now()``
    then begins at 0.0 and the ``at`` of every event is ``start`` plus ``now()`` seconds. A
    float start dates events from the Unix epoch (``VirtualClock()``: 1970-01-01 00:00 UTC).
    A naive ``datetime`` is refused, since its time zone would be a guess.

    Work in a thread the runtime does not start itself keeps time still only inside
    ``with clock.hold():``. asyncio only: on another event loop (anyio's trio backend) every
    use raises :class:`~openintent.OpenIntentError`.

    A run in which every task waits and nothing is scheduled for ``deadlock_after`` seconds of
    real time (``None``: never) is deadlocked: it is halted with a ``virtual_clock`` breach that
    says so, rather than hanging the test.

    >>> clock = VirtualClock(start=datetime(2025, 1, 1, tzinfo=UTC))
    >>> clock.now(), clock.wall(90.0).isoformat()
    (0.0, '2025-01-01T00:01:30+00:00')
    """

    def __init__(
        self, start: float | datetime = 0.0, *, deadlock_after: float | None = 1.0
    ) -> None:
        if isinstance(start, datetime):
            if start.tzinfo is None or start.utcoffset() is None:
                raise OpenIntentError(
                    f"VirtualClock(start={start!r}) is a naive datetime, so the UTC time of "
                    f"events would be a guess; give it a time zone, e.g. "
                    f"datetime(2025, 1, 1, tzinfo=UTC) with `from datetime import UTC`"
                )
            self.epoch = start.astimezone(UTC)
            self._now = 0.0
        else:
            self.epoch = _UNIX_EPOCH
            self._now = float(start)
        self.deadlock_after = deadlock_after
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._holds = 0
        self._driving = 0  # how many runs drive this clock now
        self.jumps = 0  # how many times time jumped (handy in tests)

    def now(self) -> float:
        """The current virtual time, in seconds."""
        return self._now

    def wall(self, time: float) -> datetime:
        """The UTC ``datetime`` of virtual time ``time``: ``epoch`` plus ``time`` seconds.

        ``epoch`` is ``start`` when it was a ``datetime``, else the Unix epoch.
        """
        return self.epoch + timedelta(seconds=time)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:g}, timers={sum(t.active for t in self._timers)})"

    # ------------------------------------------------------------------ timers

    def _add(self, seconds: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self._now + max(0.0, seconds), next(self._order), callback)
        heapq.heappush(self._timers, timer)
        wake_watch()
        return timer

    def next_deadline(self) -> float | None:
        """The earliest pending deadline (``None``: none); for the loop watcher."""
        timers = self._timers
        while timers and not timers[0].active:
            heapq.heappop(timers)
        if not timers or math.isinf(timers[0].deadline):
            return None
        return timers[0].deadline

    def advance(self, deadline: float) -> None:
        """Move time to ``deadline`` and fire every timer due by then, in order (the loop
        watcher calls it when every task waits)."""
        self._now = max(self._now, deadline)
        self.jumps += 1
        timers = self._timers
        while timers and (not timers[0].active or timers[0].deadline <= self._now):
            timer = heapq.heappop(timers)
            if timer.active:
                timer.active = False
                timer.callback()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time (``math.inf``: until cancelled).

        Time jumps once every task of the event loop waits (on this clock, or on nothing that
        real time or real I/O could end), in a run or outside one.
        """
        asyncio_loop()
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        woken = anyio.Event()
        timer = self._add(seconds, woken.set)
        try:
            run = active_run.get()
            if self._driving and run is not None and run.clock is self:
                # A task of a run on this clock: the run's driver outlives it and fires the timer.
                await woken.wait()
                return
            # Anywhere else, drive the clock for as long as this sleep waits (the runs that
            # drive it now may end first): time moves only once every task of the loop waits,
            # a run that starts meanwhile included.
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drive_for_sleep)
                await woken.wait()
                tg.cancel_scope.cancel()
        finally:
            timer.active = False

    async def _drive_for_sleep(self) -> None:
        loop = asyncio_loop()
        await watch_of(loop).serve(Registration(self, None))

    @contextmanager
    def timeout(self, seconds: float) -> Iterator[anyio.CancelScope]:
        """A cancel scope cancelled after ``seconds`` of virtual time."""
        asyncio_loop()
        scope = anyio.CancelScope()
        timer = self._add(seconds, scope.cancel)
        try:
            with scope:
                yield scope
        finally:
            timer.active = False

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep time from jumping while real work (a thread, say) is in flight."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    def held(self) -> bool:
        """Whether real work in flight (``hold()``) keeps time still."""
        return self._holds > 0

    # ------------------------------------------------------------------ driving

    async def drive(self, on_deadlock: Callable[[str], None] | None = None) -> None:
        """Jump time whenever the event loop is idle but for this clock's deadlines.

        The runtime runs this in a task for the length of each run and cancels it after.
        Every driver on an event loop registers with one watcher for that loop, so runs on
        one clock, or on clocks of their own, can go on at once. When every task waits and
        nothing is scheduled for ``deadlock_after`` seconds of real time, nothing can ever
        happen: ``on_deadlock(reason)`` is called (the runtime halts the run) instead of a test
        hanging forever.
        """
        watch = watch_of(asyncio_loop())
        self._driving += 1
        try:
            await watch.serve(Registration(self, on_deadlock))
        finally:
            self._driving -= 1

    def check_event_loop(self) -> None:
        """Raise :class:`~openintent.OpenIntentError` unless this runs on asyncio's own event
        loop (the runtime calls it before a run on this clock logs anything)."""
        asyncio_loop()

