"""Runs on PostgreSQL shared by worker processes: throughput with 1, 2 and 4 workers, the cost
per intent against the SQLite journal, where the time goes, and a failed-over run.

    python benchmarks/cluster.py              # 10,000 intents; 1, 2 and 4 worker processes
    python benchmarks/cluster.py --quick      # 2,000 intents; 1 and 2 workers
    python benchmarks/cluster.py --store postgresql://user@host/db   # an existing server

Without ``--store`` a throwaway PostgreSQL server is started in a temporary directory (as the
tests do: ``tests/_postgres.py``; its fsync is off, like the SQLite journal's default
``synchronous=normal`` in WAL mode, which does not sync each commit either). Each
measurement gets a fresh database.

The workload is the layered DAG of ``benchmarks/scheduler.py`` (layers of 100 intents, each
after 1-3 of the layer before) with no-op agents. The coordinator is this process, with no
agents of its own: every intent is a task that a worker process (``rt.serve``, each with
``--concurrency`` slots) claims, runs and finishes. Printed per run:

* intents/s, end to end (``rt.run`` from its call to its result);
* per intent: microseconds on PostgreSQL against the same DAG journaled to ``sqlite:///``
  with local agents in one process;
* where the time goes: CPU seconds of the coordinator, of the workers and of the PostgreSQL
  server (its processes' ``/proc`` times; only for the throwaway server), against the wall
  time; and the seconds the threads that talk to the database spent inside database calls
  (the journal's writer and the task queue's thread: a call's round trip, waiting for the
  server included) as a share of the wall time, in the coordinator and summed over workers.

Then the failed-over run: a coordinator process is SIGKILLed mid-run, a second one takes the
run over (``rt.standby``), and every intent is checked to have completed exactly once (one
``completed`` event each, and the no-op agent ran once per claim of its task).
Target: >= 1,000 intents/s with one worker process on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from scheduler import Noop, layered, portfolio  # noqa: E402

from openintent import Runtime  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- measuring


class DbTime:
    """Seconds spent inside database calls, per kind of thread, in this process: the journal
    writer's and readers' calls (``PgCalls.call``) and the task queue's (``PgTaskQueue._run``)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._lock = threading.Lock()

    def install(self) -> None:
        from openintent._stores._pg_calls import PgCalls
        from openintent._stores._pg_tasks import PgTaskQueue

        self._wrap(PgCalls, "call", "journal")
        self._wrap(PgTaskQueue, "_run", "queue")

    def _wrap(self, cls: Any, name: str, kind: str) -> None:
        inner = getattr(cls, name)
        seconds, lock = self.seconds, self._lock

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                with lock:
                    seconds[kind] += spent

        setattr(cls, name, timed)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(data_dir: Path | None) -> float:
    """CPU seconds used so far by the throwaway server's processes (0 without one)."""
    if data_dir is None:
        return 0.0
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return 0.0
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


# ---------------------------------------------------------------------------- processes


def serve_main(url: str, concurrency: int, worker_id: str) -> None:
    """A worker process: serve ``url`` with the no-op agent until SIGTERM, then print what
    it measured as one JSON line."""
    import anyio

    db = DbTime()
    db.install()
    started = [0.0]  # CPU seconds spent starting

    async def serve() -> None:
        async with Runtime(agents=[Noop], store=url, blocking_threshold=None) as rt:
            async with anyio.create_task_group() as group:
                async def stop() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                        started[0] = cpu_seconds()
                        print("ready", flush=True)
                        async for _ in signals:
                            group.cancel_scope.cancel()
                            return

                group.start_soon(stop)
                group.start_soon(lambda: rt.serve(concurrency=concurrency,
                                                  worker_id=worker_id))

    anyio.run(serve)
    print(json.dumps({"cpu": cpu_seconds() - started[0], "db": db.snapshot()}), flush=True)


def coordinate_main(url: str, n: int) -> None:
    """A coordinator process of the failover check: start the run, print its id as soon as
    it is known, go on until killed."""

    async def run() -> None:
        async with Runtime(agents=[], store=url, seed=1, blocking_threshold=None) as rt:
            handle = await rt.start(portfolio(layered(n)))
            print(handle.portfolio_id, flush=True)
            await handle.result()

    asyncio.run(run())


def spawn(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv],
                            env=env, stdout=subprocess.PIPE, text=True)


class Workers:
    """``count`` worker processes serving ``url``."""

    def __init__(self, url: str, count: int, concurrency: int) -> None:
        self.processes = [spawn("--serve", url, "--concurrency", str(concurrency),
                                "--id", f"w{k}") for k in range(count)]
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if line != "ready":
                self.stop()
                raise SystemExit(f"a worker did not start: {line!r}")

    def stop(self) -> list[dict[str, Any]]:
        reports = []
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            out, _ = process.communicate(timeout=120)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if lines:
                reports.append(json.loads(lines[-1]))
        return reports


# ---------------------------------------------------------------------------- measurements


async def timed_run(url: str, n: int, agents: list[Any]) -> tuple[float, str]:
    spec = portfolio(layered(n))
    async with Runtime(agents=agents, store=url, seed=1, blocking_threshold=None) as rt:
        started = time.perf_counter()
        result = await rt.run(spec)
        elapsed = time.perf_counter() - started
    if result.status != "completed" or len(result.intents) != n:
        raise SystemExit(f"the run did not complete: {result.status} {result.error}")
    return elapsed, result.portfolio_id


