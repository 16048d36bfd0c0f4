"""Coordinator failover (``rt.standby``): a standby process takes a run over from its journal.

A run going on holds its lease in the store and renews it every third of the lease's TTL
(``Launcher.hold``). :func:`stand_by` waits while another holder's lease is live, looking at
the run about every sixth of the TTL (real time, through a cancel scope's deadline: a
virtual clock still jumps meanwhile), and whether the holder's process, when it runs on this
host, is still there every quarter second (no read of the store); on a store that notifies
(PostgreSQL) it looks again at once when the run's lease is given back or the run ends (the
``openintent_runs`` notice). Then:

* the run ended meanwhile (its row is not ``running``): its result comes back, read from
  the log as ``rt.load`` reads it, and nothing is written;
* the lease is free, or its holder died (a process gone from this host: at once) or stopped
  renewing (after the TTL): the standby takes the lease and continues the run from its log
  exactly as ``rt.resume`` does (see :mod:`._resume`), after a ``coordinator_failed_over``
  event and a decision of the runtime saying who held the run, who took it over and when.

The old holder, if it wakes up, cannot corrupt the log: its next renewal of the lease fails
(:class:`~openintent.errors.RunInUseError`, logged), which stops its run, and its commits are
refused (each commit's first ``seq`` is the journal's key: the standby wrote those first).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from ._coordination import RUNTIME
from ._launch import Launcher
from ._readback import load_run
from ._resume import Resumption, open_resumption
from ._specs import PortfolioSpec
from ._workflow_port import RunnableWorkflow
from .errors import OpenIntentError, RunInUseError, RunNotFoundError
from .models import EventType, RunResult

__all__ = ["stand_by"]

#: A run's row says it may go on (a client's draft, or a run going on or crashed).
_OPEN = ("running", "draft")
#: Seconds between looks at whether a lease's process on this host is gone.
_LOOK = 0.25


async def stand_by(
    launcher: Launcher,
    portfolio_id: str,
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
    guardrails: Sequence[Any] | None,
) -> Resumption | RunResult:
    """Wait for the run's lease (see the module docstring); the run taken over, ready to
    drive, or the result of a run that ended meanwhile."""
    if not isinstance(portfolio_id, str):
        raise OpenIntentError(
            f"rt.standby() takes the portfolio id of a run (a str, result.portfolio_id), got "
            f"{portfolio_id!r}")
    backend = launcher.backend
    period = float(getattr(backend, "lease_ttl", 60.0)) / 6
    listener = getattr(backend, "listener", None)
    watch = None if listener is None else listener.watch("openintent_runs", [portfolio_id])
    try:
        return await _stand_by(launcher, portfolio_id, spec, coordinator, guardrails, period,
                               watch)
    finally:
        if watch is not None:
            watch.close()


async def _stand_by(
    launcher: Launcher,
    portfolio_id: str,
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
    guardrails: Sequence[Any] | None,
    period: float,
    watch: Any,
) -> Resumption | RunResult:
    backend = launcher.backend
    while True:
        if watch is not None:
            watch.clear()  # about to look: a notice from now on ends the next wait
        info = next((info for info in backend.runs() if info.portfolio_id == portfolio_id),
                    None)
        if info is None:
            raise RunNotFoundError(
                f"the store {backend.url} holds no run {portfolio_id!r}; rt.runs() lists the "
                "runs it holds")
        if info.status not in _OPEN:
            return load_run(backend, portfolio_id)
        lease = getattr(backend, "run_lease", None)
        held = lease(portfolio_id) if lease is not None else None
        try:
            resumption = open_resumption(launcher, portfolio_id, spec, coordinator, guardrails,
                                         "rt.standby()")
        except RunInUseError:
            await _wait(backend, held, period, watch)
            continue
        if resumption.run is None:  # ended for good just now
            assert resumption.result is not None
            resumption.release()
            return resumption.result
        _record(resumption, held)
        return resumption


async def _wait(backend: Any, held: dict[str, Any] | None, period: float,
                watch: Any = None) -> None:
    """Wait ``period`` seconds of real time, or less once the holder's process is seen gone
    (a look at this host's processes every quarter second, no read of the store) or, on a
    store that notifies, at a notice that the run's lease was given back or the run ended
    (``watch``)."""
    gone = getattr(backend, "holder_gone", None)
    step = period if gone is None or held is None else min(period, _LOOK)
    waited = 0.0
    while waited < period:
        if watch is not None:
            if await watch.wait(step):
                return
        else:
            # A cancel scope's deadline, not a sleep: a virtual clock still jumps meanwhile.
            with anyio.move_on_after(step):
                await anyio.Event().wait()
        waited += step
        if gone is not None and held is not None and gone(held):
            return


def _record(resumption: Resumption, held: dict[str, Any] | None) -> None:
    """Log who held the run and who takes it over, as an event and a runtime's decision."""
    run = resumption.run
    assert run is not None
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    data: dict[str, Any] = {"from": None, "to": resumption.holder, "at": now}
    if held is not None:
        expires = held.get("expires")
        data.update({
            "from": held["holder"], "from_pid": held.get("pid"), "from_host": held.get("host"),
            "lease_expired": (None if expires is None
                              else datetime.fromtimestamp(expires, UTC).isoformat(
                                  timespec="milliseconds")),
        })
    run.bus.emit(EventType.COORDINATOR_FAILED_OVER, None, data)
    run.coordination.record_decision(
        RUNTIME, None, "coordinator_failed_over",
        f"{resumption.holder} took the run over at {now} from "
        f"{data['from'] or 'no live holder'}", data)
