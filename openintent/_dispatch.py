"""Agents bound to a runtime, and the calling of their handlers.

An ``async def`` handler is awaited in the worker's task; a plain ``def`` runs in a worker
thread (``anyio.to_thread``) so it never blocks the event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio.to_thread

from ._blocking import current_watch, timed
from ._registry import AgentDefinition, HookKind, Registry, definition_of, suggest
from ._retrying import call_error
from .errors import AgentError, UnknownAgentError

__all__ = ["AgentTable", "BoundAgent", "Handler", "call_handler"]


class Handler:
    """One bound handler: the method, whether it is a coroutine function, its options, its
    qualified name and the id of its agent."""

    __slots__ = ("function", "is_async", "options", "name", "agent_id")

    def __init__(
        self, function: Callable[..., Any], options: Mapping[str, Any], name: str,
        agent_id: str = "",
    ) -> None:
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)
        self.options = options
        self.name = name
        self.agent_id = agent_id

    def __repr__(self) -> str:
        return f"Handler({self.name})"


async def call_handler(handler: Handler, *args: Any, clock: Any = None) -> Any:
    """Call a handler: await it if async, else run it in a worker thread.

    A thread cannot be interrupted: when the call is cancelled (a timeout, a cancelled run)
    the caller stops waiting at once and the thread's eventual result is discarded. While the
    thread works, a clock with ``hold()`` (the virtual clock) keeps time still. An async
    handler's steps are timed when the run watches for blocking (see :mod:`._blocking`).

    A handler whose parameters cannot take ``args`` raises :class:`AgentError` (never retried).
    """
    try:
        if handler.is_async:
            watch = current_watch.get()
            if watch is None:
                return await handler.function(*args)
            return await timed(handler.function(*args), watch, handler, args)
        work = functools.partial(handler.function, *args)
        hold = getattr(clock, "hold", None)
        if hold is None:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        with hold():
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except TypeError as exc:
        error = call_error(handler.function, handler.name, args, exc)
        if error is exc:
            raise
        raise error from exc


class BoundAgent:
    """An agent (or coordinator) instance with its handlers grouped by kind."""

    __slots__ = (
        "id", "kind", "instance", "definition", "handlers", "direct", "assignment",
        "assignment_name",
    )

    def __init__(self, definition: AgentDefinition, instance: Any) -> None:
        self.id = definition.id
        self.kind = definition.kind
        self.instance = instance
        self.definition = definition
        self.handlers: dict[HookKind, list[Handler]] = {kind: [] for kind in HookKind}
        for hook in definition.hooks:
            method = getattr(instance, hook.method)
            self.handlers[hook.kind].append(
                Handler(method, hook.options, f"{definition.cls.__qualname__}.{hook.method}",
                        definition.id)
            )
        assignment = self.handlers[HookKind.ASSIGNMENT]
        # The common case: a single async @on_assignment handler, awaited directly.
        self.direct: Callable[..., Any] | None = None
        if len(assignment) == 1 and assignment[0].is_async:
            self.assignment: Handler = assignment[0]  # set only with ``direct``
            self.direct = assignment[0].function
        self.assignment_name = assignment[0].name if assignment else ""

    def handlers_of(self, kind: HookKind) -> list[Handler]:
        """The handlers of one kind, in definition order."""
        return self.handlers[kind]

    def __repr__(self) -> str:
        return f"BoundAgent({self.id!r}, {type(self.instance).__qualname__})"


def bind(obj: Any) -> BoundAgent:
    """Bind a decorated class (instantiated with no arguments) or an instance of one."""
    definition = definition_of(obj)
    if definition is None:
        what = obj.__qualname__ if isinstance(obj, type) else repr(obj)
        raise AgentError(
            f"{what} is not an agent: decorate its class with @Agent('id') or @Coordinator('id')"
        )
    if isinstance(obj, type):
        try:
            instance = obj()
        except TypeError as exc:
            raise AgentError(
                f"cannot create agent {definition.id!r} with {obj.__qualname__}(): {exc}; "
                "pass an instance instead of the class"
            ) from exc
    else:
        instance = obj
    return BoundAgent(definition, instance)


class AgentTable:
    """The agents a runtime can dispatch to, by id.

    With explicit ``agents`` only those are used; otherwise ids are looked up in the default
    registry when first needed, and each class is instantiated once per runtime.
    """

    def __init__(self, agents: Iterable[Any] | None, registry: Registry) -> None:
        self._registry = registry
        self._explicit = agents is not None
        self._bound: dict[str, BoundAgent] = {}
        #: With a store that has a task queue: makes the definition of a remote agent for an
        #: id this table has not got (``openintent._remote``), else ``None``.
        self.remote: Callable[[str], AgentDefinition] | None = None
        self._remote_ids: set[str] = set()
        for obj in agents or ():
            bound = bind(obj)
            if bound.id in self._bound:
                raise AgentError(
                    f"two agents given to Runtime(agents=...) share the id {bound.id!r}"
                )
            self._bound[bound.id] = bound

    def get(self, agent_id: str) -> BoundAgent:
        """The bound agent for ``agent_id``, or :class:`UnknownAgentError` (a remote agent
        instead, with a store that has a task queue)."""
        bound = self._bound.get(agent_id)
        if bound is not None:
            return bound
        if self.remote is not None and not self.has(agent_id):
            definition = self.remote(agent_id)
            bound = self._bound[agent_id] = BoundAgent(definition, definition.instance)
            self._remote_ids.add(agent_id)
            return bound
        return self._local(agent_id)

    def has(self, agent_id: str) -> bool:
        """Whether this process has agent ``agent_id`` itself (given, or registered)."""
        if agent_id in self._bound:
            return agent_id not in self._remote_ids
        return not self._explicit and agent_id in self._registry

    def local_ids(self) -> list[str]:
        """The ids of the agents (not coordinators) this process has: those given, else
        every registered one."""
        if self._explicit:
            return [bound.id for bound in self._bound.values()
                    if bound.kind == "agent" and self.has(bound.id)]
        return [agent_id for agent_id in self._registry.ids()
                if self._registry.get(agent_id).kind == "agent"]

    def _local(self, agent_id: str) -> BoundAgent:
        bound = self._bound.get(agent_id)
        if bound is not None:
            return bound
        if self._explicit:
            known = ", ".join(sorted(self._bound)) or "none"
            raise UnknownAgentError(
                f"no agent with id {agent_id!r}{suggest(agent_id, list(self._bound))} among "
                f"Runtime(agents=[...]) ({known}); add a class decorated with "
                f"@Agent({agent_id!r}) to that list"
            )
        definition = self._registry.get(agent_id)
        bound = bind(definition.instance if definition.instance is not None else definition.cls)
        self._bound[agent_id] = bound
        return bound

    def resolve(self, obj: Any) -> BoundAgent:
        """A coordinator given as an id, a decorated class or an instance."""
        if isinstance(obj, str):
            return self._local(obj)  # a coordinator is never remote
        if isinstance(obj, type):
            definition = definition_of(obj)
            existing = self._bound.get(definition.id) if definition else None
            if existing is not None and type(existing.instance) is obj:
                return existing
        bound = bind(obj)
        self._bound.setdefault(bound.id, bound)
        return bound
