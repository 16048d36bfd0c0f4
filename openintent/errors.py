"""The error hierarchy: every error the library raises derives from :class:`OpenIntentError`.

Messages say what happened, where, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AgentError",
    "ApprovalError",
    "CostError",
    "DataError",
    "DelegationError",
    "DependencyCycleError",
    "DuplicateIntentError",
    "EffectInDoubtError",
    "Escalate",
    "EscalationError",
    "GuardrailError",
    "IntentFailedError",
    "IntentTimeoutError",
    "LeaseError",
    "LeaseExpiredError",
    "LeaseHeldError",
    "LeaseLostError",
    "OpenIntentError",
    "OpenIntentWarning",
    "OutputCheckError",
    "QuorumError",
    "RemoteAgentError",
    "ResponseConflictError",
    "ResumeMismatchError",
    "RunCancelledError",
    "RunFailedError",
    "RunHaltedError",
    "RunInUseError",
    "RunNotFoundError",
    "SpecError",
    "StateConflictError",
    "StoreError",
    "UnknownAgentError",
    "UnknownDependencyError",
    "UnresolvableInputError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowValidationError",
]


class OpenIntentError(Exception):
    """Base class of every error raised by openintent."""


class OpenIntentWarning(UserWarning):
    """Something works but is probably not what you meant (e.g. two classes registered
    under one agent id). Turn it into an error with ``-W error::openintent.OpenIntentWarning``.
    """


class SpecError(OpenIntentError, ValueError):
    """A portfolio, intent or agent specification is invalid; nothing has run."""


class DuplicateIntentError(SpecError):
    """Two intents of one portfolio share a title."""


class UnknownDependencyError(SpecError):
    """An intent depends on a title that is not in the portfolio."""


class DependencyCycleError(SpecError):
    """The dependencies of a portfolio form a cycle.

    ``cycle`` lists the titles along the cycle, first title repeated last.
    """

    def __init__(self, message: str, cycle: Sequence[str]) -> None:
        super().__init__(message)
        self.cycle: tuple[str, ...] = tuple(cycle)


class UnknownAgentError(SpecError):
    """An intent is assigned to an agent id that no registered agent has."""


class CostError(OpenIntentError, ValueError):
    """A cost that is not a finite amount >= 0 in USD was recorded."""


class AgentError(OpenIntentError, TypeError):
    """A class given as an agent or coordinator is not usable as one."""


class DataError(OpenIntentError, TypeError):
    """A value that must be JSON data is not: an intent's state, a handler's result, a
    ``patch_state`` patch, decision data or cost details.

    JSON data is a ``dict`` with ``str`` keys, a ``list`` (tuples become lists), ``str``,
    ``int``, finite ``float``, ``bool`` or ``None``. ``path`` names the offending key
    (``"report.when"``, ``"rows[2]"``; empty for the value itself). An attempt that fails with
    it is never retried: the same code would produce the same data again.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class StateConflictError(OpenIntentError):
    """``patch_state(..., expected_version=N)`` found the intent at another version."""

    def __init__(self, message: str, *, intent_id: str, expected: int, actual: int) -> None:
        super().__init__(message)
        self.intent_id = intent_id
        self.expected = expected
        self.actual = actual


class IntentTimeoutError(OpenIntentError, TimeoutError):
    """An attempt ran longer than its intent's ``timeout``."""


class ResponseConflictError(OpenIntentError):
    """The assignees of a multi-agent intent returned different results and no handler chose."""


class QuorumError(OpenIntentError):
    """Too many assignees failed for an ``@on_quorum`` threshold to be reachable."""


class DelegationError(OpenIntentError):
    """``delegate(intent, to=...)`` named an unknown agent or one outside the coordinator's
    ``agents``."""


class Escalate(OpenIntentError):  # noqa: N818 - the contract's name; raised, like StopIteration
    """Raise from a handler to hand the intent to its coordinator: ``raise Escalate("why")``."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class EscalationError(OpenIntentError):
    """An agent escalated an intent and no ``@on_escalation`` handler took it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class EffectInDoubtError(OpenIntentError):
    """A named side effect (``self.effect``) started and never finished, so whether it
    happened is unknown (its process died inside it, or a timeout cut it short), and no
    ``check`` could tell. The intent fails with it and is never retried: a person must find
    out, then settle it with ``await rt.resolve_effect(portfolio_id, intent, name,
    value=...)`` (or ``happened=False``) and ``rt.resume`` the run.

    ``effect`` is the effect's name; ``intent_id``, ``title`` and ``portfolio_id`` say where.

    .. versionadded:: 0.3
    """

    def __init__(self, message: str, *, effect: str, intent_id: str, title: str,
                 portfolio_id: str) -> None:
        super().__init__(message)
        self.effect = effect
        self.intent_id = intent_id
        self.title = title
        self.portfolio_id = portfolio_id


