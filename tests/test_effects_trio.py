"""Side effects (``self.effect``) on anyio's trio backend, on the real clock (see
tests/test_trio.py): a recorded value survives a retry, a sync effect runs in a worker thread,
an async effect cut short by a timeout is confirmed by its async check, and a SQLite journal
gates the calls. Every bound is generous; nothing measures how long a sleep took."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import assert_replay_matches

pytestmark = pytest.mark.anyio

BOUND = 20  # seconds of real time before a hung test fails instead of hanging


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_effects_run_once_on_trio(tmp_path: Path, store: str) -> None:
    calls: list[tuple[str, int]] = []

    def mail(to: str) -> str:
        calls.append(("mail", threading.get_ident()))
        return f"sent to {to}"

    async def charge(amount: int) -> dict[str, int]:
        calls.append(("charge", amount))
        if sum(name == "charge" for name, _ in calls) == 1:
            await anyio.sleep(60)  # cut short by the intent's timeout: in doubt
        return {"amount": amount}

    async def find_charge(amount: int) -> dict[str, Any]:
        return {"amount": amount, "found": True}

    @Agent("trio-payer")
    class Payer:
        @on_assignment
        async def pay(self, intent: Any) -> dict[str, Any]:
            sent = await self.effect(intent, "mail", mail, "ann")
            charged = await self.effect(intent, "charge", charge, 5, check=find_charge)
            return {"sent": sent, "charged": charged}

    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"
    spec = PortfolioSpec("trio-effects", [IntentSpec(
        "Pay", assign="trio-payer", timeout=0.2,
        retry={"max_attempts": 2, "initial_delay": 0.01, "jitter": False})])
    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Payer], store=url) as rt:
            result = await rt.run(spec)
            loaded = await rt.load(result.portfolio_id)
    assert result.status == "completed"
    assert result.intents["Pay"].state == {"sent": "sent to ann",
                                           "charged": {"amount": 5, "found": True}}
    assert [name for name, _ in calls] == ["mail", "charge"]  # neither called again
    assert calls[0][1] != threading.get_ident()  # the sync effect ran in a worker thread
    assert [(e.name, e.status, e.checked) for e in result.intents["Pay"].effects] == [
        ("mail", "completed", False), ("charge", "completed", True)]
    assert loaded.intents == result.intents
    assert_replay_matches(result)
