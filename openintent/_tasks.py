"""The seam between a run's coordinator and the workers of its store: a queue of *tasks*.

A task is one attempt at one intent, handed by the process that holds the run's lease (the
coordinator) to whichever worker process has the intent's agent (``openintent worker`` /
``Runtime.serve``). The coordinator keeps everything else: guardrails, retries, timeouts and
the run's log, which only it writes. Workers claim tasks under a lease with a fencing token,
run the agent's handler, and finish the task with its outcome; the coordinator then journals
what the worker did (state patches, costs, events, decisions, effects) and the result, as if
the handler had run in its own process.

A store that shares work between processes has a :class:`TaskQueue` as ``backend.tasks``
(``postgresql://``: :mod:`openintent._stores._pg_tasks`; ``memory://``: an in-process queue,
for tests and for workers in the same process); a store without one (``sqlite://``) has
``backend.tasks = None`` and runs every agent in the run's own process.

Payloads and results are JSON data (see :mod:`openintent._json_data`):

* ``payload``: ``{"intent": {<every Intent field; status as its value>}, "effects": {name:
  {"status": "completed" | "failed" | "started" | "resolved", "value": ..., "happened":
  bool}}}``: the intent as the handler sees it, and the effects the run's log already records
  for it (a log's settled effect wins over a worker's ``started`` row).
* ``result`` of a ``done`` task: ``{"value": <the handler's return value>, "ops": [...]}``; of
  a ``failed`` one: ``{"error_type": "ValueError", "error": "message", "ops": [...]}``. ``ops``
  lists, in order, what the handler did through ``self``: ``["patch", patch, expected_version]``,
  ``["cost", agent_id, usd, details]``, ``["event", agent_id, event_type, data, on_intent]``,
  ``["decision", coordinator_id, decision, rationale, data, on_intent]`` (``on_intent``: on
  the task's intent, else run-level; optional, default true), ``["effect", name, status,
  value_or_error]`` (status ``completed`` with the value / ``failed`` with ``{"error",
  "error_type"}`` / ``started``: in doubt). A failed result may carry ``error_data``: an
  openintent error's plain attributes (``EffectInDoubtError.effect``, ...).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal, Protocol

import attrs

__all__ = ["EffectRow", "Task", "TaskOutcome", "TaskQueue"]


@attrs.frozen
class Task:
    """A claimed task, as a worker holds it. ``token`` fences its writes: once another worker
    claimed it again (this claim's lease expired), writes with this token are refused.
    ``claims`` counts the claims so far (1: the first); the handler's attempt number is
    ``attempt + claims - 1``."""

    id: int
    run_id: str
    intent_id: str
    attempt: int
    agent_id: str
    payload: Mapping[str, Any]
    token: int
    claims: int
    worker: str


@attrs.frozen
class TaskOutcome:
    """How a task ended, as the coordinator reads it: ``status`` ``done`` or ``failed`` (with
    ``result`` as the module docstring says), or ``cancelled``; ``worker`` is the last
    claimer, ``claims`` how many claims it took."""

    status: Literal["done", "failed", "cancelled"]
    result: Mapping[str, Any] | None
    worker: str | None
    claims: int


@attrs.frozen
class EffectRow:
    """What a worker's effect did so far: ``status`` ``started`` (in doubt if nobody finishes
    it), ``completed`` (``value``) or ``failed`` (``error``)."""

    name: str
    status: Literal["started", "completed", "failed"]
    value: Any = None
    error: str | None = None


class TaskQueue(Protocol):
    """The tasks of a store (see the module docstring). Every method may be called from
    asyncio or trio; blocking database work runs off the event loop's thread."""

    #: Seconds a claim lasts unless renewed (a worker renews its claims every third of it).
    task_ttl: float

    # ---------------------------------------------------------------- the coordinator's side

    async def submit(self, run_id: str, intent_id: str, attempt: int, agent_id: str,
                     payload: Mapping[str, Any]) -> int:
        """Queue an attempt; returns the task's id once it is durable (and wakes the workers
        with ``agent_id``). Submitting the same (run, intent, attempt, agent) again returns
        the same task (a coordinator that failed over re-submits what it cannot know was
        queued); the agent is part of the key because every assignee of a multi-agent intent
        works on the same attempt.
        Submissions made at about the same time are written together."""
        ...

    async def outcome(self, task_id: int) -> TaskOutcome:
        """Wait until the task is done, failed or cancelled, and return how it ended."""
        ...

    async def cancel(self, task_id: int) -> None:
        """The run no longer wants the task (a timeout, a halt, a cancelled run): a task not
        finished yet ends ``cancelled``; the worker running it stops it at its next renewal
        and its finish is refused."""
        ...

    async def cancel_run(self, run_id: str) -> int:
        """End as ``cancelled`` every task of ``run_id`` not finished yet (ready or claimed);
        returns how many. A run resumed by a new coordinator (a failover, an adoption,
        ``rt.resume``) calls it before it dispatches anything: its earlier sitting's tasks are
        stale (their intents are dispatched again, as new attempts), so no worker starts one
        any more, a worker running one stops at its next renewal, and its finish is
        refused."""
        ...

    # ---------------------------------------------------------------- the workers' side

    async def claim(self, worker: str, agents: Collection[str], limit: int) -> list[Task]:
        """Claim up to ``limit`` tasks for agents in ``agents``: ready ones, or claimed ones
        whose lease expired (token + 1, claims + 1), oldest first, skipping rows other workers
        are claiming (``FOR UPDATE SKIP LOCKED``)."""
        ...

    async def wait_for_work(self, agents: Collection[str], poll: float) -> None:
        """Return when a task for one of ``agents`` may be ready (a notification), or after
        ``poll`` seconds (the slow poll that covers a lost notification)."""
        ...

    async def renew(self, tasks: Collection[Task]) -> set[int]:
        """Extend the claims of ``tasks``; returns the ids of those that are no longer this
        claim's (cancelled, or claimed again by another worker): stop running them."""
        ...

    async def finish(self, task: Task, status: Literal["done", "failed"],
                     result: Mapping[str, Any]) -> bool:
        """Record how a task ended and wake its coordinator; ``False`` (nothing written) when
        the claim is no longer current (stale token, or cancelled)."""
        ...

    async def forget_worker(self, worker: str) -> int:
        """A worker starting under ``worker``'s id: the claims its earlier process held expire
        now (so they are claimed again at once); returns how many."""
        ...

    async def effects(self, run_id: str, intent_id: str) -> dict[str, EffectRow]:
        """What the workers' effects of an intent did so far, by name."""
        ...

    async def effect_started(self, task: Task, name: str) -> bool:
        """Record that an effect is about to run (durable before it runs); ``False`` (nothing
        written) when the claim is no longer current: do not run it."""
        ...

    async def effect_ended(self, task: Task, name: str, status: Literal["completed", "failed"],
                           value: Any = None, error: str | None = None) -> bool:
        """Record how an effect ended (durable before the handler goes on); ``False`` when the
        claim is no longer current."""
        ...

    def close(self) -> None:
        """Stop its threads and give back its connections (the backend's ``close`` calls it)."""
        ...
