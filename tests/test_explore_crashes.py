"""``openintent.testing.explore_crashes``: crash a run at every journal commit, resume it,
check the invariants; and catch a workflow (or a library) that breaks one."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from openintent import IntentStatus
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import CrashReport, CrashSafetyError, explore_crashes

pytestmark = pytest.mark.asyncio


def pipeline(width: int = 3) -> PortfolioSpec:
    intents = [IntentSpec("Fetch", assign="worker")]
    intents += [IntentSpec(f"Part {n}", assign="worker", depends_on=["Fetch"])
                for n in range(width)]
    intents.append(IntentSpec("Merge", assign="worker",
                              depends_on=[f"Part {n}" for n in range(width)]))
    return PortfolioSpec("pipeline", intents)


def worker_class(sent: list[str] | None = None, check: bool = True) -> type:
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if sent is not None and intent.title == "Merge":

                def send(to: str) -> str:
                    sent.append(to)
                    return f"sent to {to}"

                def sent_already(to: str) -> str | None:
                    return f"sent to {to}" if to in sent else None

                receipt = await self.effect(intent, "email", send, "ops@example.com",
                                            check=sent_already if check else None)
                return {"receipt": receipt}
            total = sum(len(state) for state in intent.inputs.values())
            return {"title": intent.title, "inputs": total}

    return Worker


async def test_a_healthy_workflow_passes_at_every_commit(tmp_path: Path) -> None:
    report = await explore_crashes(pipeline(), agents=[worker_class()], store_dir=tmp_path)
    assert isinstance(report, CrashReport)
    assert report.commits >= 5
    assert report.points == tuple(range(1, report.commits + 1))
    assert report.failures == () and report.in_doubt == ()
    report.raise_for_failures()  # nothing to raise


async def test_a_sample_of_points_is_seeded(tmp_path: Path) -> None:
    first = await explore_crashes(pipeline(), agents=[worker_class()], store_dir=tmp_path,
                                  points=3, seed=5)
    again = await explore_crashes(pipeline(), agents=[worker_class()], store_dir=tmp_path,
                                  points=3, seed=5)
    assert len(first.points) == 3 and first.points == again.points
    chosen = await explore_crashes(pipeline(), agents=[worker_class()], store_dir=tmp_path,
                                   points=[2, 1])
    assert chosen.points == (1, 2)


async def test_an_effect_with_a_check_happens_once_at_every_point(tmp_path: Path) -> None:
    sent: list[str] = []
    report = await explore_crashes(pipeline(), agents=[worker_class(sent)],
                                   store_dir=tmp_path)
    report.raise_for_failures()
    assert report.in_doubt == ()


async def test_an_effect_without_a_check_is_listed_in_doubt_not_as_a_failure(
    tmp_path: Path,
) -> None:
    sent: list[str] = []
    report = await explore_crashes(pipeline(), agents=[worker_class(sent, check=False)],
                                   store_dir=tmp_path)
    report.raise_for_failures()
    assert report.in_doubt, "some crash point lies between the email and its journaling"
    assert {(doubt.title, doubt.effect) for doubt in report.in_doubt} == {("Merge", "email")}


async def test_an_agent_that_answers_differently_after_a_crash_is_an_outcome_failure(
    tmp_path: Path,
) -> None:
    calls = itertools.count()

    @Agent("worker")
    class Forgetful:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"call": next(calls)}  # depends on how often it was called

    report = await explore_crashes(pipeline(), agents=[Forgetful()], store_dir=tmp_path)
    assert any(failure.invariant == "outcome" for failure in report.failures)
    with pytest.raises(CrashSafetyError, match="crash at commit"):
        report.raise_for_failures()


async def test_a_resume_that_reruns_completed_work_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openintent._resume as resume

    # A broken library: a resume that reopens completed intents too.
    monkeypatch.setattr(resume, "_REOPENED", (*resume._REOPENED, IntentStatus.COMPLETED))
    report = await explore_crashes(pipeline(), agents=[worker_class()], store_dir=tmp_path)
    broken = [failure for failure in report.failures if failure.invariant == "completions"]
    assert broken
    assert broken[0].title is not None and broken[0].events
    assert "dispatched again" in str(broken[0])


async def test_a_coordinated_run_is_explored_too(tmp_path: Path) -> None:
    @Coordinator("lead", agents=["worker"])
    class Lead:
        pass

    report = await explore_crashes(pipeline(2), agents=[worker_class(), Lead],
                                   coordinator=Lead, store_dir=tmp_path, points=6, seed=1)
    report.raise_for_failures()


async def test_points_outside_the_run_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not commits of this run"):
        await explore_crashes(pipeline(), agents=[worker_class()], store_dir=tmp_path,
                              points=[10_000])


# ------------------------------------------------------------------ the library's own examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"explored_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_seed_etl_pipeline_is_crash_safe_at_every_point(tmp_path: Path) -> None:
    etl = example("etl")
    report = await explore_crashes(etl.workflow, agents=[etl.Extractor, etl.Transformer,
                                                         etl.Loader],
                                   coordinator=etl.ETLCoordinator, store_dir=tmp_path)
    report.raise_for_failures()
    assert report.points == tuple(range(1, report.commits + 1))


async def test_the_seed_delegation_example_is_crash_safe_at_every_point(tmp_path: Path) -> None:
    delegation = example("delegation")
    report = await explore_crashes(
        delegation.workflow, agents=[delegation.DevA, delegation.DevB, delegation.QA],
        coordinator=delegation.ProjectCoordinator, store_dir=tmp_path)
    report.raise_for_failures()


async def test_the_seed_quorum_review_is_crash_safe_at_every_point(tmp_path: Path) -> None:
    review = example("review")
    report = await explore_crashes(review.workflow, agents=review.reviewers(),
                                   coordinator=review.ReviewCoordinator, store_dir=tmp_path)
    report.raise_for_failures()


async def test_the_seed_yaml_workflow_is_crash_safe_at_every_point(tmp_path: Path) -> None:
    from openintent.testing import SimulatedAgent
    from openintent.workflow import WorkflowSpec

    workflow = WorkflowSpec.from_string((EXAMPLES / "reviewed_content.yaml").read_text(),
                                        "reviewed_content.yaml")
    agents = [SimulatedAgent("writer", result={"draft": "..."}, cost_usd=1.5, register=False),
              SimulatedAgent("reviewer-a", result={"approved": True}, register=False),
              SimulatedAgent("reviewer-b", result={"approved": True}, register=False),
              SimulatedAgent("editor", result={"final": True}, register=False)]
    report = await explore_crashes(workflow, agents=agents, store_dir=tmp_path)
    report.raise_for_failures()
    assert report.commits >= 4
