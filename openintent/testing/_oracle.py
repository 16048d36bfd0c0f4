"""An independent reading of the event log: what each intent must look like, given its events.

The runtime keeps its intent records up to date with its own projection (``_store``). This
module does not reuse it: it folds the public :class:`~openintent.models.Event` objects with
rules of its own, written from what each event type means, so a projection bug, a wrong event,
a dropped event or a record that drifted from its log shows up as a disagreement.

What each event does to its intent (events not listed change no intent record):

============================  ===============================================================
``created``                   a new intent: ``pending``, ``state`` = ``initial_state``,
                              version 0, ``assigned_to`` = ``assign`` (a list joined by
                              commas), no attempts, no error, no cost (its ``spec``, the
                              plan as data, changes nothing in the record)
``dispatched``                ``running``; ``attempts`` = ``attempt``; ``assigned_to`` =
                              ``agent``
``state_patched``             ``state`` updated with ``patch`` (top-level keys); version + 1
                              when the patch is not empty
``completed``                 ``state`` updated with the result (version + 1 when not
                              empty); ``completed``; error cleared
``attempt_failed``            ``error``, ``error_type`` set; ``attempts`` at least
                              ``attempt`` (a refused attempt was never dispatched)
``retry_scheduled``           ``pending`` again
``approval_requested``        ``awaiting_approval``
``approval_granted``          ``pending`` again
``failed``                    ``failed`` with ``error``, ``error_type``
``skipped`` / ``cancelled``   that status
``handoff``                   ``assigned_to`` = ``to`` (not for one assignee's part, ``for``)
``cost_recorded``             ``cost_usd`` + ``usd`` (when it names an intent)
``intent_copied``             (a fork's copy of an intent another run completed; only
                              while pending) ``completed`` with ``state``, ``version``,
                              ``attempts`` and ``assigned_to`` as the data says, no error,
                              no cost; each of its ``effects`` completed with its
                              ``value``, ``attempts``, ``checked`` and ``resolved``
``run_resumed``               each of ``reopened`` (it was running, awaiting approval or
                              cancelled) ``pending`` again; the run has not ended
``effect_started``            its effect ``name`` ``started`` (one more of its ``attempts``,
                              started in ``attempt``), while the intent runs that attempt
``effect_completed``          that effect ``completed`` with ``value`` (``checked`` when
                              a check confirmed it); it must have started
``effect_failed``             that effect ``failed`` with ``error``, ``error_type``
``agent_assigned`` /          ``assigned_to`` = ``assigned_to`` (a client's ``assign_agent``,
``agent_unassigned``          ``unassign_agent``)
``dependency_added``          ``on`` (a title) added to ``depends_on``
``effect_resolved``           that effect (started, never finished) ``completed`` with
                              ``value``, or ``not_happened``; resolved; each of
                              ``reopened`` ``pending`` again; the run has not ended
============================  ===============================================================

An effect still ``started`` is reported ``in_doubt`` once the attempt that started it is over
(the intent is not running, or runs a later attempt). A completed effect never starts again.

Beyond the fold, the log must be a possible life of each intent: its first event is
``created``; nothing but a late ``cost_recorded`` changes it once it is completed, failed,
skipped or cancelled; attempt numbers only grow; it is dispatched only while pending,
completes only while running, is granted approval only while awaiting it; a ``failed``
event's ``attempts`` is the attempt count so far. The run's ``run_finished`` status, total
cost and decisions must match the result too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..models import EffectRecord, Event, IntentResult, IntentStatus, RunResult, to_plain

__all__ = ["Derivation", "derive", "disagreements"]

_PENDING = "pending"
_RUNNING = "running"
_AWAITING = "awaiting_approval"
_TERMINAL = frozenset({"completed", "failed", "skipped", "cancelled"})
_FIELDS = ("id", "title", "status", "state", "version", "assigned_to", "attempts",
           "depends_on", "error", "error_type", "cost_usd", "effects")


class _Intent:
    """One intent as its events describe it (plain values, compared field by field)."""

    def __init__(self, intent_id: str, data: Mapping[str, Any]) -> None:
        assign = data.get("assign")
        if isinstance(assign, Sequence) and not isinstance(assign, str):
            assign = ",".join(assign)
        self.fields: dict[str, Any] = {
            "id": intent_id,
            "title": data.get("title"),
            "status": _PENDING,
            "state": to_plain(data.get("initial_state") or {}),  # the oracle's own copy
            "version": 0,
            "assigned_to": assign,
            "attempts": 0,
            "depends_on": tuple(data.get("depends_on") or ()),
            "error": None,
            "error_type": None,
            "cost_usd": 0.0,
        }
        self.effects: dict[str, dict[str, Any]] = {}  # by name, in first-start order

    def effect_records(self) -> tuple[EffectRecord, ...]:
        fields = self.fields
        running = fields["status"] == _RUNNING
        records = []
        for name, effect in self.effects.items():
            status = effect["status"]
            if status == "started" and (not running or effect["attempt"] < fields["attempts"]):
                status = "in_doubt"
            records.append(EffectRecord(
                name=name, status=status, value=effect["value"], attempts=effect["attempts"],
                error=effect["error"], error_type=effect["error_type"],
                checked=effect["checked"], resolved=effect["resolved"]))
        return tuple(records)

    def merge(self, changes: Mapping[str, Any] | None) -> None:
        if changes:
            self.fields["state"] = {**self.fields["state"], **to_plain(changes)}
            self.fields["version"] += 1


class Derivation:
    """The intents (by id, in creation order) an event log describes, and what in the log
    could not have happened."""

    def __init__(self) -> None:
        self.intents: dict[str, _Intent] = {}
        self.problems: list[str] = []
        self.cost_usd = 0.0
        self.finished_status: str | None = None
        self.decision_ids: list[str] = []
        self._unknown: set[str | None] = set()

    def results(self) -> dict[str, IntentResult]:
        """Each derived intent as an :class:`IntentResult`, keyed by title."""
        return {
            intent.fields["title"]: IntentResult(
                **{**intent.fields, "status": IntentStatus(intent.fields["status"]),
                   "effects": intent.effect_records()}
            )
            for intent in self.intents.values()
        }

    # ------------------------------------------------------------------ folding

    def fold(self, event: Event) -> None:
        kind = event.type
        data: Mapping[str, Any] = event.data or {}
        if kind == "run_finished":
            self.finished_status = data.get("status")
            return
        if kind == "run_resumed":
            self._resumed(event, data)
            return
        if kind == "decision_recorded":
            self.decision_ids.append(data.get("id", ""))
            return
        if kind == "cost_recorded":
            self.cost_usd += data.get("usd", 0.0)
            if event.intent_id is None:
                return
        if kind == "created":
            if event.intent_id in self.intents:
                self._problem(event, "creates an intent that already exists")
            self.intents[event.intent_id or ""] = _Intent(event.intent_id or "", data)
            return
        rule = _RULES.get(kind)
        if rule is None:
            return
        intent = self.intents.get(event.intent_id or "")
        if intent is None:
            if event.intent_id not in self._unknown:  # once per intent: its first event
                self._unknown.add(event.intent_id)
                self._problem(event, "names an intent no earlier `created` event introduced")
            return
        status = intent.fields["status"]
        if kind == "effect_resolved":  # a person settled it, whatever became of the intent
            self.finished_status = None  # the run is open again
            _effect_resolved(self, event, intent, data)
            return
        if status in _TERMINAL and kind != "cost_recorded":  # spend may be reported late
            self._problem(event, f"changes {intent.fields['title']!r}, already {status}")
        rule(self, event, intent, data)

    def _resumed(self, event: Event, data: Mapping[str, Any]) -> None:
        self.finished_status = None  # an earlier end no longer ends the run
        for intent_id in data.get("reopened", ()):
            intent = self.intents.get(intent_id)
            if intent is None:
                self._problem(event, f"reopens {intent_id}, which no `created` event introduced")
                continue
            status = intent.fields["status"]
            if status not in (_RUNNING, _AWAITING, "cancelled"):
                self._problem(event, f"reopens {intent.fields['title']!r}, which was {status}")
            intent.fields["status"] = _PENDING

    def _problem(self, event: Event, what: str) -> None:
        self.problems.append(f"event #{event.seq} ({event.type}, intent {event.intent_id}) {what}")

    def _expect(self, event: Event, intent: _Intent, *allowed: str) -> None:
        status = intent.fields["status"]
        if status not in allowed and status not in _TERMINAL:  # terminal: reported already
            self._problem(event, f"while {intent.fields['title']!r} was {status} "
                                 f"(expected {' or '.join(allowed)})")


_Rule = Callable[["Derivation", Event, _Intent, Mapping[str, Any]], None]


def _dispatched(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _PENDING)
    attempt = data.get("attempt", 0)
    if attempt <= intent.fields["attempts"]:
        run._problem(event, f"dispatches attempt {attempt} after attempt "
                            f"{intent.fields['attempts']}")
    intent.fields.update(status=_RUNNING, attempts=attempt, assigned_to=data.get("agent"))


def _state_patched(run: Derivation, event: Event, intent: _Intent,
                   data: Mapping[str, Any]) -> None:
    intent.merge(data.get("patch"))  # any time before the intent ends (a coordinator may)


def _completed(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _RUNNING)
    intent.merge(event.data)
    intent.fields.update(status="completed", error=None, error_type=None)


def _attempt_failed(run: Derivation, event: Event, intent: _Intent,
                    data: Mapping[str, Any]) -> None:
    intent.fields.update(error=data.get("error"), error_type=data.get("error_type"),
                         attempts=max(intent.fields["attempts"], data.get("attempt", 0)))


def _retry_scheduled(run: Derivation, event: Event, intent: _Intent,
                     data: Mapping[str, Any]) -> None:
    intent.fields["status"] = _PENDING


def _failed(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any]) -> None:
    if "attempts" in data and data["attempts"] != intent.fields["attempts"]:
        run._problem(event, f"says {data['attempts']} attempt(s); the log shows "
                            f"{intent.fields['attempts']}")
    intent.fields.update(status="failed", error=data.get("error"),
                         error_type=data.get("error_type"))


def _status(status: str) -> _Rule:
    def rule(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any]) -> None:
        intent.fields["status"] = status

    return rule


def _approval_granted(run: Derivation, event: Event, intent: _Intent,
                      data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _AWAITING)
    intent.fields["status"] = _PENDING


def _handoff(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any]) -> None:
    if "for" not in data:
        intent.fields["assigned_to"] = data.get("to")


def _intent_copied(run: Derivation, event: Event, intent: _Intent,
                   data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _PENDING)
    intent.fields.update(status="completed", state=to_plain(data.get("state") or {}),
                         version=data.get("version", 0), attempts=data.get("attempts", 0),
                         assigned_to=data.get("assigned_to"), error=None, error_type=None)
    intent.effects = {
        item.get("name", ""): {
            "status": "completed", "value": to_plain(item.get("value")),
            "attempts": item.get("attempts", 0), "attempt": 0, "error": None,
            "error_type": None, "checked": bool(item.get("checked", False)),
            "resolved": bool(item.get("resolved", False))}
        for item in data.get("effects") or ()}


def _cost_recorded(run: Derivation, event: Event, intent: _Intent,
                   data: Mapping[str, Any]) -> None:
    intent.fields["cost_usd"] += data.get("usd", 0.0)


def _effect(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any],
            *expected: str | None) -> dict[str, Any]:
    """The effect an ``effect_*`` event names (made at its first start); a problem when it
    is not in one of the ``expected`` statuses."""
    name = data.get("name", "")
    effect = intent.effects.get(name)
    if effect is None:
        effect = {"status": None, "value": None, "attempts": 0, "attempt": 0, "error": None,
                  "error_type": None, "checked": False, "resolved": False}
        if event.type == "effect_started":
            intent.effects[name] = effect
    if effect["status"] not in expected:
        run._problem(event, f"while effect {name!r} of {intent.fields['title']!r} was "
                            f"{effect['status']} (expected {' or '.join(map(str, expected))})")
    return effect


def _effect_started(run: Derivation, event: Event, intent: _Intent,
                    data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _RUNNING)
    effect = _effect(run, event, intent, data, None, "started", "failed", "not_happened")
    if data.get("attempt") != intent.fields["attempts"]:
        run._problem(event, f"starts an effect in attempt {data.get('attempt')} while "
                            f"attempt {intent.fields['attempts']} runs")
    effect.update(status="started", attempt=data.get("attempt", 0), checked=False,
                  resolved=False, attempts=effect["attempts"] + 1)


def _effect_completed(run: Derivation, event: Event, intent: _Intent,
                      data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _RUNNING)
    effect = _effect(run, event, intent, data, "started")
    effect.update(status="completed", value=to_plain(data.get("value")),
                  checked=bool(data.get("checked", False)))


def _effect_failed(run: Derivation, event: Event, intent: _Intent,
                   data: Mapping[str, Any]) -> None:
    run._expect(event, intent, _RUNNING)
    effect = _effect(run, event, intent, data, "started")
    effect.update(status="failed", error=data.get("error"), error_type=data.get("error_type"))


def _effect_resolved(run: Derivation, event: Event, intent: _Intent,
                     data: Mapping[str, Any]) -> None:
    effect = _effect(run, event, intent, data, "started")
    if data.get("happened", True) is False:
        effect.update(status="not_happened", value=None, resolved=True)
    else:
        effect.update(status="completed", value=to_plain(data.get("value")), resolved=True)
    for intent_id in data.get("reopened", ()):
        reopened = run.intents.get(intent_id)
        if reopened is None:
            run._problem(event, f"reopens {intent_id}, which no `created` event introduced")
            continue
        if reopened.fields["status"] not in ("failed", "skipped"):
            run._problem(event, f"reopens {reopened.fields['title']!r}, which was "
                                f"{reopened.fields['status']}")
        reopened.fields["status"] = _PENDING


def _assigned(run: Derivation, event: Event, intent: _Intent, data: Mapping[str, Any]) -> None:
    # A client's assign_agent / unassign_agent, before the portfolio runs.
    intent.fields["assigned_to"] = data.get("assigned_to")


def _dependency_added(run: Derivation, event: Event, intent: _Intent,
                      data: Mapping[str, Any]) -> None:
    intent.fields["depends_on"] = (*intent.fields["depends_on"], data.get("on"))


_RULES: dict[str, _Rule] = {
    "dispatched": _dispatched,
    "state_patched": _state_patched,
    "completed": _completed,
    "attempt_failed": _attempt_failed,
    "retry_scheduled": _retry_scheduled,
    "approval_requested": _status(_AWAITING),
    "approval_granted": _approval_granted,
    "failed": _failed,
    "skipped": _status("skipped"),
    "cancelled": _status("cancelled"),
    "handoff": _handoff,
    "cost_recorded": _cost_recorded,
    "intent_copied": _intent_copied,
    "effect_started": _effect_started,
    "effect_completed": _effect_completed,
    "effect_failed": _effect_failed,
    "effect_resolved": _effect_resolved,
    "agent_assigned": _assigned,
    "agent_unassigned": _assigned,
    "dependency_added": _dependency_added,
}


def derive(events: Iterable[Event]) -> Derivation:
    """Fold an event log with the rules above."""
    derivation = Derivation()
    for event in events:
        derivation.fold(event)
    return derivation


def disagreements(result: RunResult) -> list[str]:
    """Everything in which ``result`` and its own event log disagree, readably; empty if
    nothing does."""
    derivation = derive(result.events)
    lines = list(derivation.problems)
    derived = derivation.results()
    live = dict(result.intents)
    for title in [*live, *(title for title in derived if title not in live)]:
        mine, theirs = derived.get(title), live.get(title)
        if mine is None:
            lines.append(f"intent {title!r} is in the result but no event created it")
            continue
        if theirs is None:
            lines.append(f"intent {title!r} was created in the log but is not in the result")
            continue
        for name in _FIELDS:
            said, has = getattr(mine, name), getattr(theirs, name)
            if name == "cost_usd" and math.isclose(said, has, abs_tol=1e-9):
                continue
            if said != has:
                lines.append(f"intent {title!r} {name}: the events say {said!r}, "
                             f"the result says {has!r}")
    if derivation.finished_status is not None and derivation.finished_status != result.status:
        lines.append(f"run status: the events say {derivation.finished_status!r}, the result "
                     f"says {str(result.status)!r}")
    if not math.isclose(derivation.cost_usd, result.cost_usd, abs_tol=1e-9):
        lines.append(f"run cost_usd: the events say {derivation.cost_usd!r}, the result says "
                     f"{result.cost_usd!r}")
    recorded = [decision.id for decision in result.decisions]
    if derivation.decision_ids != recorded:
        lines.append(f"decisions: the events record {derivation.decision_ids}, the result "
                     f"has {recorded}")
    return lines