def sqlite_run(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, _ = asyncio.run(timed_run(f"sqlite:///{tmp}/runs.db", n, [Noop]))
    return elapsed


def cluster_run(url: str, n: int, workers: int, concurrency: int, db: DbTime,
                data_dir: Path | None) -> dict[str, Any]:
    pool = Workers(url, workers, concurrency)
    try:
        before_db, before_cpu, before_server = db.snapshot(), cpu_seconds(), server_cpu(data_dir)
        elapsed, _ = asyncio.run(timed_run(url, n, []))
        after_db, after_cpu, after_server = db.snapshot(), cpu_seconds(), server_cpu(data_dir)
    finally:
        reports = pool.stop()
    coordinator_db = {kind: after_db.get(kind, 0.0) - before_db.get(kind, 0.0)
                      for kind in ("journal", "queue")}
    return {
        "workers": workers, "seconds": elapsed, "rate": n / elapsed,
        "cpu_coordinator": after_cpu - before_cpu,
        "cpu_server": after_server - before_server,
        "cpu_workers": sum(report["cpu"] for report in reports),
        "db_coordinator": coordinator_db,
        "db_workers": sum(sum(report["db"].values()) for report in reports),
    }


def failover_check(url: str, n: int, concurrency: int) -> str:
    """Kill a coordinator process mid-run; a second one takes over; every intent once."""
    pool = Workers(url, 2, concurrency)
    try:
        first = spawn("--coordinate", url, "-n", str(n))
        assert first.stdout is not None
        run_id = first.stdout.readline().strip()
        deadline = time.monotonic() + 120
        while completed_so_far(url, run_id) < n // 3:
            if time.monotonic() > deadline or first.poll() is not None:
                raise SystemExit("the first coordinator made no progress")
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
        at_kill = completed_so_far(url, run_id)
        started = time.perf_counter()

        async def take_over() -> Any:
            async with Runtime(agents=[], store=url, blocking_threshold=None) as rt:
                return await rt.standby(run_id)

        result = asyncio.run(take_over())
        taken = time.perf_counter() - started
    finally:
        pool.stop()
    completions = Counter(event.intent_id for event in result.events
                          if event.type == "completed")
    ok = (result.status == "completed" and len(result.intents) == n
          and set(completions.values()) == {1} and len(completions) == n
          and bool(result.events.of_type("coordinator_failed_over")))
    if not ok:
        raise SystemExit(f"the failed-over run lost or repeated intents: {result.status}, "
                         f"{len(completions)} completed, max {max(completions.values())}")
    return (f"failover: coordinator killed after {at_kill} of {n} intents completed; a "
            f"standby took over and finished in {taken:.1f} s; every intent completed "
            "exactly once")


def completed_so_far(url: str, run_id: str) -> int:
    import psycopg

    from openintent._stores._pg_schema import PgUrl

    with psycopg.connect(PgUrl.parse(url).conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM openintent.batches b, json_array_elements(b.events::json) e "
            "WHERE b.run_id = %s AND e->>0 = 'completed'", (run_id,)).fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a postgresql:// URL (default: a throwaway server; "
                        "each measurement then gets its own database)")
    parser.add_argument("--quick", action="store_true", help="2,000 intents; 1 and 2 workers")
    parser.add_argument("-n", type=int, help="intents (default 10,000)")
    parser.add_argument("--workers", type=int, nargs="+", help="worker process counts")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="slots per worker process (default 64)")
    parser.add_argument("--no-failover", action="store_true", help="skip the failover check")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--coordinate", help=argparse.SUPPRESS)
    parser.add_argument("--id", default="w", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (2_000 if args.quick else 10_000)
    if args.serve:
        serve_main(args.serve, args.concurrency, args.id)
        return
    if args.coordinate:
        coordinate_main(args.coordinate, n)
        return
    counts = args.workers or ([1, 2] if args.quick else [1, 2, 4])

    server: Any = None
    data_dir: Path | None = None
    if args.store is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from _postgres import PostgresServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL server programs found; pass --store URL")
        server = PostgresServer(bindir)
        server.start()
        data_dir = server.data

    def database() -> str:
        return args.store if server is None else server.database()

    db = DbTime()
    db.install()
    try:
        sqlite = sqlite_run(n)
        print(f"{n:,} intents, layered DAG, no-op agents; {os.cpu_count()} CPU cores")
        print(f"  sqlite:/// journal, agents in the run's process: {n / sqlite:8,.0f} intents/s"
              f"  ({sqlite / n * 1e6:,.0f} us per intent)")
        rates: list[float] = []
        for count in counts:
            row = cluster_run(database(), n, count, args.concurrency, db, data_dir)
            wall = row["seconds"]
            coord = row["db_coordinator"]
            server_part = (f", server {row['cpu_server']:.1f}" if data_dir is not None else "")
            print(f"  postgresql://, {count} worker process(es) x {args.concurrency} slots: "
                  f"{row['rate']:8,.0f} intents/s  ({wall / n * 1e6:,.0f} us per intent: "
                  f"{(wall - sqlite) / n * 1e6:+,.0f} us, {wall / sqlite:.1f}x SQLite's)")
            print(f"      CPU s in {wall:.1f} s: coordinator {row['cpu_coordinator']:.1f}, "
                  f"workers {row['cpu_workers']:.1f}{server_part}; inside DB calls: "
                  f"coordinator journal {coord['journal'] / wall:.0%}, queue "
                  f"{coord['queue'] / wall:.0%} of the wall time; workers "
                  f"{row['db_workers'] / wall / count:.0%} each")
            rates.append(row["rate"])
        if counts[0] == 1:
            print(f"  target >= 1,000 intents/s with one worker process: "
                  f"{'met' if rates[0] >= 1000 else 'NOT met'}")
        if not args.no_failover:
            print("  " + failover_check(database(), n if not args.quick else n // 2,
                                        args.concurrency))
    finally:
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
