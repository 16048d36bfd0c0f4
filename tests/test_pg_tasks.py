"""The PostgreSQL task queue against a real server: submit / claim / finish / outcome, claims
exclusive under concurrent claimers, writes fenced by the claim's token, lease expiry and
reclaim, cancel, a restarted worker's claims, effect rows, waking by notification (and the
slow poll when one is lost), and a server restart in the middle. On asyncio and trio.

Lease times come from a clock the test moves (``Clock``); nothing measures real time, and
every real-time bound (``BOUND``) is only there so a hang fails instead of hanging."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import psycopg
import pytest

from openintent._stores._pg_listen import PgListener
from openintent._stores._pg_schema import PgUrl, prepare
from openintent._stores._pg_tasks import PgTaskQueue
from openintent._tasks import EffectRow, TaskOutcome
from openintent.errors import StoreError

from _postgres import PostgresServer

pytestmark = pytest.mark.anyio

BOUND = 30  # seconds of real time before a hung test fails instead of hanging
NEVER = 3600.0  # a poll interval no test waits for: only a notification can wake the waiter


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Clock:
    """The queue's lease clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Parts:
    """A prepared database with a pool and a listener, making queues that share them (each
    queue is what one process would have)."""

    def __init__(self, url: str) -> None:
        import psycopg_pool

        self.url = PgUrl.parse(url + "&task_ttl=10")
        with psycopg.connect(self.url.conninfo) as conn:
            prepare(conn, self.url)
        self.pool = psycopg_pool.ConnectionPool(self.url.conninfo, min_size=1, max_size=8,
                                                open=True)
        self.listener = PgListener(self.url)
        self.clock = Clock()
        self.queues: list[PgTaskQueue] = []

    def queue(self, **options: Any) -> PgTaskQueue:
        options.setdefault("clock", self.clock)
        queue = PgTaskQueue(self.pool, self.url, self.listener, **options)
        self.queues.append(queue)
        return queue

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url.conninfo, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("{s}", self.url.quoted_schema), params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        for queue in self.queues:
            queue.close()
        self.listener.close()
        self.pool.close()


@pytest.fixture
def parts(postgres_url: str) -> Iterator[Parts]:
    made = Parts(postgres_url)
    try:
        yield made
    finally:
        made.close()


def payload(n: int) -> dict[str, Any]:
    return {"intent": {"id": f"i{n}", "title": f"step {n}"}, "effects": {}}


async def test_a_submitted_task_is_claimed_finished_and_its_outcome_read(parts: Parts) -> None:
    coordinator, worker = parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        task_id = await coordinator.submit("run-1", "i1", 1, "writer", payload(1))
        assert await worker.claim("w1", ["reader"], 10) == []
        [task] = await worker.claim("w1", ["writer", "reader"], 10)
        assert (task.id, task.run_id, task.intent_id, task.attempt, task.agent_id) == (
            task_id, "run-1", "i1", 1, "writer")
        assert (task.payload, task.token, task.claims, task.worker) == (payload(1), 1, 1, "w1")
        assert await worker.claim("w2", ["writer"], 10) == []  # claimed: nobody else gets it
        assert await worker.finish(task, "done", {"value": {"n": 1}, "ops": []})
        outcome = await coordinator.outcome(task_id)
    assert outcome == TaskOutcome("done", {"value": {"n": 1}, "ops": []}, "w1", 1)
    assert parts.sql("SELECT status, worker, claims FROM {s}.tasks") == [("done", "w1", 1)]


ODD_TEXT = 'quotes " \' \\ back\\slash, {braces}, commas, NULL, "NULL", \u00e9\u4e2d\U0001f600 \t\n'


