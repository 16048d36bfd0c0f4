"""The guides' examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TESTING = DOCS / "testing.md"


def block(path: Path, language: str, containing: str) -> str:
    """The one fenced ``language`` block of ``path`` that contains ``containing``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)
    found = [text for text in blocks if containing in text]
    assert len(found) == 1, f"{len(found)} {language} blocks of {path.name} contain {containing!r}"
    return found[0]


def pytest_in(
    directory: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options,
         str(directory)],
        capture_output=True, text=True, cwd=directory, timeout=120,
        env=None if env is None else {**os.environ, **env},
    )


def test_the_testing_guide_example_passes_as_a_test_suite(tmp_path):
    example = block(TESTING, "python", "test_two_approvals_make_a_quorum")
    (tmp_path / "test_review_coordinator.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    done = pytest_in(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_the_property_example_in_the_guide_runs():
    namespace: dict[str, object] = {}
    example = block(TESTING, "python", "def test_every_intent_ends_and_the_log_replays")
    exec(example, namespace)  # noqa: S102 - our own docs
    test = namespace["test_every_intent_ends_and_the_log_replays"]
    test()  # type: ignore[operator]


def test_the_approval_example_in_the_guide_passes_as_a_test_suite(tmp_path):
    example = block(TESTING, "python", "handle.approve")
    (tmp_path / "test_release.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    done = pytest_in(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_read_back_example_in_the_guide_passes_as_a_test_suite(tmp_path):
    example = block(TESTING, "python", "rt.load(live.portfolio_id)")
    (tmp_path / "test_read_back.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    done = pytest_in(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize("plugin", ["pytest-asyncio", "anyio"])
def test_the_pytest_setup_in_the_guide_passes_first_time_without_warnings(tmp_path, plugin):
    module = block(TESTING, "python", '"""tests/test_pipeline.py"""')
    options: tuple[str, ...] = ()
    if plugin == "pytest-asyncio":
        (tmp_path / "pyproject.toml").write_text(
            block(TESTING, "toml", "asyncio_default_fixture_loop_scope"))
    else:
        module = module.replace("@pytest.mark.asyncio", "@pytest.mark.anyio")
        (tmp_path / "conftest.py").write_text(block(TESTING, "python", "def anyio_backend"))
        (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
        options = ("-p", "no:asyncio")  # as installed without pytest-asyncio
    (tmp_path / "test_pipeline.py").write_text(module)
    # Warnings at start-up (a plugin's configuration check) stop the session too.
    done = pytest_in(tmp_path, *options, env={"PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("2 passed in")  # asyncio only
    assert "warning" not in (done.stdout + done.stderr).lower()


def test_the_crash_safety_example_in_the_guide_passes_as_a_test_suite(tmp_path):
    example = block(TESTING, "python", "explore_crashes(SPEC")
    (tmp_path / "test_onboarding.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    done = pytest_in(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
