"""The `openintent` command as a real process (`python -m openintent`): it runs a workflow,
and Ctrl-C (SIGINT) cancels the run cleanly, reports it, and exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ONE_STEP = """\
openintent: "1.0"
info:
  name: "Slow"
workflow:
  write:
    title: "Write Draft"
    description: "Takes its time"
    assign: writer
"""

SLOW_AGENT = """\
from pathlib import Path

import anyio

from openintent.agents import Agent, on_assignment

HERE = Path(__file__).parent


@Agent("writer")
class SlowWriter:
    @on_assignment
    async def work(self, intent):
        (HERE / "started").write_text("yes")
        try:
            await anyio.sleep(600)
        finally:
            (HERE / "cleaned_up").write_text("yes")
        return {}
"""


def command(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "openintent", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_python_m_openintent_runs_a_workflow_and_ends_with_its_status(tmp_path):
    (tmp_path / "flow.yaml").write_text(ONE_STEP)
    process = command("run", "flow.yaml", "--simulate", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.rstrip().splitlines()[-1] == "status: completed"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_cancels_the_run_cleanly_and_exits_130(tmp_path):
    (tmp_path / "flow.yaml").write_text(ONE_STEP)
    (tmp_path / "slow_agents.py").write_text(textwrap.dedent(SLOW_AGENT))
    process = command("run", "flow.yaml", "--agents", "slow_agents", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120  # generous: the machine is shared
        while not (tmp_path / "started").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the agent never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, (out, err)
    assert (tmp_path / "cleaned_up").exists()  # the handler's finally: block ran
    assert "interrupted" in err
    assert "Traceback" not in err
    assert "Write Draft  cancelled" in out
    assert out.rstrip().splitlines()[-1] == "status: cancelled (interrupted)"


APPROVAL_STEP = """\
openintent: "1.0"
info:
  name: "Gated"
workflow:
  deploy:
    title: "Deploy"
    description: "Needs a yes"
    assign: deployer
    requires_approval: true
"""


def read_until(fd: int, text: str, seconds: float) -> str:
    """Read a terminal's output until ``text`` shows (or it closes, or time runs out)."""
    import select

    seen = ""
    deadline = time.monotonic() + seconds
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed (Linux: EIO)
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    return seen


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize(("answer", "status", "code"), [
    ("y", "status: completed", 0), (None, "status: cancelled (interrupted)", 130),
])
def test_on_a_terminal_an_approval_is_asked_for_and_ctrl_c_ends_the_wait(
    tmp_path, answer, status, code
):
    import pty

    (tmp_path / "gated.yaml").write_text(APPROVAL_STEP)
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")])), "TERM": "dumb"}
    process = subprocess.Popen(
        [sys.executable, "-m", "openintent", "run", "gated.yaml", "--simulate", "--by", "ann"],
        cwd=tmp_path, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
    )
    os.close(terminal)
    try:
        seen = read_until(controller, "[y/N]", 120)
        assert "Approve 'Deploy'" in seen and "as ann?" in seen, seen
        if answer is None:
            process.send_signal(signal.SIGINT)
        else:
            os.write(controller, f"{answer}\n".encode())
        seen += read_until(controller, status, 120)
        assert process.wait(timeout=120) == code, seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert status in seen
    assert "Traceback" not in seen


def test_the_command_needs_only_the_declared_dependencies(tmp_path):
    """A fresh `pip install ".[cli]"` has no sniffio (anyio 4.16 dropped it): the command and
    `openintent.workflow` must not import it."""
    script = (
        "import sys; sys.modules['sniffio'] = None\n"  # importing it now raises ImportError
        "from openintent.cli import main\n"
        "sys.exit(main(['run', sys.argv[1], '--simulate']))\n"
    )
    (tmp_path / "flow.yaml").write_text(ONE_STEP)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, "flow.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("status: completed")


def test_the_console_script_entry_point_is_main():
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["openintent"].partition(":")
    from openintent.cli import main

    assert getattr(importlib.import_module(module), attr) is main


def installed_command() -> str | None:
    """The `openintent` console script of this Python's environment, if installed."""
    import shutil

    beside = Path(sys.executable).parent / "openintent"
    return str(beside) if beside.exists() else shutil.which("openintent")


@pytest.mark.skipif(installed_command() is None, reason="the package is not installed here")
def test_the_installed_openintent_command_runs_a_workflow(tmp_path):
    (tmp_path / "flow.yaml").write_text(ONE_STEP)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the installed script, this checkout's code
    done = subprocess.run([installed_command() or "openintent", "run", "flow.yaml",
                           "--simulate"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("status: completed")
