"""Leases with fencing: exclusive, expiring claims on a portfolio or an intent.

A lease is held on a *target* (a portfolio id or an intent id) for a *scope* (``"coordinator"``
for :meth:`~openintent.OpenIntentClient.acquire_coordinator_lease`) by one holder (a client's
``agent_id``) until it expires (``ttl_seconds`` after it was taken or last renewed) or is
released. While it is live, another holder is refused (:class:`~openintent.errors.
LeaseHeldError`, naming the holder and when the lease expires). Each acquisition of a target
and scope draws a *fencing token* greater than every earlier one of that target and scope;
a write made under a lease carries its token, and :meth:`LeaseTable.check` accepts it only
while that token is the current one and its lease is live, so a holder whose lease expired
(and perhaps was taken by another) cannot write any more (:class:`~openintent.errors.
LeaseLostError`): its writes are rejected, never applied.

:class:`LeaseTable` keeps the leases of one ``memory://`` store, on the time of the clock the
caller passes (``now``): a client's clock (a :class:`~openintent.testing.VirtualClock` in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import attrs

from .errors import LeaseHeldError, LeaseLostError

__all__ = ["Lease", "LeaseTable", "check_ttl"]

Key = tuple[str, str]  # (target, scope)


@attrs.define
class _Entry:
    holder: str
    token: int
    expires_at: float


class LeaseTable:
    """The leases of one store (see the module docstring). Times are the caller's clock's."""

    def __init__(self) -> None:
        self._held: dict[Key, _Entry] = {}
        self._last_token: dict[Key, int] = {}

    def targets(self) -> list[Key]:
        """The ``(target, scope)`` of every lease taken and not released (live or not)."""
        return list(self._held)

    def holder(self, target: str, scope: str, now: float) -> tuple[str, float] | None:
        """The live lease's ``(holder, expires_at)``, or ``None`` when none is live."""
        entry = self._held.get((target, scope))
        if entry is None or entry.expires_at <= now:
            return None
        return entry.holder, entry.expires_at

    def acquire(self, target: str, scope: str, holder: str, ttl: float,
                now: float) -> tuple[int, float]:
        """Take the lease for ``holder`` until ``now + ttl``; returns ``(token, expires_at)``
        with a token greater than any earlier one. A live lease of another holder raises
        :class:`LeaseHeldError`; the same holder taking it again gets a new token (its older
        lease object is then stale)."""
        check_ttl(ttl)
        key = (target, scope)
        entry = self._held.get(key)
        if entry is not None and entry.expires_at > now and entry.holder != holder:
            raise LeaseHeldError(
                f"the {scope} lease of {target} is held by {entry.holder!r} until clock time "
                f"{entry.expires_at:g} (now {now:g}); wait for it to expire or be released, "
                "then acquire it again", holder=entry.holder, expires_at=entry.expires_at)
        token = self._last_token.get(key, 0) + 1
        self._last_token[key] = token
        self._held[key] = _Entry(holder, token, now + ttl)
        return token, now + ttl

    def check(self, target: str, scope: str, token: int, now: float, what: str) -> None:
        """Accept a write (``what``) made under the lease of ``token``: it must be the current
        token, its lease live; else :class:`LeaseLostError` (nothing may be written)."""
        key = (target, scope)
        entry = self._held.get(key)
        if entry is None or entry.token != token:
            last = self._last_token.get(key, 0)
            raise LeaseLostError(
                f"{what} refused: the {scope} lease of {target} with fencing token {token} is "
                f"stale (the latest token is {last}{_by(entry, now)}); nothing was written. "
                "Acquire the lease again before writing")
        if entry.expires_at <= now:
            raise LeaseLostError(
                f"{what} refused: the {scope} lease of {target} (token {token}, holder "
                f"{entry.holder!r}) expired at clock time {entry.expires_at:g} (now {now:g}); "
                "nothing was written. Renew leases before they expire, or acquire it again")

    def renew(self, target: str, scope: str, token: int, ttl: float, now: float) -> float:
        """Extend a live lease to ``now + ttl`` (its token stays); :class:`LeaseLostError`
        when it expired or was taken since."""
        check_ttl(ttl)
        self.check(target, scope, token, now, "renew()")
        entry = self._held[(target, scope)]
        entry.expires_at = now + ttl
        return entry.expires_at

    def release(self, target: str, scope: str, token: int) -> None:
        """Give the lease of ``token`` back (a stale token is ignored: it holds nothing)."""
        key = (target, scope)
        entry = self._held.get(key)
        if entry is not None and entry.token == token:
            del self._held[key]


def _by(entry: _Entry | None, now: float) -> str:
    if entry is None or entry.expires_at <= now:
        return ", and no lease is live now"
    return f", held by {entry.holder!r} until clock time {entry.expires_at:g}"


def check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"a lease's ttl_seconds is a positive number of seconds, got {ttl!r}")


class Lease:
    """A lease a client holds (``client.acquire_coordinator_lease(...)``).

    ``holder`` (the client's ``agent_id``), ``token`` (its fencing token: greater than every
    earlier lease's on the same target and scope), ``expires_at`` (on the client's clock),
    ``target`` and ``scope``. :meth:`renew` extends it (nothing renews it otherwise);
    :meth:`release` gives it back; ``with lease:`` releases it at the end of the block.
    """

    def __init__(self, table: LeaseTable, now: Callable[[], float], target: str, scope: str,
                 holder: str, ttl: float, token: int, expires_at: float) -> None:
        self._table = table
        self._now = now
        self.target = target
        self.scope = scope
        self.holder = holder
        self.ttl = ttl
        self.token = token
        self.expires_at = expires_at
        self.released = False

    @property
    def live(self) -> bool:
        """Whether this lease is still the current one and has not expired."""
        if self.released:
            return False
        try:
            self.check("a check")
        except LeaseLostError:
            return False
        return True

    def check(self, what: str) -> None:
        """Raise :class:`LeaseLostError` unless a write (``what``) may be made under it."""
        self._table.check(self.target, self.scope, self.token, self._now(), what)

    def renew(self, ttl_seconds: float | None = None) -> Lease:
        """Extend the lease by ``ttl_seconds`` (default: its own ttl) from now; the token
        stays. :class:`LeaseLostError` when it expired or another holder took it."""
        ttl = self.ttl if ttl_seconds is None else ttl_seconds
        self.expires_at = self._table.renew(self.target, self.scope, self.token, ttl,
                                            self._now())
        self.ttl = ttl
        return self

    def release(self) -> None:
        """Give the lease back: another holder may take it at once (releasing twice, or a
        lease that was lost, does nothing)."""
        if not self.released:
            self._table.release(self.target, self.scope, self.token)
            self.released = True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return (f"Lease({self.scope} of {self.target}, holder={self.holder!r}, "
                f"token={self.token}, expires_at={self.expires_at:g})")
