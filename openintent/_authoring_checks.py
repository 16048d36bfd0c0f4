"""Checks ``@Agent`` and ``@Coordinator`` make when they decorate a class, so mistakes show
at class definition rather than as a handler that fails (or never fires) during a run:

- a lifecycle hook whose signature cannot take what its decorator passes;
- two ``@on_quorum`` or two ``@on_conflict`` handlers (only one can decide an intent);
- a method named like one the decorators add (``delegate``, ``execute``, ...);
- ``@Coordinator`` options, guardrails included.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import attrs

from ._guardrail_core import check_guardrails
from ._registry import HOOK_ATTR, HookKind, HookSpec
from .errors import AgentError

__all__ = [
    "HOOK_ARGUMENTS",
    "STRATEGIES",
    "check_hooks",
    "check_method_names",
    "collect_hooks",
    "coordinator_options",
]

STRATEGIES = ("sequential", "parallel")

# What the runtime passes each kind of hook, after ``self``.
HOOK_ARGUMENTS: dict[HookKind, tuple[str, ...]] = {
    HookKind.ASSIGNMENT: ("intent",),
    HookKind.COMPLETE: ("intent",),
    HookKind.STATE_CHANGE: ("intent", "old_state", "new_state"),
    HookKind.EVENT: ("event",),
    HookKind.RETRY: ("intent", "attempt", "error"),
    HookKind.ALL_COMPLETE: ("portfolio",),
    HookKind.HANDOFF: ("intent", "from_agent"),
    HookKind.CONFLICT: ("intent", "versions"),
    HookKind.ESCALATION: ("intent", "reason"),
    HookKind.QUORUM: ("intent", "responses"),
    HookKind.APPROVAL_GRANTED: ("intent", "request"),
    HookKind.APPROVAL_DENIED: ("intent", "request"),
    HookKind.GUARDRAIL_BREACH: ("intent", "breach"),
}

# Only one handler of these kinds can decide an intent.
_SINGLE = (HookKind.QUORUM, HookKind.CONFLICT)


def collect_hooks(cls: type[Any]) -> tuple[HookSpec, ...]:
    """The decorated methods of ``cls`` and its bases: base classes first, each class's
    methods in definition order. A method overridden under the same name keeps its place
    and takes the override's decorators (none: it is no longer a hook)."""
    order: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if _specs_of(value) is not None:
                order.setdefault(name)
    hooks: list[HookSpec] = []
    for name in order:
        specs = _specs_of(inspect.getattr_static(cls, name, None))
        hooks.extend(attrs.evolve(spec, method=name) for spec in specs or ())
    return tuple(hooks)


def _specs_of(value: Any) -> tuple[HookSpec, ...] | None:
    """The hooks a class attribute carries: on a function, or on a static or class method
    (decorated either side of ``@staticmethod``)."""
    specs = getattr(value, HOOK_ATTR, None)
    if specs is None and isinstance(value, staticmethod | classmethod):
        specs = getattr(value.__func__, HOOK_ATTR, None)
    return specs


def check_hooks(cls: type[Any], hooks: Sequence[HookSpec]) -> None:
    """Refuse hooks the runtime could not call, and a second quorum or conflict handler."""
    for hook in hooks:
        _check_signature(cls, hook)
    for kind in _SINGLE:
        methods = [hook.method for hook in hooks if hook.kind == kind]
        if len(methods) > 1:
            listed = ", ".join(methods)
            raise AgentError(
                f"{cls.__qualname__} has {len(methods)} @{kind} handlers ({listed}); only one "
                f"can decide an intent. Keep one (to replace an inherited handler, override "
                f"its method under the same name)"
            )


class _Placeholder:
    """Stands in for an argument when binding a signature."""


def _check_signature(cls: type[Any], hook: HookSpec) -> None:
    name = hook.method
    target = getattr(cls, name, None)
    if target is None:
        return
    arguments = HOOK_ARGUMENTS[hook.kind]
    raw = inspect.getattr_static(cls, name, None)
    # A plain function in a class is called bound: the instance comes first.
    takes_self = inspect.isfunction(target) and not isinstance(raw, staticmethod)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a callable inspect cannot read: trust it
        return
    placeholders = [_Placeholder() for _ in range(len(arguments) + takes_self)]
    try:
        signature.bind(*placeholders)
    except TypeError as exc:
        expected = ", ".join(("self", *arguments) if takes_self else arguments)
        raise AgentError(
            f"{cls.__qualname__}.{name} cannot take what @{hook.kind} passes: the runtime calls "
            f"it as {name}({expected}), but it is defined as {name}{signature} ({exc}). "
            f"Define it as `def {name}({expected})` (extra parameters need defaults; "
            f"*args works too)"
        ) from None


def check_method_names(cls: type[Any], sources: Sequence[type[Any]], decorator: str) -> None:
    """Refuse a method of ``cls`` named like one the decorator adds from ``sources``
    (``AgentMethods``, ``CoordinatorMethods``): the decorator would skip its own, and
    ``self.delegate(...)`` would call the user's method instead.

    Subclassing a source and overriding one of its methods is deliberate and allowed.
    """
    for source in sources:
        if issubclass(cls, source):
            continue
        for name, value in vars(source).items():
            if name.startswith("__") or not callable(value):
                continue
            own = getattr(cls, name, value)
            if own is value:  # absent, or added by an earlier decoration of a base class
                continue
            raise AgentError(
                f"{cls.__qualname__}.{name} has the name of the {name}() method that "
                f"{decorator} gives the class (self.{name}(...) would call yours instead of "
                f"it); rename your method. To wrap the built-in one on purpose, subclass "
                f"openintent.agents.{source.__name__} and call super().{name}(...)"
            )


def coordinator_options(
    coordinator_id: str,
    agents: Sequence[str] | None,
    strategy: str,
    guardrails: Sequence[Any] | None,
    max_concurrency: int | None,
) -> dict[str, Any]:
    """The checked options of ``@Coordinator(coordinator_id, ...)``."""
    where = f"@Coordinator({coordinator_id!r})"
    if strategy not in STRATEGIES:
        raise AgentError(
            f"{where}: unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}"
        )
    if max_concurrency is not None and (
        not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool)
        or max_concurrency < 1
    ):
        raise AgentError(
            f"{where}: max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
        )
    if agents is not None and (
        isinstance(agents, str) or not all(isinstance(a, str) for a in agents)
    ):
        raise AgentError(f"{where}: agents must be a list of agent ids, got {agents!r}")
    check_guardrails(guardrails, where)
    return {
        "agents": tuple(agents) if agents is not None else None,
        "strategy": strategy,
        "guardrails": tuple(guardrails or ()),
        "max_concurrency": max_concurrency,
    }
