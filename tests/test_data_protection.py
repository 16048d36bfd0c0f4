"""Nothing a handler, hook, listener or stream receives can change the log or a spec; state,
patches, results and decision data are JSON data."""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import json
import pickle
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import openintent
from openintent import DataError, OpenIntentError, RetryPolicy, Runtime, VirtualClock
from openintent._json_data import json_data
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_conflict,
    on_event,
    on_state_change,
)
from openintent.models import FrozenDict, FrozenList, to_plain
from openintent.testing import assert_replay_matches, capture_events, replay

from _helpers import Echo


def portfolio(*intents: IntentSpec) -> PortfolioSpec:
    return PortfolioSpec("p", list(intents))


async def run(spec: PortfolioSpec, *agents: Any, coordinator: Any = None) -> Any:
    async with Runtime(agents=list(agents), clock=VirtualClock(), seed=0) as rt:
        return await rt.run(spec, coordinator=coordinator)


def completed_data(result: Any, title: str) -> Any:
    intent_id = result.intents[title].id
    [event] = [e for e in result.events.of_type("completed") if e.intent_id == intent_id]
    return event.data


@Agent("dp-rows")
class Rows:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        return {"rows": [1, 2], "meta": {"source": "db"}}


# ---------------------------------------------------------------------------- views out


@pytest.mark.asyncio
async def test_inputs_are_deep_read_only_and_compare_equal_to_plain_data() -> None:
    seen: dict[str, Any] = {}

    @Agent("dp-reader")
    class Reader:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            rows = intent.inputs["A"]["rows"]
            seen["equal"] = rows == [1, 2] and intent.inputs["A"] == {
                "rows": [1, 2], "meta": {"source": "db"}}
            for mutate in (lambda: rows.append(99), lambda: rows.__setitem__(0, 5),
                           lambda: intent.inputs["A"]["meta"].update(source="x"),
                           lambda: intent.inputs["A"].__setitem__("rows", [])):
                with pytest.raises(TypeError, match="read-only"):
                    mutate()
            seen["plain"] = intent.inputs["A"].to_plain()
            seen["plain"]["rows"].append(3)  # a copy: free to change
            return {"n": len(rows)}

    result = await run(portfolio(IntentSpec("A", assign="dp-rows"),
                                 IntentSpec("B", assign="dp-reader", depends_on=["A"])),
                       Rows, Reader)
    assert result.status == "completed", result.intents["B"].error
    assert seen["equal"] is True
    assert result.intents["A"].state == {"rows": [1, 2], "meta": {"source": "db"}}
    assert completed_data(result, "A")["rows"] == [1, 2]


@pytest.mark.asyncio
async def test_intent_state_and_constraints_are_read_only_and_the_spec_never_changes() -> None:
    constraints = {"limits": {"rows": 10}, "tags": ["a"]}

    @Agent("dp-meddler")
    class Meddler:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            with pytest.raises(TypeError):
                intent.constraints["x"] = 1
            with pytest.raises(TypeError):
                intent.constraints["limits"]["rows"] = 0
            with pytest.raises(TypeError):
                intent.state["rows"].append(99)
            with pytest.raises(TypeError):
                intent.state["new"] = 1
            return {"limit": intent.constraints["limits"]["rows"]}

    spec = portfolio(IntentSpec("A", assign="dp-meddler", constraints=constraints,
                                initial_state={"rows": [1]}))
    constraints["limits"]["rows"] = 5  # the caller's dict: the spec took a copy
    result = await run(spec, Meddler)
    assert result.status == "completed", result.intents["A"].error
    assert result.intents["A"].state == {"rows": [1], "limit": 10}
    assert spec.intents[0].constraints == {"limits": {"rows": 10}, "tags": ["a"]}


@pytest.mark.asyncio
async def test_changing_the_initial_state_dict_after_building_the_spec_changes_nothing() -> None:
    initial = {"rows": [1, 2]}
    spec = portfolio(IntentSpec("A", assign="dp-echo-state", initial_state=initial))
    initial["rows"].append(3)

    @Agent("dp-echo-state")
    class EchoState:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"seen": intent.state["rows"]}  # a view may be returned: copied in

    result = await run(spec, EchoState)
    assert result.intents["A"].state == {"rows": [1, 2], "seen": [1, 2]}
    [created] = [e for e in result.events.of_type("created")]
    assert created.data["initial_state"] == {"rows": [1, 2]}


