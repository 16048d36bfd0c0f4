"""Testing kit: simulated agents, a virtual clock, assertions, replay, a pytest plugin and
Hypothesis strategies (in :mod:`openintent.testing.strategies`).

>>> from openintent import Runtime
>>> from openintent.testing import SimulatedAgent, VirtualClock
>>> async def test_pipeline():
...     writer = SimulatedAgent("writer", result={"draft": "..."}, delay=30)
...     async with Runtime(agents=[writer], clock=VirtualClock(), seed=0) as rt:
...         result = await rt.run(spec)          # 30 s of virtual time, instantly
"""

from __future__ import annotations

from .._registry import isolated_registry as isolated_registry
from .._virtual_clock import VirtualClock as VirtualClock
from ._assertions import assert_event_types as assert_event_types
from ._assertions import assert_ran_before as assert_ran_before
from ._assertions import assert_replay_matches as assert_replay_matches
from ._assertions import event_types as event_types
from ._assertions import replay as replay
from ._capture import capture_events as capture_events
from ._explore import CrashFailure as CrashFailure
from ._explore import CrashReport as CrashReport
from ._explore import CrashSafetyError as CrashSafetyError
from ._explore import InDoubt as InDoubt
from ._explore import explore_crashes as explore_crashes
from ._simulated import HANG as HANG
from ._simulated import SimulatedAgent as SimulatedAgent
from ._simulated import SimulatedCall as SimulatedCall

__all__ = [
    "HANG",
    "CrashFailure",
    "CrashReport",
    "CrashSafetyError",
    "InDoubt",
    "SimulatedAgent",
    "SimulatedCall",
    "VirtualClock",
    "assert_event_types",
    "assert_ran_before",
    "assert_replay_matches",
    "capture_events",
    "event_types",
    "explore_crashes",
    "isolated_registry",
    "replay",
]
