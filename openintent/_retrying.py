"""Which failures are retried: the errors no retry can fix, and the exception filters of a
:class:`~openintent.RetryPolicy` (``retry_on`` / ``never_retry_on``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .errors import AgentError, ApprovalError, DataError, EscalationError, SpecError

__all__ = ["ExceptionFilter", "call_error", "exception_filter", "matches", "never_retried"]

#: Exception classes, or their names (``"TimeoutError"``, ``"httpx.ReadTimeout"``).
ExceptionFilter = tuple[type[BaseException] | str, ...]


def never_retried(exc: BaseException) -> bool:
    """A failure that retrying cannot fix, whatever the retry policy.

    An escalation nobody resolved (it would only escalate again), a denied approval, data
    that is not JSON data (:class:`DataError`, a non-dict result included), and a handler
    that cannot be called with the arguments its decorator passes (:class:`AgentError`).
    """
    if isinstance(exc, ApprovalError):
        return exc.denied
    return isinstance(exc, EscalationError | DataError | AgentError)


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
