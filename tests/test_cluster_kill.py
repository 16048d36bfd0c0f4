"""Many processes on one PostgreSQL store, proven by killing them: three ``openintent worker``
processes and one coordinator process (tests/cluster_workflow.py) run a 200-intent layered
DAG whose every intent runs a side effect through ``self.effect`` (a line appended to an
fsync'ed file, with a check that reads it). While the run goes on, workers are SIGKILLed at
seeded points of the journal (the test kills one once that many events are committed) and
restarted, sometimes under the same worker id, sometimes under a new one; in the second test
the coordinator process is killed too and a standby process takes the run over. A third test
pauses (SIGSTOP) a worker holding tasks until other workers took them over, then wakes it:
its late finishes are refused (fencing), so each task's result is its last claim's.

At the end:

* the run completed, every intent once;
* every effect happened exactly once: its intent's line is in the file once;
* no completion lost or duplicated: one ``completed`` event per intent, and the value the
  log holds is one the agent itself recorded as finished (an intent the agent finished more
  than once was taken over, and the log says so: a ``handoff`` or another attempt);
* the journal read back by a fresh runtime equals what the coordinator process reported (its
  ``RunResult`` as JSON), and replays to the same result.

Claims and leases expire fast (``?task_ttl=2&lease_ttl=3``); nothing here depends on timing
but the kill points, and the checks hold wherever a kill lands.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest
from test_crash_kill import committed_events, load, runs_of

from openintent.models import RunResult
from openintent.testing import assert_replay_matches

from _postgres import with_option

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
CHILD = TESTS / "cluster_workflow.py"
INTENTS = 200
# run_started; created, ready, dispatched, effect_started, effect_completed, completed per
# intent; run_finished (handoffs and failovers add a few).
FULL_RUN_EVENTS = 2 + 6 * INTENTS
DEADLINE = 180  # seconds of real time before a stuck cluster fails the test


class Cluster:
    """The processes of one test: workers by slot, the coordinator, their logs in ``tmp``."""

    def __init__(self, tmp: Path, store: str, effects: bool = True) -> None:
        self.tmp = tmp
        self.store = store
        self.with_effects = effects
        self.effects = tmp / "effects.txt"
        self.finished = tmp / "finished.txt"
        self.effects.touch()
        self.finished.touch()
        self.workers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.logs: list[IO[bytes]] = []
        self.started = 0

    def env(self, worker_id: str = "") -> dict[str, str]:
        return {**os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [
                    str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])),
                "OPENINTENT_TEST_EFFECTS": str(self.effects) if self.with_effects else "none",
                "OPENINTENT_TEST_FINISHED": str(self.finished),
                "OPENINTENT_TEST_WORKER": worker_id}

    def _log(self, name: str) -> IO[bytes]:
        self.started += 1
        log = open(self.tmp / f"{self.started:02d}-{name}.log", "wb")  # noqa: SIM115
        self.logs.append(log)
        return log

    def start_worker(self, slot: str, worker_id: str) -> None:
        self.workers[slot] = (worker_id, subprocess.Popen(
            [sys.executable, "-m", "openintent", "worker", self.store, "--agents",
             "cluster_workflow", "--id", worker_id, "--concurrency", "4"],
            cwd=self.tmp, env=self.env(worker_id), stdout=subprocess.DEVNULL,
            stderr=self._log(worker_id)))

    def kill_worker(self, slot: str) -> str:
        worker_id, process = self.workers[slot]
        process.send_signal(signal.SIGKILL)
        process.wait(60)
        return worker_id

    def coordinator(self, mode: str, out: Path, *extra: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), mode, self.store, str(out), *extra],
            cwd=self.tmp, env=self.env(), stdout=subprocess.PIPE,
            stderr=self._log(mode), text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "started", (line, self.stderr_of(mode))
        return process

    def wait_for_events(self, target: int, coordinator: subprocess.Popen[str]) -> bool:
        """Wait until the journal holds ``target`` events; ``False`` if the coordinator
        ended first."""
        deadline = time.monotonic() + DEADLINE
        while coordinator.poll() is None and committed_events(self.store) < target:
            assert time.monotonic() < deadline, f"no progress for {DEADLINE} s: {self.tmp}"
            time.sleep(0.005)
        return coordinator.poll() is None

    def stderr_of(self, name: str) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:]
                         for path in sorted(self.tmp.glob(f"*-{name}.log")))

    def stop(self) -> None:
        """SIGTERM every worker (a clean stop); close the logs."""
        for _worker_id, process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _worker_id, process in self.workers.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(60)
        for log in self.logs:
            log.close()


def finished(process: subprocess.Popen[str], cluster: Cluster, name: str) -> None:
    """Wait for a coordinator process that is not killed: it exits 0 (the run completed)."""
    try:
        out, _ = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"the {name} process did not finish: {cluster.stderr_of(name)}"
                             ) from None
    assert process.returncode == 0, (out, cluster.stderr_of(name))


def kill_and_restart_workers(cluster: Cluster, rng: random.Random, coordinator:
                             subprocess.Popen[str], targets: list[int]) -> int:
    """At each journal position of ``targets``: SIGKILL a worker, start it again (under the
    same id or a new one). Returns how many were killed."""
    kills = 0
    for target in targets:
        if not cluster.wait_for_events(target, coordinator):
            break
        slot = rng.choice(sorted(cluster.workers))
        old_id = cluster.kill_worker(slot)
        kills += 1
        # The same id: its claims are let go at once (forget_worker); a new one: they
        # expire after task_ttl.
        cluster.start_worker(slot, old_id if rng.random() < 0.5 else f"{slot}.{kills}")
    return kills


def check_cluster_run(cluster: Cluster, portfolio_id: str, reported_file: Path
                      ) -> RunResult:
    """Every check of the module docstring; returns the run as loaded."""
    result = load(cluster.store, portfolio_id)
    # The journal read back equals what the coordinator process reported.
    reported = json.loads(reported_file.read_text())
    assert json.loads(json.dumps(result.to_dict())) == reported
    assert_replay_matches(result)

    events = list(result.events)
    assert result.status == "completed", result.error
    assert len(result.intents) == INTENTS
    assert [event.seq for event in events] == list(range(len(events)))
    by_id = {item.id: item for item in result.intents.values()}
    # No completion lost or duplicated in the log.
    completions = Counter(event.intent_id for event in events if event.type == "completed")
    assert completions == Counter(set(by_id)), completions.most_common(3)
    # Every effect happened exactly once.
    lines = Counter(cluster.effects.read_text().splitlines())
    if cluster.with_effects:
        assert lines == Counter(set(by_id)), [line for line, n in lines.items() if n != 1]
    for item in by_id.values():
        assert item.status == "completed"
        if cluster.with_effects:
            [effect] = item.effects
            assert effect.status == "completed" and effect.value == {"line": item.id}, effect
        assert item.state["written"] == item.id
    # The agents' own record of finished work agrees with the log.
    finished_by: dict[str, list[str]] = {}
    for line in cluster.finished.read_text().splitlines():
        intent_id, by = line.split(" ", 1)
        finished_by.setdefault(intent_id, []).append(by)
    assert set(finished_by) == set(by_id)
    taken_over = {event.intent_id for event in events if event.type == "handoff"}
    for intent_id, item in by_id.items():
        assert item.state["by"] in finished_by[intent_id], (item.title, finished_by[intent_id])
        if len(finished_by[intent_id]) > 1:
            assert intent_id in taken_over or item.attempts > 1, (item.title,
                                                                  finished_by[intent_id])
    return result


@pytest.mark.parametrize("seed", [14, 15])
def test_killed_workers_lose_no_intent_and_repeat_no_effect(tmp_path: Path,
                                                           postgres_server: Any,
                                                           seed: int) -> None:
    store = with_option(postgres_server.database(), "task_ttl=2&lease_ttl=3")
    cluster = Cluster(tmp_path, store)
    rng = random.Random(seed)
    reported = tmp_path / "coordinator.json"
    try:
        for slot in ("w1", "w2", "w3"):
            cluster.start_worker(slot, slot)
        coordinator = cluster.coordinator("coordinate", reported)
        targets = sorted(rng.sample(range(40, FULL_RUN_EVENTS - 150), 8))
        kills = kill_and_restart_workers(cluster, rng, coordinator, targets)
        finished(coordinator, cluster, "coordinate")
    finally:
        cluster.stop()
    assert kills == 8
    [portfolio_id] = runs_of(store)
    result = check_cluster_run(cluster, portfolio_id, reported)
    # The kills took tasks from their workers, and other workers went on with them.
    assert result.events.of_type("handoff"), "no kill caught a worker with tasks"


@pytest.mark.parametrize("seed", [41, 42])
def test_a_killed_coordinator_fails_over_and_loses_no_intent(tmp_path: Path,
                                                             postgres_server: Any,
                                                             seed: int) -> None:
    store = with_option(postgres_server.database(), "task_ttl=2&lease_ttl=3")
    cluster = Cluster(tmp_path, store)
    rng = random.Random(seed)
    first = tmp_path / "coordinator.json"
    reported = tmp_path / "standby.json"
    try:
        for slot in ("w1", "w2", "w3"):
            cluster.start_worker(slot, slot)
        coordinator = cluster.coordinator("coordinate", first)
        kill_and_restart_workers(cluster, rng, coordinator, [rng.randint(40, 300)])
        assert cluster.wait_for_events(rng.randint(350, 700), coordinator), \
            "the run ended before the coordinator was killed"
        coordinator.send_signal(signal.SIGKILL)
        coordinator.communicate(timeout=60)
        [portfolio_id] = runs_of(store)
        # A standby takes the run over (or, when a worker adopted it first, waits for its
        # end); workers are killed meanwhile too.
        standby = cluster.coordinator("standby", reported, portfolio_id)
        so_far = committed_events(store)
        kill_and_restart_workers(cluster, rng, standby, [so_far + rng.randint(50, 150)])
        finished(standby, cluster, "standby")
    finally:
        cluster.stop()
    assert not first.exists()  # the killed coordinator reported nothing
    result = check_cluster_run(cluster, portfolio_id, reported)
    taken = {event.type for event in result.events} & {"coordinator_failed_over",
                                                        "run_resumed"}
    assert taken, "nothing took the run over"


def logged(store: str, event_type: str) -> int:
    """How many events of ``event_type`` the store's journal holds now."""
    import psycopg

    from openintent._stores._pg_schema import PgUrl

    with psycopg.connect(PgUrl.parse(store).conninfo, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM openintent.batches b, json_array_elements(b.events::json) e "
            "WHERE e->>0 = %s", (event_type,)).fetchone()
    return int(row[0]) if row else 0


