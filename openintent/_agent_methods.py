"""The methods every decorated class gets: what an agent or coordinator can do while it runs.

``@Agent`` and ``@Coordinator`` (in :mod:`openintent.agents`) copy them onto the class; each
reaches the running portfolio through :mod:`openintent._context`, never by importing the
runtime. Public as ``openintent.agents.AgentMethods`` / ``CoordinatorMethods``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ._context import current_run
from ._specs import IntentSpec, PortfolioSpec
from .errors import Escalate, OpenIntentError
from .models import Decision, Intent, RunResult

__all__ = ["AgentMethods", "CoordinatorMethods"]


class AgentMethods:
    """Methods every decorated class gets (unless it defines its own of the same name).

    The decorator adds them at run time; subclass this (or :class:`CoordinatorMethods`) so a
    type checker knows them too::

        @Agent("writer")
        class Writer(AgentMethods):
            @on_assignment
            async def write(self, intent: Intent) -> dict[str, str]:
                await self.patch_state(intent, {"status": "drafting"})
                return {"draft": "..."}
    """

    __openintent_id__: str

    async def patch_state(
        self, intent: Intent, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> int:
        """Merge ``patch`` into the intent's state and return the new version.

        With ``expected_version``, a state at another version raises
        :class:`~openintent.errors.StateConflictError` and changes nothing.
        """
        run = current_run("patch_state")
        return await run.patch_state(intent, patch, expected_version)

    async def record_cost(self, intent: Intent, usd: float, **details: Any) -> None:
        """Report ``usd`` spent on ``intent``; it shows in ``result.cost_usd`` and the events."""
        run = current_run("record_cost")
        await run.record_cost(self.__openintent_id__, intent, usd, details)

    async def renew_lease(self, intent: Intent) -> float | None:
        """Show that this agent is still working on ``intent``: renew the lease of its running
        attempt (``RetryPolicy(lease_seconds=...)``) for its full length again. Returns the new
        expiry on the run's clock, or ``None`` when the intent has no lease. A state patch or
        a cost renews it too; an agent silent past its lease loses the attempt
        (:class:`~openintent.LeaseExpiredError`) to the next agent of ``[assignee, *fallback]``.
        """
        run = current_run("renew_lease")
        return await run.renew_lease(intent)

    async def record_event(self, intent: Intent | None, event_type: str, **data: Any) -> None:
        """Append an event of a custom type to the run's log: ``@on_event(event_type)`` hooks
        hear it and ``result.events.of_type(event_type)`` finds it.

        Declare the type first with :func:`openintent.register_event_type`; a built-in or
        undeclared type is an :class:`~openintent.OpenIntentError`. ``intent=None`` records a
        run-level event. The event's data is ``data`` (JSON data) plus ``agent``, this id.

        >>> await self.record_event(intent, "audit", checked=["rows"])
        """
        run = current_run("record_event")
        await run.record_event(self.__openintent_id__, intent, event_type, data)

    async def effect(
        self,
        intent: Intent,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        check: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn(*args, **kwargs)`` as the side effect ``name`` of ``intent``, once, and
        return its value (JSON data; a plain copy each time).

        The journal records ``effect_started`` before ``fn`` is called and ``effect()``
        returns once ``effect_completed`` (the value) is on disk. An effect whose value is
        recorded is never called again: a retry of the intent, a resumed run, or a second
        call with the same name (in this attempt or a later one) gets the recorded value
        back. If ``fn`` raises, ``effect_failed`` is journaled and the exception reaches you;
        the next call runs ``fn`` again.

        One that started and never finished (the process died inside ``fn``, a timeout cut
        an ``async`` ``fn`` short) is *in doubt* on its next call: ``check(*args, **kwargs)``
        asks the outside world (return the value if it happened, ``None`` if not: then
        ``fn`` runs). Without ``check``, or if it raises, the intent fails with
        :class:`~openintent.errors.EffectInDoubtError` (never retried) and a decision record
        says a person must decide: ``await rt.resolve_effect(...)``, then ``rt.resume``.

        ``fn`` and ``check`` may be ``async def`` (awaited here; a cancellation interrupts
        ``fn``, leaving it in doubt) or plain functions, which run in a worker thread; a
        plain ``fn`` always runs to its end, so how it ended is journaled. ``name`` is unique per
        intent; a value that is not JSON data raises
        :class:`~openintent.errors.DataError` and leaves the effect in doubt (it ran).

        >>> receipt = await self.effect(intent, "charge-card", payments.charge, order.id,
        ...                             amount=42, check=payments.find_charge)

        .. versionadded:: 0.3
        """
        run = current_run("effect")
        return await run.effect(intent, name, fn, args, kwargs, check)

    async def escalate(self, intent: Intent, reason: str) -> NoReturn:
        """Hand ``intent`` to the coordinator; same as ``raise Escalate(reason)``."""
        raise Escalate(reason)


class CoordinatorMethods(AgentMethods):
    """Methods every ``@Coordinator`` class gets (unless it defines its own)."""

    async def delegate(self, intent: Intent, *, to: str) -> dict[str, Any] | None:
        """Hand ``intent`` to the agent ``to`` and return that agent's result.

        The receiving agent's ``@on_handoff`` fires, then its ``@on_assignment`` handlers
        run; their result completes the intent (the coordinator's own return value is kept
        too, underneath it). From ``@on_assignment`` the agent must be one of the
        coordinator's ``agents`` (when it lists them); an ``@on_escalation`` handler may hand
        the intent to any known agent, since escalating means going beyond the team.
        """
        run = current_run("delegate")
        result: dict[str, Any] | None = await run.delegate(self.__openintent_id__, intent, to)
        return result

    async def record_decision(
        self,
        intent_id: str | None = None,
        *,
        decision: str,
        rationale: str = "",
        portfolio_id: str | None = None,
        **data: Any,
    ) -> Decision:
        """Append an immutable decision record to the run's decision log and event log.

        ``portfolio_id``, when given, must be the running portfolio's (a record always
        belongs to the run it is made in).
        """
        run = current_run("record_decision")
        if portfolio_id is not None and portfolio_id != run.portfolio_id:
            raise OpenIntentError(
                f"record_decision(portfolio_id={portfolio_id!r}) is not the running "
                f"portfolio {run.portfolio_id!r}; leave portfolio_id out"
            )
        return run.record_decision(
            self.__openintent_id__, intent_id, decision, rationale, data
        )

    async def add_intent(self, spec: IntentSpec) -> str:
        """Add an intent to the running portfolio; return its id.

        It may depend on intents already in the portfolio (a dependency that failed skips
        it at once); a duplicate title or an unknown dependency is refused.
        """
        run = current_run("add_intent")
        return await run.add_intent(spec)

    async def execute(self, spec: PortfolioSpec) -> RunResult:
        """Run ``spec`` as a sub-portfolio with the same agents and clock; return its result."""
        run = current_run("execute")
        return await run.execute_portfolio(spec, self.__openintent_id__)
