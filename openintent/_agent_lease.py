"""Agent leases: an intent whose retry policy has ``lease_seconds`` gives each attempt's agent
a lease on the run's clock. The agent keeps it by showing it is alive (``await
self.renew_lease(intent)``, a state patch, a cost); one that goes silent past it loses the
attempt (:class:`~openintent.LeaseExpiredError`), which the retry policy hands to the next
agent of ``[assignee, *fallback]``.

Only intents with a lease come here: the default (no lease) path never touches this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._clock import Clock
from .errors import LeaseExpiredError
from .models import Intent

__all__ = ["AgentLeases"]

T = TypeVar("T")


class _Lease:
    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float, deadline: float) -> None:
        self.seconds = seconds
        self.deadline = deadline


class AgentLeases:
    """The live agent leases of one run, by intent id."""

    __slots__ = ("_clock", "_leases")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._leases: dict[str, _Lease] = {}

    def renew(self, intent_id: str) -> float | None:
        """Extend the lease of an intent's running attempt by its full length: the new
        expiry on the run's clock, or ``None`` when the intent holds no lease."""
        lease = self._leases.get(intent_id) if self._leases else None
        if lease is None:
            return None
        lease.deadline = self._clock.now() + lease.seconds
        return lease.deadline

    async def hold(self, intent: Intent, seconds: float, work: Callable[[], Awaitable[T]]) -> T:
        """Run one attempt's ``work`` under a lease of ``seconds``: cancelled, and failed with
        :class:`~openintent.LeaseExpiredError`, once the lease runs out unrenewed."""
        clock = self._clock
        lease = _Lease(seconds, clock.now() + seconds)
        self._leases[intent.id] = lease
        scope = anyio.CancelScope()
        expired = False

        async def watch() -> None:
            nonlocal expired
            while (left := lease.deadline - clock.now()) > 0:
                await clock.sleep(left)
            expired = True
            scope.cancel()

        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                try:
                    with scope:
                        result = await work()
                except Exception as exc:  # raised after the group, never wrapped in a group
                    failure = exc
                group.cancel_scope.cancel()
        finally:
            if self._leases.get(intent.id) is lease:
                del self._leases[intent.id]
        if failure is not None:
            raise failure
        if expired and scope.cancelled_caught:
            raise LeaseExpiredError(
                f"intent {intent.title!r} attempt {intent.attempt}: agent "
                f"{intent.assigned_to!r} went silent past its {seconds:g} s lease (lease "
                "expired); renew it with `await self.renew_lease(intent)` (or report progress) "
                "while it works, or raise RetryPolicy(lease_seconds=...)"
            )
        return result
