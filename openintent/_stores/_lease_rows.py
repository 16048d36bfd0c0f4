"""What the client lease tables of the journal backends (:mod:`._sqlite_leases`,
:mod:`._pg_leases`) share: the decisions on a lease's row (``holder, token, expires``), its
holder, who may take it and with which fencing token, and whether a token still holds. Each
table keeps its own SQL and transactions."""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import LeaseHeldError, LeaseLostError

__all__ = ["LeaseRows"]

Row = tuple[str | None, int, float]


def _utc(posix: float) -> str:
    return datetime.fromtimestamp(posix, UTC).isoformat(timespec="milliseconds")


class LeaseRows:
    """The row decisions of a client lease table; a table sets ``_url`` and writes
    ``_row``."""

    _url: str

    def _row(self, target: str, scope: str) -> Row | None:
        """The lease's row (``holder, token, expires``), or ``None``."""
        raise NotImplementedError

    def holder(self, target: str, scope: str, now: float) -> tuple[str, float] | None:
        row = self._row(target, scope)
        if row is None or row[0] is None or row[2] <= now:
            return None
        return row[0], row[2]

    def _next_token(self, target: str, scope: str, holder: str, now: float) -> int:
        """The fencing token ``holder`` takes the lease with (inside the table's
        transaction); :class:`LeaseHeldError` while another holder's lease is live."""
        row = self._row(target, scope)
        if row is not None and row[0] is not None and row[2] > now and row[0] != holder:
            raise LeaseHeldError(
                f"the {scope} lease of {target} in {self._url} is held by {row[0]!r} "
                f"until {_utc(row[2])} (now {_utc(now)}); wait for it to "
                "expire or be released, then acquire it again",
                holder=row[0], expires_at=row[2])
        return (row[1] if row is not None else 0) + 1

    def check(self, target: str, scope: str, token: int, now: float, what: str) -> None:
        row = self._row(target, scope)
        if row is None or row[0] is None or row[1] != token:
            raise LeaseLostError(
                f"{what} refused: the {scope} lease of {target} with fencing token {token} is "
                f"stale (the latest token is {row[1] if row else 0}); nothing was written. "
                "Acquire the lease again before writing")
        if row[2] <= now:
            raise LeaseLostError(
                f"{what} refused: the {scope} lease of {target} (token {token}) expired at "
                f"{_utc(row[2])}; nothing was written. Renew leases before they "
                "expire, or acquire it again")
