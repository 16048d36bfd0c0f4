"""The guardrail protocol and the registry of guardrail types (see :mod:`openintent.guardrails`,
which re-exports all of it with the built-in guardrails)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

import attrs

from ._json_data import is_finite_number
from .errors import GuardrailError, SpecError
from .models import Event, Intent

__all__ = [
    "Breach",
    "CallNext",
    "DispatchContext",
    "Guardrail",
    "GuardrailRun",
    "build_guardrails",
    "check_guardrails",
    "isolated_guardrail_types",
    "names_field",
    "number_field",
    "register_guardrail",
]


@attrs.frozen
class Breach:
    """What a guardrail stopped: which one, why, the limit and what was observed."""

    guardrail: str
    reason: str
    limit: Any = None
    observed: Any = None
    intent_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the breach."""
        return {
            "guardrail": self.guardrail,
            "reason": self.reason,
            "limit": self.limit,
            "observed": self.observed,
            "intent_id": self.intent_id,
        }


class GuardrailRun(Protocol):
    """What a guardrail sees of the run it guards (``ctx.run``, and ``bind``'s argument)."""

    @property
    def clock(self) -> Any:
        """The runtime's clock: wait and time out on it so a virtual clock can skip ahead."""
        ...

    @property
    def total_cost(self) -> float:
        """The spend reported so far in this run, in USD."""
        ...

    @property
    def portfolio_id(self) -> str:
        """The id of the running portfolio."""
        ...

    @property
    def replaying(self) -> bool:
        """True while a resumed run's guardrails hear, through ``on_event``, the events it
        logged before it was resumed (to take up their counts: the spend, the approvals
        granted). What a guardrail emits, halts or records meanwhile is dropped: it
        happened then, and the log has it.

        .. versionadded:: 0.2
        """
        ...

    @property
    def elapsed_before(self) -> float:
        """Seconds the run ran before it was resumed, on the clocks of the processes that ran
        it (0.0 for a run never resumed); the time it was stopped does not count.

        .. versionadded:: 0.2
        """
        ...

    def emit(self, type: str, intent_id: str | None, data: Mapping[str, Any]) -> None:
        """Append an event of your own to the run's log: its type declared with
        ``register_event_type`` (or ``budget_warning``); the runtime's own lifecycle types
        are refused (``OpenIntentError``), and ``data`` must be JSON data."""
        ...

    def halt(self, breach: Breach) -> None:
        """Stop the run: nothing new is dispatched, running work is cancelled, and the breach
        is recorded (event, decision, ``@on_guardrail_breach``)."""
        ...

    def record_decision(
        self, intent_id: str | None, decision: str, rationale: str, data: Mapping[str, Any]
    ) -> Any:
        """Record a decision on the coordinator's behalf (``coordinator_id="runtime"``)."""
        ...

    def notify_coordinator(self, hook: str, *args: Any) -> None:
        """Queue the coordinator's ``on_approval_granted`` / ``on_approval_denied`` /
        ``on_guardrail_breach`` handlers with ``args``."""
        ...

    def start_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` after ``seconds`` on the run's clock (only from ``bind``)."""
        ...

    def view(self, intent_id: str) -> Intent:
        """An intent as handlers see it."""
        ...

    def set_status(self, intent_id: str, type: str, data: Mapping[str, Any]) -> None:
        """Log an event that changes an intent's status (``approval_requested``, ...)."""
        ...


class DispatchContext:
    """One attempt on its way through the chain.

    ``reservations`` and ``slots`` are lists of async context managers a guardrail may append
    to in ``before_dispatch``; the dispatch itself enters them (reservations first, then the
    concurrency slots) and leaves them when the attempt ends. So a reservation that waits (the
    budget's, for running work to end) holds no slot, and neither waits while later guardrails
    of the chain do (an approval, a rate limit).
    """

    __slots__ = (
        "run", "intent_id", "title", "key", "tags", "constraints", "agents", "attempt",
        "reservations", "slots",
    )

    def __init__(
        self,
        run: GuardrailRun,
        intent_id: str,
        title: str,
        key: str | None,
        tags: tuple[str, ...],
        constraints: Any,
        agents: tuple[str, ...],
        attempt: int,
    ) -> None:
        self.run = run
        self.intent_id = intent_id
        self.title = title
        self.key = key
        self.tags = tags
        self.constraints = constraints
        self.agents = agents
        self.attempt = attempt
        # Entered by the dispatch itself (see the class docstring).
        self.reservations: list[Any] = []
        self.slots: list[Any] = []

    def __repr__(self) -> str:
        return f"DispatchContext({self.title!r}, agents={self.agents}, attempt={self.attempt})"


CallNext = Callable[[DispatchContext], Awaitable[Any]]


class Guardrail:
    """Base class of guardrails; every hook is optional."""

    type: ClassVar[str] = "custom"

    def bind(self, run: GuardrailRun) -> Guardrail:
        """The instance that guards ``run`` (default: this one)."""
        return self

    async def __call__(self, ctx: DispatchContext, call_next: CallNext) -> Any:
        await self.before_dispatch(ctx)
        result = await call_next(ctx)
        return await self.after_result(ctx, result)

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        """Called before an attempt is dispatched; may wait, halt the run or raise."""

    async def after_result(self, ctx: DispatchContext, result: Any) -> Any:
        """Called with an attempt's result; return it (or a replacement), or raise."""
        return result

    def on_event(self, event: Event) -> None:
        """Called with every event of the run it guards."""

    def to_data(self) -> dict[str, Any]:
        """This guardrail's settings as JSON data, as a run's log keeps them: for a
        registered type, the dict :func:`build_guardrails` builds it back from
        (``{"type": "budget", "max_cost_usd": 5.0}``). Override it in your own guardrail
        type; by default it only names itself: ``{"type": ..., "name": <class name>}``.

        .. versionadded:: 0.2
        """
        return {"type": self.type, "name": type(self).__qualname__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items()
                           if not key.startswith("_"))
        return f"{type(self).__name__}({fields})"


# ---------------------------------------------------------------------------- registry of types

GuardrailFactory = Callable[..., Guardrail]
_TYPES: dict[str, GuardrailFactory] = {}


def register_guardrail(name: str, factory: GuardrailFactory) -> None:
    """Make ``{"type": name, **fields}`` build ``factory(**fields)``.

    >>> register_guardrail("no_fridays", NoFridays)
    """
    if not isinstance(name, str) or not name:
        raise SpecError("register_guardrail needs a non-empty type name")
    _TYPES[name] = factory


def build_guardrails(items: Iterable[Any] | None, where: str) -> list[Guardrail]:
    """Turn dicts and objects into guardrails; a clear error for anything else."""
    built: list[Guardrail] = []
    for index, item in enumerate(items or ()):
        place = f"{where} guardrails[{index}]"
        if isinstance(item, Mapping):
            built.append(_from_dict(item, place))
        elif isinstance(item, type):
            raise SpecError(
                f"{place}: {item.__name__} is a class; pass an instance, e.g. "
                f"{item.__name__}(...), or a dict like {{'type': ...}}"
            )
        elif isinstance(item, Guardrail):
            if type(item).__call__ is not Guardrail.__call__:
                _check_middleware(item.__call__, f"{place} ({type(item).__name__}.__call__)")
            built.append(item)
        elif callable(item):
            _check_middleware(item, place)
            built.append(_FunctionGuardrail(item))
        else:
            raise SpecError(
                f"{place}: a guardrail is a dict like {{'type': 'budget', ...}}, a Guardrail "
                f"object or an async function (ctx, call_next), got {type(item).__name__}"
            )
    return built


def _check_middleware(function: Callable[..., Any], place: str) -> None:
    """Refuse a middleware that cannot be called as ``function(ctx, call_next)``."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a callable inspect cannot read: trust it
        return
    try:
        signature.bind(object(), object())
    except TypeError as exc:
        name = getattr(function, "__qualname__", type(function).__name__)
        short = name.rpartition(".")[2]
        short = short if short.isidentifier() else "middleware"
        raise GuardrailError(
            f"{place}: the guardrail {name}{signature} cannot be called as "
            f"(ctx, call_next) ({exc}); a guardrail function is "
            f"`async def {short}(ctx, call_next)` that returns "
            "`await call_next(ctx)`"
        ) from None


def check_guardrails(items: Iterable[Any] | None, where: str) -> None:
    """Check guardrails where they are declared (``@Coordinator(guardrails=...)``): objects
    and functions, and dicts of registered types; a dict of a type not registered yet is left
    to the run (its type may be registered later)."""
    known = [item for item in items or ()
             if not isinstance(item, Mapping) or item.get("type") in _TYPES]
    build_guardrails(known, where)


class _FunctionGuardrail(Guardrail):
    """A plain ``async def middleware(ctx, call_next)`` as a link of the chain."""

    type = "function"

    def __init__(self, function: Callable[[DispatchContext, CallNext], Awaitable[Any]]) -> None:
        self.function = function

    async def __call__(self, ctx: DispatchContext, call_next: CallNext) -> Any:
        return await self.function(ctx, call_next)

    def to_data(self) -> dict[str, Any]:
        name = getattr(self.function, "__qualname__", type(self.function).__qualname__)
        return {"type": self.type, "name": name}


def _from_dict(item: Mapping[str, Any], place: str) -> Guardrail:
    fields = dict(item)
    kind = fields.pop("type", None)
    if kind not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise SpecError(
            f"{place}: unknown guardrail type {kind!r}; known types: {known} "
            "(register your own with openintent.guardrails.register_guardrail)"
        )
    factory = _TYPES[kind]
    try:
        built = factory(**fields)
    except TypeError as exc:
        raise SpecError(f"{place} ({kind}): {exc}; valid fields: {_fields_of(factory)}") from None
    except GuardrailError as exc:
        raise SpecError(f"{place} ({kind}): {exc}") from None
    if isinstance(built, Guardrail):
        return built
    if callable(built) and not isinstance(built, type):
        _check_middleware(built, f"{place} ({kind})")
        return _FunctionGuardrail(built)
    raise SpecError(
        f"{place}: the factory registered for {kind!r} returned {built!r}, not a Guardrail; "
        "register a Guardrail subclass or a function that returns an instance of one"
    )


def number_field(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    """The guardrail field ``name`` as a float: a finite number ``>= minimum`` (``> minimum``
    when ``strict``); anything else is a :class:`~openintent.errors.GuardrailError`."""
    if not is_finite_number(value) or value < minimum or (strict and value <= minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise GuardrailError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def names_field(name: str, value: Any) -> tuple[str, ...]:
    """The guardrail field ``name`` as a tuple of strings: one string or a list of strings;
    anything else is a :class:`~openintent.errors.GuardrailError`."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise GuardrailError(f"{name} must be a list of strings, got {value!r}")
    return tuple(value)


def _fields_of(factory: GuardrailFactory) -> str:
    try:
        names = [name for name, parameter in inspect.signature(factory).parameters.items()
                 if parameter.kind is not inspect.Parameter.VAR_KEYWORD]
    except (TypeError, ValueError):
        return "see its documentation"
    return ", ".join(names) or "none"


@contextmanager
def isolated_guardrail_types() -> Iterator[None]:
    """Guardrail types registered inside the block are forgotten after it (tests use this)."""
    saved = dict(_TYPES)
    try:
        yield
    finally:
        _TYPES.clear()
        _TYPES.update(saved)
