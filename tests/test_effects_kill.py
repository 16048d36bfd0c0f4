"""Side effects exactly once, proven by killing real processes: a workflow whose every intent
appends a line to an fsync'ed file through ``self.effect`` is journaled to SQLite, killed with
SIGKILL at seeded journal positions (see tests/test_crash_kill.py: the test watches the file
and kills the child once that many events are committed), and resumed in fresh processes,
sometimes killed again:

* with a ``check`` (it reads the file), the run completes on its own: an effect the kill
  caught before its write runs again, one caught after it is confirmed by the check;
* without one, an intent whose effect the kill caught inside ``fn`` fails with
  ``EffectInDoubtError``; settled with ``rt.resolve_effect`` (its value when the line is in
  the file, ``happened=False`` when not), the next resume completes the run;

and at the end every intent's line is in the file exactly once, every effect completed, no
completed effect started again, the events are contiguous, and the loaded run agrees with an
independent reading of its log.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_crash_kill import finish, kill_at, load, runs_of

from openintent import Runtime
from openintent.models import RunResult
from openintent.testing import assert_replay_matches

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "effect_workflow.py"
INTENTS = 12
# run_started; created, ready, dispatched, effect_started, effect_completed, completed per
# intent; run_finished.
FULL_RUN_EVENTS = 2 + 6 * INTENTS


def child(mode: str, store: str, effects: Path, check: bool, *extra: str
          ) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, store, str(effects),
         "check" if check else "none", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def ended(process: subprocess.Popen[str]) -> str:
    """Wait for a child that is not killed; it exits 0 (completed) or 1 (failed)."""
    out, err = process.communicate(timeout=120)
    assert process.returncode in (0, 1), (out, err)
    return out


def settle_in_doubt(store: str, portfolio_id: str, effects: Path) -> int:
    """Resolve every effect in doubt as a person would, from the file: its value when its
    line is there, ``happened=False`` when not. Returns how many were settled."""
    lines = set(effects.read_text().splitlines())

    async def settle() -> int:
        async with Runtime(agents=[], store=store) as rt:
            result = await rt.load(portfolio_id)
            settled = 0
            for title, item in result.intents.items():
                if item.status != "failed":
                    continue
                assert item.error_type == "EffectInDoubtError", item
                [effect] = item.effects
                assert effect.status == "in_doubt", effect
                if item.id in lines:
                    await rt.resolve_effect(portfolio_id, title, "append",
                                            value={"line": item.id})
                else:
                    await rt.resolve_effect(portfolio_id, item.id, "append", happened=False)
                settled += 1
            return settled

    return asyncio.run(settle())


def crash_and_resume(tmp_path: Path, rng: random.Random, kills: int, check: bool,
                     postgres: str | None = None) -> int:
    """One run: started, killed, resumed (and killed again ``kills - 1`` times), effects in
    doubt settled, until it completes; returns how many effects were in doubt at some point
    (confirmed by a check, run again after one, or settled by hand). In a SQLite file in
    ``tmp_path``, or in the ``postgres`` store (a fresh database's URL)."""
    tmp_path.mkdir()
    database: Path | str = tmp_path / "runs.db" if postgres is None else postgres
    store = f"sqlite:///{database}" if postgres is None else postgres
    effects = tmp_path / "effects.txt"
    effects.touch()
    process = child("start", store, effects, check)
    killed = kill_at(process, database, rng.randint(1, FULL_RUN_EVENTS - 2))
    if not killed:
        ended(process)
    ids = runs_of(store)
    if not ids:  # killed before run_started was committed: nothing to resume
        assert effects.read_text() == ""
        return 0
    [portfolio_id] = ids
    for round_ in range(1, kills + 1):
        if not killed:
            break
        so_far = len(load(store, portfolio_id).events)
        process = child("resume", store, effects, check, portfolio_id)
        killed = round_ < kills and kill_at(
            process, database, rng.randint(so_far + 1, so_far + FULL_RUN_EVENTS // 2))
        if not killed:
            ended(process)
    settled = 0
    result = load(store, portfolio_id)
    if result.status == "failed":
        assert not check, "with a check, no effect stays in doubt"
        settled = settle_in_doubt(store, portfolio_id, effects)
        assert settled, [item.error_type for item in result.failed_intents]
        assert load(store, portfolio_id).status == "running"  # open again for resume
        finish(child("resume", store, effects, check, portfolio_id))
        result = load(store, portfolio_id)
    check_exactly_once(result, effects)
    return settled + sum(
        item.effects[0].checked or item.effects[0].attempts > 1
        for item in result.intents.values())


def check_exactly_once(result: RunResult, effects: Path) -> None:
    events = list(result.events)
    assert result.status == "completed", result.status
    assert len(result.intents) == INTENTS
    # Every effect happened exactly once: its intent's line is in the file once.
    lines = Counter(effects.read_text().splitlines())
    assert lines == Counter(item.id for item in result.intents.values()), lines
    for item in result.intents.values():
        assert item.status == "completed"
        [effect] = item.effects
        assert effect.status == "completed" and effect.value == {"line": item.id}, effect
        assert item.state["written"] == item.id
    # No completed effect was started again; nothing lost or duplicated in the log.
    done: set[str | None] = set()
    for event in events:
        if event.type == "effect_started":
            assert event.intent_id not in done, f"a completed effect started again: {event}"
        elif event.type in ("effect_completed", "effect_resolved") and (
                event.data.get("happened", True)):
            done.add(event.intent_id)
    assert [event.seq for event in events] == list(range(len(events)))
    assert_replay_matches(result)


@pytest.mark.parametrize("check", [True, False], ids=["with-check", "without-check"])
def test_killed_effects_happen_exactly_once(tmp_path: Path, check: bool) -> None:
    in_doubt = sum(
        crash_and_resume(tmp_path / str(case), random.Random(case), 1 + case % 3, check)
        for case in range(6))
    assert in_doubt >= 2, f"only {in_doubt} effects were caught in doubt"


def test_killed_effects_happen_exactly_once_on_postgresql(tmp_path: Path,
                                                          postgres_server: Any) -> None:
    in_doubt = sum(
        crash_and_resume(tmp_path / str(case), random.Random(case), 1 + case % 3, check,
                         postgres_server.database())
        for case, check in ((0, True), (1, False), (2, False)))
    assert in_doubt >= 1, f"only {in_doubt} effects were caught in doubt"


@pytest.mark.slow
@pytest.mark.parametrize("check", [True, False], ids=["with-check", "without-check"])
def test_many_kills_of_effects_at_seeded_points(tmp_path: Path, check: bool) -> None:
    in_doubt = sum(
        crash_and_resume(tmp_path / str(case), random.Random(case), 1 + case % 4, check)
        for case in range(6, 16))
    assert in_doubt >= 3, f"only {in_doubt} effects were caught in doubt"
