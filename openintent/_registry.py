"""Agent definitions and the registry decorated classes land in.

The default registry is a context variable, so the pytest plugin (and anyone else) can give
each test a registry of its own with :func:`isolated_registry`.
"""

from __future__ import annotations

import difflib
import enum
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import attrs

from .errors import OpenIntentWarning, UnknownAgentError

__all__ = [
    "AgentDefinition",
    "HookKind",
    "HookSpec",
    "Registry",
    "current_registry",
    "define_instance",
    "definition_of",
    "isolated_registry",
    "qualified_name",
    "suggest",
]

DEFINITION_ATTR = "__openintent_definition__"
HOOK_ATTR = "__openintent_hooks__"


class HookKind(enum.StrEnum):
    """The lifecycle decorators a handler can carry."""

    ASSIGNMENT = "on_assignment"
    COMPLETE = "on_complete"
    STATE_CHANGE = "on_state_change"
    EVENT = "on_event"
    RETRY = "on_retry"
    ALL_COMPLETE = "on_all_complete"
    HANDOFF = "on_handoff"
    CONFLICT = "on_conflict"
    ESCALATION = "on_escalation"
    QUORUM = "on_quorum"
    APPROVAL_GRANTED = "on_approval_granted"
    APPROVAL_DENIED = "on_approval_denied"
    GUARDRAIL_BREACH = "on_guardrail_breach"


@attrs.frozen
class HookSpec:
    """One decorated method of an agent class."""

    kind: HookKind
    method: str
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class AgentDefinition:
    """What a decorator learnt about a class: its id, kind and handlers in definition order."""

    id: str
    kind: str  # "agent" or "coordinator"
    cls: type[Any]
    hooks: tuple[HookSpec, ...]
    options: Mapping[str, Any] = attrs.field(factory=dict)
    instance: Any = None  # set for agents defined per instance (SimulatedAgent)

    def hooks_of(self, kind: HookKind) -> list[HookSpec]:
        """The handlers of one kind, in definition order."""
        return [hook for hook in self.hooks if hook.kind == kind]


def definition_of(obj: Any) -> AgentDefinition | None:
    """The definition of a decorated class, of an instance of one, or of an agent instance
    that defines itself (such as ``SimulatedAgent``)."""
    if not isinstance(obj, type):
        own = getattr(obj, "__dict__", {}).get(DEFINITION_ATTR)
        if isinstance(own, AgentDefinition):
            return own
    cls = obj if isinstance(obj, type) else type(obj)
    definition = cls.__dict__.get(DEFINITION_ATTR)
    return definition if isinstance(definition, AgentDefinition) else None


def define_instance(
    instance: Any,
    agent_id: str,
    assignment_handler: str,
    *,
    register: bool = True,
    stacklevel: int = 2,
) -> AgentDefinition:
    """Make ``instance`` the agent ``agent_id`` by itself, with no decorated class: its
    ``assignment_handler`` method does the work of the intents assigned to that id.

    The definition lives on the instance, so two instances of one class are two agents (this
    is how ``SimulatedAgent`` defines itself). It lands in the current registry unless
    ``register`` is false; ``stacklevel`` counts from the caller, as for ``warnings.warn``.
    """
    definition = AgentDefinition(
        agent_id,
        "agent",
        type(instance),
        (HookSpec(HookKind.ASSIGNMENT, assignment_handler),),
        instance=instance,
    )
    vars(instance)["__openintent_id__"] = agent_id
    vars(instance)[DEFINITION_ATTR] = definition
    if register:
        current_registry().register(definition, stacklevel=stacklevel + 1)
    return definition


def suggest(name: str, candidates: Iterator[str] | list[str]) -> str:
    """`` (did you mean 'x'?)`` when a close candidate exists, else an empty string."""
    matches = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def qualified_name(cls: type[Any]) -> str:
    """``module.QualName`` of a class: what tells a redefinition from another class."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry:
    """Agent and coordinator classes by id, and the custom event types declared with
    ``register_event_type``."""

    def __init__(self) -> None:
        self._by_id: dict[str, AgentDefinition] = {}
        self.event_types: set[str] = set()
        # Ids copied in by isolated_registry(inherit=True): a class registered inside the
        # block may stand in for one of those quietly (a test's local stand-in).
        self._inherited: set[str] = set()
        #: The process-wide stores by URL (``memory://``): a registry of its own (each test
        #: under the pytest plugin) has stores of its own too.
        self.stores: dict[str, Any] = {}

    def register(self, definition: AgentDefinition, *, stacklevel: int = 2) -> None:
        """Add a definition; a later class with the same id replaces the earlier one.

        The same class defined again (a re-run notebook cell, a reloaded module: the same
        qualified name) replaces it quietly; another class taking a registered id is most
        likely a mistake, so that warns with an :class:`~openintent.OpenIntentWarning`.
        Inside ``isolated_registry(inherit=True)`` (every test under the pytest plugin), a
        class may take over an id registered before the block quietly, once.
        """
        earlier = self._by_id.get(definition.id)
        if definition.id in self._inherited:
            self._inherited.discard(definition.id)
        elif earlier is not None:
            old, new = qualified_name(earlier.cls), qualified_name(definition.cls)
            if old != new:
                warnings.warn(
                    f"{new} is registered as {definition.kind} {definition.id!r}, which "
                    f"{old} already uses; {new} replaces it in the default registry. Give one "
                    f"of them another id, or pass the one you mean in Runtime(agents=[...])",
                    OpenIntentWarning,
                    stacklevel=stacklevel + 1,
                )
        self._by_id[definition.id] = definition

    def get(self, agent_id: str) -> AgentDefinition:
        """The definition registered under ``agent_id``, or :class:`UnknownAgentError`."""
        try:
            return self._by_id[agent_id]
        except KeyError:
            known = ", ".join(sorted(self._by_id)) or "none"
            raise UnknownAgentError(
                f"no agent is registered with id {agent_id!r}{suggest(agent_id, list(self._by_id))}"
                f"; registered ids: {known}. Decorate a class with @Agent({agent_id!r}) or pass "
                "it in Runtime(agents=[...])"
            ) from None

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._by_id

    def ids(self) -> list[str]:
        """Every registered id, sorted."""
        return sorted(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __bool__(self) -> bool:
        return True  # an empty registry is still a registry

    def __repr__(self) -> str:
        return f"Registry({self.ids()!r})"


_DEFAULT = Registry()
_current: ContextVar[Registry | None] = ContextVar("openintent_registry", default=None)


def current_registry() -> Registry:
    """The registry decorated classes register in (the default one unless isolated)."""
    return _current.get() or _DEFAULT


@contextmanager
def isolated_registry(*, inherit: bool = False) -> Iterator[Registry]:
    """Use a registry of its own inside the block (the pytest plugin gives one to each test).

    With ``inherit`` it starts with what the current registry holds (classes decorated at
    import time and event types declared then stay visible); what is registered inside
    (classes, ``register_event_type``) never leaks out.
    """
    registry = Registry()
    if inherit:
        registry._by_id.update(current_registry()._by_id)
        registry._inherited.update(registry._by_id)
        registry.event_types.update(current_registry().event_types)
    token = _current.set(registry)
    try:
        yield registry
    finally:
        _current.reset(token)
