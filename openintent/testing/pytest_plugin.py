"""The openintent pytest plugin, registered through the ``pytest11`` entry point.

Fixtures:

``openintent_registry``
    Every test gets a registry of its own (autouse): classes decorated inside a test never
    leak into another; classes decorated at import time stay visible. Guardrail types
    registered with ``register_guardrail`` inside a test are forgotten after it.
``virtual_clock``
    A fresh :class:`~openintent.testing.VirtualClock`.
``runtime``
    A fresh ``Runtime`` on the virtual clock with ``seed=0`` and agents from the test's
    registry. Configure it with the marker ``@pytest.mark.openintent(seed=1, clock="real")``.
``captured_events``
    A list that receives the events of every run of the test, in order.
``captured_decisions``
    The decision records among them, in order (a live view).

Markers:

``@pytest.mark.openintent(seed=0, clock="virtual")``
    Settings of the ``runtime`` fixture: ``seed`` (an int or ``None``), ``clock``
    (``"virtual"`` or ``"real"``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._clock import Clock, RealClock
from .._guardrail_core import isolated_guardrail_types
from .._registry import Registry, isolated_registry
from .._virtual_clock import VirtualClock
from ..models import Event
from ..runtime import Runtime
from ._capture import DecisionView, capture_events

__all__ = [
    "captured_decisions",
    "captured_events",
    "openintent_registry",
    "runtime",
    "virtual_clock",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        'openintent(seed=0, clock="virtual"): settings of the openintent `runtime` fixture',
    )


@pytest.fixture(autouse=True)
def openintent_registry() -> Iterator[Registry]:
    """A default registry for this test only (it starts with classes decorated at import);
    guardrail types registered in the test are forgotten after it too."""
    with isolated_registry(inherit=True) as registry, isolated_guardrail_types():
        yield registry


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A fresh virtual clock at time 0."""
    return VirtualClock()


@pytest.fixture
def runtime(request: pytest.FixtureRequest, virtual_clock: VirtualClock) -> Runtime:
    """A fresh Runtime: virtual clock, ``seed=0``, agents from this test's registry."""
    marker = request.node.get_closest_marker("openintent")
    options = dict(marker.kwargs) if marker else {}
    clock_name = options.pop("clock", "virtual")
    seed = options.pop("seed", 0)
    if options:
        raise pytest.UsageError(
            f"unknown @pytest.mark.openintent option(s) {sorted(options)}; use seed= or clock="
        )
    if clock_name not in ("virtual", "real"):
        raise pytest.UsageError('@pytest.mark.openintent(clock=...) takes "virtual" or "real"')
    clock: Clock = virtual_clock if clock_name == "virtual" else RealClock()
    return Runtime(clock=clock, seed=seed)


@pytest.fixture
def captured_events() -> Iterator[list[Event]]:
    """The events of every run in this test, in order."""
    with capture_events() as events:
        yield events


@pytest.fixture
def captured_decisions(captured_events: list[Event]) -> DecisionView:
    """The decision records of every run in this test, in order."""
    return DecisionView(captured_events)