async def test_payloads_and_results_come_back_exactly_whatever_their_characters(
        parts: Parts) -> None:
    # (They travel as arrays in binary format: nothing in them is escaped on the way.)
    coordinator, worker = parts.queue(), parts.queue()
    odd = {"intent": {"id": "i1", ODD_TEXT: [ODD_TEXT, None, ""]}, "effects": {}}
    with anyio.fail_after(BOUND):
        ids = [await coordinator.submit("run-1", f"i{k}", 1, "writer", odd) for k in range(3)]
        tasks = await worker.claim("w1", ["writer"], 10)
        assert [task.payload for task in tasks] == [odd] * 3
        async with anyio.create_task_group() as group:  # finished in one batch
            for task in tasks:
                group.start_soon(worker.finish, task, "done", {"value": odd, "ops": []})
        outcomes = [await coordinator.outcome(task_id) for task_id in ids]
    assert [outcome.result for outcome in outcomes] == [{"value": odd, "ops": []}] * 3
    assert parts.sql("SELECT DISTINCT payload::json->'intent'->>'id' FROM {s}.tasks") == [("i1",)]


async def test_a_failed_task_reads_back_its_error(parts: Parts) -> None:
    queue = parts.queue()
    with anyio.fail_after(BOUND):
        task_id = await queue.submit("run-1", "i1", 1, "writer", payload(1))
        [task] = await queue.claim("w1", ["writer"], 1)
        result = {"error_type": "ValueError", "error": "no", "ops": [("cost", "writer", 1, {})]}
        assert await queue.finish(task, "failed", result)
        # Read as the database has it (JSON), though it was finished in this process.
        assert await queue.outcome(task_id) == TaskOutcome("failed", {
            "error_type": "ValueError", "error": "no", "ops": [["cost", "writer", 1, {}]]},
            "w1", 1)


async def test_submitting_the_same_attempt_again_returns_the_same_task(parts: Parts) -> None:
    queue, later = parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        ids: list[tuple[int, int]] = []

        async def submit(attempt: int) -> None:
            ids.append((attempt, await queue.submit("run-1", "i1", attempt, "writer",
                                                    payload(1))))

        async with anyio.create_task_group() as group:  # together: in one batch
            for attempt in (1, 1, 2, 1):
                group.start_soon(submit, attempt)
        again = await later.submit("run-1", "i1", 1, "writer", payload(1))
        # Agents voting on an intent share its attempt: a task each.
        voter = await later.submit("run-1", "i1", 1, "reviewer", payload(1))
    [(first,)] = parts.sql("SELECT id FROM {s}.tasks WHERE attempt = 1 AND agent_id = 'writer'")
    [(second,)] = parts.sql("SELECT id FROM {s}.tasks WHERE attempt = 2")
    assert sorted(ids) == [(1, first)] * 3 + [(2, second)]
    assert again == first and voter not in (first, second)
    assert parts.sql("SELECT count(*) FROM {s}.tasks") == [(3,)]


async def test_concurrent_submissions_send_fewer_notices_than_tasks(parts: Parts) -> None:
    queue = parts.queue()
    with psycopg.connect(parts.url.conninfo, autocommit=True) as conn:
        conn.execute("LISTEN openintent_tasks")
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as group:
                for n in range(50):
                    group.start_soon(queue.submit, "run-1", f"i{n}", 1, "writer", payload(n))
        notices = [n.payload for n in conn.notifies(timeout=0.5)]
    assert notices and set(notices) == {"writer"} and len(notices) < 50
    assert parts.sql("SELECT count(*) FROM {s}.tasks") == [(50,)]


async def test_concurrent_finishes_send_fewer_notices_than_tasks(parts: Parts) -> None:
    queue = parts.queue()
    with anyio.fail_after(BOUND):
        for n in range(30):
            await queue.submit("run-1", f"i{n}", 1, "writer", payload(n))
        tasks = await queue.claim("w1", ["writer"], 30)
        with psycopg.connect(parts.url.conninfo, autocommit=True) as conn:
            conn.execute("LISTEN openintent_done")
            async with anyio.create_task_group() as group:
                for task in tasks:
                    group.start_soon(queue.finish, task, "done", {"value": task.intent_id})
            notices = [n.payload for n in conn.notifies(timeout=0.5)]
    assert notices and set(notices) == {"run-1"} and len(notices) < 30
    assert parts.sql("SELECT status, count(*) FROM {s}.tasks GROUP BY 1") == [("done", 30)]


