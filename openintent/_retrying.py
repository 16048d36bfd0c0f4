"""Which failures are retried, and how: :class:`RetryPolicy` (re-exported by
:mod:`openintent.models`), its exception filters (``retry_on`` / ``never_retry_on``), and the
errors no retry can fix."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .errors import (
    AgentError,
    ApprovalError,
    DataError,
    EffectInDoubtError,
    EscalationError,
    SpecError,
    UnresolvableInputError,
)

__all__ = [
    "NO_RETRY",
    "ExceptionFilter",
    "RetryPolicy",
    "call_error",
    "exception_filter",
    "matches",
    "never_retried",
]

#: Exception classes, or their names (``"TimeoutError"``, ``"httpx.ReadTimeout"``).
ExceptionFilter = tuple[type[BaseException] | str, ...]


def never_retried(exc: BaseException) -> bool:
    """A failure that retrying cannot fix, whatever the retry policy.

    An escalation nobody resolved (it would only escalate again), a denied approval, data
    that is not JSON data (:class:`DataError`, a non-dict result included), and a handler
    that cannot be called with the arguments its decorator passes (:class:`AgentError`), and
    a wired input its dependency's final state lacks (:class:`UnresolvableInputError`),
    and a side effect in doubt (:class:`EffectInDoubtError`: a person must decide).
    """
    if isinstance(exc, ApprovalError):
        return exc.denied
    return isinstance(exc, EscalationError | DataError | AgentError | UnresolvableInputError
                      | EffectInDoubtError)


def exception_filter(value: object, field: str) -> ExceptionFilter:
    """Validate ``retry_on`` / ``never_retry_on``: exception classes or their names."""
    if value is None:
        return ()
    items: Sequence[Any] = (
        (value,) if isinstance(value, str | type) else value  # type: ignore[assignment]
    )
    if not isinstance(items, Sequence):
        raise SpecError(
            f"RetryPolicy.{field} takes a tuple of exception classes or class names, got "
            f"{value!r}"
        )
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            continue
        if isinstance(item, str) and all(part.isidentifier() for part in item.split(".")):
            continue
        raise SpecError(
            f"RetryPolicy.{field} takes exception classes or their names (e.g. TimeoutError "
            f"or 'TimeoutError', 'httpx.ReadTimeout'), got {item!r}"
        )
    return tuple(items)


def _qualified(item: type[BaseException] | str) -> str:
    return item if isinstance(item, str) else f"{item.__module__}.{item.__qualname__}"


def _same_exception(one: type[BaseException] | str, other: type[BaseException] | str) -> bool:
    """Whether two filter items name the same exception class: the same class, the same
    qualified name, or a plain name (which matches in any module) and the same class name."""
    if isinstance(one, type) and isinstance(other, type):
        return one is other
    first, second = _qualified(one), _qualified(other)
    if isinstance(one, str) and "." not in one or isinstance(other, str) and "." not in other:
        return first.rsplit(".", 1)[-1] == second.rsplit(".", 1)[-1]
    return first == second


def matches(exc: BaseException, names: ExceptionFilter) -> bool:
    """Whether ``exc`` is an instance of one of ``names``: a class, or a class name
    (plain or qualified by its module) anywhere along the exception's MRO."""
    if not names:
        return False
    for cls in type(exc).__mro__:
        for name in names:
            if name is cls or name == cls.__name__ or name == cls.__qualname__ or (
                name == f"{cls.__module__}.{cls.__qualname__}"
            ):
                return True
    return False


def call_error(
    function: Callable[..., Any], name: str, args: tuple[Any, ...], exc: TypeError
) -> Exception:
    """The error for a ``TypeError`` out of calling handler ``function`` with ``args``.

    When the arguments do not bind to the handler's signature, the handler never ran: that
    is a programming error (an :class:`AgentError`, never retried). Otherwise ``exc`` came
    from the handler's own code and is returned unchanged.
    """
    try:
        inspect.signature(function).bind(*args)
    except TypeError as mismatch:
        return AgentError(
            f"{name} cannot be called with the {len(args)} argument(s) its decorator passes "
            f"({mismatch}); fix the handler's parameters"
        )
    except ValueError:  # no signature to check (a builtin): assume the handler raised
        return exc
    return exc


# ---------------------------------------------------------------------------- the policy


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
        raise SpecError(f"RetryPolicy.{attribute.name} must be a finite number >= 0, got {value!r}")


