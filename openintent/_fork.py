"""Forking a run (``rt.fork``, ``rt.start_fork``): a new run that keeps what another run
completed and runs the rest again.

The fork is a new run (a new id, in the same store) of the source run's plan (read back from
its log, as a resume reads it) or of a spec given in its place. Its log is prepared, then the
run goes on over it as a resumed run does (:func:`~openintent._resume.count_waiting`,
``Launcher.assemble``, the run's lease):

* ``run_started``, whose data adds ``forked_from`` (the source run's id) and ``rerun`` (the
  titles asked for), then one ``created`` per intent, from its spec (so the fork's own log
  holds its plan: a fork resumes and loads like any run);
* one ``intent_copied`` per *copied* intent: it is ``completed`` with the source's final
  ``state``, ``version``, ``attempts`` and ``assigned_to`` (its data; ``from``: the source
  intent's id; ``effects``: the side effects it completed, when it has any) and is never
  dispatched, so its effects never run again;
* every other intent runs from its spec: those named in ``rerun``, their descendants, and
  the intents that did not complete in the source run (failed, skipped, cancelled, or not
  finished when its log ended) with theirs.

What is not copied: spend (the fork's ``cost_usd``, and a copied intent's, counts only what
the fork spends, so a budget starts afresh), decisions, approvals (a re-run intent asks
again), and the source's events (they stay in the source's log, which the fork never
writes to).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._data import to_plain
from ._guardrail_core import build_guardrails
from ._launch import Launcher, release_lease
from ._logging import logging_configured
from ._nodes import plant
from ._plan_data import logged_plan, spec_diff
from ._registry import suggest
from ._resume import Resumption, bind_given, count_waiting, logged_guardrails
from ._specs import PortfolioSpec
from ._store import _APPLY, RawEvent, Records
from ._workflow_port import RunnableWorkflow
from .errors import OpenIntentError, RunInUseError, RunNotFoundError, SpecError, StoreError
from .models import EventType, IntentStatus

__all__ = ["open_fork"]


def open_fork(
    launcher: Launcher,
    source_id: str,
    rerun: Sequence[str],
    spec: PortfolioSpec | RunnableWorkflow | None,
    coordinator: Any,
    guardrails: Sequence[Any] | None,
    call: str,
) -> Resumption:
    """Check a fork of run ``source_id``, then begin it (see the module docstring): its log
    prepared, its run assembled and holding its lease. Nothing is written before every
    check passed, and never anything to the source run's log."""
    if not isinstance(source_id, str):
        raise OpenIntentError(
            f"{call} takes the portfolio id of a run (a str, result.portfolio_id), got "
            f"{source_id!r}")
    titles = _rerun_titles(rerun, call)
    backend = launcher.backend
    where = f"run {source_id} in {backend.url}"
    for run in launcher.active:
        if run.portfolio_id == source_id:
            raise RunInUseError(
                f"{where} ({run.name!r}) is going on in this runtime; wait for it to end "
                f"(await handle.result()) before forking it")
    info = next((info for info in backend.runs() if info.portfolio_id == source_id), None)
    if info is not None and info.parent is not None:
        raise OpenIntentError(
            f"{where} is a sub-portfolio of run {info.parent} (a coordinator's execute()); "
            f"fork run {info.parent}: its coordinator runs a new sub-portfolio")
    try:
        log: Sequence[RawEvent] = list(backend.read(source_id))  # this moment's log
    except KeyError:
        raise RunNotFoundError(
            f"the store {backend.url} holds no run {source_id!r}; rt.runs() lists the runs "
            "it holds (a memory:// store keeps a run only while its result or handle is "
            "held, in this process)") from None
    if not log or log[0][0] != EventType.RUN_STARTED:
        raise StoreError(f"{where} cannot be forked: its log does not start with "
                         "run_started, so it holds no plan")
    logged = logged_plan(log)
    given, chosen, extra = bind_given(launcher.planner, where, logged, spec, coordinator, call)
    plan_spec = given if given is not None else logged.spec
    plan = launcher.planner.compile(plan_spec, chosen)
    if guardrails is not None:
        plan = attrs.evolve(plan, guardrails=tuple(build_guardrails(
            guardrails, f"{call}(guardrails=...)")))
    elif given is not None:  # the given spec's (its coordinator's, a workflow's steps')
        plan = attrs.evolve(plan, guardrails=plan.guardrails + extra)
    else:  # the source run's own, as a resume takes them
        plan = attrs.evolve(
            plan, guardrails=logged_guardrails(where, log, logged, plan.guardrails + extra,
                                                call),
            max_concurrency=logged.max_concurrency, sequential=logged.sequential)
    source = _records(log)
    effects = _completed_effects(log)
    copied = _copied(where, plan_spec, titles, source, logged.spec, given is not None)
    store, holder = launcher.open_log(plan, call, started={"forked_from": source_id,
                                                           "rerun": titles})
    try:
        nodes = plant(plan, store)
        rows: list[tuple[str, str | None, Any]] = []
        for node in nodes:
            record = copied.get(node.spec.title)
            if record is not None:
                data = {"from": record.id, "state": to_plain(record.state),
                        "version": record.version, "attempts": record.attempts,
                        "assigned_to": record.assigned_to}
                if record.id in effects:
                    data["effects"] = list(effects[record.id].values())
                rows.append((EventType.INTENT_COPIED, node.id, data))
        if rows:
            store.append_batch(rows)
        run = launcher.assemble(plan, store, nodes, settled=count_waiting(nodes))
    except BaseException:
        if holder is not None:
            release_lease(backend, store.portfolio_id, holder, store.logger)
        raise
    if holder is not None:
        launcher.hold(run, holder)  # renewed while it goes on, given back when it ends
    if logging_configured():  # (as the launcher's info lines: see _launch._info)
        store.logger.info("run forked", forked_from=source_id, copied=len(rows))
    return Resumption(launcher, store, holder or "", run=run)


