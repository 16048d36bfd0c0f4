"""Scheduler speed and memory against a raw asyncio baseline, measured in the same process.

    python benchmarks/scheduler.py            # all workloads
    python benchmarks/scheduler.py --quick    # smaller graphs, for a smoke run
    python benchmarks/scheduler.py --store sqlite   # also journaled to a SQLite file
    python benchmarks/scheduler.py --store postgresql://user@host/db   # ... to PostgreSQL

Workloads (no-op async agents):
  chain     10,000 intents, each depending on the one before
  fan       1 -> 10,000 -> 1 fan-out / fan-in
  layered   100,000 intents in layers of 100, each depending on 1-3 of the layer before (seeded)

The baseline is the smallest correct asyncio scheduler: a dependency counter per node that
creates a task when the counter reaches zero. Targets: ours / raw <= 3 on every workload,
<= 2 KiB peak memory per intent, and 10x the intents costs <= 11x the time.

With ``--store sqlite`` every workload also runs journaled (``sqlite:///`` in a temporary
directory, a new file per run) and the journaled cost per intent is printed beside the
in-memory one (target: <= 1.5x); then a finished run of the largest workload is loaded back
from its file (``backend.read`` + the projection every live run uses; target: <= 2 s), and
as a whole ``RunResult`` with ``rt.load``. With ``--store postgresql://...`` every journaled
run goes to that database instead (the targets are SQLite's).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import os
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable

import structlog

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

Graph = list[list[int]]  # node -> its dependencies


def chain(n: int) -> Graph:
    return [[]] + [[i - 1] for i in range(1, n)]


def fan(width: int) -> Graph:
    return [[]] + [[0] for _ in range(width)] + [list(range(1, width + 1))]


def layered(n: int, width: int = 100, seed: int = 42) -> Graph:
    rng = random.Random(seed)
    graph: Graph = []
    for index in range(n):
        layer = index // width
        if layer == 0:
            graph.append([])
        else:
            previous = range((layer - 1) * width, layer * width)
            graph.append(sorted(rng.sample(previous, rng.randint(1, 3))))
    return graph


# ---------------------------------------------------------------------------- raw asyncio


async def raw_asyncio(graph: Graph) -> None:
    """Create a task per node once all its dependencies are done."""
    waiting = [len(deps) for deps in graph]
    dependents: list[list[int]] = [[] for _ in graph]
    for node, deps in enumerate(graph):
        for dep in deps:
            dependents[dep].append(node)
    remaining = len(graph)
    finished = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def work(node: int) -> None:
        nonlocal remaining
        await noop()
        for child in dependents[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                start(child)
        remaining -= 1
        if remaining == 0:
            finished.set()

    def start(node: int) -> None:
        task = asyncio.get_running_loop().create_task(work(node))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for node, deps in enumerate(graph):
        if not deps:
            start(node)
    await finished.wait()


async def noop() -> dict[str, int]:
    return {}


# ---------------------------------------------------------------------------- openintent


@Agent("noop")
class Noop:
    @on_assignment
    async def work(self, intent: object) -> dict[str, int]:
        return {}


def portfolio(graph: Graph) -> PortfolioSpec:
    titles = [f"n{i}" for i in range(len(graph))]
    return PortfolioSpec(
        name="bench",
        intents=[
            IntentSpec(title=titles[i], assign="noop", depends_on=[titles[d] for d in deps])
            for i, deps in enumerate(graph)
        ],
    )


async def openintent_run(spec: PortfolioSpec, store: str = "memory://") -> str:
    async with Runtime(agents=[Noop], seed=1, store=store) as rt:
        result = await rt.run(spec)
    assert result.status == "completed", result.status
    return result.portfolio_id


class Journals:
    """A new journal file for each journaled run, in one temporary directory (or, given a
    ``postgresql://`` URL, that database for every run)."""

    def __init__(self, database: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="openintent-bench-")
        self._numbers = itertools.count()
        self.database = database
        self.label = "pg µs" if database else "sqlite µs"

    def next_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{os.path.join(self._dir.name, f'run{next(self._numbers)}.db')}"

    def close(self) -> None:
        self._dir.cleanup()


async def rt_load(url: str, portfolio_id: str) -> float:
    """Seconds ``await rt.load(portfolio_id)`` takes in a new runtime on the file."""
    async with Runtime(agents=[Noop], store=url) as rt:
        gc.collect()
        start = time.perf_counter()
        result = await rt.load(portfolio_id)
        seconds = time.perf_counter() - start
    assert result.status == "completed", result.status
    return seconds


def load_back(url: str, portfolio_id: str) -> tuple[float, int]:
    """Seconds to read a finished run back from its file and rebuild its records, and how
    many events it has."""
    from openintent._store import _APPLY, IntentRecord
    from openintent._stores import open_backend

    backend = open_backend(url)
    try:
        gc.collect()
        start = time.perf_counter()
        events = backend.read(portfolio_id)
        records: dict[str, IntentRecord] = {}
        apply = _APPLY
        for event in events:
            handler = apply.get(event[0])
            if handler is not None:
                handler(records, event)
        seconds = time.perf_counter() - start
    finally:
        backend.close()
    assert all(record.status == "completed" for record in records.values())
    return seconds, len(events)


# ---------------------------------------------------------------------------- measuring


def timed(make: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        gc.collect()
        coroutine = make()
        start = time.perf_counter()
        asyncio.run(coroutine)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return min(times)


def peak_bytes(make: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    asyncio.run(make())  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    # An application's choice: keep the run-level log lines out of the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller graphs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip tracemalloc runs")
    parser.add_argument("--store", default="memory",
                        help="sqlite: also run every workload journaled to a SQLite file; a "
                             "postgresql:// URL: to that database")
    args = parser.parse_args()
    if args.store not in ("memory", "sqlite") and not args.store.startswith(
            ("postgresql://", "postgres://")):
        parser.error(f"--store takes memory, sqlite or a postgresql:// URL, not {args.store!r}")
    journals = (None if args.store == "memory"
                else Journals(None if args.store == "sqlite" else args.store))
    try:
        measure(args, journals)
    finally:
        if journals is not None:
            journals.close()


def measure(args: argparse.Namespace, journals: Journals | None) -> None:
    scale = 10 if args.quick else 1
    # Graphs are built right before their workload and dropped after it, so every workload
    # runs on a heap holding only its own input (the garbage collector's work depends on it).
    workloads: dict[str, Callable[[], Graph]] = {
        "chain": lambda: chain(10_000 // scale),
        "fan": lambda: fan(10_000 // scale),
        "layered": lambda: layered(100_000 // scale),
        "layered/10": lambda: layered(10_000 // scale),
    }
    # Warm up both contestants (imports, first-call caches) before anything is measured.
    asyncio.run(raw_asyncio(chain(100)))
    asyncio.run(openintent_run(portfolio(chain(100))))
    if journals is not None:
        asyncio.run(openintent_run(portfolio(chain(100)), journals.next_url()))
    journaled_header = f"{journals.label:>10}{'x mem':>7}" if journals is not None else ""
    print(f"{'workload':<12}{'intents':>9}{'raw µs':>9}{'ours µs':>9}{'ratio':>7}{'KiB/int':>9}"
          f"{journaled_header}")
    journal_ratios: dict[str, float] = {}
    per_intent: dict[str, float] = {}
    raw_per_intent: dict[str, float] = {}
    ratios = []
    for name, build in workloads.items():
        graph = build()
        spec = portfolio(graph)
        n = len(graph)
        raw = timed(lambda graph=graph: raw_asyncio(graph), args.repeat) / n * 1e6
        ours = timed(lambda spec=spec: openintent_run(spec), args.repeat) / n * 1e6
        memory = ""
        if not args.no_memory:
            memory = f"{peak_bytes(lambda spec=spec: openintent_run(spec)) / n / 1024:9.2f}"
        per_intent[name] = ours
        raw_per_intent[name] = raw
        ratios.append(ours / raw)
        journaled = ""
        if journals is not None:
            sqlite = timed(lambda spec=spec: openintent_run(spec, journals.next_url()),
                           args.repeat) / n * 1e6
            journal_ratios[name] = sqlite / ours
            journaled = f"{sqlite:>10.2f}{sqlite / ours:>7.2f}"
        print(f"{name:<12}{n:>9}{raw:>9.2f}{ours:>9.2f}{ours / raw:>7.2f}{memory:>9}"
              f"{journaled}")
        del graph, spec
    growth = per_intent["layered"] * 10 / per_intent["layered/10"]
    raw_growth = raw_per_intent["layered"] * 10 / raw_per_intent["layered/10"]
    print(f"\nworst ratio: {max(ratios):.2f} (target <= 3)")
    print(
        f"10x the intents (layered) costs {growth:.2f}x the time (target <= 11; "
        f"raw asyncio: {raw_growth:.2f}x)"
    )
    print(f"median ratio: {statistics.median(ratios):.2f}")
    if journals is not None:
        worst = max(journal_ratios, key=journal_ratios.__getitem__)
        print(f"journaled / in-memory per intent: worst {journal_ratios[worst]:.2f} ({worst}), "
              f"median {statistics.median(journal_ratios.values()):.2f} (target <= 1.5)")
        size = 100_000 // (10 if args.quick else 1)
        url = journals.next_url()
        portfolio_id = asyncio.run(openintent_run(portfolio(layered(size)), url))
        seconds, events = load_back(url, portfolio_id)
        print(f"loading back a finished {size:,}-intent run ({events:,} events): "
              f"{seconds:.2f} s (target <= 2 s); as a RunResult with rt.load: "
              f"{asyncio.run(rt_load(url, portfolio_id)):.2f} s")


if __name__ == "__main__":
    main()
