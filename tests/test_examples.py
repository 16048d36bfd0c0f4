"""End to end: the runnable examples do what their docs say."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_the_seed_basic_coordinator_runs_the_etl_pipeline(capsys):
    from openintent import Runtime

    etl = load("etl")
    async with Runtime(agents=[etl.Extractor, etl.Transformer, etl.Loader]) as rt:
        result = await rt.run(etl.workflow, coordinator=etl.ETLCoordinator)
    assert result.status == "completed"
    assert result.output == {"status": "loaded"}
    assert result.intents["Load"].state == {"loaded": 2, "total": 19.75}
    order = [event.intent_id for event in result.events.of_type("completed")]
    assert order == [result.intents[title].id for title in ("Extract", "Transform", "Load")]
    assert "ETL complete: Data Processing" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("etl.py", ["ETL complete: Data Processing", "output: {'status': 'loaded'}"]),
        ("delegation.py", ["dev-a took 'Payment retries' from project-lead",
                           "decision: delegate_to_senior"]),
        ("review.py", ["Review code: {'approved': True, 'votes': 2}",
                       "decision: quorum_reached"]),
        ("imperative.py", ["Manual Pipeline: completed", "Process Data: {'total': 12}",
                           "decision: approved_pipeline by coordinator"]),
    ],
)
def test_every_example_runs_as_a_script(script, expected):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for line in expected:
        assert line in done.stdout
    # The library configures no logging: unconfigured, its info lines stay quiet (as the
    # standard library's would); warnings still show.
    assert "run started" not in done.stdout + done.stderr


def test_the_readme_first_portfolio_runs(capsys):
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    first = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    exec(compile(first, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    assert "{'status': 'loaded'} {'loaded': 3}" in capsys.readouterr().out
