"""Throughput of the PostgreSQL task queue alone: a coordinator submits N no-op tasks and waits
for each outcome while worker processes claim and finish them.

    python benchmarks/pg_queue.py                      # 10,000 tasks, 1 worker process
    python benchmarks/pg_queue.py -n 20000 --workers 2 --window 2000
    python benchmarks/pg_queue.py --url postgresql://user@host/db   # an existing database

Without ``--url`` a throwaway PostgreSQL server is started in a temporary directory (as the
tests do: ``tests/_postgres.py``; fsync off). The coordinator keeps ``--window`` tasks in
flight (as a run dispatching a wide layer would); each worker process claims up to
``--claim`` tasks at a time, finishes them (no work), and waits for a notification when
there is none. Prints tasks/s, end to end (first submit to last outcome). The queue's schema
is created in ``?schema=`` (default ``openintent``); an existing one is used as it is.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from openintent._stores._pg_listen import PgListener
from openintent._stores._pg_schema import PgUrl, prepare
from openintent._stores._pg_tasks import PgTaskQueue

AGENT = "bench-noop"


def open_queue(url: str) -> tuple[PgTaskQueue, Any, PgListener]:
    import psycopg_pool

    parsed = PgUrl.parse(url)
    pool = psycopg_pool.ConnectionPool(parsed.conninfo, min_size=2, max_size=4, open=True)
    listener = PgListener(parsed)
    return PgTaskQueue(pool, parsed, listener), pool, listener


def close_queue(queue: PgTaskQueue, pool: Any, listener: PgListener) -> None:
    queue.close()
    listener.close()
    pool.close()


def worker(url: str, name: str, claim: int, stop: Any, counts: Any) -> None:
    """A worker process: claim, finish, wait for work; until ``stop`` is set."""

    async def serve() -> None:
        queue, pool, listener = open_queue(url)
        finished = 0
        try:
            while not stop.is_set():
                tasks = await queue.claim(name, [AGENT], claim)
                if not tasks:
                    await queue.wait_for_work([AGENT], 0.5)
                    continue
                async with anyio.create_task_group() as group:
                    for task in tasks:
                        group.start_soon(queue.finish, task, "done",
                                         {"value": task.payload["n"], "ops": []})
                finished += len(tasks)
        finally:
            counts.put((name, finished))
            close_queue(queue, pool, listener)

    anyio.run(serve)


async def coordinate(url: str, n: int, window: int) -> float:
    """Submit ``n`` tasks, ``window`` at a time in flight; seconds until the last outcome."""
    queue, pool, listener = open_queue(url)
    run_id = uuid.uuid4().hex
    limit = anyio.Semaphore(window)
    wrong: list[int] = []

    async def one(index: int) -> None:
        async with limit:
            task_id = await queue.submit(run_id, f"i{index}", 1, AGENT,
                                         {"intent": {"id": f"i{index}"}, "effects": {},
                                          "n": index})
            outcome = await queue.outcome(task_id)
            if outcome.status != "done" or outcome.result != {"value": index, "ops": []}:
                wrong.append(index)

    try:
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for index in range(n):
                group.start_soon(one, index)
        elapsed = time.perf_counter() - started
    finally:
        close_queue(queue, pool, listener)
    if wrong:
        raise SystemExit(f"{len(wrong)} tasks ended wrong (first: {wrong[0]})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a postgresql:// store URL (default: a throwaway server)")
    parser.add_argument("-n", type=int, default=10_000, help="tasks (default 10,000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--window", type=int, default=1000,
                        help="tasks in flight at once (default 1,000)")
    parser.add_argument("--claim", type=int, default=100,
                        help="tasks a worker claims at once (default 100)")
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from _postgres import PostgresServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL server programs found; pass --url")
        server = PostgresServer(bindir)
        server.start()
        url = server.database()
    try:
        import psycopg

        parsed = PgUrl.parse(url)
        with psycopg.connect(parsed.conninfo) as conn:
            prepare(conn, parsed)
        context = multiprocessing.get_context("spawn")
        stop, counts = context.Event(), context.Queue()
        workers = [context.Process(target=worker, args=(url, f"w{k}", args.claim, stop, counts))
                   for k in range(args.workers)]
        for process in workers:
            process.start()
        elapsed = anyio.run(coordinate, url, args.n, args.window)
        stop.set()
        shares = sorted(counts.get(timeout=60) for _ in workers)
        for process in workers:
            process.join(60)
        print(f"{args.n} tasks, {args.workers} worker process(es), window {args.window}, "
              f"claims of {args.claim}: {elapsed:.2f} s, {args.n / elapsed:,.0f} tasks/s "
              f"(finished per worker: {', '.join(f'{name} {count}' for name, count in shares)})")
    finally:
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
