"""Pictures: Mermaid and Graphviz DOT of portfolio specs and of finished runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openintent import Runtime, SpecError, VirtualClock
from openintent._viz_text import dot_string, gantt_text, mermaid_text
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec
from openintent.guardrails import ApprovalGuardrail
from openintent.testing import SimulatedAgent

HOSTILE = [
    'say "hi"',
    "a]b[c",
    'x"]\n  n9["pwned',
    "line one\nline two\r\nthree",
    "naïve 日本語 🚀",
    "<script>alert(1)</script>",
    "50% #1; `code` & {braces} | pipe --> end",
    "back\\slash \\N \\l",
    "tab\there\x00nul\x7fdel",
    "end",
]

START = datetime(2026, 1, 1, tzinfo=UTC)


def release() -> PortfolioSpec:
    return PortfolioSpec(
        "release",
        [
            IntentSpec("build", assign="builder"),
            IntentSpec("test", assign=["tester", "qa"], depends_on=["build"],
                       retry={"max_attempts": 3}, timeout=30),
            IntentSpec("deploy", assign="deployer", depends_on=["test"], tags=["prod"]),
            IntentSpec("announce", depends_on=["deploy"]),
        ],
    )


def decode_mermaid(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label.replace("<br/>", "\n"))


def decode_dot(quoted: str) -> str:
    assert quoted.startswith('"') and quoted.endswith('"')
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), quoted[1:-1])


def normalised(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(" " if (ord(c) < 32 and c != "\n") or 127 <= ord(c) < 160 else c
                   for c in text)


# ---------------------------------------------------------------------------- specs


def test_spec_mermaid_shows_the_dag_assignees_approvals_and_guardrails() -> None:
    text = release().to_mermaid(
        guardrails=[{"type": "approval", "require_for": ["prod"]},
                    {"type": "budget", "max_cost_usd": 5}]
    )
    assert text.splitlines() == [
        "---",
        'title: "release"',
        "---",
        "flowchart TD",
        '    n0["build<br/>agent: builder"]',
        '    n1["test<br/>agents: tester, qa<br/>timeout 30s<br/>up to 3 attempts"]',
        '    n2["deploy<br/>agent: deployer<br/>needs approval"]',
        '    n3["announce<br/>unassigned"]',
        "    n0 --> n1",
        "    n1 --> n2",
        "    n2 --> n3",
        '    notes[/"guardrail: approval require_for=[prod]<br/>'
        'guardrail: budget max_cost_usd=5"/]',
        "    classDef notes fill:#f3f4f6,stroke:#9ca3af,color:#111827",
        "    class notes notes",
        "    classDef s_approval stroke:#d97706,stroke-width:3px",
        "    class n2 s_approval",
    ]


def test_spec_pictures_take_the_coordinator_and_its_guardrails() -> None:
    @Coordinator("release-manager", strategy="sequential",
                 guardrails=[ApprovalGuardrail(require_for=["deploy"], approvers=["alice"])])
    class Release:
        pass

    mermaid = release().to_mermaid(coordinator=Release)
    assert "coordinator: release-manager (sequential)" in mermaid
    assert "guardrail: approval require_for=[deploy] approvers=[alice] on_timeout=deny" in mermaid
    assert '    n3["announce<br/>routed by the coordinator"]' in mermaid
    assert "    class n2 s_approval" in mermaid
    dot = release().to_dot(coordinator=Release)
    assert 'n2 [label="deploy\\nagent: deployer\\nneeds approval", color="#d97706", ' \
           'penwidth=3];' in dot
    assert "coordinator: release-manager (sequential)" in dot


def test_spec_dot_is_a_digraph_with_one_node_per_intent_and_an_edge_per_dependency() -> None:
    text = release().to_dot()
    assert text.startswith('digraph "release" {\n')
    assert text.rstrip().endswith("}")
    assert re.findall(r"^    (n\d+) \[label=", text, re.M) == ["n0", "n1", "n2", "n3"]
    assert re.findall(r"^    (n\d+ -> n\d+);", text, re.M) == ["n0 -> n1", "n1 -> n2", "n2 -> n3"]


@pytest.mark.parametrize("title", HOSTILE)
def test_hostile_titles_stay_inside_their_mermaid_labels(title: str) -> None:
    spec = PortfolioSpec(title, [IntentSpec(title, assign=title),
                                 IntentSpec("after", depends_on=[title])])
    text = spec.to_mermaid(guardrails=[{"type": "approval", "require_for": [title]}])
    lines = text.splitlines()
    assert lines[:4] == ["---", lines[1], "---", "flowchart TD"]
    assert re.fullmatch(r'title: "([^"\\]|\\.)*"', lines[1])
    label = re.fullmatch(r'    n0\["([^"]*)"\]', lines[4])
    assert label is not None, lines[4]
    assert decode_mermaid(label.group(1)).split("\n")[0:1] == [normalised(title).split("\n")[0]]
    assert "    n0 --> n1" in lines
    body = "\n".join(lines[3:])  # the title is a YAML string, rendered as text
    assert "<" not in body.replace("<br/>", ""), "no raw tag opener"
    assert "`" not in body and ";" not in re.sub(r"#\d+;", "", body)


@pytest.mark.parametrize("title", HOSTILE)
def test_hostile_titles_stay_inside_their_dot_strings(title: str) -> None:
    spec = PortfolioSpec(title, [IntentSpec(title, assign="a"),
                                 IntentSpec("after", depends_on=[title])])
    text = spec.to_dot()
    node = re.search(r'^    n0 \[label=("(?:[^"\\\n]|\\.)*")\];$', text, re.M)
    assert node is not None, text
    assert decode_dot(node.group(1)) == normalised(title) + "\nagent: a"
    assert "    n0 -> n1;" in text
    assert text.count("\n}") == 1


@given(st.text())
def test_mermaid_labels_decode_to_the_text(text: str) -> None:
    escaped = mermaid_text(text)
    assert '"' not in escaped and "\n" not in escaped
    assert decode_mermaid(escaped) == normalised(text)


@given(st.text())
def test_dot_strings_decode_to_the_text(text: str) -> None:
    quoted = dot_string(text)
    assert re.fullmatch(r'"(?:[^"\\\n]|\\.)*"', quoted)
    assert decode_dot(quoted) == normalised(text)


@given(st.text())
def test_gantt_names_are_one_line_without_gantt_syntax(text: str) -> None:
    name = gantt_text(text)
    assert name and not set(name) & set(":#;%\n\r")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graphviz_accepts_the_hostile_dot() -> None:
    for title in HOSTILE:
        spec = PortfolioSpec(title, [IntentSpec(title, assign="a"),
                                     IntentSpec("after", depends_on=[title])])
        done = subprocess.run(["dot", "-Tsvg"], input=spec.to_dot().encode(),
                              capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
    from openintent.workflow import WorkflowSpec

    done = subprocess.run(["dot", "-Tsvg"], capture_output=True, check=False,
                          input=WorkflowSpec.from_string(WORKFLOW).to_dot().encode())
    assert done.returncode == 0, done.stderr.decode()


MERMAID_MODULES = os.environ.get("OPENINTENT_MERMAID_MODULES")


@pytest.mark.skipif(
    not MERMAID_MODULES or shutil.which("node") is None,
    reason="set OPENINTENT_MERMAID_MODULES to a node_modules with mermaid and jsdom "
    "(npm install mermaid jsdom) to parse the pictures with Mermaid itself",
)
def test_mermaid_parses_every_picture_with_hostile_titles(tmp_path: Path) -> None:
    import anyio

    from openintent.workflow import WorkflowSpec

    pictures = [release().to_mermaid(guardrails=[{"type": "approval", "require_for": ["prod"]}]),
                WorkflowSpec.from_string(WORKFLOW).to_mermaid()]
    for title in HOSTILE:
        spec = PortfolioSpec(title, [IntentSpec(title, assign=title),
                                     IntentSpec("after", assign=title, depends_on=[title])])
        pictures.append(spec.to_mermaid(
            guardrails=[{"type": "approval", "require_for": [title], "approvers": [title]}]))

        async def run(spec: PortfolioSpec = spec, title: str = title) -> Any:
            async with Runtime(agents=[SimulatedAgent(title, delay=1)],
                               clock=VirtualClock(start=START)) as rt:
                return await rt.run(spec)

        result = anyio.run(run)
        pictures += [result.to_mermaid(), result.to_mermaid(kind="gantt")]
    source = tmp_path / "pictures.mmd"
    source.write_text("\n=====\n".join(pictures), encoding="utf-8")
    done = subprocess.run(
        ["node", str(Path(__file__).with_name("mermaid_check.mjs")), str(source)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    verdicts = done.stdout.splitlines()
    assert len(verdicts) == len(pictures), done.stderr
    assert [v for v in verdicts if not v.startswith("OK")] == []


# ---------------------------------------------------------------------------- results


async def finished_run(**options: Any) -> Any:
    spec = PortfolioSpec("ship", [
        IntentSpec("build", assign="builder"),
        IntentSpec("test", assign="tester", depends_on=["build"], retry={"max_attempts": 2}),
        IntentSpec("deploy", assign="deployer", depends_on=["test"]),
        IntentSpec("notify", assign="builder", depends_on=["deploy"]),
    ])
    agents = [
        SimulatedAgent("builder", result={"ok": True}, delay=2, cost_usd=0.25),
        SimulatedAgent("tester", delay=1, fail_times=1),
        SimulatedAgent("deployer", delay=3, fail_times=9),
    ]
    async with Runtime(agents=agents, clock=VirtualClock(start=START), seed=0) as rt:
        return await rt.run(spec, **options)


@pytest.mark.asyncio
async def test_result_flowchart_colours_each_intent_by_status() -> None:
    result = await finished_run()
    text = result.to_mermaid()
    assert '    n0["build<br/>completed<br/>agent: builder<br/>$0.25"]' in text
    assert '    n1["test<br/>completed, 2 attempts<br/>agent: tester"]' in text
    assert '    n2["deploy<br/>failed<br/>agent: deployer<br/>RuntimeError: deployer failed ' \
           '(simulated, call 1)"]' in text
    assert '    n3["notify<br/>skipped<br/>agent: builder"]' in text
    assert "    classDef s_completed fill:#c8f7c5,color:#111827" in text
    assert "    class n0,n1 s_completed" in text
    assert "    classDef s_failed fill:#f8c4c4,color:#111827" in text
    assert "    class n2 s_failed" in text
    assert "    class n3 s_skipped" in text
    assert f"run {result.portfolio_id}: failed, $0.25" in text
    dot = result.to_dot()
    assert 'n2 [label="deploy\\nfailed\\nagent: deployer' in dot
    assert 'fillcolor="#f8c4c4"];' in dot


@pytest.mark.asyncio
async def test_result_gantt_shows_when_each_attempt_ran() -> None:
    result = await finished_run()  # seed=0: the retry's jittered delay is 0.922s
    assert result.to_mermaid(kind="gantt").splitlines() == [
        "---",
        'title: "ship"',
        "---",
        "gantt",
        "    dateFormat YYYY-MM-DD HH:mm:ss.SSS",
        "    axisFormat %H:%M:%S",
        "    section Intents",
        "    build [builder] :done, a0, 2026-01-01 00:00:00.000, 2026-01-01 00:00:02.000",
        "    test [tester] :crit, a1, 2026-01-01 00:00:02.000, 2026-01-01 00:00:03.000",
        "    test (attempt 2) [tester] :done, a2, 2026-01-01 00:00:03.922, "
        "2026-01-01 00:00:04.922",
        "    deploy [deployer] :crit, a3, 2026-01-01 00:00:04.922, 2026-01-01 00:00:07.922",
    ]


@pytest.mark.asyncio
async def test_gantt_names_with_gantt_syntax_are_made_harmless() -> None:
    spec = PortfolioSpec("a: b # c; d", [IntentSpec("step: one # two; 100%\nnext",
                                                      assign="x")])
    async with Runtime(agents=[SimulatedAgent("x", delay=1)],
                       clock=VirtualClock(start=START)) as rt:
        result = await rt.run(spec)
    lines = result.to_mermaid(kind="gantt").splitlines()
    assert lines[1] == 'title: "a: b # c; d"'
    assert lines[-1] == ("    step꞉ one ＃ two； 100％ next [x] :done, a0, "
                         "2026-01-01 00:00:00.000, 2026-01-01 00:00:01.000")


@pytest.mark.asyncio
async def test_an_unknown_picture_kind_is_an_error_that_lists_the_kinds() -> None:
    result = await finished_run()
    with pytest.raises(SpecError, match='kind is "flowchart" or "gantt"'):
        result.to_mermaid(kind="pie")


# ---------------------------------------------------------------------------- workflows

WORKFLOW = '''
openintent: "1.0"
info: {name: 'Say "hi" #1; <b>'}
coordinator:
  id: lead
  strategy: sequential
  guardrails:
    - {type: budget, max_cost_usd: 5}
workflow:
  write:
    title: "Draft: \\"one\\"\\n[two]"
    assign: writer
    outputs: {text: string, words: integer}
  review:
    assign: [a, b]
    depends_on: write
    inputs: {draft: write.text}
  publish:
    assign: p
    depends_on: [review]
    requires_approval: true
'''


def test_workflow_pictures_show_steps_inputs_outputs_approvals_and_the_coordinator() -> None:
    from openintent.workflow import WorkflowSpec

    wf = WorkflowSpec.from_string(WORKFLOW)
    assert wf.to_mermaid().splitlines() == [
        "---",
        'title: "Say \\"hi\\" #1; <b>"',
        "---",
        "flowchart TD",
        '    n0["Draft: #34;one#34;<br/>[two]<br/>agent: writer<br/>step: write<br/>'
        'outputs: text (string), words (integer)"]',
        '    n1["review<br/>agents: a, b<br/>inputs: draft = write.text"]',
        '    n2["publish<br/>agent: p<br/>needs approval"]',
        "    n0 --> n1",
        "    n1 --> n2",
        '    notes[/"coordinator: lead (sequential)<br/>guardrail: budget max_cost_usd=5"/]',
        "    classDef notes fill:#f3f4f6,stroke:#9ca3af,color:#111827",
        "    class notes notes",
        "    classDef s_approval stroke:#d97706,stroke-width:3px",
        "    class n2 s_approval",
    ]
    dot = wf.to_dot()
    assert dot.startswith('digraph "Say \\"hi\\" #1; <b>" {')
    assert '    n0 [label="Draft: \\"one\\"\\n[two]\\nagent: writer\\nstep: write\\n' \
           'outputs: text (string), words (integer)"];' in dot
    assert '    n2 [label="publish\\nagent: p\\nneeds approval", color="#d97706", penwidth=3];' \
        in dot


def test_the_example_workflow_pictures() -> None:
    from openintent.workflow import load_workflow

    wf = load_workflow(Path(__file__).resolve().parent.parent / "examples" /
                       "reviewed_content.yaml")
    text = wf.to_mermaid()
    assert '    n1["Peer Review<br/>agents: reviewer-a, reviewer-b<br/>step: peer_review"]' in text
    assert "coordinator: content-lead (sequential)" in text
    assert "guardrail: timeout max_seconds=600" in wf.to_dot()


@pytest.mark.asyncio
async def test_gantt_of_a_cancelled_run_shows_what_was_still_running() -> None:
    spec = PortfolioSpec("long", [IntentSpec("quick", assign="fast"),
                                  IntentSpec("slow", assign="slow"),
                                  IntentSpec("fan", assign=["fast", "slow"])])
    agents = [SimulatedAgent("fast", delay=1), SimulatedAgent("slow", delay=100)]
    async with Runtime(agents=agents, clock=VirtualClock(start=START)) as rt:
        handle = await rt.start(spec)
        async for event in handle.events():
            if event.type == "completed":
                await handle.cancel()
        result = await handle.result()
    assert result.status == "cancelled"
    lines = result.to_mermaid(kind="gantt").splitlines()[7:]
    assert lines == [
        "    quick [fast] :done, a0, 2026-01-01 00:00:00.000, 2026-01-01 00:00:01.000",
        "    slow [slow] :crit, a1, 2026-01-01 00:00:00.000, 2026-01-01 00:00:01.000",
        "    fan [fast,slow] :crit, a2, 2026-01-01 00:00:00.000, 2026-01-01 00:00:01.000",
    ]
    assert "    class n1,n2 s_cancelled" in result.to_mermaid()


def test_guardrails_are_described_whatever_form_they_take() -> None:
    from openintent.guardrails import BudgetGuardrail

    async def no_fridays(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    text = release().to_mermaid(guardrails=[
        BudgetGuardrail(max_cost_usd=5), {"type": "timeout", "max_seconds": 60}, no_fridays,
    ])
    assert "guardrail: budget max_cost_usd=5.0" in text
    assert "guardrail: timeout max_seconds=60" in text
    assert "guardrail: no_fridays (middleware)" in text


@pytest.mark.asyncio
async def test_result_flowchart_says_who_decided_an_approval() -> None:
    spec = PortfolioSpec("gated", [IntentSpec("ship", assign="a"), IntentSpec("tell", assign="a")])
    async with Runtime(agents=[SimulatedAgent("a")], clock=VirtualClock(),
                       guardrails=[{"type": "approval", "require_for": ["ship", "tell"]}]) as rt:
        handle = await rt.start(spec)
        async for event in handle.events():
            if event.type == "approval_requested":
                decide = handle.approve if event.title == "ship" else handle.deny
                await decide(event.intent_id, by=f"{event.title}-boss")
        result = await handle.result()
    text = result.to_mermaid()
    assert '    n0["ship<br/>completed<br/>agent: a<br/>approved by ship-boss"]' in text
    assert '    n1["tell<br/>failed<br/>approved by' not in text
    assert "denied by tell-boss" in text