def test_every_task_is_claimed_exactly_once_by_concurrent_claimers(parts: Parts) -> None:
    async def submit_all() -> list[int]:
        queue = parts.queue()
        async with anyio.create_task_group() as group:
            ids: list[int] = []

            async def submit(n: int) -> None:
                ids.append(await queue.submit("run-1", f"i{n}", 1, "writer", payload(n)))

            for n in range(400):
                group.start_soon(submit, n)
        return ids

    ids = anyio.run(submit_all)
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    together = threading.Barrier(4)

    async def claimer(worker: str) -> None:
        queue = parts.queue()  # a process of its own: its own thread and connections
        mine = claimed[worker] = []
        together.wait(BOUND)  # all four claim from the first claim on
        while tasks := await queue.claim(worker, ["writer"], 7):
            assert all(task.worker == worker and task.claims == 1 for task in tasks)
            mine.extend(task.id for task in tasks)

    def run(worker: str, backend: str) -> None:
        try:
            anyio.run(claimer, worker, backend=backend)
        except BaseException as exc:  # noqa: BLE001 reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"w{n}", ("asyncio", "trio")[n % 2]))
               for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert not errors and not any(thread.is_alive() for thread in threads)
    everything = [task_id for tasks in claimed.values() for task_id in tasks]
    assert sorted(everything) == sorted(ids)  # each exactly once
    assert parts.sql("SELECT DISTINCT status, token, claims FROM {s}.tasks") == [
        ("claimed", 1, 1)]


async def test_a_claim_lasts_its_ttl_and_renewals_extend_it(parts: Parts) -> None:
    queue = parts.queue()
    assert queue.task_ttl == 10  # from the URL's ?task_ttl=
    with anyio.fail_after(BOUND):
        await queue.submit("run-1", "i1", 1, "writer", payload(1))
        [task] = await queue.claim("w1", ["writer"], 1)
        parts.clock.now += 6
        assert await queue.renew([task]) == set()
        parts.clock.now += 6  # 12 s after the claim, 6 after the renewal
        assert await queue.claim("w2", ["writer"], 1) == []
        parts.clock.now += 5
        [again] = await queue.claim("w2", ["writer"], 1)
    assert (again.id, again.token, again.claims, again.worker) == (task.id, 2, 2, "w2")


async def test_writes_of_a_claim_whose_lease_expired_are_refused(parts: Parts) -> None:
    coordinator, old, new = parts.queue(), parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        task_id = await coordinator.submit("run-1", "i1", 1, "writer", payload(1))
        [stale] = await old.claim("w1", ["writer"], 1)
        assert await old.effect_started(stale, "mail")
        parts.clock.now += 11  # w1 went silent past its lease
        [task] = await new.claim("w2", ["writer"], 1)
        assert (task.token, task.claims, task.worker) == (2, 2, "w2")
        assert await new.effects("run-1", "i1") == {"mail": EffectRow("mail", "started")}
        # The old claim learns it lost the task, and nothing it writes counts.
        assert await old.renew([stale]) == {task_id}
        assert not await old.effect_ended(stale, "mail", "completed", "sent")
        assert not await old.effect_started(stale, "charge")
        assert not await old.finish(stale, "done", {"value": "old", "ops": []})
        assert await new.effects("run-1", "i1") == {"mail": EffectRow("mail", "started")}
        assert await new.finish(task, "done", {"value": "new", "ops": []})
        assert not await old.finish(stale, "done", {"value": "old", "ops": []})
        outcome = await coordinator.outcome(task_id)
    assert outcome == TaskOutcome("done", {"value": "new", "ops": []}, "w2", 2)