@pytest.mark.asyncio
async def test_a_handler_keeping_references_to_what_it_gave_cannot_change_the_log() -> None:
    kept: list[Any] = []

    @Agent("dp-keeper")
    class Keeper:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            patch = {"draft": ["one"]}
            await self.patch_state(intent, patch)
            details = {"model": {"name": "m1"}}
            await self.record_cost(intent, 0.5, **details)
            out = {"rows": [1, 2]}
            kept.extend([patch, details, out])
            return out

    @Agent("dp-later")
    class Later:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            patch, details, out = kept
            patch["draft"].append("two")
            details["model"]["name"] = "changed"
            out["rows"].append(99)
            return {}

    result = await run(portfolio(IntentSpec("A", assign="dp-keeper"),
                                 IntentSpec("B", assign="dp-later", depends_on=["A"])),
                       Keeper, Later)
    assert result.status == "completed"
    assert result.intents["A"].state == {"draft": ["one"], "rows": [1, 2]}
    [cost] = result.events.of_type("cost_recorded")
    assert cost.data["model"] == {"name": "m1"}
    assert replay(result)["A"].state == {"draft": ["one"], "rows": [1, 2]}


@pytest.mark.asyncio
async def test_event_data_is_read_only_for_listeners_hooks_streams_and_the_result() -> None:
    failures: list[str] = []

    @Agent("dp-watcher")
    class Watcher:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"rows": [1, 2]}

        @on_event("completed")
        async def done(self, event: Any) -> None:
            try:
                event.data["rows"].append(99)
            except TypeError:
                failures.append("hook")

    def listener_mutates(events: list[Any]) -> None:
        for event in events:
            if event.type == "completed":
                with pytest.raises(TypeError):
                    event.data["rows"].append(99)
                failures.append("listener")

    streamed: list[Any] = []
    spec = portfolio(IntentSpec("A", assign="dp-watcher"))
    with capture_events() as captured:
        async with Runtime(agents=[Watcher], clock=VirtualClock(), seed=0) as rt:
            stream = rt.events()  # subscribes now

            async def consume() -> None:
                async for event in stream:
                    streamed.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                result = await rt.run(spec)
    listener_mutates(captured)
    for event in streamed:
        if event.type == "completed":
            with pytest.raises(TypeError):
                event.data["rows"].append(99)
            failures.append("stream")
    event = completed_data(result, "A")
    with pytest.raises(TypeError):
        event["rows"] = []
    assert failures == ["hook", "listener", "stream"]
    assert completed_data(result, "A") == {"rows": [1, 2]}
    assert result.intents["A"].state == {"rows": [1, 2]}
    assert result.events[-1].to_dict()["data"] == {"status": "completed"}
    json.dumps([e.to_dict() for e in result.events])


@pytest.mark.asyncio
async def test_state_change_hooks_get_read_only_snapshots() -> None:
    seen: list[tuple[Any, Any]] = []

    @Agent("dp-patcher")
    class Patcher:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await self.patch_state(intent, {"rows": [1]})
            return {"rows": [1, 2]}

        @on_state_change
        async def changed(self, intent: Any, old: Any, new: Any) -> None:
            with pytest.raises(TypeError):
                new["rows"].append(99)
            seen.append((old, new))

    result = await run(portfolio(IntentSpec("A", assign="dp-patcher")), Patcher)
    assert result.intents["A"].state == {"rows": [1, 2]}
    assert seen == [({}, {"rows": [1]}), ({"rows": [1]}, {"rows": [1, 2]})]


@pytest.mark.asyncio
async def test_decision_data_is_deep_read_only() -> None:
    @Coordinator("dp-lead")
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> dict[str, Any]:
            decision = await self.record_decision(intent_id=intent.id, decision="pick",
                                                  options=["a", "b"])
            with pytest.raises(TypeError):
                decision.data["options"].append("c")
            assert isinstance(decision.data, dict)
            assert json.loads(json.dumps(decision.data)) == {"options": ["a", "b"]}
            return {}

    result = await run(portfolio(IntentSpec("X")), coordinator=Lead)
    assert result.status == "completed", result.intents["X"].error
    assert result.decisions[0].data == {"options": ["a", "b"]}
    assert result.decisions[0].to_dict()["data"] == {"options": ["a", "b"]}


