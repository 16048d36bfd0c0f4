"""The decision of a run lease, as the journal backends (:mod:`.sqlite`, :mod:`.postgres`)
take it: who holds the lease, whether that holder is live (its lease not expired, its process
not known to be gone from this host), and the error a live holder makes (:func:`check_lease`,
:class:`LeaseHolders`, :func:`alive`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import RunInUseError, RunNotFoundError

__all__ = ["LeaseHolders", "alive", "check_lease"]


class LeaseHolders:
    """Whether a lease's holder is gone: a backend sets ``_host`` (this host's name)."""

    _host: str

    def holder_gone(self, lease: dict[str, Any]) -> bool:
        """Whether the process of a lease (``run_lease``) is known to be gone: a cheap
        look at this host's processes, no read of the store."""
        return self._gone(lease.get("pid"), lease.get("host"))

    def _gone(self, pid: Any, host: Any) -> bool:
        """Whether a lease's process is known to be gone (it ran on this host)."""
        return host == self._host and not alive(pid)


def check_lease(row: Any, run_id: str, url: str, holder: str, pid: int, host: str,
                now: float, gone: Callable[[Any, Any], bool]) -> bool:
    """Whether ``holder`` (process ``pid`` on ``host``) may take a run's lease, whose row
    (``lease_holder, lease_pid, lease_host, lease_expires``) is ``row``: raises
    :class:`RunNotFoundError` for no row, :class:`RunInUseError` while another holder's
    lease is live (not expired, its process not ``gone``). Returns whether the lease is
    the holder's own already."""
    if row is None:
        raise RunNotFoundError(f"the store {url} holds no run {run_id!r}; "
                               "rt.runs() lists the runs it holds")
    held, held_pid, held_host, expires = row
    same: bool = (held, held_pid, held_host) == (holder, pid, host)
    if held is not None and not same and expires > now and not gone(held_pid, held_host):
        until = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
        raise RunInUseError(
            f"run {run_id!r} of the store {url} is in use by {held} "
            f"(pid {held_pid} on host {held_host}) until {until} unless it "
            "goes on; wait for that process to finish, or stop it"
        )
    return same


def alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end it there: assume alive (the TTL decides)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (someone else's), or this platform cannot tell
    return True
