"""Fixtures and settings shared by the library's own tests.

The openintent pytest plugin (``openintent.testing.pytest_plugin``) gives every test its own
registry; what is here concerns only this test suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# The suite must pass on a loaded machine: how fast Hypothesis *generates* examples depends on
# the load, not on openintent, so the "too slow" health check is off. (Every property test
# sets deadline=None itself, for the same reason.)
settings.register_profile("openintent", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("openintent")


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    """structlog at its defaults during the test and again after it.

    Use it in every test that configures structlog, ``structlog.testing.capture_logs()``
    included (it leaves ``structlog.is_configured()`` true), so no configuration leaks into
    the tests that run after it.
    """
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.reset_defaults()