def claimed_by(store: str) -> set[str]:
    """The workers holding claims now."""
    import psycopg

    from openintent._stores._pg_schema import PgUrl

    with psycopg.connect(PgUrl.parse(store).conninfo, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT DISTINCT worker FROM openintent.tasks WHERE status = 'claimed'").fetchall()
    return {row[0] for row in rows}


def pause_a_worker_holding_tasks(cluster: Cluster, coordinator: subprocess.Popen[str]
                                 ) -> subprocess.Popen[bytes] | None:
    """SIGSTOP a worker that still holds claims once stopped (another, if it had none);
    ``None`` if the run ended first."""
    deadline = time.monotonic() + DEADLINE
    while coordinator.poll() is None:
        assert time.monotonic() < deadline
        holding = claimed_by(cluster.store)
        for worker_id, process in cluster.workers.values():
            if worker_id in holding:
                process.send_signal(signal.SIGSTOP)
                if worker_id in claimed_by(cluster.store):
                    return process
                process.send_signal(signal.SIGCONT)
        time.sleep(0.002)
    return None


def test_a_paused_workers_late_writes_are_refused(tmp_path: Path, postgres_server: Any
                                                  ) -> None:
    # A worker stopped (SIGSTOP) past its claims' TTL, then woken: other workers took its
    # tasks over and finished them; its own late finishes must not overwrite theirs. (No
    # side effects here: a process paused inside one and woken after another worker ran it
    # again would run it twice, as any process that cannot be told it was replaced would.)
    store = with_option(postgres_server.database(), "task_ttl=2&lease_ttl=3")
    cluster = Cluster(tmp_path, store, effects=False)
    rng = random.Random(7)
    reported = tmp_path / "coordinator.json"
    try:
        for slot in ("w1", "w2", "w3"):
            cluster.start_worker(slot, slot)
        coordinator = cluster.coordinator("coordinate", reported)
        taken_over = 0
        for target in sorted(rng.sample(range(60, 700), 3)):
            if not cluster.wait_for_events(target, coordinator):
                break  # the run ended: nothing more to pause
            handoffs = logged(store, "handoff")
            paused = pause_a_worker_holding_tasks(cluster, coordinator)
            if paused is None:
                break
            try:
                deadline = time.monotonic() + DEADLINE
                while logged(store, "handoff") == handoffs:  # its tasks were taken over
                    assert coordinator.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
                taken_over += 1
                cluster.wait_for_events(committed_events(store) + 50, coordinator)
            finally:
                paused.send_signal(signal.SIGCONT)
        finished(coordinator, cluster, "coordinate")
    finally:
        cluster.stop()
    assert taken_over >= 1
    [portfolio_id] = runs_of(store)
    check_cluster_run(cluster, portfolio_id, reported)
    # Each task's result is its last claim's: the worker the row names wrote it.
    import psycopg

    from openintent._stores._pg_schema import PgUrl

    with psycopg.connect(PgUrl.parse(store).conninfo) as connection:
        rows = connection.execute("SELECT worker, result::json->'value'->>'by' "
                                  "FROM openintent.tasks WHERE status = 'done'").fetchall()
    assert len(rows) >= INTENTS
    wrong = [(worker, by) for worker, by in rows if by.split()[0] != worker]
    assert not wrong, wrong
