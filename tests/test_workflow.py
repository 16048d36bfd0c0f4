"""YAML workflows: loading, the 0.17 names, running (registered, simulated, ``rt.run(wf)``),
the YAML coordinator, approvals of steps, declared outputs and inputs."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from openintent import OpenIntentError, Runtime
from openintent.agents import Agent, Coordinator, PortfolioSpec, on_all_complete, on_assignment
from openintent.testing import SimulatedAgent, VirtualClock
from openintent.workflow import (
    WorkflowSpec,
    WorkflowValidationError,
    load_workflow,
    validate_workflow,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEED = EXAMPLES / "reviewed_content.yaml"


def workflow(text: str) -> WorkflowSpec:
    return WorkflowSpec.from_string(textwrap.dedent(text), "wf.yaml")


def test_the_seed_snippet_runs_as_written(tmp_path, monkeypatch):
    # The seed: wf = load_workflow("reviewed_content.yaml"); wf.run() - with agents registered.
    shutil.copy(SEED, tmp_path / "reviewed_content.yaml")
    monkeypatch.chdir(tmp_path)

    @Agent("writer")
    class Writer:
        @on_assignment
        async def write(self, intent):
            return {"draft": "..."}

    for agent_id in ("reviewer-a", "reviewer-b"):
        @Agent(agent_id)
        class Reviewer:
            @on_assignment
            async def review(self, intent):
                return {"approved": True}

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent):
            return {"final": intent.inputs["Peer Review"]["approved"]}

    namespace: dict[str, object] = {}
    exec(  # noqa: S102 - the seed's snippet, verbatim
        'from openintent.workflow import load_workflow\n\n'
        'wf = load_workflow("reviewed_content.yaml")\n'
        'wf.run()\n',
        namespace,
    )
    wf = namespace["wf"]
    result = wf.run()
    assert result.status == "completed"
    assert result.intents["Final Edit"].state == {"final": True}
    started = result.events.of_type("run_started")[0]
    assert started.data["coordinator"] == "content-lead"


def test_the_seed_workflow_runs_simulated_in_order():
    wf = load_workflow(SEED)
    result = wf.run(simulate=True, clock=VirtualClock())
    assert result.status == "completed"
    order = [result.intents[t].id for t in ("Write Draft", "Peer Review", "Final Edit")]
    assert [e.intent_id for e in result.events.of_type("completed")] == order
    assert validate_workflow(SEED) == [
        f"{SEED}:{line}:3: step {key!r} has no description; a line saying what it does helps "
        "whoever reads the workflow (and the agent)"
        for line, key in ((15, "write"), (20, "peer_review"), (25, "edit"))
    ]


def test_the_0_17_attribute_names_are_kept():
    wf = load_workflow(SEED)
    assert wf.name == "Reviewed Content Pipeline"
    assert wf.description == ""
    assert wf.workflow_version == "1.0.0"
    assert wf.version == "1.0"
    assert [p.name for p in wf.phases] == ["write", "peer_review", "edit"]
    write, review, edit = wf.phases
    assert (write.title, write.assign, write.depends_on) == ("Write Draft", "writer", ())
    assert write.constraints == ["Formal tone", "Under 1000 words"]
    assert review.assign == ("reviewer-a", "reviewer-b")
    assert edit.depends_on == ("peer_review",)
    assert wf.agents == {}
    assert wf.source_path == SEED


def test_to_portfolio_spec_keeps_titles_keys_and_dependencies():
    spec = load_workflow(SEED).to_portfolio_spec()
    assert isinstance(spec, PortfolioSpec)
    assert [(i.title, i.key, i.depends_on) for i in spec.intents] == [
        ("Write Draft", "write", ()),
        ("Peer Review", "peer_review", ("Write Draft",)),
        ("Final Edit", "edit", ("Peer Review",)),
    ]


def test_a_title_defaults_to_the_step_key_and_one_string_is_a_list():
    wf = workflow("""\
        openintent: "1.0"
        info: {name: t}
        workflow:
          a: {assign: x, description: first}
          b: {assign: x, depends_on: a, tags: urgent, description: second}
    """)
    assert wf.phase("b").title == "b"
    assert wf.phase("b").depends_on == ("a",)
    assert wf.phase("b").tags == ("urgent",)


@pytest.mark.asyncio
async def test_rt_run_and_rt_start_take_a_workflow_spec():
    wf = load_workflow(SEED)
    agents = [SimulatedAgent(a, {"ok": True}) for a in ("writer", "reviewer-a", "reviewer-b",
                                                         "editor")]
    async with Runtime(agents=agents, clock=VirtualClock()) as rt:
        result = await rt.run(wf)
        handle = await rt.start(wf)
        assert (await handle.result()).status == "completed"
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_the_yaml_coordinator_block_is_the_coordinator():
    wf = workflow("""\
        openintent: "1.0"
        info: {name: fan-out}
        coordinator:
          id: yaml-lead
          strategy: parallel
          agents: [a, b]
        workflow:
          vote: {description: both answer}
    """)
    result = await wf.arun(simulate=True, clock=VirtualClock())
    assert result.status == "completed"
    assert result.events.of_type("run_started")[0].data["coordinator"] == "yaml-lead"
    assert result.intents["vote"].assigned_to == "a,b"


@pytest.mark.asyncio
async def test_a_registered_coordinator_with_the_yaml_id_takes_over():
    @Coordinator("content-lead", strategy="sequential")
    class Lead:
        @on_all_complete
        async def done(self, portfolio):
            return {"by": "registered"}

    result = await load_workflow(SEED).arun(simulate=True, clock=VirtualClock())
    assert result.output == {"by": "registered"}


@pytest.mark.asyncio
async def test_coordinator_argument_wins_over_the_yaml_block():
    @Coordinator("other")
    class Other:
        @on_all_complete
        async def done(self, portfolio):
            return "other"

    result = await load_workflow(SEED).arun(simulate=True, coordinator=Other,
                                            clock=VirtualClock())
    assert result.output == "other"


@pytest.mark.asyncio
async def test_the_yaml_budget_guardrail_halts_the_run():
    wf = workflow("""\
        openintent: "1.0"
        info: {name: costly}
        coordinator:
          id: lead
          guardrails:
            - {type: budget, max_cost_usd: 1.0}
        workflow:
          a: {assign: spender, description: spends}
          b: {assign: spender, depends_on: [a], description: spends more}
    """)
    spender = SimulatedAgent("spender", {"ok": 1}, cost_usd=2.0)
    result = await wf.arun(agents=[spender], clock=VirtualClock())
    assert result.status == "halted"


@pytest.mark.asyncio
async def test_requires_approval_waits_for_an_approval():
    wf = workflow("""\
        openintent: "1.0"
        info: {name: gated}
        workflow:
          publish: {assign: p, requires_approval: true, description: goes live}
    """)
    async with Runtime(agents=[SimulatedAgent("p", {"ok": 1})], clock=VirtualClock()) as rt:
        handle = await rt.start(wf)
        async for event in handle.events():
            if event.type == "approval_requested":
                break
        [request] = rt.pending_approvals()
        assert request.title == "publish"
        await rt.approve(request.intent_id, by="ops")
        assert (await handle.result()).status == "completed"


OUTPUTS = """\
    openintent: "1.0"
    info: {name: typed}
    workflow:
      write:
        assign: writer
        description: drafts
        outputs: {text: string, words: integer}
      edit:
        assign: editor
        description: edits
        depends_on: [write]
        inputs: {draft: write.text}
