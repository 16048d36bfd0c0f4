"""Portfolio and intent specifications: plain, validated descriptions of the work.

Re-exported by :mod:`openintent.agents`, where users import them from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._data import EMPTY, FrozenDict, freeze, frozen_dict
from ._json_data import is_finite_number, json_data
from .errors import SpecError
from .models import RetryPolicy

__all__ = ["IntentSpec", "PortfolioSpec"]


def _title(_spec: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"IntentSpec title must be a non-empty string, got {value!r}")


def _assign(value: object) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise SpecError(
        f"assign must be an agent id, a non-empty list of agent ids or None, got {value!r}"
    )


def _titles(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise SpecError(
            f"depends_on must be a list of titles, got the string {value!r}: "
            f"write depends_on=[{value!r}]"
        )
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"depends_on must be a list of intent titles, got {value!r}")
    return tuple(value)


def _tags(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"tags must be a list of strings, got {value!r}")
    return tuple(value)


def _state(value: object) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if isinstance(value, FrozenDict):
        return value  # another spec's: already checked and copied
    if not isinstance(value, Mapping):
        raise SpecError(f"initial_state must be a dict, got {type(value).__name__}")
    # A checked copy: changing the caller's dict later changes neither the spec nor a run.
    frozen: Mapping[str, Any] = json_data(value, "IntentSpec initial_state") if value else EMPTY
    return frozen


def _timeout(_spec: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not is_finite_number(value) or not value > 0:
        raise SpecError(f"timeout must be a positive number of seconds or None, got {value!r}")


def _description(_spec: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise SpecError(f"description must be a string, got {type(value).__name__}")


def _retry(value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
    return RetryPolicy.coerce(value)


def _wiring(value: object) -> Mapping[str, tuple[str, str]]:
    """``inputs``: input name -> ``(dependency title, state key)``, or ``"Title.key"``
    (split at the last dot; a key with a dot in it needs the pair)."""
    if value is None:
        return EMPTY
    if isinstance(value, FrozenDict):
        return value  # another spec's: already checked
    if not isinstance(value, Mapping):
        raise SpecError(f"inputs must map input names to (title, key) pairs, got {value!r}")
    wiring: dict[str, tuple[str, str]] = {}
    for name, reference in value.items():
        if isinstance(reference, str) and "." in reference:
            title, _, key = reference.rpartition(".")
            reference = (title, key)
        if (
            not isinstance(name, str) or not name
            or isinstance(reference, str) or not isinstance(reference, Sequence)
            or len(reference) != 2 or not all(isinstance(r, str) and r for r in reference)
        ):
            raise SpecError(
                f"inputs[{name!r}] must be a (dependency title, state key) pair or "
                f"'Title.key', got {reference!r}: e.g. inputs={{'draft': ('Write', 'text')}}"
            )
        wiring[name] = (reference[0], reference[1])
    return frozen_dict(wiring) if wiring else EMPTY


def _wired(spec: IntentSpec, _attribute: attrs.Attribute[Any], value: object) -> None:
    for name, (title, key) in spec.inputs.items():
        if title not in spec.depends_on:
            raise SpecError(
                f"intent {spec.title!r} input {name!r} reads {key!r} from {title!r}, which is "
                f"not in its depends_on {list(spec.depends_on)}: add {title!r} to depends_on"
            )
        if name in spec.depends_on:
            raise SpecError(
                f"intent {spec.title!r} input {name!r} has the title of one of its "
                "dependencies (intent.inputs holds both, by name): rename the input"
            )


@attrs.frozen
class IntentSpec:
    """One unit of work in a :class:`PortfolioSpec`.

    ``assign`` names the agent (or agents) that do it; ``depends_on`` lists titles of intents
    that must complete first; ``initial_state`` seeds the intent's state; ``timeout`` bounds
    each attempt (seconds); ``retry`` is a :class:`~openintent.RetryPolicy` or a dict of one;
    ``key`` is the step key of a YAML workflow (guardrails can match it); ``inputs`` wires
    values of dependencies' final states in by name: ``inputs={"draft": ("Write", "text")}``
    (or ``"Write.text"``) puts ``Write``'s ``state["text"]`` at ``intent.inputs["draft"]``,
    beside each dependency's state by title (an upstream state without the key fails the
    attempt with :class:`~openintent.errors.UnresolvableInputError`, never retried).

    ``initial_state`` must be JSON data (:class:`~openintent.DataError` otherwise);
    ``initial_state`` and ``constraints`` are copied when the spec is built and kept as deep
    read-only views, so neither the caller nor a handler can change them afterwards.
    """

    title: str = attrs.field(validator=_title)
    description: str = attrs.field(default="", validator=_description)
    assign: str | tuple[str, ...] | None = attrs.field(default=None, converter=_assign)
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_titles)
    constraints: Any = attrs.field(default=EMPTY, converter=freeze)
    initial_state: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_state)
    timeout: float | None = attrs.field(default=None, validator=_timeout)
    retry: RetryPolicy = attrs.field(default=None, converter=_retry)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tags)
    key: str | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.instance_of(str)))
    inputs: Mapping[str, tuple[str, str]] = attrs.field(
        default=EMPTY, converter=_wiring, validator=_wired)

    @property
    def assignees(self) -> tuple[str, ...]:
        """The agent ids of ``assign`` as a tuple (empty when unassigned)."""
        if self.assign is None:
            return ()
        return (self.assign,) if isinstance(self.assign, str) else self.assign


def _intents(value: object) -> tuple[IntentSpec, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise SpecError(f"PortfolioSpec intents must be a list of IntentSpec, got {value!r}")
    for index, item in enumerate(value):
        if not isinstance(item, IntentSpec):
            raise SpecError(
                f"PortfolioSpec intents[{index}] is a {type(item).__name__}, not an IntentSpec: "
                "build each intent with IntentSpec(title=..., ...)"
            )
    return tuple(value)


def _name(_spec: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"PortfolioSpec name must be a non-empty string, got {value!r}")


def _metadata(value: object) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if not isinstance(value, Mapping):
        raise SpecError(f"PortfolioSpec metadata must be a dict, got {type(value).__name__}")
    frozen: Mapping[str, Any] = freeze(value)  # a read-only copy
    return frozen


@attrs.frozen
class PortfolioSpec:
    """A named set of intents with dependencies: what ``rt.run`` runs."""

    name: str = attrs.field(validator=_name)
    intents: tuple[IntentSpec, ...] = attrs.field(converter=_intents)
    description: str = attrs.field(default="", validator=_description)
    metadata: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_metadata)

    def to_mermaid(
        self, *, coordinator: Any = None, guardrails: Sequence[Any] | None = None
    ) -> str:
        """A Mermaid flowchart of the intents and their dependencies, with assignees, the
        intents that wait for approval, and a box naming the coordinator and guardrails.

        ``coordinator`` (a ``@Coordinator`` class or its id) and ``guardrails`` (as given to
        ``Runtime``) add what this spec alone does not know. Every title is escaped, so any
        text is safe. ``.. versionadded:: 0.1``
        """
        from . import _viz

        return _viz.to_mermaid(
            _viz.graph_of_spec(self, coordinator=coordinator, guardrails=guardrails)
        )

    def to_dot(self, *, coordinator: Any = None, guardrails: Sequence[Any] | None = None) -> str:
        """The same picture as :meth:`to_mermaid`, as a Graphviz DOT digraph."""
        from . import _viz

        return _viz.to_dot(_viz.graph_of_spec(self, coordinator=coordinator, guardrails=guardrails))
