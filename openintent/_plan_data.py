"""The plan as data: what a run was asked to do, kept in its own event log.

A run's log holds its plan beside its events, so a store can give the plan back (to resume
a run, to load it, to compare it with the spec a caller passes):

* each ``created`` event's 5th packed field ``spec``: :func:`intent_data` of the intent's
  spec, its fields beyond title, dependencies, assignees and initial state, defaults left
  out (``None`` when all are default, the common case);
* the ``run_started`` event's ``"plan"``: :func:`plan_data`, the run-level settings
  (description, metadata, guardrails, concurrency), defaults left out.

:func:`logged_plan` reads both back as a :class:`LoggedPlan`; :func:`spec_diff` says, line
by line, how two portfolio specs differ.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._data import EMPTY, to_plain
from ._plan import Plan
from ._specs import IntentSpec, PortfolioSpec
from ._stores import RawEvent
from .models import NO_RETRY as _NO_RETRY
from .models import PACKED_FIELDS, EventType, RetryPolicy

__all__ = [
    "LoggedPlan",
    "intent_data",
    "intent_from_data",
    "logged_plan",
    "plan_data",
    "retry_data",
    "retry_from_data",
    "spec_diff",
]

_DEFAULT_RETRY = RetryPolicy()
_RETRY_FIELDS = tuple(field.name for field in attrs.fields(RetryPolicy))
_FILTERS = ("retry_on", "never_retry_on")


# ---------------------------------------------------------------------------- intents


def intent_data(spec: IntentSpec) -> dict[str, Any] | None:
    """The fields of ``spec`` a ``created`` event does not carry on its own, as JSON data
    (defaults left out), or ``None`` when every one of them is the default.

    ``retry`` is the policy's non-default fields (``{}`` for ``RetryPolicy()``; left out for
    the default, no retry); exception classes in its filters become ``{"class": name}``.
    """
    constraints = spec.constraints
    if not (spec.description or constraints is not EMPTY or spec.timeout is not None
            or spec.retry is not _NO_RETRY or spec.tags or spec.key is not None or spec.inputs):
        return None  # the common case, kept cheap: plant() calls this for every intent
    data: dict[str, Any] = {}
    if spec.description:
        data["description"] = spec.description
    if not (isinstance(constraints, Mapping) and not constraints):  # {} is the default
        data["constraints"] = to_plain(constraints)
    if spec.timeout is not None:
        data["timeout"] = spec.timeout
    if spec.retry != _NO_RETRY:
        data["retry"] = retry_data(spec.retry)
    if spec.tags:
        data["tags"] = list(spec.tags)
    if spec.key is not None:
        data["key"] = spec.key
    if spec.inputs:
        data["inputs"] = {name: [title, key] for name, (title, key) in spec.inputs.items()}
    return data or None


def intent_from_data(
    title: str,
    depends_on: Sequence[str],
    assign: str | Sequence[str] | None,
    initial_state: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
) -> IntentSpec:
    """The :class:`IntentSpec` a ``created`` event describes (its five packed fields)."""
    fields: dict[str, Any] = dict(data or {})
    if "retry" in fields:
        fields["retry"] = retry_from_data(fields["retry"])
    if "constraints" in fields:
        fields["constraints"] = to_plain(fields["constraints"])
    if "inputs" in fields:
        fields["inputs"] = {name: tuple(pair) for name, pair in fields["inputs"].items()}
    return IntentSpec(
        title=title,
        depends_on=list(depends_on),
        assign=assign if assign is None or isinstance(assign, str) else list(assign),
        initial_state=to_plain(initial_state) if initial_state else None,
        **fields,
    )


def retry_data(policy: RetryPolicy) -> dict[str, Any]:
    """A retry policy's fields that differ from ``RetryPolicy()``'s, as JSON data."""
    data: dict[str, Any] = {}
    for name in _RETRY_FIELDS:
        value = getattr(policy, name)
        if value == getattr(_DEFAULT_RETRY, name):
            continue
        if name == "fallback":
            value = list(value)
        elif name in _FILTERS:
            value = [item if isinstance(item, str)
                     else {"class": f"{item.__module__}.{item.__qualname__}"} for item in value]
        data[name] = value
    return data


def retry_from_data(data: Mapping[str, Any]) -> RetryPolicy:
    """The :class:`RetryPolicy` of :func:`retry_data`'s dict. An exception class comes back
    as the class when its module is imported (nothing is imported for it), else as its
    qualified name, which the policy matches the same way."""
    fields = dict(data)
    for name in _FILTERS:
        if name in fields:
            fields[name] = tuple(
                _exception_class(item["class"]) if isinstance(item, Mapping) else item
                for item in fields[name])
    if "fallback" in fields:
        fields["fallback"] = tuple(fields["fallback"])
    return RetryPolicy(**fields)


def _exception_class(name: str) -> type[BaseException] | str:
    # The longest imported module that prefixes the name holds the class.
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        found: Any = module
        for part in parts[split:]:
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
        break
    return name


# ---------------------------------------------------------------------------- the run


def plan_data(plan: Plan) -> dict[str, Any]:
    """The run-level settings of ``plan`` as JSON data (``run_started``'s ``"plan"``):
    ``description``, ``metadata``, ``guardrails`` (each one's ``to_data()``),
    ``max_concurrency`` and ``sequential``, defaults left out."""
    spec = plan.spec
    data: dict[str, Any] = {}
    if spec.description:
        data["description"] = spec.description
    if spec.metadata:
        data["metadata"] = to_plain(spec.metadata)
    if plan.guardrails:
        data["guardrails"] = [guardrail.to_data() for guardrail in plan.guardrails]
    if plan.max_concurrency is not None:
        data["max_concurrency"] = plan.max_concurrency
    if plan.sequential:
        data["sequential"] = True
    return data


@attrs.frozen
class LoggedPlan:
    """The plan a run's log holds (see :func:`logged_plan`).

    ``spec`` has every intent the log created, in log order: those of the spec the run was
    given (the first ``planned``), then those a coordinator added with ``add_intent``.
    """

    spec: PortfolioSpec
    coordinator: str | None = None
    guardrails: tuple[Mapping[str, Any], ...] = ()
    max_concurrency: int | None = None
    sequential: bool = False
    #: How many intents the spec given to the run had (the rest were added during the run).
    planned: int = 0


def logged_plan(events: Sequence[RawEvent]) -> LoggedPlan:
    """Read the plan back from a run's raw events (``run_started``, then each ``created``);
    ``ValueError`` when the log does not start with ``run_started``."""
    if not events or events[0][0] != EventType.RUN_STARTED:
        raise ValueError("this log does not start with run_started; it holds no plan")
    started: Mapping[str, Any] = events[0][3] or {}
    plan: Mapping[str, Any] = started.get("plan") or {}
    intents = _logged_intents(events)
    spec = PortfolioSpec(
        name=started.get("name", ""),
        intents=intents,
        description=plan.get("description", ""),
        metadata=to_plain(plan.get("metadata")),
    )
    return LoggedPlan(
        spec=spec,
        coordinator=started.get("coordinator"),
        guardrails=tuple(to_plain(item) for item in plan.get("guardrails", ())),
        max_concurrency=plan.get("max_concurrency"),
        sequential=bool(plan.get("sequential", False)),
        planned=started.get("intents", len(intents)),
    )


def _logged_intents(events: Sequence[RawEvent]) -> list[IntentSpec]:
    """Each ``created`` event's intent, with the dependencies and assignees a client
    changed since (``dependency_added``, ``agent_assigned``, ``agent_unassigned``)."""
    fields: dict[str, list[Any]] = {}
    for type_, _time, intent_id, data in events:
        if type_ == EventType.CREATED:
            fields[intent_id or ""] = list(_created_fields(data))
        elif type_ == EventType.DEPENDENCY_ADDED:
            created = fields[intent_id or ""]
            created[1] = [*created[1], data["on"]]
        elif type_ in (EventType.AGENT_ASSIGNED, EventType.AGENT_UNASSIGNED):
            assigned = data.get("assigned_to")
            fields[intent_id or ""][2] = (assigned if assigned is None or "," not in assigned
                                          else assigned.split(","))
    return [intent_from_data(*created) for created in fields.values()]


def _created_fields(data: Any) -> tuple[Any, ...]:
    """A ``created`` event's five fields, packed (a tuple, a journal's list) or a dict."""
    if isinstance(data, Mapping):
        return tuple(data.get(name) for name in PACKED_FIELDS[EventType.CREATED])
    return tuple(data)


# ---------------------------------------------------------------------------- differences


def _intent_fields(spec: IntentSpec) -> dict[str, Any]:
    """Every field of an intent spec as comparable JSON data."""
    assign = spec.assign if spec.assign is None or isinstance(spec.assign, str) else list(
        spec.assign)
    return {
        "depends_on": list(spec.depends_on),
        "assign": assign,
        "initial_state": to_plain(spec.initial_state),
        **{name: None for name in ("description", "constraints", "timeout", "retry", "tags",
                                   "key", "inputs")},
        **(intent_data(spec) or {}),
    }


def spec_diff(logged: PortfolioSpec, given: PortfolioSpec) -> list[str]:
    """How ``given`` differs from ``logged``, one readable line per difference (empty when
    they are the same plan)::

        name 'etl' -> 'etl-2'
        intent 'Load': timeout 30 -> 60
        intent 'Audit' added
        intent 'Clean' removed
    """
    lines: list[str] = []
    if logged.name != given.name:
        lines.append(f"name {logged.name!r} -> {given.name!r}")
    if logged.description != given.description:
        lines.append(f"description {logged.description!r} -> {given.description!r}")
    if to_plain(logged.metadata) != to_plain(given.metadata):
        lines.append(f"metadata {to_plain(logged.metadata)!r} -> {to_plain(given.metadata)!r}")
    before = {spec.title: spec for spec in logged.intents}
    after = {spec.title: spec for spec in given.intents}
    for title, spec in before.items():
        if title not in after:
            lines.append(f"intent {title!r} removed")
            continue
        old, new = _intent_fields(spec), _intent_fields(after[title])
        lines.extend(f"intent {title!r}: {name} {_shown(old[name])} -> {_shown(new[name])}"
                     for name in old if old[name] != new[name])
    lines.extend(f"intent {title!r} added" for title in after if title not in before)
    kept_before = [title for title in before if title in after]
    kept_after = [title for title in after if title in before]
    if kept_before != kept_after:
        lines.append(f"intent order {kept_before} -> {kept_after}")
    return lines


def _shown(value: Any) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return repr(value)