"""


@pytest.mark.asyncio
async def test_simulated_outputs_have_their_declared_types_and_inputs_resolve():
    wf = workflow(OUTPUTS)
    seen = {}

    @Agent("editor")
    class Editor:
        @on_assignment
        async def edit(self, intent):
            seen.update(wf.resolve_inputs(intent))
            return {"ok": True}

    result = await wf.arun(agents=[Editor], simulate=True, clock=VirtualClock())
    assert result.status == "completed"
    state = result.intents["write"].state
    assert isinstance(state["text"], str) and isinstance(state["words"], int)
    assert seen == {"draft": state["text"]}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"text": "x"}, "step 'write' returned no output 'words'"),
        ({"text": "x", "words": "many"}, "step 'write' output 'words' is a str"),
    ],
)
async def test_declared_outputs_are_checked_when_the_step_completes(answer, message):
    wf = workflow(OUTPUTS)
    agents = [SimulatedAgent("writer", answer), SimulatedAgent("editor", {"ok": 1})]
    result = await wf.arun(agents=agents, clock=VirtualClock())
    assert result.status == "failed"
    assert message in result.intents["write"].error
    assert result.intents["write"].error_type == "OutputCheckError"


def test_an_unknown_agent_at_run_time_names_the_step_and_its_assign():
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflow(SEED).run()
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (17, 13)
    assert "step 'write' assign: no agent" in problem.message
    assert "simulate=True" in problem.message
    assert str(caught.value).startswith(f"{SEED}:17:13: ")


def test_a_step_nobody_can_route_is_an_error_at_the_step():
    wf = workflow("""\
        openintent: "1.0"
        info: {name: t}
        coordinator: {id: lead}
        workflow:
          orphan: {description: nobody does it}
    """)
    with pytest.raises(WorkflowValidationError) as caught:
        wf.run(simulate=True)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.column) == ("wf.yaml", 5, 3)
    assert "step 'orphan' has no assign" in problem.message


@pytest.mark.asyncio
async def test_run_inside_an_event_loop_points_to_arun():
    with pytest.raises(OpenIntentError, match="await wf.arun"):
        load_workflow(SEED).run(simulate=True)


def test_a_path_like_and_a_relative_path_both_load(tmp_path, monkeypatch):
    shutil.copy(SEED, tmp_path / "w.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_workflow("w.yaml").name == load_workflow(Path(os.getcwd()) / "w.yaml").name


def test_the_readme_workflow_loads_and_its_approvals_wait():
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    [text] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
              if "requires_approval" in b]
    wf = WorkflowSpec.from_string(text, "README.md")
    assert [p.name for p in wf.phases] == ["write", "edit"]
    assert wf.phase("edit").inputs == {"draft": ("write", "text")}
    assert wf.coordinator is not None and wf.coordinator.agents == ("writer", "editor")


@pytest.mark.asyncio
async def test_a_yaml_approval_guardrail_matches_step_keys():
    wf = workflow("""\
        openintent: "1.0"
        info: {name: gated}
        coordinator:
          id: lead
          guardrails: [{type: approval, require_for: [publish]}]
        workflow:
          publish: {title: Publish it, assign: p, description: goes live}
    """)
    async with Runtime(agents=[SimulatedAgent("p", {"ok": 1})], clock=VirtualClock()) as rt:
        handle = await rt.start(wf)
        async for event in handle.events():
            if event.type == "approval_requested":
                break
        [request] = rt.pending_approvals()
        assert request.title == "Publish it"
        await rt.deny(request.intent_id, by="ops")
        assert (await handle.result()).status == "failed"


def test_run_inside_trio_points_to_arun_too():
    trio = pytest.importorskip("trio")
    wf = load_workflow(SEED)

    async def main():
        with pytest.raises(OpenIntentError, match="await wf.arun"):
            wf.run(simulate=True)
        return (await wf.arun(simulate=True)).status

    assert trio.run(main) == "completed"


@pytest.mark.asyncio
async def test_the_testing_guide_workflow_example(monkeypatch):
    import re

    guide = (EXAMPLES.parent / "docs" / "testing.md").read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", guide, flags=re.S)
              if "test_the_pipeline_completes_with_a_slow_writer" in b]
    monkeypatch.chdir(EXAMPLES.parent)
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 - our own docs
    await namespace["test_the_pipeline_completes_with_a_slow_writer"]()
