"""``explore_crashes``: prove a workflow crash-safe by crashing it at every journal commit.

The portfolio runs once, uncrashed, on a :class:`~openintent.VirtualClock` with a SQLite
journal, to count its commits and keep its outcome. Then, for each crash point ``k`` (every
commit, or a seeded sample), it runs again on a fresh journal that *dies* at commit ``k``:
that commit is lost and nothing is written or dispatched after it, as when the process is
killed (work done since commit ``k - 1`` happened, but the journal does not know). A fresh
runtime then resumes the run from that journal, and the explorer checks what durability
promises:

* **outcome**: the resumed run ends as the uncrashed run did (its status, every intent's
  status and final state, the run's output);
* **effects**: an effect whose completion was journaled never runs again, and an effect that
  completed (with no failed call) ran exactly once over the crashed and the resumed run;
* **completions**: no intent whose completion was journaled runs again;
* **events**: the crashed journal is a prefix of the resumed one, sequence numbers contiguous
  from 0, none repeated.

An effect left in doubt (its call began, the crash lost its outcome, and it has no ``check``)
makes the resumed run fail with ``EffectInDoubtError`` by design: such points are listed in
``report.in_doubt``, not as failures.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import structlog.testing

from .._effects import effect_calls
from .._stores import CommitFailed, opening_backend
from .._stores.sqlite import SqliteBackend
from .._virtual_clock import VirtualClock
from ..errors import OpenIntentError
from ..models import Event, EventType, RunResult
from ..runtime import Runtime

__all__ = ["CrashFailure", "CrashReport", "CrashSafetyError", "InDoubt", "explore_crashes"]


class CrashSafetyError(OpenIntentError, AssertionError):
    """``report.raise_for_failures()`` found broken invariants (the message lists them)."""


@attrs.frozen
class CrashFailure:
    """One invariant broken at one crash point."""

    #: The commit the run crashed at (1 is the first commit).
    point: int
    #: Which promise broke: ``outcome``, ``effects``, ``completions`` or ``events``.
    invariant: str
    #: What was seen, in words.
    message: str
    #: The intent concerned, when there is one.
    title: str | None = None
    #: The resumed run's events around the place it went wrong.
    events: tuple[Event, ...] = ()

    def __str__(self) -> str:
        where = f" (intent {self.title!r})" if self.title else ""
        lines = [f"crash at commit {self.point}: {self.invariant}{where}: {self.message}"]
        lines += [f"    {event.seq:>4} {event.type:<18} {event.title or ''}"
                  for event in self.events]
        return "\n".join(lines)


@attrs.frozen
class InDoubt:
    """An effect a crash left in doubt (no ``check`` to ask): a person must decide."""

    point: int
    title: str
    effect: str


@attrs.frozen
class CrashReport:
    """What :func:`explore_crashes` found."""

    #: The crash points explored (commit numbers, from 1).
    points: tuple[int, ...]
    #: Every broken invariant (empty: the workflow is crash-safe at every point explored).
    failures: tuple[CrashFailure, ...]
    #: Effects left in doubt at some point (not failures: resolve them with
    #: ``rt.resolve_effect``, or give the effect a ``check``).
    in_doubt: tuple[InDoubt, ...]
    #: How many commits the uncrashed run made.
    commits: int

    @property
    def ok(self) -> bool:
        """No invariant broke."""
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise :class:`CrashSafetyError` listing every failure (nothing when there is
        none)."""
        if self.failures:
            shown = "\n".join(str(failure) for failure in self.failures[:10])
            more = len(self.failures) - 10
            tail = f"\n... and {more} more" if more > 0 else ""
            raise CrashSafetyError(
                f"{len(self.failures)} crash-safety failure(s) at {len(self.points)} crash "
                f"point(s) explored:\n{shown}{tail}")