async def test_effect_rows_record_what_a_claim_did(parts: Parts) -> None:
    queue = parts.queue()
    with anyio.fail_after(BOUND):
        await queue.submit("run-1", "i1", 1, "writer", payload(1))
        await queue.submit("run-1", "i2", 1, "writer", payload(2))
        [task, other] = await queue.claim("w1", ["writer"], 2)
        assert await queue.effects("run-1", "i1") == {}
        assert await queue.effect_started(task, "mail")
        assert await queue.effect_started(task, "charge")
        assert await queue.effect_started(task, "log")
        assert await queue.effect_ended(task, "mail", "completed", {"id": 7, "to": ["a"]})
        assert await queue.effect_ended(task, "charge", "failed", error="CardError: declined")
        assert await queue.effect_started(other, "mail")
        assert await queue.effects("run-1", "i1") == {
            "mail": EffectRow("mail", "completed", {"id": 7, "to": ["a"]}),
            "charge": EffectRow("charge", "failed", None, "CardError: declined"),
            "log": EffectRow("log", "started"),
        }
        assert await queue.effects("run-1", "i2") == {"mail": EffectRow("mail", "started")}
        # A finished task's claim is over: no more effect writes under it.
        assert await queue.finish(task, "done", {"value": None, "ops": []})
        assert not await queue.effect_ended(task, "log", "completed", 1)
        assert (await queue.effects("run-1", "i1"))["log"] == EffectRow("log", "started")


async def test_a_cancelled_task_ends_cancelled_and_its_worker_is_told(parts: Parts) -> None:
    coordinator, worker = parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        ready = await coordinator.submit("run-1", "ready", 1, "writer", payload(1))
        await coordinator.cancel(ready)
        assert await coordinator.outcome(ready) == TaskOutcome("cancelled", None, None, 0)
        assert await worker.claim("w1", ["writer"], 5) == []

        running = await coordinator.submit("run-1", "running", 1, "writer", payload(2))
        [task] = await worker.claim("w1", ["writer"], 5)
        async with anyio.create_task_group() as group:
            outcomes: list[TaskOutcome] = []

            async def wait() -> None:
                outcomes.append(await coordinator.outcome(running))

            group.start_soon(wait)
            await coordinator.cancel(running)
        assert outcomes == [TaskOutcome("cancelled", None, "w1", 1)]
        assert await worker.renew([task]) == {running}
        assert not await worker.effect_started(task, "mail")
        assert not await worker.finish(task, "done", {"value": 1, "ops": []})
        # An effect that was running when the task was cancelled did happen: kept, for the
        # next attempt, though the claim is over (False).
        assert not await worker.effect_ended(task, "charge", "completed", {"id": 1})
        assert await worker.effects("run-1", "running") == {
            "charge": EffectRow("charge", "completed", {"id": 1})}

        finished = await coordinator.submit("run-1", "finished", 1, "writer", payload(3))
        [task] = await worker.claim("w1", ["writer"], 5)
        assert await worker.finish(task, "done", {"value": 3, "ops": []})
        await coordinator.cancel(finished)  # too late: it stays done
        assert (await coordinator.outcome(finished)).status == "done"


async def test_a_restarted_worker_lets_its_old_claims_go_at_once(parts: Parts) -> None:
    coordinator, before, after = parts.queue(), parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        for n in range(3):
            await coordinator.submit("run-1", f"i{n}", 1, "writer", payload(n))
        held = await before.claim("w1", ["writer"], 2)
        await before.claim("w2", ["writer"], 1)
        assert await after.claim("w1", ["writer"], 5) == []
        assert await after.forget_worker("w1") == 2
        assert await after.forget_worker("nobody") == 0
        again = await after.claim("w1", ["writer"], 5)  # no lease to wait out
        assert await before.renew(held) == {task.id for task in held}
    assert sorted(task.id for task in again) == sorted(task.id for task in held)
    assert {(task.claims, task.token) for task in again} == {(2, 2)}


