"""The suite's own fixtures (tests/conftest.py).

The inner sessions run in this process (structlog's configuration is process-wide): this
test's own ``reset_structlog`` cleans up after them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def test_reset_structlog_leaves_no_configuration_behind(
    pytester: pytest.Pytester, reset_structlog: None
) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        """
        import structlog

        def test_configures(reset_structlog):
            assert not structlog.is_configured()
            structlog.configure(processors=[])
            with structlog.testing.capture_logs():
                pass
            assert structlog.is_configured()

        def test_runs_after_it():
            assert not structlog.is_configured()
        """
    )
    pytester.makeini(INI)
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=2)


def test_without_the_fixture_the_configuration_leaks(
    pytester: pytest.Pytester, reset_structlog: None
) -> None:
    """The control: the first test's configuration is what the second would see."""
    pytester.makepyfile(
        """
        import structlog

        def test_configures():
            structlog.configure(processors=[])

        def test_runs_after_it():
            assert not structlog.is_configured()
        """
    )
    pytester.makeini(INI)
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=1, failed=1)
