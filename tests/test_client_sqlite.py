"""The client on a store shared by processes (a SQLite file, a PostgreSQL database):
portfolios and leases shared between processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from openintent import LeaseHeldError, LeaseLostError, OpenIntentClient, Runtime
from openintent._stores._sqlite_file import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from openintent.agents import Agent, on_assignment

ROOT = Path(__file__).resolve().parent.parent

MAKER = """
import json, sys
from openintent import OpenIntentClient
with OpenIntentClient(agent_id="maker", base_url=sys.argv[1]) as client:
    portfolio = client.create_portfolio(name="Shared", description="from another process")
    fetch = client.create_intent("Fetch", portfolio_id=portfolio.id, assign="worker")
    client.create_intent("Process", portfolio_id=portfolio.id, depends_on=[fetch.id],
                         assign="worker", initial_state={"n": 1})
    client.record_decision(portfolio_id=portfolio.id, decision="go", rationale="ready")
    lease = client.acquire_coordinator_lease(portfolio_id=portfolio.id,
                                             ttl_seconds=float(sys.argv[2]))
    print(json.dumps({"id": portfolio.id, "token": lease.token}))
"""

TAKER = """
import json, sys
from openintent import OpenIntentClient
with OpenIntentClient(agent_id="taker", base_url=sys.argv[1]) as client:
    lease = client.acquire_coordinator_lease(portfolio_id=sys.argv[2], ttl_seconds=600)
    client.record_decision(portfolio_id=sys.argv[2], decision="taken", rationale="expired")
    print(json.dumps({"token": lease.token}))
"""


def run(script: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def url(journal_url: str) -> str:
    """A SQLite file, then a PostgreSQL database: clients share both across processes."""
    return journal_url


def test_a_portfolio_made_in_another_process_is_read_and_run_here(url: str) -> None:
    made = run(MAKER, url, "0.001")  # its lease expires at once
    portfolio_id = str(made["id"])
    with OpenIntentClient(agent_id="runner", base_url=url) as client:
        portfolio = client.get_portfolio(portfolio_id)
        assert (portfolio.name, portfolio.description, portfolio.status, portfolio.created_by) \
            == ("Shared", "from another process", "draft", "maker")
        fetch, process = client.list_intents(portfolio_id)
        assert process.depends_on == (fetch.id,) and process.state == {"n": 1}
        assert [d.decision for d in client.list_decisions(portfolio_id)] == ["go"]

        @Agent("worker")
        class Worker:
            @on_assignment
            async def work(self, intent):
                return {"done": intent.title}

        result = client.run_portfolio(portfolio_id)
        assert result.status == "completed"
        assert result.intents["Process"].state == {"n": 1, "done": "Process"}
        assert client.get_portfolio(portfolio_id).status == "completed"


@pytest.mark.asyncio
async def test_the_runtime_on_the_file_sees_a_client_portfolio(url: str) -> None:
    made = run(MAKER, url, "0.001")
    async with Runtime(store=url) as rt:
        [info] = rt.runs()
        assert (info.portfolio_id, info.status) == (made["id"], "draft")
        loaded = await rt.load(str(made["id"]))
        assert list(loaded.intents) == ["Fetch", "Process"]


def test_a_lease_is_refused_across_processes_then_taken_after_expiry(url: str) -> None:
    held = run(MAKER, url, "600")
    portfolio_id = str(held["id"])
    with OpenIntentClient(agent_id="rival", base_url=url) as rival:
        with pytest.raises(LeaseHeldError, match="'maker'") as refused:
            rival.acquire_coordinator_lease(portfolio_id=portfolio_id, ttl_seconds=5)
        assert refused.value.holder == "maker"
        with pytest.raises(LeaseHeldError):
            rival.record_decision(portfolio_id=portfolio_id, decision="mine", rationale="")
        with pytest.raises(LeaseHeldError):
            rival.run_portfolio(portfolio_id)

    brief = run(MAKER, url, "0.001")  # a lease that has expired by the time anyone looks
    other_id = str(brief["id"])
    with OpenIntentClient(agent_id="old", base_url=url) as old:
        stale = old.acquire_coordinator_lease(portfolio_id=other_id, ttl_seconds=0.001)
        taken = run(TAKER, url, other_id)  # another process takes it once it expired
        assert int(str(taken["token"])) > stale.token > int(str(brief["token"]))
        with pytest.raises(LeaseLostError, match="stale"):
            old.record_decision(portfolio_id=other_id, decision="late", rationale="")
        with pytest.raises(LeaseLostError):
            stale.renew()
        assert [d.decision for d in old.list_decisions(other_id)] == ["go", "taken"]


def test_a_version_2_journal_is_migrated_to_the_leases_table(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step, statements in MIGRATIONS:
        if step <= 2:
            for statement in statements:
                conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=2")
    conn.close()
    assert SCHEMA_VERSION == 3
    with OpenIntentClient(agent_id="a", base_url=f"sqlite:///{path}") as client:
        portfolio = client.create_portfolio(name="after migration")
        lease = client.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=60)
        assert lease.token == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT holder, token FROM leases").fetchall() == [("a", 1)]
    finally:
        conn.close()