class RemoteAgentError(OpenIntentError):
    """A remote agent's handler raised in a worker (``openintent worker`` / ``rt.serve``).

    The coordinator raises a subclass named like the worker's exception (``ValueError`` in
    the worker: a ``RemoteAgentError`` subclass named ``ValueError``, which is also a
    ``ValueError`` for a built-in class), with its message, so ``IntentResult.error`` /
    ``error_type`` and ``RetryPolicy(retry_on=...)`` read as for a local failure. An
    openintent error (``EffectInDoubtError``, say) comes back as its own class.

    .. versionadded:: 0.4
    """


class IntentFailedError(OpenIntentError):
    """An intent failed for good (after its last attempt)."""

    def __init__(self, message: str, *, title: str, intent_id: str) -> None:
        super().__init__(message)
        self.title = title
        self.intent_id = intent_id


class RunFailedError(OpenIntentError):
    """Raised by ``RunResult.raise_for_status()`` for a run that ended ``failed``.

    ``failures`` holds one :class:`IntentFailedError` per failed intent.
    """

    def __init__(self, message: str, failures: Sequence[IntentFailedError] = ()) -> None:
        super().__init__(message)
        self.failures: tuple[IntentFailedError, ...] = tuple(failures)


class RunHaltedError(OpenIntentError):
    """Raised by ``RunResult.raise_for_status()`` for a run a guardrail halted.

    ``breach`` is the :class:`~openintent.guardrails.Breach` that stopped it.
    """

    def __init__(self, message: str, breach: object = None) -> None:
        super().__init__(message)
        self.breach = breach


class GuardrailError(OpenIntentError, ValueError):
    """A guardrail's settings are invalid."""


class ApprovalError(OpenIntentError):
    """An approval was refused: an approver not on the list, a request already decided, or
    (with ``denied``) the intent's approval was denied."""

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


class OutputCheckError(OpenIntentError):
    """An intent's result lacks what a ``require_output`` guardrail demands."""


class RunCancelledError(OpenIntentError):
    """Raised by ``RunResult.raise_for_status()`` for a run that was cancelled."""


class WorkflowError(OpenIntentError):
    """A YAML workflow could not be read or run (base of the ``openintent.workflow`` errors)."""


class UnresolvableInputError(WorkflowError):
    """A wired input (a workflow step's ``inputs``, ``IntentSpec(inputs=...)``) reads a key
    that its dependency's final state does not have. The attempt fails and is never retried.

    ``phase_name`` is the step key (the title for an intent without one), ``input`` the input
    name, ``unresolvable_refs`` the references that did not resolve (``["write.text"]``) and
    ``task_id`` the intent id.
    """

    def __init__(self, message: str, *, phase_name: str, input: str,  # noqa: A002
                 unresolvable_refs: Sequence[str], task_id: str = "") -> None:
        super().__init__(message)
        self.phase_name = phase_name
        self.input = input
        self.unresolvable_refs = list(unresolvable_refs)
        self.task_id = task_id


class WorkflowValidationError(WorkflowError, SpecError):
    """A workflow file is invalid. ``problems`` lists every problem found, each with ``file``,
    ``line`` and ``column`` (1-based) and ``message``; ``str()`` shows one per line as
    ``file:line:col: message``."""

    def __init__(self, problems: Sequence[Any]) -> None:
        self.problems = list(problems)
        first = self.problems[0] if self.problems else None
        self.path = str(getattr(first, "file", ""))  # openintent 0.17 had .path
        self.suggestion = ""
        super().__init__("\n".join(map(str, self.problems)))


class WorkflowNotFoundError(WorkflowError, FileNotFoundError):
    """A workflow file does not exist."""


class StoreError(OpenIntentError):
    """A store cannot be used: a ``store=`` URL it does not know, a file that is not an
    openintent journal (corrupt, another application's database, or written by a newer
    version). The message names the file; the file is left untouched."""


class RunNotFoundError(StoreError, KeyError):
    """The store holds no run with that portfolio id."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class RunInUseError(StoreError):
    """Another process (or task) holds the run's lease: it is resuming or running the run now."""


class LeaseError(OpenIntentError):
    """A lease (``client.acquire_coordinator_lease``) refused an acquisition or a write."""


class LeaseHeldError(LeaseError):
    """Another holder's lease is live: the message names the holder and when it expires
    (``holder``, ``expires_at``)."""

    def __init__(self, message: str, *, holder: str, expires_at: float) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLostError(LeaseError):
    """A write (or ``renew()``) was made with a stale fencing token: the lease expired or
    another holder took it since. Nothing was written."""


class LeaseExpiredError(LeaseError, TimeoutError):
    """An agent went silent past its intent's lease (``RetryPolicy(lease_seconds=...)``): it
    neither renewed it (``await self.renew_lease(intent)``) nor reported progress, so it lost
    the attempt; the retry policy's next agent (a ``fallback``) takes over, if any."""


class ResumeMismatchError(OpenIntentError):
    """``rt.resume`` was given a spec (or coordinator) that differs from the one the run was
    journaled with; the message shows the difference. Nothing was run or written."""
