"""PostgreSQL notifications for one backend: a listener thread on its own connection.

The store's processes wake each other with ``NOTIFY`` rather than polling:

* ``openintent_tasks`` (payload: an agent id): a task for that agent is ready (queued,
  released by a restarted worker);
* ``openintent_done`` (payload: a run id): tasks of that run finished or were cancelled;
* ``openintent_runs`` (payload: a run id): the run's lease or approval inbox changed, or it
  started, resumed or ended;
* ``openintent_events`` (:data:`EVENTS`; payload: a run id): events of the run were committed
  (one notice per commit). Not in :data:`CHANNELS`: only a listener made for it
  (``PgListener(url, [EVENTS])``, a process that follows a run) receives those.

:class:`PgListener` keeps one autocommit connection that ``LISTEN``\\ s on those channels, on a
daemon thread, and calls the callbacks subscribed to a channel with each payload (on that
thread: keep them short). When the server goes away the thread reconnects with growing
pauses. Each time it starts listening (the first time too) it calls every callback with
``None``: notifications sent before were not seen, so look again at whatever you wait for.
Every waiter also polls slowly on its own, which covers a notification lost any other way.

Async code waits through a :class:`Watch` (asyncio or trio)::

    watch = listener.watch("openintent_runs", [run_id])  # notices from now on
    ...look at the database...
    await watch.wait(2.0)  # at once if a notice came since; else the next one, or 2 s
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import anyio
import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict

from ._pg_retry import where
from ._pg_schema import PgUrl
from ._writer_thread import waker

__all__ = ["CHANNELS", "EVENTS", "PgListener", "Watch"]

#: The channels a listener listens on (unless told others).
CHANNELS = ("openintent_tasks", "openintent_done", "openintent_runs")
#: The channel of committed events (see the module docstring).
EVENTS = "openintent_events"

#: A callback: the payload, or ``None`` once listening (again): notices may have been missed.
Callback = Callable[[str | None], None]

_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 5.0
_PING_EVERY = 15.0  # seconds of silence before the connection is checked with a query


class PgListener:
    """One backend's listener thread (see the module docstring). The thread starts with the
    first :meth:`subscribe` (or :meth:`watch`); :meth:`close` stops and joins it."""

    def __init__(self, url: PgUrl, channels: Collection[str] = CHANNELS) -> None:
        self.url = url
        self.channels = tuple(channels)
        self._callbacks: dict[str, list[Callback]] = {channel: [] for channel in self.channels}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        #: Set once the thread is listening (again, after a reconnection) and has told the
        #: callbacks subscribed by then (``None``).
        self.listening = threading.Event()
        #: How many times it connected (1: once, never lost).
        self.connections = 0

    # ---------------------------------------------------------------- subscribing

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` on the listener thread for each notification on
        ``channel``, and ``callback(None)`` each time the thread starts listening (notices
        sent before were missed). Returns the function that unsubscribes it."""
        if channel not in self._callbacks:
            raise ValueError(f"the listener listens on {', '.join(self.channels)}, "
                             f"not {channel!r}")
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError(f"the listener of {where(self.url)} is closed")
            # Copy on write: the thread reads the list without the lock.
            self._callbacks[channel] = [*self._callbacks[channel], callback]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name=f"openintent listener {where(self.url)}",
                    daemon=True)
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks[channel] = [known for known in self._callbacks[channel]
                                            if known is not callback]

        return unsubscribe

    def watch(self, channel: str, payloads: Collection[str] | None = None) -> Watch:
        """A :class:`Watch` of ``channel``: notifications whose payload is in ``payloads``
        (any, when ``None``) from now on. Close it when done."""
        return Watch(self, channel, payloads)

    async def wait(self, channel: str, payloads: Collection[str] | None = None,
                   seconds: float | None = None) -> bool:
        """Wait for the next notification on ``channel`` with a payload in ``payloads`` (or
        a reconnection), at most ``seconds``; ``True`` when one came."""
        with self.watch(channel, payloads) as watch:
            return await watch.wait(seconds)

    # ---------------------------------------------------------------- the thread

    def close(self) -> None:
        """Stop listening and join the thread (callbacks are not called any more)."""
        with self._lock:
            self._closed.set()
            thread = self._thread
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self) -> None:
        pause = _FIRST_PAUSE
        logger = structlog.get_logger("openintent")
        while not self._closed.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                logger.warning("cannot listen for notifications; retrying",
                               database=where(self.url), error=str(exc).strip(),
                               pause=pause)
                self._sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE)
                continue
            pause = _FIRST_PAUSE
            try:
                self.connections += 1
                if self.connections > 1:
                    logger.info("listening for notifications again", database=where(self.url))
                # Notices sent before LISTEN (or while reconnecting) were missed: look again.
                self._dispatch_all(None)
                self.listening.set()
                self._listen(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                if not self._closed.is_set():
                    logger.warning("lost the notification connection; reconnecting",
                                   database=where(self.url), error=str(exc).strip())
            finally:
                conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {}
        if "connect_timeout" not in conninfo_to_dict(self.url.conninfo):
            options["connect_timeout"] = 10  # a host that vanished must not hang close()
        conn = psycopg.connect(self.url.conninfo, autocommit=True, **options)
        try:
            for channel in self.channels:
                conn.execute(f"LISTEN {channel}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        """Hand notifications to the callbacks until closed (or the connection fails)."""
        fileno = conn.fileno()
        quiet_since = time.monotonic()
        while not self._closed.is_set():
            got = False
            for notice in conn.notifies(timeout=0):
                got = True
                self._dispatch(notice.channel, notice.payload)
            if got:
                quiet_since = time.monotonic()
                continue
            wake = self._wake_r.fileno()
            readable, _, _ = select.select([fileno, wake], [], [], _PING_EVERY)
            if wake in readable:
                return
            if not readable and time.monotonic() - quiet_since >= _PING_EVERY:
                conn.execute("SELECT 1")  # a half-open TCP connection shows up here
                quiet_since = time.monotonic()

    def _dispatch(self, channel: str, payload: str | None) -> None:
        for callback in self._callbacks.get(channel, ()):
            try:
                callback(payload)
            except Exception:  # a callback's bug must not stop every other waiter
                structlog.get_logger("openintent").exception(
                    "notification callback failed", channel=channel)

    def _dispatch_all(self, payload: None) -> None:
        for channel in self.channels:
            self._dispatch(channel, payload)

    def _sleep(self, seconds: float) -> None:
        select.select([self._wake_r], [], [], seconds)


class Watch:
    """Notifications on one channel (and some payloads), noticed from its creation on, for
    async code on asyncio or trio. A notice that comes while nobody waits is kept (one flag),
    so the next :meth:`wait` returns at once: look at the database, then wait, and nothing
    slips between the two. A context manager; :meth:`close` unsubscribes."""

    def __init__(self, listener: PgListener, channel: str,
                 payloads: Collection[str] | None) -> None:
        self._payloads = None if payloads is None else frozenset(payloads)
        self._lock = threading.Lock()
        self._noticed = False
        self._waiters: list[tuple[Any, anyio.Event]] = []
        self._unsubscribe = listener.subscribe(channel, self._notice)

    def _notice(self, payload: str | None) -> None:  # on the listener thread
        if payload is not None and self._payloads is not None and payload not in self._payloads:
            return
        with self._lock:
            waiters, self._waiters = self._waiters, []
            if not waiters:
                self._noticed = True
        for wake, event in waiters:
            try:
                wake(event.set)
            except RuntimeError:
                pass  # its event loop is gone

    def clear(self) -> None:
        """Forget a notice that came since the last wait (you are about to look anyway)."""
        with self._lock:
            self._noticed = False

    async def wait(self, seconds: float | None = None) -> bool:
        """Return ``True`` once a notice came since the last wait (or :meth:`clear`), at once
        if one did; ``False`` after ``seconds`` without one (``None``: no limit)."""
        event = anyio.Event()
        waiter = (waker(), event)
        with self._lock:
            if self._noticed:
                self._noticed = False
                return True
            self._waiters.append(waiter)
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            with self._lock:
                # Still listed: no notice came for it (a notice takes the list).
                waiting = waiter in self._waiters
                if waiting:
                    self._waiters.remove(waiter)
        return not waiting

    def close(self) -> None:
        """Stop watching; a wait going on returns ``True`` (look again: you will find the
        store closed)."""
        self._unsubscribe()
        self._notice(None)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
