"""Wired inputs reach the handler: a workflow step's ``inputs: {draft: write.text}`` (and
``IntentSpec(inputs=...)``) puts the upstream value at ``intent.inputs["draft"]``, beside
each dependency's final state by title; a key the upstream state lacks fails the attempt
with :class:`UnresolvableInputError`, never retried."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from openintent import (
    OpenIntentError,
    Runtime,
    SpecError,
    UnresolvableInputError,
    WorkflowError,
)
from openintent.agents import (
    Agent,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
)
from openintent.testing import VirtualClock
from openintent.workflow import WorkflowSpec, WorkflowValidationError

SEED = Path(__file__).resolve().parent.parent / "examples" / "reviewed_content.yaml"

WIRED = """\
openintent: "1.0"
info: {name: wired}
workflow:
  write:
    title: Write Draft
    description: a draft
    assign: writer
  edit:
    description: the edit
    assign: editor
    depends_on: [write]
    retry: {max_attempts: 3, initial_delay: 0}
    inputs: {draft: write.text, size: write.words}
"""


def workflow(text: str) -> WorkflowSpec:
    return WorkflowSpec.from_string(textwrap.dedent(text), "wf.yaml")


def writer_returning(answer: dict[str, Any]) -> type:
    @Agent("writer")
    class Writer:
        @on_assignment
        async def write(self, intent: Any) -> dict[str, Any]:
            return answer

    return Writer


@pytest.mark.asyncio
async def test_a_step_reads_its_wired_inputs_by_name_from_intent_inputs() -> None:
    seen: dict[str, Any] = {}

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent: Any) -> dict[str, Any]:
            seen["draft"] = intent.inputs["draft"]
            seen["size"] = intent.inputs["size"]
            seen["by title"] = intent.inputs["Write Draft"]["text"]
            seen["keys"] = sorted(intent.inputs)
            with pytest.raises(KeyError, match="'drfat' is not a dependency of this intent"):
                intent.inputs["drfat"]
            return {"final": intent.inputs["draft"].upper()}

    wf = workflow(WIRED)
    writer = writer_returning({"text": "hello", "words": 1})
    result = await wf.arun(agents=[writer, Editor], clock=VirtualClock())
    assert result.status == "completed"
    assert seen == {"draft": "hello", "size": 1, "by title": "hello",
                    "keys": ["Write Draft", "draft", "size"]}
    assert result.intents["edit"].state == {"final": "HELLO"}


@pytest.mark.asyncio
async def test_wired_values_are_read_only_like_the_rest_of_inputs() -> None:
    caught: list[BaseException] = []

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent: Any) -> dict[str, Any]:
            try:
                intent.inputs["draft"].append("mine")
            except TypeError as exc:
                caught.append(exc)
            return {"copy": intent.inputs.to_plain()["draft"]}

    wf = workflow(WIRED)
    writer = writer_returning({"text": ["a"], "words": 1})
    result = await wf.arun(agents=[writer, Editor], clock=VirtualClock())
    assert result.status == "completed"
    assert len(caught) == 1
    assert result.intents["Write Draft"].state["text"] == ["a"]
    assert result.intents["edit"].state == {"copy": ["a"]}


@pytest.mark.asyncio
@pytest.mark.parametrize("guarded", [False, True])
async def test_a_missing_upstream_key_fails_the_attempt_once_naming_step_input_and_key(
    guarded: bool,
) -> None:
    calls: list[str] = []

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent: Any) -> dict[str, Any]:
            calls.append(intent.title)
            return {}

    text = WIRED
    if guarded:  # a coordinator with guardrails: the dispatch goes through the chain
        text = WIRED.replace("workflow:\n", "coordinator:\n  id: lead\n  guardrails:\n"
                                           "    - {type: budget, max_cost_usd: 5}\n"
                                           "workflow:\n", 1)
    wf = workflow(text)
    writer = writer_returning({"words": 3})  # no "text"
    result = await wf.arun(agents=[writer, Editor], clock=VirtualClock())
    assert result.status == "failed"
    edit = result.intents["edit"]
    assert calls == []  # the handler never ran
    assert edit.attempts == 1  # never retried, whatever the retry policy
    assert edit.error_type == "UnresolvableInputError"
    assert edit.error is not None
    assert "step 'edit' input 'draft' reads 'text' from 'Write Draft'" in edit.error
    assert "has no 'text' (it has 'words')" in edit.error
    [failed] = result.events.of_type("attempt_failed")
    assert failed.data["error_type"] == "UnresolvableInputError"
    assert not result.events.of_type("retry_scheduled")


def test_unresolvable_input_error_is_a_workflow_error_with_the_0_17_attributes() -> None:
    error = UnresolvableInputError("m", phase_name="edit", input="draft",
                                   unresolvable_refs=["Write Draft.text"], task_id="i-1")
    assert isinstance(error, WorkflowError) and isinstance(error, OpenIntentError)
    assert (error.phase_name, error.input, error.unresolvable_refs, error.task_id) == (
        "edit", "draft", ["Write Draft.text"], "i-1")


@pytest.mark.asyncio
async def test_the_seed_workflow_with_inputs_added_runs_with_real_agents() -> None:
    text = SEED.read_text(encoding="utf-8").replace(
        "    depends_on: [peer_review]\n",
        "    depends_on: [peer_review]\n    inputs: {verdict: peer_review.approved}\n")
    assert "inputs:" in text
    wf = WorkflowSpec.from_string(text, "reviewed_content.yaml")
    seen: dict[str, Any] = {}

    @Agent("writer")
    class Writer:
        @on_assignment
        async def write(self, intent: Any) -> dict[str, Any]:
            return {"draft": "text"}

    def reviewer(agent_id: str) -> type:
        @Agent(agent_id)
        class Reviewer:
            @on_assignment
            async def review(self, intent: Any) -> dict[str, Any]:
                return {"approved": intent.inputs["Write Draft"]["draft"] == "text"}

        return Reviewer

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent: Any) -> dict[str, Any]:
            seen["verdict"] = intent.inputs["verdict"]
            seen["title"] = intent.inputs["Peer Review"]["approved"]
            return {"final": intent.inputs["verdict"]}

    agents = [Writer, reviewer("reviewer-a"), reviewer("reviewer-b"), Editor]
    async with Runtime(agents=agents, clock=VirtualClock()) as rt:
        result = await rt.run(wf)  # the seed's coordinator and guardrails (the guarded path)
    assert result.status == "completed"
    assert seen == {"verdict": True, "title": True}
    assert result.intents["Final Edit"].state == {"final": True}
    assert wf.to_portfolio_spec().intents[2].inputs == {"verdict": ("Peer Review", "approved")}


@pytest.mark.asyncio
async def test_resolve_inputs_still_gives_the_same_values() -> None:
    wf = workflow(WIRED)
    seen: dict[str, Any] = {}

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent: Any) -> dict[str, Any]:
            seen.update(wf.resolve_inputs(intent))
            return {"same": seen == {k: intent.inputs[k] for k in ("draft", "size")}}

    writer = writer_returning({"text": "t", "words": 2})
    result = await wf.arun(agents=[writer, Editor], clock=VirtualClock())
    assert result.intents["edit"].state == {"same": True}
    assert seen == {"draft": "t", "size": 2}


def test_a_wired_input_named_like_a_dependency_title_is_a_load_error() -> None:
    with pytest.raises(WorkflowValidationError) as caught:
        workflow("""\
            openintent: "1.0"
            info: {name: t}
            workflow:
              write: {assign: w, description: d}
              edit:
                assign: e
                description: d
                depends_on: [write]
                inputs: {write: write.text}
        """)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (9, 21)  # at the reference
    assert "step 'edit' input 'write' has the title of one of its dependencies" in problem.message


# ---------------------------------------------------------------- IntentSpec(inputs=...)


@pytest.mark.asyncio
async def test_intent_spec_inputs_wire_values_in_plain_python() -> None:
    seen: dict[str, Any] = {}

    @Agent("producer")
    class Producer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"rows": [1, 2], "v1.2": "dotted"}

    @Agent("consumer")
    class Consumer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            seen.update({k: intent.inputs[k] for k in ("rows", "version")})
            return {}

    spec = PortfolioSpec("p", [
        IntentSpec("Load data", assign="producer"),
        IntentSpec("Use", assign="consumer", depends_on=["Load data"],
                   inputs={"rows": "Load data.rows", "version": ("Load data", "v1.2")}),
    ])
    async with Runtime(agents=[Producer, Consumer], clock=VirtualClock()) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    assert seen == {"rows": [1, 2], "version": "dotted"}
    assert spec.intents[1].inputs == {"rows": ("Load data", "rows"),
                                      "version": ("Load data", "v1.2")}
    assert spec.intents[0].inputs == {}


@pytest.mark.asyncio
async def test_a_missing_key_of_a_plain_intent_names_the_intent() -> None:
    @Agent("producer")
    class Producer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {}

    spec = PortfolioSpec("p", [
        IntentSpec("A", assign="producer"),
        IntentSpec("B", assign="producer", depends_on=["A"], inputs={"x": "A.rows"},
                   retry={"max_attempts": 2}, timeout=5),
    ])
    async with Runtime(agents=[Producer], clock=VirtualClock()) as rt:
        result = await rt.run(spec)
    b = result.intents["B"]
    assert (b.status, b.attempts, b.error_type) == ("failed", 1, "UnresolvableInputError")
    assert b.error is not None
    assert "intent 'B' input 'x' reads 'rows' from 'A', whose final state has no 'rows' " \
           "(it has no keys)" in b.error


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": "Other.rows"}, "input 'x' reads 'rows' from 'Other', which is not in its "
                              "depends_on"),
        ({"A": "A.rows"}, "input 'A' has the title of one of its dependencies"),
        ({"x": "rows"}, "inputs['x'] must be a (dependency title, state key) pair"),
        ({"x": ("A",)}, "inputs['x'] must be a (dependency title, state key) pair"),
        ({"x": "A."}, "inputs['x'] must be a (dependency title, state key) pair"),
        (["x"], "inputs must map input names to (title, key) pairs"),
    ],
)
def test_intent_spec_inputs_are_checked_when_the_spec_is_built(
    inputs: Any, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        IntentSpec("B", depends_on=["A"], inputs=inputs)


@pytest.mark.asyncio
async def test_a_step_the_coordinator_fans_out_gets_its_wired_inputs_too() -> None:
    wf = workflow("""\
        openintent: "1.0"
        info: {name: fan}
        coordinator: {id: lead, agents: [editor-a, editor-b]}
        workflow:
          write: {assign: writer, description: d, outputs: {text: string}}
          edit:
            description: every editor reads the draft
            depends_on: [write]
            inputs: {draft: write.text}
    """)
    seen: dict[str, Any] = {}

    def editor(agent_id: str) -> type:
        @Agent(agent_id)
        class Editor:
            @on_assignment
            async def edit(self, intent: Any) -> dict[str, Any]:
                seen[agent_id] = intent.inputs["draft"]
                return {"ok": True}

        return Editor

    agents = [writer_returning({"text": "t"}), editor("editor-a"), editor("editor-b")]
    result = await wf.arun(agents=agents, clock=VirtualClock())
    assert result.status == "completed"
    assert seen == {"editor-a": "t", "editor-b": "t"}
