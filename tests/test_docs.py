"""The guides' examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_testing_guide_example_passes_as_a_test_suite(tmp_path):
    example = python_blocks(DOCS / "testing.md")[0]
    (tmp_path / "test_review_coordinator.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_the_property_example_in_the_guide_runs():
    namespace: dict[str, object] = {}
    exec(python_blocks(DOCS / "testing.md")[1], namespace)  # noqa: S102 - our own docs
    test = namespace["test_every_intent_ends_and_the_log_replays"]
    test()  # type: ignore[operator]


def test_the_approval_example_in_the_guide_passes_as_a_test_suite(tmp_path):
    [example] = [block for block in python_blocks(DOCS / "testing.md")
                 if "handle.approve" in block]
    (tmp_path / "test_release.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