async def test_a_finish_in_another_process_wakes_the_waiting_outcome(parts: Parts) -> None:
    coordinator, worker = parts.queue(poll=NEVER), parts.queue()
    with anyio.fail_after(BOUND):
        task_ids = [await coordinator.submit("run-1", f"i{n}", 1, "writer", payload(n))
                    for n in range(3)]
        outcomes: dict[int, TaskOutcome] = {}

        async def wait(task_id: int) -> None:
            outcomes[task_id] = await coordinator.outcome(task_id)

        async with anyio.create_task_group() as group:
            for task_id in task_ids:
                group.start_soon(wait, task_id)
            for task in await worker.claim("w1", ["writer"], 5):
                await anyio.sleep(0.01)  # the waiters are waiting by now, or they look first
                assert await worker.finish(task, "done", {"value": task.intent_id, "ops": []})
    assert {outcomes[task_id].result["value"] for task_id in task_ids} == {"i0", "i1", "i2"}


async def test_waiting_for_a_task_queued_here_needs_no_first_look(parts: Parts) -> None:
    coordinator, worker = parts.queue(poll=NEVER), parts.queue()
    looks: list[str] = []
    run = coordinator._run

    def counted(work: Any, what: str) -> Any:
        if what == "look at how tasks ended":
            looks.append(what)
        return run(work, what)

    coordinator._run = counted  # type: ignore[method-assign]
    with anyio.fail_after(BOUND):
        await coordinator.submit("run-0", "i0", 1, "other", payload(0))  # it listens now
        assert parts.listener.listening.wait(BOUND)
        task_id = await coordinator.submit("run-1", "i1", 1, "writer", payload(1))
        outcomes: list[TaskOutcome] = []

        async def wait() -> None:
            outcomes.append(await coordinator.outcome(task_id))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            for _ in range(2):  # rounds of the queue's thread after the wait began
                await coordinator.effects("run-1", "i1")
            assert looks == []  # it is open, and its run had no notice: nothing to look at
            [task] = await worker.claim("w1", ["writer"], 5)
            assert await worker.finish(task, "done", {"value": 1, "ops": []})
    assert [outcome.status for outcome in outcomes] == ["done"]
    assert len(looks) == 1  # the notice's


async def test_a_task_that_ends_before_anyone_waits_is_not_missed(parts: Parts) -> None:
    coordinator, worker = parts.queue(poll=NEVER), parts.queue()
    with anyio.fail_after(BOUND):
        for n in range(4):  # the notices come before or after the waits, as it happens
            task_id = await coordinator.submit("run-1", f"i{n}", 1, "writer", payload(n))
            [task] = await worker.claim("w1", ["writer"], 5)
            assert await worker.finish(task, "done", {"value": n, "ops": []})
            assert (await coordinator.outcome(task_id)).result == {"value": n, "ops": []}


async def test_a_resubmitted_task_that_ended_long_ago_is_answered_at_once(parts: Parts) -> None:
    first, worker = parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        task_id = await first.submit("run-1", "i1", 1, "writer", payload(1))
        [task] = await worker.claim("w1", ["writer"], 5)
        assert await worker.finish(task, "done", {"value": 1, "ops": []})
        assert parts.listener.listening.wait(BOUND)
        # Another coordinator (after a failover) queues the same attempt: no notice is to
        # come, and no slow poll either.
        second = parts.queue(poll=NEVER)
        assert await second.submit("run-1", "i1", 1, "writer", payload(1)) == task_id
        assert (await second.outcome(task_id)).status == "done"