@pytest.mark.asyncio
async def test_responses_given_to_on_conflict_are_read_only() -> None:
    @Agent("dp-yes")
    class Yes:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"answer": "yes", "why": ["a"]}

    @Agent("dp-no")
    class No:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"answer": "no", "why": ["b"]}

    @Coordinator("dp-judge")
    class Judge:
        @on_conflict
        async def pick(self, intent: Any, versions: list[Any]) -> Any:
            with pytest.raises(TypeError):
                versions[0]["answer"] = "maybe"
            with pytest.raises(TypeError):
                versions[0]["why"].append("c")
            return next(v for v in versions if v.agent_id == "dp-yes")

    result = await run(portfolio(IntentSpec("Vote", assign=["dp-yes", "dp-no"])),
                       Yes, No, coordinator=Judge)
    assert result.status == "completed", result.intents["Vote"].error
    assert result.intents["Vote"].state == {"answer": "yes", "why": ["a"]}


@pytest.mark.asyncio
async def test_the_portfolio_given_to_on_all_complete_is_read_only() -> None:
    @Coordinator("dp-closer")
    class Closer:
        @on_all_complete
        async def finish(self, portfolio: Any) -> dict[str, Any]:
            with pytest.raises(TypeError):
                portfolio.intents["A"].state["rows"].append(99)
            with pytest.raises(TypeError):
                portfolio.metadata["owner"] = "me"
            return {"rows": len(portfolio.intents["A"].state["rows"])}

    spec = PortfolioSpec("p", [IntentSpec("A", assign="dp-rows")], metadata={"team": "x"})
    result = await run(spec, Rows, coordinator=Closer)
    assert result.output == {"rows": 2}
    assert result.intents["A"].state["rows"] == [1, 2]


@pytest.mark.asyncio
async def test_result_state_is_the_callers_own_deep_copy() -> None:
    result = await run(portfolio(IntentSpec("A", assign="dp-rows")), Rows)
    state = result.intents["A"].state
    assert isinstance(state, dict)
    state["rows"].append(99)
    state["meta"]["source"] = "changed"
    assert completed_data(result, "A") == {"rows": [1, 2], "meta": {"source": "db"}}
    assert replay(result)["A"].state == {"rows": [1, 2], "meta": {"source": "db"}}


def test_views_compare_copy_pickle_and_print_like_plain_data() -> None:
    data = {"rows": [1, {"k": [2]}], "n": 1}
    view = FrozenDict(data)
    assert view == data and data == view and view != {"rows": []}
    assert view["rows"] == [1, {"k": [2]}]
    assert isinstance(view["rows"], FrozenList) and isinstance(view["rows"][1], FrozenDict)
    assert repr(view) == "FrozenDict({'rows': [1, {'k': [2]}], 'n': 1})"
    for plain in (view.to_plain(), copy.deepcopy(view), copy.copy(view),
                  pickle.loads(pickle.dumps(view)), to_plain(view)):
        assert type(plain) is dict and plain == data
        plain["rows"][1]["k"].append(3)
    assert data == {"rows": [1, {"k": [2]}], "n": 1}
    assert dict(view)["n"] == 1
    assert view["rows"] + [5] == [1, {"k": [2]}, 5]
    assert {**view, "n": 2}["n"] == 2
    with pytest.raises(TypeError, match="read-only"):
        view["rows"] += [5]
    assert json.loads(json.dumps(to_plain(view))) == data


def test_frozen_data_is_a_real_dict_and_list() -> None:
    view = json_data({"rows": [1, {"k": [2]}], "meta": {"a": 1}}, "test")
    assert isinstance(view, dict) and isinstance(view["rows"], list)
    assert isinstance(view, FrozenDict) and isinstance(view["rows"], FrozenList)
    assert json.loads(json.dumps(view)) == {"rows": [1, {"k": [2]}], "meta": {"a": 1}}
    assert dict(view) == view and list(view["rows"]) == view["rows"]
    assert [1, {"k": [2]}] == view["rows"] and view["rows"] == [1, {"k": [2]}]
    # New top-level containers, but what they hold is still the log's read-only data.
    for nested in ({**view}["rows"], dict(view)["rows"], view.items().__iter__().__next__()[1],
                   list(view["rows"])[1]["k"], view["rows"][0:2][1]["k"],
                   (view | {})["meta"], (view["rows"] + [3])[1]):
        with pytest.raises(TypeError, match="read-only"):
            nested.append(0) if isinstance(nested, list) else nested.update(x=1)


