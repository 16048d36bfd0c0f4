"""Leases: exclusive while live, fencing tokens that only grow, stale writes never applied."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openintent import (
    AsyncOpenIntentClient,
    LeaseError,
    LeaseHeldError,
    LeaseLostError,
    OpenIntentClient,
    VirtualClock,
)
from openintent.testing import isolated_registry

TTL = 10.0

steps = st.lists(
    st.tuples(
        st.integers(0, 2),  # which client
        st.sampled_from(["acquire", "renew", "release", "write", "wait"]),
        st.floats(0.0, 12.0, allow_nan=False),  # how long to wait
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_concurrent_acquirers_never_share_a_lease_and_stale_writes_are_rejected(script):
    with isolated_registry():  # a fresh memory:// store per example
        clock = VirtualClock()
        clients = [OpenIntentClient(agent_id=f"agent-{n}", clock=clock) for n in range(3)]
        portfolio = clients[0].create_portfolio(name="contended")
        intent = clients[0].create_intent("Work", portfolio_id=portfolio.id)
        leases: dict[int, object] = {}
        # The model: who holds the lease (client, token, expires_at), the last token drawn.
        holder: tuple[int, int, float] | None = None
        last_token = 0
        state: dict[str, int] = {}
        for who, action, wait in script:
            now = clock.now()
            live = holder if holder is not None and holder[2] > now else None
            client = clients[who]
            if action == "wait":
                clock.advance(now + wait)
            elif action == "acquire":
                if live is not None and live[0] != who:
                    with pytest.raises(LeaseHeldError, match=f"agent-{live[0]}"):
                        client.acquire_coordinator_lease(portfolio_id=portfolio.id,
                                                         ttl_seconds=TTL)
                    continue
                lease = client.acquire_coordinator_lease(portfolio_id=portfolio.id,
                                                         ttl_seconds=TTL)
                assert lease.token > last_token  # fencing tokens only grow
                last_token = lease.token
                holder = (who, lease.token, now + TTL)
                leases[who] = lease
                assert lease.expires_at == now + TTL and lease.holder == f"agent-{who}"
            elif action == "renew" and who in leases:
                lease = leases[who]
                if live is not None and live[:2] == (who, lease.token) and not lease.released:
                    lease.renew()
                    holder = (who, lease.token, now + TTL)
                else:
                    with pytest.raises(LeaseLostError):
                        lease.renew()
            elif action == "release" and who in leases:
                lease = leases[who]
                if holder is not None and holder[:2] == (who, lease.token) \
                        and not lease.released:
                    holder = None
                lease.release()
            elif action == "write":
                lease = leases.get(who)
                mine = (lease is not None and not lease.released and live is not None
                        and live[:2] == (who, lease.token))
                other_live = live is not None and live[0] != who
                stale = lease is not None and not lease.released and not mine
                if other_live or stale:
                    with pytest.raises(LeaseError):
                        client.patch_state(intent.id, {f"by-{who}": len(state)})
                else:
                    client.patch_state(intent.id, {f"by-{who}": len(state)})
                    state[f"by-{who}"] = len(state)
            # Exclusive: at most one live lease, and it is the model's.
            now = clock.now()
            live_leases = [n for n, lease in leases.items() if lease.live]
            expected = ([holder[0]] if holder is not None and holder[2] > now else [])
            assert live_leases == expected
            assert clients[0].get_intent(intent.id).state == state  # rejected: never applied


@pytest.mark.asyncio
async def test_a_lease_is_a_context_manager_and_others_take_it_after_release():
    clock = VirtualClock()
    one = AsyncOpenIntentClient(agent_id="one", clock=clock)
    two = AsyncOpenIntentClient(agent_id="two", clock=clock)
    portfolio = await one.create_portfolio(name="p")
    with await one.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=5) as lease:
        assert lease.live
        with pytest.raises(LeaseHeldError) as refused:
            await two.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=5)
        assert refused.value.holder == "one" and refused.value.expires_at == 5
        clock.advance(4)
        lease.renew()
        assert lease.expires_at == 9
    assert not lease.live
    taken = await two.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=5)
    assert taken.token == lease.token + 1


def test_an_intent_lease_fences_writes_to_that_intent():
    clock = VirtualClock()
    one = OpenIntentClient(agent_id="one", clock=clock)
    two = OpenIntentClient(agent_id="two", clock=clock)
    intent = one.create_intent("Solo")
    one.acquire_lease(intent.id, "editor", ttl_seconds=5)
    with pytest.raises(LeaseHeldError, match="editor lease"):
        two.patch_state(intent.id, {"x": 1})
    clock.advance(6)
    two.patch_state(intent.id, {"x": 1})
    assert one.get_intent(intent.id).state == {"x": 1}
    with pytest.raises(ValueError, match="positive"):
        one.acquire_lease(intent.id, "editor", ttl_seconds=0)


@pytest.mark.asyncio
async def test_a_completion_after_the_callers_lease_expired_is_never_applied():
    from openintent import sleep
    from openintent.agents import Agent, on_assignment

    @Agent("slow")
    class Slow:
        @on_assignment
        async def work(self, intent):
            await sleep(intent.state["takes"])
            return {"done": True}

    clock = VirtualClock()
    lead = AsyncOpenIntentClient(agent_id="lead", clock=clock)
    quick = await lead.create_portfolio(name="quick")
    await lead.create_intent("Work", portfolio_id=quick.id, assign="slow",
                             initial_state={"takes": 5})
    with await lead.acquire_coordinator_lease(portfolio_id=quick.id, ttl_seconds=30):
        result = await lead.run_portfolio(quick.id)
    assert result.status == "completed"  # within the lease: applied

    late = await lead.create_portfolio(name="late")
    await lead.create_intent("Work", portfolio_id=late.id, assign="slow",
                             initial_state={"takes": 60})
    await lead.acquire_coordinator_lease(portfolio_id=late.id, ttl_seconds=30)
    result = await lead.run_portfolio(late.id)
    assert result.status == "halted"
    assert result.breach is not None and result.breach.guardrail == "lease"
    assert "expired" in result.breach.reason
    assert result.intents["Work"].status != "completed"
    assert result.intents["Work"].state == {"takes": 60}  # the completion was not applied
    assert result.events.of_type("completed") == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 15.0, allow_nan=False), min_size=1, max_size=6),
                min_size=2, max_size=4))
def test_racing_tasks_on_the_virtual_clock_only_write_under_the_current_live_lease(plans):
    import anyio

    async def main() -> list[tuple[str, int, float]]:
        clock = VirtualClock()
        setup = AsyncOpenIntentClient(agent_id="setup", clock=clock)
        portfolio = await setup.create_portfolio(name="race")
        intent = await setup.create_intent("Work", portfolio_id=portfolio.id)
        issued: list[tuple[int, float]] = []  # (token, expires_at) of every acquisition
        applied: list[tuple[str, int, float]] = []

        async def worker(n: int, pauses: list[float]) -> None:
            client = AsyncOpenIntentClient(agent_id=f"w{n}", clock=clock)
            lease = None
            for pause in pauses:
                if lease is None or not lease.live:
                    try:
                        lease = await client.acquire_coordinator_lease(
                            portfolio_id=portfolio.id, ttl_seconds=TTL)
                        issued.append((lease.token, lease.expires_at))
                    except LeaseHeldError:
                        pass
                await clock.sleep(pause)  # the lease may expire meanwhile
                if lease is not None:
                    try:
                        await client.patch_state(intent.id, {"last": n})
                    except LeaseError:
                        continue
                    # Applied: under the newest token issued so far, before it expired.
                    assert lease.token == issued[-1][0]
                    assert clock.now() < lease.expires_at
                    applied.append((f"w{n}", lease.token, clock.now()))
            if lease is not None:
                lease.release()

        async with anyio.create_task_group() as group:
            for n, pauses in enumerate(plans):
                group.start_soon(worker, n, pauses)
        versions = (await setup.get_intent(intent.id)).version
        assert versions == len(applied)  # rejected writes were never applied
        tokens = [token for token, _expires in issued]
        assert tokens == sorted(set(tokens))  # tokens only grow
        return applied

    with isolated_registry():
        anyio.run(main)


def test_a_lease_on_an_unknown_target_is_refused():
    from openintent import RunNotFoundError

    client = OpenIntentClient(agent_id="a")
    with pytest.raises(RunNotFoundError, match="pf_missing"):
        client.acquire_coordinator_lease(portfolio_id="pf_missing", ttl_seconds=5)
    intent = client.create_intent("Solo")
    with pytest.raises(RunNotFoundError, match="no intent"):
        client.acquire_lease(intent.id[:-1] + "7", "editor", ttl_seconds=5)