async def test_a_submission_wakes_a_worker_waiting_for_work(parts: Parts) -> None:
    coordinator, worker = parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        assert await worker.claim("w1", ["writer"], 5) == []
        async with anyio.create_task_group() as group:
            group.start_soon(worker.wait_for_work, ["writer"], NEVER)
            await anyio.sleep(0.01)
            await coordinator.submit("run-1", "i1", 1, "other-agent", payload(1))
            await coordinator.submit("run-1", "i2", 1, "writer", payload(2))
        [task] = await worker.claim("w1", ["writer"], 5)
        assert task.intent_id == "i2"


async def test_a_notice_between_a_claim_and_the_wait_is_not_missed(parts: Parts) -> None:
    coordinator, worker = parts.queue(), parts.queue()
    with anyio.fail_after(BOUND):
        assert await worker.claim("w1", ["writer"], 5) == []  # it watches from now on
        assert parts.listener.listening.wait(BOUND)
        assert await worker.claim("w1", ["writer"], 5) == []  # past the "listening" notice
        # Watching after the worker did: the listener hands it each notice after the worker.
        with parts.listener.watch("openintent_tasks", ["writer"]) as seen:
            await coordinator.submit("run-1", "i1", 1, "writer", payload(1))
            assert await seen.wait(BOUND)
        await worker.wait_for_work(["writer"], NEVER)  # at once: the notice was kept
        assert len(await worker.claim("w1", ["writer"], 5)) == 1


async def test_the_slow_poll_covers_a_lost_notification(parts: Parts) -> None:
    coordinator = parts.queue(poll=0.05)
    with anyio.fail_after(BOUND):
        task_id = await coordinator.submit("run-1", "i1", 1, "writer", payload(1))
        async with anyio.create_task_group() as group:
            outcomes: list[TaskOutcome] = []

            async def wait() -> None:
                outcomes.append(await coordinator.outcome(task_id))

            group.start_soon(wait)
            await anyio.sleep(0.1)
            # A worker whose notice never came (written without one).
            parts.sql("UPDATE {s}.tasks SET status = 'done', result = '{\"value\": 1}', "
                      "worker = 'w9', claims = 1")
    assert outcomes == [TaskOutcome("done", {"value": 1}, "w9", 1)]


async def test_waiting_for_a_task_that_does_not_exist_is_an_error(parts: Parts) -> None:
    with anyio.fail_after(BOUND), pytest.raises(StoreError, match="holds no task 12345"):
        await parts.queue().outcome(12345)


async def test_closing_the_queue_ends_its_waiters_and_calls(parts: Parts) -> None:
    queue = parts.queue(poll=NEVER)
    with anyio.fail_after(BOUND):
        task_id = await queue.submit("run-1", "i1", 1, "writer", payload(1))
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await queue.outcome(task_id)
            except StoreError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.sleep(0.05)
            queue.close()
        with pytest.raises(StoreError, match="closed"):
            await queue.submit("run-1", "i2", 1, "writer", payload(2))
    assert len(errors) == 1 and "closed" in str(errors[0])


@contextmanager
def server_down(server: PostgresServer, seconds: float) -> Iterator[None]:
    """Stop the server now; start it again after ``seconds`` (real time, on a thread), and
    in any case before leaving (the server is the whole session's)."""
    server.stop()
    restarted = threading.Event()

    def start_later() -> None:
        time.sleep(seconds)
        server.start()
        restarted.set()

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(BOUND)
        if not restarted.is_set():
            server.start()