def _lease(_instance: object, _attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)
                                  and value > 0 and math.isfinite(value)):
        raise SpecError(
            f"RetryPolicy.lease_seconds must be a finite number > 0 (or None: no lease), got "
            f"{value!r}"
        )


def _at_least_one(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"RetryPolicy.max_attempts must be an int >= 1, got {value!r}")


def _agent_ids(value: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _retry_on(value: object) -> ExceptionFilter:
    return exception_filter(value, "retry_on")


def _never_retry_on(value: object) -> ExceptionFilter:
    return exception_filter(value, "never_retry_on")


@attrs.frozen
class RetryPolicy:
    """How an intent retries a failed attempt.

    Each agent in ``[assignee, *fallback]`` gets up to ``max_attempts`` attempts, in that
    order. Before retry number ``n`` (0-based, counted over the whole intent) the runtime waits
    ``min(max_delay, initial_delay * multiplier**n)`` on its clock; with ``jitter`` the wait is
    drawn uniformly from the upper half of that, using the runtime's seeded random generator.

    ``retry_on`` and ``never_retry_on`` filter which failures are retried: each is a tuple of
    exception classes or class names (``"TimeoutError"``, ``"httpx.ReadTimeout"``), matched
    along the exception's MRO, so a subclass matches too. With ``retry_on``, only matching
    failures are retried; a failure matching ``never_retry_on`` never is. Some failures are
    never retried whatever the policy: an unresolved escalation, a denied approval,
    :class:`~openintent.DataError` (a result that is not a dict of JSON data) and a handler
    that cannot take its arguments (:class:`~openintent.AgentError`).

    ``lease_seconds`` gives each attempt's agent a lease on the runtime's clock: the agent
    keeps it by showing it is alive (``await self.renew_lease(intent)``, a state patch, a
    cost), each renewing it for ``lease_seconds`` more; an agent silent past it loses the
    attempt (:class:`~openintent.LeaseExpiredError`), and the next agent of
    ``[assignee, *fallback]`` takes over with a ``handoff`` event (``reason: "lease expired"``).

    >>> RetryPolicy(max_attempts=3, initial_delay=0.5).delay(1, random.Random(0), jitter=False)
    1.0
    """

    max_attempts: int = attrs.field(default=3, validator=_at_least_one)
    initial_delay: float = attrs.field(default=1.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=60.0, validator=_positive)
    jitter: bool = True
    fallback: tuple[str, ...] = attrs.field(default=(), converter=_agent_ids)
    retry_on: ExceptionFilter = attrs.field(default=(), converter=_retry_on)
    never_retry_on: ExceptionFilter = attrs.field(default=(), converter=_never_retry_on)
    lease_seconds: float | None = attrs.field(default=None, validator=_lease)

    def __attrs_post_init__(self) -> None:
        both = [item for item in self.retry_on
                if any(_same_exception(item, other) for other in self.never_retry_on)]
        if both:
            names = ", ".join(item if isinstance(item, str) else item.__name__ for item in both)
            raise SpecError(
                f"RetryPolicy names {names} in both retry_on and never_retry_on; say whether "
                "to retry it in one of them only"
            )

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
        """Accept a policy, a dict of its fields, or ``None`` (one attempt, no retry)."""
        if value is None:
            return NO_RETRY
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, Mapping):
            fields = [field.name for field in attrs.fields(cls)]
            unknown = set(value) - set(fields)
            if unknown:
                raise SpecError(
                    f"unknown RetryPolicy field(s) {sorted(unknown)}; valid fields are "
                    f"{', '.join(fields)}"
                )
            return cls(**value)
        raise SpecError(f"retry must be a RetryPolicy, a dict or None, got {type(value).__name__}")

    def delay(self, retry_number: int, rng: random.Random, *, jitter: bool | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier**retry_number)
        if self.jitter if jitter is None else jitter:
            return rng.uniform(base / 2, base)
        return float(base)

    def retries(self, exc: BaseException) -> bool:
        """Whether this policy retries a failure with ``exc`` (attempts left permitting),
        by ``retry_on`` and ``never_retry_on`` alone."""
        if matches(exc, self.never_retry_on):
            return False
        return not self.retry_on or matches(exc, self.retry_on)

    def agent_for(self, attempt: int, assignee: str) -> str | None:
        """The agent that makes attempt ``attempt`` (1-based), or ``None`` when none is left."""
        chain = (assignee, *self.fallback)
        index = (attempt - 1) // self.max_attempts
        return chain[index] if index < len(chain) else None


NO_RETRY = RetryPolicy(max_attempts=1, initial_delay=0.0, jitter=False)
