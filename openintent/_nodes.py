"""The scheduler's nodes: each intent of a run as the scheduler sees it, built from the plan.

A :class:`Node` is the intent's projected :class:`~openintent._store.IntentRecord` (a
subclass: only events change those fields) plus what the scheduler needs to run the intent:
its spec, its agents, its place in the graph, how many dependencies it still waits for.
:func:`plant` logs a whole plan's intents and wires their nodes; :func:`graft` does the same
for one intent a coordinator adds mid-run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from ._dispatch import BoundAgent
from ._plan import IntentPlan, Plan, intent_id_prefix
from ._plan_data import intent_data
from ._specs import IntentSpec
from ._store import EventStore, IntentRecord
from .models import EventType, Intent, IntentStatus

__all__ = ["Node", "direct_handler", "graft", "plant", "wire"]


class Node(IntentRecord):
    """One intent as the scheduler sees it: its projected record (the fields events change,
    see :class:`~openintent._store.IntentRecord`) and the scheduler's own bookkeeping: its
    spec and agents, its place in the graph (``index`` in declaration order, the
    ``dependents``' indexes, how many dependencies it is still ``waiting`` for).

    One object per intent, not a record and a node beside it: in a run of 100,000 intents
    every object the garbage collector tracks costs time on each of its passes. The run's
    store makes the nodes as it applies their ``created`` events (its ``record_type``);
    :meth:`place` fills in the rest. Only events change the record's fields.
    """

    __slots__ = ("spec", "index", "agents", "direct", "waiting", "dependents")

    def place(
        self,
        spec: IntentSpec,
        index: int,
        agents: tuple[BoundAgent, ...],
        direct: Callable[[Intent], Any] | None,
    ) -> Node:
        """Set the scheduler's bookkeeping of a node just made; returns the node."""
        self.spec = spec
        self.index = index
        self.agents = agents
        #: The handler a worker may await directly for the first attempt (see
        #: :func:`direct_handler`), or ``None``.
        self.direct = direct
        self.waiting = len(spec.depends_on)
        self.dependents: tuple[int, ...] = ()  # a tuple of ints: untracked by the GC
        return self


def direct_handler(
    agents: tuple[BoundAgent, ...], spec: IntentSpec, coordinator: BoundAgent | None
) -> Callable[[Intent], Any] | None:
    """The handler a worker may await directly for an intent's first attempt, if any: one
    agent (not the coordinator) with one async ``@on_assignment``, no timeout and no wired
    inputs (checked at each dispatch in the general path) and no agent lease."""
    if (len(agents) != 1 or agents[0] is coordinator or spec.timeout is not None
            or spec.inputs or spec.retry.lease_seconds is not None):
        return None
    return agents[0].direct


def _log_created(store: EventStore, intent_id: str, spec: IntentSpec) -> Node:
    initial_state = spec.initial_state
    store.append(  # packed data: see models.PACKED_FIELDS
        EventType.CREATED,
        intent_id,
        # The spec's own checked copy, which nothing changes.
        (spec.title, spec.depends_on, spec.assign,
         initial_state or None, intent_data(spec)),
    )
    return cast(Node, store.records[intent_id])  # the run's store makes Nodes


def plant(plan: Plan, store: EventStore) -> list[Node]:
    """Log the plan's intents (one ``created`` event each) and build their nodes, wired."""
    spec = plan.spec
    prefix = intent_id_prefix(store.portfolio_id)
    created = EventType.CREATED
    ids = [f"{prefix}{index}" for index in range(len(spec.intents))]  # made once, used twice
    # One batch of ``created`` events (packed data: see models.PACKED_FIELDS), each with the
    # spec's own checked copy of its initial state, which nothing changes.
    store.append_batch([
        (created, intent_id, (intent_spec.title, intent_spec.depends_on, intent_spec.assign,
                              intent_spec.initial_state or None, intent_data(intent_spec)))
        for intent_id, intent_spec in zip(ids, spec.intents, strict=True)
    ])
    records = store.records
    return wire(plan, [cast(Node, records[intent_id]) for intent_id in ids])


def wire(plan: Plan, nodes: list[Node]) -> list[Node]:
    """Place each node of the plan's intents (``nodes[i]`` is ``plan.spec.intents[i]``'s, as
    its store made it) and wire the graph: each node's ``dependents``; returns ``nodes``.

    A resumed run wires the nodes it rebuilt from its log with this too (see
    :mod:`openintent._resume`)."""
    spec, coordinator = plan.spec, plan.coordinator
    assignees = plan.assignees
    index_of: dict[str, int] = {}
    for index, intent_spec in enumerate(spec.intents):
        agents = assignees[index]
        nodes[index].place(intent_spec, index, agents,
                           direct_handler(agents, intent_spec, coordinator))
        index_of[intent_spec.title] = index
    children: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        for title in node.spec.depends_on:
            parent = index_of[title]
            if parent in children:
                children[parent].append(index)
            else:
                children[parent] = [index]
    for parent, indices in children.items():
        nodes[parent].dependents = tuple(indices)
    return nodes


def graft(
    planned: IntentPlan,
    store: EventStore,
    nodes: list[Node],
    node_titled: Callable[[str], Node],
    coordinator: BoundAgent | None,
) -> tuple[Node, IntentRecord | None]:
    """Log an intent added to a running plan and build its node, wired to its dependencies.

    Returns the node and, when a dependency already failed (or was skipped or cancelled),
    that dependency's record: the new intent is skipped then.
    """
    spec, agents = planned.spec, planned.agents
    index = len(nodes)
    node = _log_created(store, f"{intent_id_prefix(store.portfolio_id)}{index}", spec)
    node.place(spec, index, agents, direct_handler(agents, spec, coordinator))
    parents = [node_titled(title) for title in spec.depends_on]
    for parent in parents:
        parent.dependents = (*parent.dependents, index)
    statuses = [parent.status for parent in parents]
    node.waiting = sum(status != IntentStatus.COMPLETED for status in statuses)
    broken = [parent for parent in parents if parent.status.is_terminal
              and parent.status != IntentStatus.COMPLETED]
    return node, broken[0] if broken else None
