"""Watching an asyncio event loop for idleness, on behalf of the virtual clocks driving on it.

Time on a :class:`~openintent.VirtualClock` jumps only when the loop has no ready callbacks,
no real-time timer other than cancel-scope deadlines, no file descriptor beyond its own
wake-up pipe, and no clock is held: see :mod:`openintent._virtual_clock` for why. One
:class:`LoopWatch` per event loop polls on behalf of every clock registered with it (two
pollers would each see the other's wake-ups as work and never jump).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Protocol

import anyio

from .errors import OpenIntentError

__all__ = ["LoopWatch", "Registration", "WatchedClock", "asyncio_loop", "wake_watch", "watch_of"]

_REAL_POLL = 0.0005  # seconds of real time between looks while real work is in flight
_DEADLOCK_POLL = 0.05  # seconds of real time between looks while nothing is scheduled


def asyncio_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio event loop, if the virtual clock can watch it; else a clear error."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        where = "no asyncio event loop is running here (anyio's trio backend?)"
    else:
        if hasattr(loop, "_ready") and hasattr(loop, "_scheduled"):
            return loop
        where = f"this event loop is a {type(loop).__name__}"
    raise OpenIntentError(
        f"VirtualClock works on asyncio's own event loop only, which it watches to tell when "
        f"every task waits, but {where}. Run tests that use it on asyncio (anyio_backend "
        f"'asyncio', the default loop); on trio, use the real clock (Runtime() without clock=)."
    )


def watch_of(loop: asyncio.AbstractEventLoop) -> LoopWatch:
    watch = _WATCHES.get(loop)
    if watch is None:
        watch = _WATCHES[loop] = LoopWatch(loop)
    return watch


class WatchedClock(Protocol):
    """What the watcher needs of a clock (a :class:`~openintent.VirtualClock`)."""

    deadlock_after: float | None

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or ``None``."""

    def advance(self, deadline: float) -> None:
        """Move time to ``deadline`` and fire what is due."""

    def held(self) -> bool:
        """Whether real work keeps time still (``clock.hold()``)."""


class Registration:
    """One driver's wish to have ``clock`` jumped while the loop idles."""

    __slots__ = ("clock", "on_deadlock", "fired")

    def __init__(self, clock: WatchedClock, on_deadlock: Callable[[str], None] | None) -> None:
        self.clock = clock
        self.on_deadlock = on_deadlock
        self.fired = False


_DEADLOCK_REASON = (
    "every task has waited for {seconds:g} s of real time with nothing scheduled on the "
    "virtual clock, so nothing can happen any more (an agent that hangs without a timeout? "
    "an approval nobody decides?)"
)


class LoopWatch:
    """Watches one event loop for idleness on behalf of every VirtualClock driving on it.

    One driver task at a time leads (polls the loop); the others wait to take over. A single
    poller matters: two pollers would each see the other's wake-ups as work and never jump.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.registrations: list[Registration] = []
        self.leading = False
        self._changed: anyio.Event | None = None
        self._leader_gone: anyio.Event | None = None

    def wake(self) -> None:
        """A timer was added: look again at once."""
        if self._changed is not None:
            self._changed.set()

    def _clocks(self) -> list[WatchedClock]:
        clocks: list[WatchedClock] = []
        for registration in self.registrations:
            if not any(clock is registration.clock for clock in clocks):
                clocks.append(registration.clock)
        return clocks

    async def serve(self, registration: Registration) -> None:
        """Watch for ``registration`` until cancelled (leading, or waiting to take over)."""
        self.registrations.append(registration)
        self.wake()
        try:
            while True:
                if not self.leading:
                    self.leading = True
                    try:
                        await self._lead()
                    finally:
                        self.leading = False
                        if self._leader_gone is not None:
                            self._leader_gone.set()
                            self._leader_gone = None
                else:
                    if self._leader_gone is None:
                        self._leader_gone = anyio.Event()
                    await self._leader_gone.wait()
        finally:
            self.registrations.remove(registration)
            if not self.registrations:
                _WATCHES.pop(self.loop, None)

    async def _lead(self) -> None:
        idle_since: float | None = None
        while True:
            clocks = self._clocks()
            if any(clock.next_deadline() is not None for clock in clocks):
                idle_since = None
                if await self._idle(clocks):
                    # Look again: tasks that ran during the idle check may have added timers.
                    for clock in clocks:
                        deadline = clock.next_deadline()
                        if deadline is not None:
                            clock.advance(deadline)
                continue
            self._changed = anyio.Event()
            with anyio.move_on_after(_DEADLOCK_POLL):
                await self._changed.wait()
            self._changed = None
            watchers = [
                registration for registration in self.registrations
                if registration.on_deadlock is not None and not registration.fired
                and registration.clock.deadlock_after is not None
            ]
            if (
                not watchers
                or any(clock.next_deadline() is not None for clock in self._clocks())
                or not await self._idle(self._clocks())
            ):
                idle_since = None
                continue
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            for registration in watchers:
                after = registration.clock.deadlock_after
                assert after is not None and registration.on_deadlock is not None
                if now - idle_since >= after:
                    registration.fired = True
                    registration.on_deadlock(_DEADLOCK_REASON.format(seconds=after))

    async def _idle(self, clocks: list[WatchedClock]) -> bool:
        loop = self.loop
        # Two passes: a wake-up can take one loop iteration to show up as a ready callback.
        for _ in range(2):
            await asyncio.sleep(0)
            if getattr(loop, "_ready", None):
                return False
        if any(clock.held() for clock in clocks) or _real_waits(loop):
            await asyncio.sleep(_REAL_POLL)  # real work in flight: let real time pass
            return False
        return True


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatch] = (
    weakref.WeakKeyDictionary()
)


def _real_waits(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether anything in the loop waits on real time or real I/O."""
    scheduled = getattr(loop, "_scheduled", ())
    if any(not handle.cancelled() and not _is_deadline(handle) for handle in scheduled):
        return True
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return False
    own = {getattr(loop, "_ssock", None), getattr(loop, "_csock", None)}
    own_fds = {sock.fileno() for sock in own if sock is not None}
    return any(key.fd not in own_fds for key in selector.get_map().values())


def _is_deadline(handle: asyncio.TimerHandle) -> bool:
    """Whether a timer is a cancel scope's deadline (``anyio.fail_after``/``move_on_after``,
    ``asyncio.timeout``): a bound on real time around the waiting, not a wait of its own."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    kind = type(owner)
    return (kind.__name__ == "CancelScope" and kind.__module__.startswith("anyio.")) or (
        kind.__name__ == "Timeout" and kind.__module__ == "asyncio.timeouts")


def wake_watch() -> None:
    """Tell the running loop's watcher, if any, that a timer was added."""
    try:
        watch = _WATCHES.get(asyncio.get_running_loop())
    except RuntimeError:
        return
    if watch is not None:
        watch.wake()
