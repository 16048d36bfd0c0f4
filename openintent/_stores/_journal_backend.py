"""What the journal backends (:mod:`.sqlite`, :mod:`.postgres`) share: their commits on one
writer thread (:class:`JournalCommits`: ``submit``, the commit under the lock, the last
commits at close) and the reading of a run's log (``open_run``, ``read``).

A backend keeps its own ``_commit`` (one transaction in its database), its reads of a run's
row and events (``_row``, ``_events``, ``_on_file``) and what differs.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from . import CommitFailed
from ._sqlite_journal import JournalLog, RawEvent, encode_events
from ._writer_thread import WriterThread, waker

__all__ = ["JournalCommits"]


class JournalCommits:
    """The commits of a journal backend: each on the backend's writer thread, in the order
    they are submitted, under its lock; a backend sets the attributes below and writes
    ``_commit``."""

    url: str
    _thread: WriterThread
    _closing: bool
    _closed: bool
    _lock: threading.Lock
    _live: weakref.WeakValueDictionary[str, JournalLog]
    _finalizer: Callable[[], Any]
    #: How many commits this backend made (the PostgreSQL inbox's change check counts them).
    commits = 0

    def _commit(self, log: JournalLog, start: int, events: list[RawEvent], text: str) -> None:
        """Write ``events`` in one transaction (``_lock`` held)."""
        raise NotImplementedError

    def _row(self, run_id: str) -> tuple[str, str | None, float]:
        """The run's name, parent and time base (:class:`RunNotFoundError` for none)."""
        raise NotImplementedError

    def _events(self, run_id: str) -> list[RawEvent]:
        """The run's committed events, read from the store."""
        raise NotImplementedError

    def _on_file(self, run_id: str) -> int:
        """How many events of the run the store holds."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reading runs

    def open_run(self, run_id: str) -> JournalLog:
        live = self._live.get(run_id)
        if live is not None and (live.committed < len(live)
                                 or self._on_file(run_id) == len(live)):
            return live  # this process's own log of the run, as the store has it
        # Not open here, or another process went on with it since: read it from the store.
        name, parent, timebase = self._row(run_id)
        log = JournalLog(run_id, name, parent, timebase, self, self._events(run_id))
        self._live[run_id] = log
        return log

    def read(self, run_id: str) -> Sequence[RawEvent]:
        """The committed events of a run, from the store (events a live run appended but
        has not committed yet are not there)."""
        self._row(run_id)
        return self._events(run_id)

    def read_list(self, run_id: str) -> list[RawEvent]:
        """The committed events of a run, as a new list."""
        self._row(run_id)
        return self._events(run_id)

    def timebase(self, run_id: str) -> float:
        return self._row(run_id)[2]

    # ------------------------------------------------------------------ commits

    def submit(self, log: JournalLog, start: int, events: list[RawEvent],
               done: Callable[[BaseException | None], None]) -> None:
        """Write ``events`` (``log``'s from ``start`` on) in one transaction on the writer
        thread, then call ``done(error)`` on the event loop that asked (which goes on
        meanwhile). Runs after every commit submitted before it."""
        if self._closing:
            raise CommitFailed(f"the store {self.url} was closed before run {log.run_id} "
                               f"({log.name!r}) committed its last events")
        # Encoded here, on the loop's thread: the writer thread then takes the GIL back once,
        # after the database's work, rather than fight the busy loop for it while encoding.
        text = encode_events(events)
        wake = waker()

        def work() -> None:  # on the writer thread
            error: BaseException | None = None
            try:
                self._write(log, start, events, text)
            except BaseException as exc:
                error = exc
            try:
                wake(done, error)
            except RuntimeError:
                pass  # the event loop is gone: nobody waits for this commit any more

        self._thread.submit(work)

    def _write(self, log: JournalLog, start: int, events: list[RawEvent], text: str) -> None:
        """One commit (on the writer thread)."""
        with self._lock:
            if self._closed:
                raise CommitFailed(f"the store {self.url} was closed before run {log.run_id} "
                                   f"({log.name!r}) committed its last events")
            self._commit(log, start, events, text)
            log.written = start + len(events)
            self.commits += 1

    def _close_journal(self) -> bool:
        """Stop taking commits, let those submitted complete (their waiters are woken as
        usual), write what live runs appended and did not commit, and run the finalizer.
        ``False`` when the backend was closed already."""
        self._closing = True
        self._thread.stop()
        with self._lock:
            if self._closed:
                return False
            for log in list(self._live.values()):
                start = max(log.committed, log.written)
                if log.error is None and start < len(log):
                    try:
                        events = log[start:]
                        self._commit(log, start, events, encode_events(events))
                        log.committed = log.written = len(log)
                    except CommitFailed as exc:
                        structlog.get_logger("openintent").error(
                            "journal commit at close failed", error=str(exc))
            self._closed = True
            self._finalizer()
        return True