class _CrashingBackend(SqliteBackend):
    """A SQLite journal that dies at commit ``crash_at``: that commit and every later one
    are lost (nothing reaches the file, and every wait for a commit fails from then on)."""

    def __init__(self, url: str, crash_at: int | None) -> None:
        super().__init__(url)
        self.crash_at = crash_at
        self.commits = 0
        self.dead = False

    def submit(self, log: Any, start: int, events: list[Any],
               done: Callable[[BaseException | None], None]) -> None:
        if not self.dead:
            self.commits += 1
            self.dead = self.commits == self.crash_at
        if self.dead:
            raise CommitFailed(f"explore_crashes: the run crashed at commit {self.crash_at}")
        super().submit(log, start, events, done)

    def _commit(self, log: Any, start: int, events: list[Any], text: str) -> None:
        if self.dead:  # closing writes what is left: not after a crash
            raise CommitFailed(f"explore_crashes: the run crashed at commit {self.crash_at}")
        super()._commit(log, start, events, text)

    # A killed process leaves its lease to expire; here the crashed run and its resume
    # share a process, so the crashing journal takes no lease at all.
    def acquire_run(self, run_id: str, holder: str) -> None:
        pass

    def release_run(self, run_id: str, holder: str) -> None:
        pass


async def explore_crashes(
    spec: Any,
    agents: Sequence[Any] = (),
    coordinator: Any = None,
    store_dir: str | Path = ".",
    points: int | Sequence[int] | None = None,
    seed: int = 0,
) -> CrashReport:
    """Crash ``spec``'s run at every journal commit (or a sample), resume it, and check the
    invariants of the module docstring; returns a :class:`CrashReport`.

    ``agents`` and ``coordinator`` are what ``Runtime(agents=...)`` and ``rt.run(...,
    coordinator=...)`` take. Give classes to have fresh agents for every runtime (as a
    restarted process would); instances are shared by every run, like an outside service.
    Agents should answer the same way each time: an outcome that depends on the attempt
    number or on time differs after a crash for that reason alone. ``store_dir`` holds the
    journal files (one per run); ``points``: ``None`` explores every commit, an int that many
    commits chosen with ``seed``, a list those commits. Runs on a virtual clock, in this
    process: a 20-intent portfolio explores every point in seconds.

    >>> report = await explore_crashes(spec, agents=[Extractor, Loader], store_dir=tmp_path)
    >>> report.raise_for_failures()
    """
    files = _Files(Path(store_dir))
    with _quiet():
        baseline, baseline_backend, _ = await _run(spec, agents, coordinator, files.next(), None)
    commits = baseline_backend.commits
    chosen = _points(points, commits, seed)
    failures: list[CrashFailure] = []
    in_doubt: list[InDoubt] = []
    for point in chosen:
        with _quiet():
            found = await _explore(spec, agents, coordinator, files.next(), point, baseline)
        failures.extend(found[0])
        in_doubt.extend(found[1])
    return CrashReport(tuple(chosen), tuple(failures), tuple(in_doubt), commits)


class _Files:
    """A fresh journal file for each run of one exploration."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._number = 0

    def next(self) -> str:
        self._number += 1
        path = self._directory / f"explore-{self._number}.db"
        for leftover in (path, path.with_name(path.name + "-wal"),
                         path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        return f"sqlite:///{path.resolve()}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dying runs log errors by design: keep them out of the user's output."""
    with structlog.testing.capture_logs():
        yield


def _points(points: int | Sequence[int] | None, commits: int, seed: int) -> list[int]:
    every = list(range(1, commits + 1))
    if points is None:
        return every
    if isinstance(points, int):
        if points < 1:
            raise OpenIntentError(f"explore_crashes(points={points}): give at least 1")
        return sorted(random.Random(seed).sample(every, min(points, commits)))
    chosen = sorted(set(points))
    outside = [point for point in chosen if not 1 <= point <= commits]
    if outside:
        raise OpenIntentError(
            f"explore_crashes(points=...): {outside} are not commits of this run (it makes "
            f"{commits}: 1 to {commits})")
    return chosen