async def test_calls_go_on_through_a_server_restart(parts: Parts,
                                                    postgres_server: PostgresServer) -> None:
    coordinator, worker = parts.queue(poll=NEVER), parts.queue()
    outcomes: dict[int, TaskOutcome] = {}

    async def wait(task_id: int) -> None:
        outcomes[task_id] = await coordinator.outcome(task_id)

    async def submit(n: int, group: Any) -> None:
        group.start_soon(wait, await coordinator.submit("run-1", f"i{n}", 1, "writer",
                                                        payload(n)))

    async def finish(task: Any) -> None:
        assert await worker.finish(task, "done", {"value": task.intent_id, "ops": []})

    with anyio.fail_after(BOUND * 3):
        async with anyio.create_task_group() as group:
            for n in range(20):
                await submit(n, group)
            first = await worker.claim("w1", ["writer"], 10)
            with server_down(postgres_server, 1.0):
                # Asked while the server is down: each call retries until it is back.
                async with anyio.create_task_group() as during:
                    for n in range(20, 40):
                        during.start_soon(submit, n, group)
                    for task in first:
                        during.start_soon(finish, task)
                    assert await worker.renew(first[5:]) == set()
            while len(outcomes) < 40:
                for task in await worker.claim("w1", ["writer"], 50):
                    await finish(task)
                if len(outcomes) < 40:
                    await worker.wait_for_work(["writer"], 0.2)
                    await anyio.sleep(0.01)
    assert sorted(outcome.result["value"] for outcome in outcomes.values()  # type: ignore
                  ) == sorted(f"i{n}" for n in range(40))
    assert parts.sql("SELECT status, claims, count(*) FROM {s}.tasks GROUP BY 1, 2") == [
        ("done", 1, 40)]
    assert parts.listener.connections >= 2  # it listened again after the restart


async def test_a_claim_whose_answer_was_lost_gets_its_tasks_on_the_retry(
        parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    real = PgTaskQueue._claim
    tries: list[list[int]] = []

    def claim_then_lose_the_answer(queue: PgTaskQueue, conn: Any, calls: Any) -> Any:
        [tasks] = real(queue, conn, calls)
        tries.append([task.id for task in tasks])
        if len(tries) == 1:  # committed, then the connection broke before the answer came
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return [tasks]

    monkeypatch.setattr(PgTaskQueue, "_claim", claim_then_lose_the_answer)
    queue = parts.queue()
    with anyio.fail_after(BOUND):
        for n in range(5):
            await queue.submit("run-1", f"i{n}", 1, "writer", payload(n))
        tasks = await queue.claim("w1", ["writer"], 3)
    assert [task.id for task in tasks] == tries[0] == tries[1]  # the same three, not others
    assert {(task.token, task.claims) for task in tasks} == {(1, 1)}
    assert parts.sql("SELECT status, count(*) FROM {s}.tasks GROUP BY 1 ORDER BY 1") == [
        ("claimed", 3), ("ready", 2)]


async def test_a_server_down_past_the_deadline_is_a_store_error(
        parts: Parts, postgres_server: PostgresServer) -> None:
    queue = parts.queue(retry_deadline=0.3)
    with anyio.fail_after(BOUND), server_down(postgres_server, 2.0):
        with pytest.raises(StoreError) as caught:
            await queue.submit("run-1", "i1", 1, "writer", payload(1))
    database = parts.url.conninfo.split("/")[-1].split("?")[0]
    assert "could not queue tasks" in str(caught.value)
    assert f"the database {database}" in str(caught.value)


async def test_a_postgresql_store_has_the_queue_and_closing_it_stops_the_threads(
        postgres_url: str) -> None:
    from openintent._stores import open_backend

    before = set(threading.enumerate())
    backend = open_backend(postgres_url)
    try:
        queue = backend.tasks
        with anyio.fail_after(BOUND):
            task_id = await queue.submit("run-1", "i1", 1, "writer", payload(1))
            [task] = await queue.claim("w1", ["writer"], 1)
            assert await queue.finish(task, "done", {"value": 1, "ops": []})
            assert (await queue.outcome(task_id)).status == "done"
            await queue.wait_for_work(["writer"], 0.01)
    finally:
        backend.close()
    started = {thread for thread in set(threading.enumerate()) - before
               if thread.name.startswith(("openintent tasks", "openintent listener"))}
    assert not started  # joined