def _rerun_titles(rerun: Sequence[str], call: str) -> list[str]:
    """``rerun`` as a list of titles, checked for its shape (not yet against the plan)."""
    if isinstance(rerun, str) or not isinstance(rerun, Sequence) or not all(
            isinstance(title, str) for title in rerun):
        raise SpecError(f"{call} takes rerun=[titles], a list of the intents to run again, "
                        f"got {rerun!r}: e.g. rerun=['Review']")
    if not rerun:
        raise SpecError(f"{call} needs at least one intent to run again (rerun=['Title']); "
                        "to run the same plan anew, use rt.run(), and to continue an "
                        "unfinished run, rt.resume()")
    return list(dict.fromkeys(rerun))


def _records(log: Sequence[RawEvent]) -> dict[str, Any]:
    """The source run's final records by title (its log projected, as ``rt.load`` does)."""
    records: Records = {}
    for event in log:
        handler = _APPLY.get(event[0])
        if handler is not None:
            handler(records, event)
    return {record.title: record for record in records.values()}


def _completed_effects(log: Sequence[RawEvent]) -> dict[str, dict[str, dict[str, Any]]]:
    """The side effects (``self.effect``) each intent of the source completed, by intent id
    and name, in the order they first started: ``{"name", "value", "attempts"}`` (how many
    times it was started; ``checked``, ``resolved`` when so). A fork copies them with their
    intent (``intent_copied``'s ``effects``): a copied intent is never dispatched, so they
    never run again."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for type_, _time, intent_id, data in log:
        if not type_.startswith("effect_") or intent_id is None:
            continue
        data = data or {}
        name = data.get("name", "")
        effect = found.setdefault(intent_id, {}).setdefault(
            name, {"name": name, "value": None, "attempts": 0})
        if type_ == "effect_started":
            effect["attempts"] += 1
        effect.pop("done", None)
        if type_ == "effect_completed" or (
                type_ == "effect_resolved" and data.get("happened", True) is not False):
            effect.update(value=to_plain(data.get("value")), done=True)
            effect.pop("checked", None)
            if data.get("checked"):
                effect["checked"] = True
            if type_ == "effect_resolved":
                effect["resolved"] = True
    return {intent_id: {name: {key: value for key, value in effect.items() if key != "done"}
                        for name, effect in effects.items() if effect.get("done")}
            for intent_id, effects in found.items()
            if any(effect.get("done") for effect in effects.values())}


def _copied(
    where: str,
    spec: PortfolioSpec,
    rerun: list[str],
    source: Mapping[str, Any],
    logged: PortfolioSpec,
    given: bool,
) -> dict[str, Any]:
    """The source's records of the intents the fork copies, by title: each completed in the
    source run, not ``rerun`` nor downstream of it, nor of an intent the source did not
    complete (nor of one a given ``spec`` adds). A copied intent's spec must be the source's
    (:class:`SpecError` otherwise: it would not be the same work)."""
    titles = [intent.title for intent in spec.intents]
    unknown = [title for title in rerun if title not in titles]
    if unknown:
        raise SpecError(
            f"rerun names {unknown[0]!r}, which is not an intent of the plan of the fork of "
            f"{where}{suggest(unknown[0], titles)}; its intents: {', '.join(map(repr, titles))}")
    dependents: dict[str, list[str]] = {}
    for intent in spec.intents:
        for parent in intent.depends_on:
            dependents.setdefault(parent, []).append(intent.title)
    again = set(rerun) | {
        title for title in titles
        if title not in source or source[title].status is not IntentStatus.COMPLETED}
    pending = list(again)
    while pending:
        for child in dependents.get(pending.pop(), ()):
            if child not in again:
                again.add(child)
                pending.append(child)
    copied = {title: source[title] for title in titles if title not in again}
    if given and copied:
        before = {intent.title: intent for intent in logged.intents}
        lines = spec_diff(
            PortfolioSpec(name=spec.name, intents=[before[title] for title in copied]),
            PortfolioSpec(name=spec.name,
                          intents=[intent for intent in spec.intents if intent.title in copied]))
        if lines:
            raise SpecError(
                f"the spec given to fork {where} changes intents the fork would copy from "
                "it; nothing was run or written. Name them in rerun too (they and their "
                "descendants then run again), or leave them as they were. What differs "
                "(journaled -> given):\n  " + "\n  ".join(lines))
    return copied