async def _run(
    spec: Any, agents: Sequence[Any], coordinator: Any, url: str, crash_at: int | None
) -> tuple[RunResult | None, _CrashingBackend, list[tuple[str, str, str]]]:
    """Run ``spec`` on a fresh journal that dies at ``crash_at``; the result (``None`` when
    it crashed), the backend (its commit count) and the effect calls made."""
    made: list[_CrashingBackend] = []

    def backend(store: str) -> _CrashingBackend:
        made.append(_CrashingBackend(store, crash_at))
        return made[0]

    calls: list[tuple[str, str, str]] = []
    opened = opening_backend.set(backend)
    recording = effect_calls.set(calls)
    try:
        result: RunResult | None = None
        try:
            async with Runtime(agents=list(agents), store=url, clock=VirtualClock(),
                               seed=0) as rt:
                result = await rt.run(spec, coordinator=coordinator)
        except Exception:
            if not (made and made[0].dead):
                raise  # not the crash: a fault of the workflow or the library
    finally:
        effect_calls.reset(recording)
        opening_backend.reset(opened)
    return result, made[0], calls


async def _explore(
    spec: Any,
    agents: Sequence[Any],
    coordinator: Any,
    url: str,
    point: int,
    baseline: RunResult | None,
) -> tuple[list[CrashFailure], list[InDoubt]]:
    """Crash at ``point``, resume, and check; the failures and effects in doubt found."""
    _, crashed_backend, crashed_calls = await _run(spec, agents, coordinator, url, point)
    crashed_backend.close()
    async with Runtime(agents=[], store=url) as reader:
        runs = reader.runs()
        journal: list[Event] = []
        if runs:
            journal = list((await reader.load(runs[0].portfolio_id)).events)
    if not journal:
        return [], []  # nothing was acknowledged: there is no run to resume
    portfolio_id = runs[0].portfolio_id
    calls: list[tuple[str, str, str]] = []
    recording = effect_calls.set(calls)
    try:
        async with Runtime(agents=list(agents), store=url, clock=VirtualClock(),
                           seed=0) as rt:
            # The spec too: a YAML workflow's coordinator block is rebuilt from it.
            resumed = await rt.resume(portfolio_id, spec, coordinator=coordinator)
    finally:
        effect_calls.reset(recording)
    return _check(point, baseline, journal, resumed, crashed_calls, calls)