DICT_MUTATORS: list[Any] = [
    lambda d: d.__setitem__("n", 2), lambda d: d.__delitem__("n"), lambda d: d.update(n=2),
    lambda d: d.pop("n"), lambda d: d.popitem(), lambda d: d.clear(),
    lambda d: d.setdefault("x", 1), lambda d: d.__ior__({"n": 2}),
]
LIST_MUTATORS: list[Any] = [
    lambda x: x.append(1), lambda x: x.extend([1]), lambda x: x.insert(0, 1),
    lambda x: x.remove(1), lambda x: x.pop(), lambda x: x.clear(), lambda x: x.sort(),
    lambda x: x.reverse(), lambda x: x.__setitem__(0, 5), lambda x: x.__delitem__(0),
    lambda x: x.__setitem__(slice(0, 1), [7]), lambda x: x.__delitem__(slice(0, 1)),
    lambda x: x.__iadd__([1]), lambda x: x.__imul__(2),
]


@pytest.mark.parametrize("mutate", DICT_MUTATORS + LIST_MUTATORS)
def test_every_changing_method_raises_type_error(mutate: Any) -> None:
    view = json_data({"n": 1, "rows": [1, 2]}, "test")
    target = view if mutate in DICT_MUTATORS else view["rows"]
    with pytest.raises(TypeError, match="read-only"):
        mutate(target)
    assert view == {"n": 1, "rows": [1, 2]}


def test_augmented_assignment_and_reinitialising_change_nothing() -> None:
    view = json_data({"n": 1, "rows": [1, 2]}, "test")
    rows = view["rows"]
    with pytest.raises(TypeError, match="read-only"):
        rows += [3]
    with pytest.raises(TypeError, match="read-only"):
        rows *= 2
    with pytest.raises(TypeError, match="read-only"):
        view |= {"n": 2}
    view.__init__({"n": 5})  # type: ignore[misc]
    view["rows"].__init__([9])  # type: ignore[misc]
    openintent.models.FrozenDict.__init__(openintent._data.EMPTY, {"x": 1})
    assert view == {"n": 1, "rows": [1, 2]} and openintent._data.EMPTY == {}


@pytest.mark.asyncio
async def test_state_inputs_event_and_decision_data_go_to_json_apis_as_they_are() -> None:
    dumped: dict[str, Any] = {}

    @Agent("dp-json")
    class Dumper:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            dumped["state"] = json.dumps(intent.state)
            dumped["inputs"] = json.dumps(intent.inputs)
            dumped["input"] = json.dumps(intent.inputs["A"])
            dumped["types"] = (isinstance(intent.state, dict), isinstance(intent.inputs, dict),
                               isinstance(intent.inputs["A"]["rows"], list))
            for copied in ({**intent.inputs["A"]}, dict(intent.inputs["A"])):
                with pytest.raises(TypeError, match="read-only"):
                    copied["rows"].append(99)
            with pytest.raises(TypeError, match="read-only"):
                {**intent.state}["seed"]["deep"].append(1)
            with pytest.raises(KeyError, match="not a dependency"):
                intent.inputs["Z"]
            return {"ok": True}

    spec = portfolio(IntentSpec("A", assign="dp-rows"),
                     IntentSpec("B", assign="dp-json", depends_on=["A"],
                                initial_state={"seed": {"deep": [1]}}))
    with capture_events() as captured:
        result = await run(spec, Rows, Dumper)
    assert result.status == "completed", result.intents["B"].error
    assert json.loads(dumped["state"]) == {"seed": {"deep": [1]}}
    assert json.loads(dumped["inputs"]) == {"A": {"rows": [1, 2], "meta": {"source": "db"}}}
    assert json.loads(dumped["input"]) == {"rows": [1, 2], "meta": {"source": "db"}}
    assert dumped["types"] == (True, True, True)
    assert [json.loads(json.dumps(event.data)) for event in captured] == [
        to_plain(event.data) for event in result.events]
    assert all(isinstance(event.data, dict) for event in captured if event.data is not None)
    assert type(result.intents["A"].state) is dict  # the caller's own plain copy
    assert type(result.intents["A"].state["rows"]) is list
    assert type(result.to_dict()["intents"]["A"]["state"]["rows"]) is list


