"""The authoring API: ``@Agent``, ``@Coordinator``, lifecycle decorators and specs.

A plain description of behaviour: nothing here imports the runtime. The methods the
decorators add (``patch_state``, ``delegate``, ...) live in :mod:`openintent._agent_methods`
and reach the running portfolio through :mod:`openintent._context`.

>>> @Agent("summarizer")
... class Summarizer:
...     @on_assignment
...     async def work(self, intent):
...         return {"summary": intent.state.get("text", "")[:10]}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from ._agent_methods import AgentMethods as AgentMethods
from ._agent_methods import CoordinatorMethods as CoordinatorMethods
from ._authoring_checks import (
    check_hooks,
    check_method_names,
    collect_hooks,
    coordinator_options,
)
from ._event_types import is_event_type, unknown_event_type
from ._quorum import quorum_threshold
from ._registry import (
    DEFINITION_ATTR,
    HOOK_ATTR,
    AgentDefinition,
    HookKind,
    HookSpec,
    current_registry,
)
from ._specs import IntentSpec as IntentSpec
from ._specs import PortfolioSpec as PortfolioSpec
from .errors import AgentError

__all__ = [
    "Agent",
    "AgentMethods",
    "Coordinator",
    "CoordinatorMethods",
    "IntentSpec",
    "PortfolioSpec",
    "on_all_complete",
    "on_approval_denied",
    "on_approval_granted",
    "on_assignment",
    "on_complete",
    "on_conflict",
    "on_escalation",
    "on_event",
    "on_guardrail_breach",
    "on_handoff",
    "on_quorum",
    "on_retry",
    "on_state_change",
]

C = TypeVar("C", bound=type[Any])
F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- lifecycle decorators


def _mark(function: F, kind: HookKind, **options: Any) -> F:
    if not callable(function):
        raise AgentError(f"@{kind} decorates a method, got {function!r}")
    hooks = list(getattr(function, HOOK_ATTR, ()))
    hooks.append(HookSpec(kind, function.__name__, options))
    setattr(function, HOOK_ATTR, tuple(hooks))
    return function


def on_assignment(function: F) -> F:
    """Handle an intent assigned to this agent: ``(self, intent) -> dict | None``.

    The returned dict is merged into the intent's state and completes it; raising fails the
    attempt (the intent's retry policy decides what comes next).
    """
    return _mark(function, HookKind.ASSIGNMENT)


def on_complete(function: F) -> F:
    """Called with ``(self, intent)`` after an intent this agent worked on completes.

    On a coordinator it fires for every completed intent of the portfolio.
    """
    return _mark(function, HookKind.COMPLETE)


def on_all_complete(function: F) -> F:
    """Called once with ``(self, portfolio)`` when every intent has completed: on the
    coordinator, then on the run's agents.

    The return value of the coordinator's handler becomes ``result.output``; if it raises, the
    run ends ``failed`` with ``result.error`` saying why. Sub-portfolios (``execute``) don't
    fire it.
    """
    return _mark(function, HookKind.ALL_COMPLETE)


def on_retry(function: F) -> F:
    """Called with ``(self, intent, attempt, error)`` before each retry of an intent.

    ``attempt`` is the number of the attempt about to start; ``error`` the exception that
    failed the previous one. Fires on the agent that failed and on the coordinator.
    """
    return _mark(function, HookKind.RETRY)


@overload
def on_state_change(function: F, /) -> F: ...
@overload
def on_state_change(*, keys: Sequence[str] | None = None) -> Callable[[F], F]: ...
def on_state_change(
    function: F | None = None, /, *, keys: Sequence[str] | None = None
) -> F | Callable[[F], F]:
    """Called with ``(self, intent, old_state, new_state)`` when an intent's state changes.

    Use bare or as ``@on_state_change(keys=["data"])`` to fire only when one of ``keys``
    changed. Fires on the intent's agent and on the coordinator.
    """
    if isinstance(keys, str):
        keys = [keys]
    key_set = frozenset(keys) if keys is not None else None
    if function is not None:
        return _mark(function, HookKind.STATE_CHANGE, keys=key_set)

    def decorate(inner: F) -> F:
        return _mark(inner, HookKind.STATE_CHANGE, keys=key_set)

    return decorate


def on_event(event_type: str) -> Callable[[F], F]:
    """Called with ``(self, event)`` for events of ``event_type``: on the coordinator for every
    such event of the run; on an agent for events of its intents and run-level events.

    ``event_type`` is an :class:`~openintent.EventType` or a custom type declared first with
    :func:`openintent.register_event_type`; anything else (a typo such as ``"complete"``) is an
    :class:`~openintent.AgentError` here. ``hook_failed`` and ``run_finished`` reach no hook,
    so they are refused too.

    >>> class Watcher:
    ...     @on_event("failed")
    ...     async def alert(self, event): ...
    """
    if not isinstance(event_type, str) or callable(event_type):
        raise AgentError('@on_event needs the event type: @on_event("completed")')
    if not is_event_type(event_type):
        raise AgentError(unknown_event_type(event_type, f"@on_event({event_type!r})"))
    if event_type in _UNHEARD:
        raise AgentError(f"@on_event({event_type!r}) would never fire: {_UNHEARD[event_type]}")

    def decorate(function: F) -> F:
        return _mark(function, HookKind.EVENT, type=event_type)

    return decorate


_UNHEARD = {
    "hook_failed": "a hook's failure is never fed back into hooks (it is logged and recorded "
                   "in result.events)",
    "run_finished": "the run and its hooks have ended by then; use @on_all_complete, or read "
                    "result.status after rt.run",
}


def on_handoff(function: F) -> F:
    """Called with ``(self, intent, from_agent)`` on an agent an intent is delegated to,
    before its ``@on_assignment`` handlers run."""
    return _mark(function, HookKind.HANDOFF)


def on_conflict(function: F) -> F:
    """Coordinator: called with ``(self, intent, versions)`` when assignees disagree.

    ``versions`` holds one :class:`~openintent.Response` per answer (a dict of the answer,
    with ``.agent_id`` and ``.version``); the handler's return value becomes the intent's
    result. Also called when two ``patch_state`` calls conflict on version: then the versions
    are the current state and the proposed one, and the return value is written.
    """
    return _mark(function, HookKind.CONFLICT)


def on_escalation(function: F) -> F:
    """Coordinator: called with ``(self, intent, reason)`` when an agent escalates.

    The handler may ``await self.delegate(intent, to=...)`` (the delegate's result completes
    the intent), return a dict (the result), or raise (the attempt fails and the retry policy
    decides). Returning ``None`` without delegating leaves the escalation unresolved: the
    intent fails with an :class:`~openintent.EscalationError`.
    """
    return _mark(function, HookKind.ESCALATION)


@overload
def on_quorum(function: F, /) -> F: ...
@overload
def on_quorum(threshold: int | float, /) -> Callable[[F], F]: ...
@overload
def on_quorum(
    *, threshold: int | float | None = None, agents: int | None = None,
    fraction: float | None = None,
) -> Callable[[F], F]: ...
def on_quorum(
    function: F | int | float | None = None,
    /,
    *,
    threshold: int | float | None = None,
    agents: int | None = None,
    fraction: float | None = None,
) -> F | Callable[[F], F]:
    """Coordinator: called with ``(self, intent, responses)`` once enough assignees of a
    multi-agent intent have answered.

    How many: **an int counts agents; a float in (0, 1] is a fraction of the assignees,
    rounded up.** So ``@on_quorum(1)`` fires on the *first* answer and ``@on_quorum(1.0)``
    waits for *all* of them. Say which you mean with ``@on_quorum(agents=2)`` or
    ``@on_quorum(fraction=0.5)``; ``@on_quorum(threshold=2)`` and ``@on_quorum(2)`` count
    agents too, and bare ``@on_quorum`` waits for all. A bool, a float above 1 or a count
    below 1 is an :class:`~openintent.AgentError` that says which spelling means what. The
    ``quorum_reached`` decision spells it out: "1 of 3 agents answered" or "all 3 assignees
    answered (fraction 1.0)".

    The return value is the intent's result; assignees still working are cancelled. When too
    many fail for the quorum to be reachable, the intent fails with a
    :class:`~openintent.QuorumError`. A class has at most one ``@on_quorum`` handler.
    """
    positional = None
    if isinstance(function, int | float):  # @on_quorum(2), as the contract writes it
        positional, function = function, None
    checked = quorum_threshold(positional, threshold, agents, fraction)
    if function is not None:
        return _mark(function, HookKind.QUORUM, threshold=checked)

    def decorate(inner: F) -> F:
        return _mark(inner, HookKind.QUORUM, threshold=checked)

    return decorate


def on_approval_granted(function: F) -> F:
    """Coordinator: called with ``(self, intent, request)`` when an approval is granted."""
    return _mark(function, HookKind.APPROVAL_GRANTED)


def on_approval_denied(function: F) -> F:
    """Coordinator: called with ``(self, intent, request)`` when an approval is denied."""
    return _mark(function, HookKind.APPROVAL_DENIED)


def on_guardrail_breach(function: F) -> F:
    """Coordinator: called with ``(self, intent, breach)`` when a guardrail halts the run.

    ``intent`` is the intent that crossed the line, or ``None`` (a run timeout); ``breach``
    a :class:`~openintent.guardrails.Breach` saying what was spent against what limit.
    """
    return _mark(function, HookKind.GUARDRAIL_BREACH)


# ------------------------------------------------------------------------- class decorators


def _check_id(decorator: str, agent_id: object) -> str:
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise AgentError(f'@{decorator} needs a non-empty string id, e.g. @{decorator}("writer")')
    return agent_id


def _install(cls: Any, definition: AgentDefinition) -> None:
    if not isinstance(cls, type):
        raise AgentError(f"@{definition.kind.title()} decorates a class, got {cls!r}")
    sources = [AgentMethods] if definition.kind == "agent" else [AgentMethods, CoordinatorMethods]
    decorator = f"@{definition.kind.title()}({definition.id!r})"
    check_hooks(cls, definition.hooks)
    if definition.kind == "agent":
        _refuse_coordinator_hooks(cls, definition)
    check_method_names(cls, sources, decorator)
    for source in sources:
        for name, value in vars(source).items():
            if callable(value) and not name.startswith("__") and not hasattr(cls, name):
                setattr(cls, name, value)
    setattr(cls, "__openintent_id__", definition.id)  # noqa: B010 - set on any class
    setattr(cls, DEFINITION_ATTR, definition)
    current_registry().register(definition, stacklevel=3)


# Hooks only a coordinator's handlers receive: on an @Agent class they would never fire.
_COORDINATOR_HOOKS = frozenset({
    HookKind.QUORUM, HookKind.CONFLICT, HookKind.ESCALATION, HookKind.APPROVAL_GRANTED,
    HookKind.APPROVAL_DENIED, HookKind.GUARDRAIL_BREACH,
})


def _refuse_coordinator_hooks(cls: type[Any], definition: AgentDefinition) -> None:
    for hook in definition.hooks:
        if hook.kind in _COORDINATOR_HOOKS:
            raise AgentError(
                f"{cls.__qualname__}.{hook.method} is decorated with @{hook.kind}, which only a "
                f"coordinator receives, but {cls.__qualname__} is an @Agent({definition.id!r}): "
                "it would never fire. Move the handler to your @Coordinator class, or decorate "
                "this class with @Coordinator"
            )


def Agent(agent_id: str) -> Callable[[C], C]:  # noqa: N802 - a decorator named like a class
    """Register a class as the agent ``agent_id``.

    Its ``@on_assignment`` handlers do the work of the intents assigned to that id.
    """
    _check_id("Agent", agent_id)

    def decorate(cls: C) -> C:
        definition = AgentDefinition(agent_id, "agent", cls, collect_hooks(cls))
        _install(cls, definition)
        return cls

    return decorate


def Coordinator(  # noqa: N802 - a decorator named like a class
    coordinator_id: str,
    *,
    agents: Sequence[str] | None = None,
    strategy: str = "parallel",
    guardrails: Sequence[Any] | None = None,
    max_concurrency: int | None = None,
) -> Callable[[C], C]:
    """Register a class as the coordinator ``coordinator_id`` of the portfolios it runs.

    ``agents``: the team it routes and fans out to (``delegate`` from ``@on_assignment`` stays
    inside it). ``strategy``: ``"parallel"`` (default) or ``"sequential"`` (one intent at a
    time, in dependency then declaration order). ``guardrails``: dicts or objects enforced
    around every attempt (see :mod:`openintent.guardrails`). ``max_concurrency``: at most this
    many attempts dispatched at once.

    Pass it to ``rt.run(spec, coordinator=...)``; its ``@on_all_complete`` return value is
    ``result.output``.
    """
    _check_id("Coordinator", coordinator_id)
    options = coordinator_options(coordinator_id, agents, strategy, guardrails, max_concurrency)

    def decorate(cls: C) -> C:
        definition = AgentDefinition(
            coordinator_id, "coordinator", cls, collect_hooks(cls), options
        )
        _install(cls, definition)
        return cls

    return decorate