def _check(
    point: int,
    baseline: RunResult | None,
    journal: list[Event],
    resumed: RunResult,
    crashed_calls: list[tuple[str, str, str]],
    resumed_calls: list[tuple[str, str, str]],
) -> tuple[list[CrashFailure], list[InDoubt]]:
    failures: list[CrashFailure] = []
    events = list(resumed.events)
    title_of = {intent.id: title for title, intent in resumed.intents.items()}

    def around(seq: int) -> tuple[Event, ...]:
        return tuple(events[max(0, seq - 3):seq + 4])

    def fail(invariant: str, message: str, title: str | None = None, seq: int = 0) -> None:
        failures.append(CrashFailure(point, invariant, message, title, around(seq)))

    # events: the crashed journal is a prefix; seq contiguous, none repeated.
    if [event.seq for event in events] != list(range(len(events))):
        fail("events", "sequence numbers are not 0, 1, 2, ... (an event lost or repeated)")
    for before, after in zip(journal, events, strict=False):
        if (before.seq, before.type, before.intent_id, before.data) != (
                after.seq, after.type, after.intent_id, after.data):
            fail("events", f"event {before.seq} ({before.type}) changed after the resume",
                 before.title, before.seq)
            break
    if len(events) < len(journal):
        fail("events", "the resumed log is shorter than the crashed journal")

    # completions: an acknowledged completion never runs again.
    done = {event.intent_id for event in journal if event.type == EventType.COMPLETED}
    for event in events[len(journal):]:
        if event.type == EventType.DISPATCHED and event.intent_id in done:
            fail("completions", "its completion was journaled before the crash, yet it was "
                 "dispatched again", event.title, event.seq)

    # effects, and what is in doubt.
    doubts = [InDoubt(point, title_of.get(intent.id, title), effect)
              for title, intent in resumed.intents.items()
              if intent.error_type == "EffectInDoubtError"
              for effect in _doubtful(intent.error or "", events, intent.id)]
    failures.extend(_effect_failures(point, journal, events, crashed_calls, resumed_calls,
                                     title_of, around))

    # outcome: as the uncrashed run ended (unless a person must decide an effect first).
    if baseline is not None and not doubts:
        if resumed.status != baseline.status:
            fail("outcome", f"the run ended {resumed.status}; uncrashed it ended "
                 f"{baseline.status}", seq=len(events) - 1)
        if resumed.output != baseline.output:
            fail("outcome", f"output {resumed.output!r}; uncrashed {baseline.output!r}",
                 seq=len(events) - 1)
        for title, intent in baseline.intents.items():
            again = resumed.intents.get(title)
            if again is None:
                fail("outcome", "missing from the resumed run", title)
            elif (again.status, again.state) != (intent.status, intent.state):
                fail("outcome", f"ended {again.status} with state {dict(again.state)!r}; "
                     f"uncrashed {intent.status} with {dict(intent.state)!r}", title)
    return failures, doubts


def _effect(event: Event) -> tuple[str, str]:
    """The (intent id, effect name) an ``effect_*`` event is about."""
    return event.intent_id or "", str((event.data or {}).get("name", ""))


def _doubtful(error: str, events: list[Event], intent_id: str) -> list[str]:
    """The effects of an intent that failed in doubt (started, never finished)."""
    state: dict[str, str] = {}
    for event in events:
        if event.intent_id == intent_id and event.type.startswith("effect_"):
            state[_effect(event)[1]] = event.type
    names = [name for name, last in state.items() if last == EventType.EFFECT_STARTED]
    return names or [error]


def _effect_failures(
    point: int,
    journal: list[Event],
    events: list[Event],
    crashed_calls: list[tuple[str, str, str]],
    resumed_calls: list[tuple[str, str, str]],
    title_of: dict[str, str],
    around: Callable[[int], tuple[Event, ...]],
) -> list[CrashFailure]:
    """A completed effect ran again after its completion was journaled; a completed effect's
    function ran other than once (plus once per failed call the log shows)."""
    failures: list[CrashFailure] = []
    acknowledged = {_effect(event) for event in journal
                    if event.type == EventType.EFFECT_COMPLETED}
    for _pid, intent_id, name in resumed_calls:
        if (intent_id, name) in acknowledged:
            failures.append(CrashFailure(
                point, "effects", f"effect {name!r} ran again after its completion was "
                "journaled", title_of.get(intent_id)))
    calls = Counter((intent_id, name) for _pid, intent_id, name in
                    (*crashed_calls, *resumed_calls))
    # Failed calls (``NotCalled``: stopped before the function was called, not a call).
    failed = Counter(_effect(event) for event in events
                     if event.type == EventType.EFFECT_FAILED
                     and (event.data or {}).get("error_type") != "NotCalled")
    for event in events:
        if event.type != EventType.EFFECT_COMPLETED:
            continue
        key = _effect(event)
        checked = bool((event.data or {}).get("checked"))
        # A check that confirmed the effect stands for its one call (made before the crash).
        if calls[key] > failed[key] + 1 or (not checked and calls[key] < failed[key] + 1):
            failures.append(CrashFailure(
                point, "effects", f"effect {key[1]!r} completed, and its function was called "
                f"{calls[key]} time(s) with {failed[key]} failed call(s) journaled",
                title_of.get(key[0]), around(event.seq)))
    return failures