@pytest.mark.asyncio
async def test_inputs_of_an_intent_without_dependencies_name_the_mistake() -> None:
    seen: dict[str, Any] = {}

    @Agent("dp-lonely")
    class Lonely:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            seen["inputs"] = (intent.inputs == {}, json.dumps(intent.inputs))
            with pytest.raises(KeyError, match="'A' is not a dependency of this intent"):
                intent.inputs["A"]
            return {}

    result = await run(portfolio(IntentSpec("B", assign="dp-lonely")), Lonely)
    assert result.status == "completed", result.intents["B"].error
    assert seen["inputs"] == (True, "{}")


# ---------------------------------------------------------------------------- JSON data


def test_data_error_is_exported_and_is_a_type_error() -> None:
    assert openintent.DataError is openintent.errors.DataError
    assert issubclass(DataError, OpenIntentError) and issubclass(DataError, TypeError)
    assert "DataError" in openintent.__all__


class Colour(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (datetime.datetime(2026, 1, 1), "report.when: datetime is not JSON data; store an ISO "
                                        "string"),
        (datetime.date(2026, 1, 1), "report.when: date is not JSON data; store an ISO string"),
        ({1, 2}, "report.when: set is not JSON data; store a list"),
        (b"raw", "report.when: bytes is not JSON data; store a base64 str"),
        (decimal.Decimal("1.10"), "report.when: Decimal is not JSON data; store a str"),
        (float("nan"), "report.when: float is not JSON data; NaN and infinite floats"),
        (float("inf"), "report.when: float is not JSON data; NaN and infinite floats"),
        (Colour.RED, "report.when: Colour is not JSON data; store its value"),
        (object(), "report.when: object is not JSON data"),
        ({1: "a"}, "key 1 in report.when is of type int, not str"),
        ([{"ok": 1}, {"at": datetime.time(1)}], "report.when[1].at: time is not JSON data"),
    ],
)
@pytest.mark.asyncio
async def test_a_result_that_is_not_json_data_fails_at_once_naming_the_key_path(
    value: Any, message: str
) -> None:
    calls = []

    @Agent("dp-reporter")
    class Reporter:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls.append(1)
            return {"report": {"when": value}}

    spec = portfolio(IntentSpec("A", assign="dp-reporter",
                                retry=RetryPolicy(max_attempts=3, initial_delay=0)))
    result = await run(spec, Reporter)
    failed = result.intents["A"]
    assert failed.status == "failed"
    assert failed.error_type == "DataError"
    assert message in failed.error
    assert "Reporter.work" in failed.error
    assert failed.attempts == 1 and calls == [1]


@pytest.mark.asyncio
async def test_tuples_and_subclasses_of_json_types_are_stored_as_plain_json() -> None:
    class Tone(enum.StrEnum):
        FORMAL = "formal"

    @Agent("dp-typed")
    class Typed:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"tone": Tone.FORMAL, "pair": (1, (2, 3)), Tone.FORMAL: True}

    result = await run(portfolio(IntentSpec("A", assign="dp-typed")), Typed)
    state = result.intents["A"].state
    assert state == {"tone": "formal", "pair": [1, [2, 3]], "formal": True}
    assert type(state["tone"]) is str
    assert all(type(key) is str for key in state)


@pytest.mark.asyncio
async def test_patches_decisions_and_cost_details_must_be_json_data() -> None:
    errors: list[str] = []
    when = datetime.datetime(2026, 1, 1)

    @Coordinator("dp-strict")
    class Strict:
        @on_assignment
        async def route(self, intent: Any) -> dict[str, Any]:
            for attempt in (
                lambda: self.patch_state(intent, {"at": when}),
                lambda: self.record_decision(intent_id=intent.id, decision="d", at=when),
                lambda: self.record_cost(intent, 1.0, at=when),
                lambda: self.patch_state(intent, ["not", "a", "dict"]),
            ):
                with pytest.raises(DataError) as caught:
                    await attempt()
                errors.append(str(caught.value))
            return {}

    result = await run(portfolio(IntentSpec("X")), coordinator=Strict)
    assert result.status == "completed", result.intents["X"].error
    assert "at: datetime is not JSON data" in errors[0]
    assert "record_decision('d') data: at: datetime is not JSON data" in errors[1]
    assert "record_cost details: at: datetime" in errors[2]
    assert "patch_state takes a dict" in errors[3]
    assert result.decisions == () and result.cost_usd == 0


def test_initial_state_must_be_json_data() -> None:
    with pytest.raises(DataError, match=r"initial_state: rows\[0\]: set is not JSON data"):
        IntentSpec("A", initial_state={"rows": [{1}]})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=5), JSON, max_size=5))
def test_json_data_is_an_equal_independent_copy_and_views_equal_it(data: dict[str, Any]) -> None:
    copied = json_data(data, "test")
    assert copied == data and copied is not data
    view = FrozenDict(copied)
    assert view == data and view.to_plain() == data
    assert json.loads(json.dumps(view.to_plain())) == json.loads(json.dumps(data))
    for key in data:
        if isinstance(data[key], list | dict):
            assert copied[key] is not data[key]
            with pytest.raises(TypeError):
                view[key].clear()


@pytest.mark.asyncio
async def test_log_does_not_change_when_a_handler_reuses_its_returned_dict() -> None:
    @Agent("counter")
    class Counter:
        def __init__(self) -> None:
            self.out: dict[str, int] = {}

        @on_assignment
        async def work(self, intent: Any) -> dict[str, int]:
            self.out["n"] = self.out.get("n", 0) + 1
            return self.out  # the same dict every call

    spec = PortfolioSpec("p", [IntentSpec("A", assign="counter"),
                               IntentSpec("B", assign="counter", depends_on=["A"])])
    async with Runtime(agents=[Counter], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    assert result.intents["A"].state == {"n": 1}
    assert_replay_matches(result)  # replayed A says {"n": 2}


@pytest.mark.asyncio
async def test_changing_a_result_state_never_touches_the_log():
    from openintent.testing import replay

    result = await run(portfolio(IntentSpec("A", assign="echo")), Echo())
    state = result.intents["A"].state
    assert isinstance(state, dict)
    state["title"] = "changed"  # type: ignore[index]
    assert replay(result)["A"].state["title"] == "A"


@pytest.mark.asyncio
async def test_inputs_are_read_only_and_list_only_dependencies():
    seen = {}

    @Agent("peek")
    class Peek:
        @on_assignment
        async def work(self, intent):
            seen[intent.title] = dict(intent.inputs)
            if intent.inputs:
                with pytest.raises(TypeError):
                    intent.inputs["A"]["x"] = 2  # type: ignore[index]
                with pytest.raises(KeyError, match="not a dependency"):
                    intent.inputs["Z"]
            return {"x": 1}

    spec = portfolio(
        IntentSpec("A", assign="peek"),
        IntentSpec("Z", assign="peek"),
        IntentSpec("B", assign="peek", depends_on=["A"]),
    )
    result = await run(spec, Peek)
    assert result.status == "completed"
    assert seen["A"] == {}
    assert seen["B"] == {"A": {"x": 1}}


# ------------------------------------------------------------ inputs view
# ``intent.inputs`` is a read-only view like the others: ``to_plain()`` gives a plain,
# mutable, JSON-serialisable copy, with dependencies or without.


inputs_seen: dict[str, Any] = {}


@Agent("inputs-reader")
class InputsReader:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        plain = intent.inputs.to_plain()
        inputs_seen[intent.title] = (plain, json.dumps(plain), copy.deepcopy(intent.inputs))
        plain["mine"] = True  # a copy: the log does not change
        return {"rows": [1, {"k": 2}]}


@pytest.mark.asyncio
async def test_inputs_to_plain_is_a_plain_deep_copy() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="inputs-reader"),
        IntentSpec(title="B", assign="inputs-reader", depends_on=["A"]),
    ])
    async with Runtime(agents=[InputsReader], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    assert inputs_seen["A"][1] == "{}"
    plain, dumped, deep = inputs_seen["B"]
    assert type(plain) is dict and type(plain["A"]) is dict and type(plain["A"]["rows"]) is list
    assert json.loads(dumped) == {"A": {"rows": [1, {"k": 2}]}}
    assert deep == {"A": {"rows": [1, {"k": 2}]}}
    assert result.intents["A"].state == {"rows": [1, {"k": 2}]}
