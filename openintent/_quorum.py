"""Quorum thresholds: what ``@on_quorum`` accepts, how many answers one needs, and how the
``quorum_reached`` decision says it.

The rule: an int counts agents (``@on_quorum(1)``: the first answer); a float in (0, 1] is a
fraction of the assignees, rounded up (``@on_quorum(1.0)``: all of them). The keyword
spellings ``agents=N`` and ``fraction=F`` say which one is meant.
"""

from __future__ import annotations

import math

from .errors import AgentError

__all__ = ["quorum_needed", "quorum_rationale", "quorum_threshold"]

_SPELLINGS = (
    "write @on_quorum(agents=N) to fire after N answers (an int counts agents: @on_quorum(1) "
    "fires on the first answer) or @on_quorum(fraction=F) for a share of the assignees, "
    "rounded up (a float: @on_quorum(1.0) waits for all of them)"
)


def quorum_threshold(
    positional: object, threshold: object, agents: object, fraction: object
) -> int | float:
    """The checked threshold of ``@on_quorum``: an int (agents) or a float (a fraction)."""
    given = {
        name: value
        for name, value in (("positional", positional), ("threshold", threshold),
                            ("agents", agents), ("fraction", fraction))
        if value is not None
    }
    if len(given) > 1:
        raise AgentError(f"@on_quorum takes one threshold, got {len(given)}: {given}; {_SPELLINGS}")
    if not given:
        return 1.0  # bare @on_quorum: every assignee
    (how, value), = given.items()
    spelled = f"@on_quorum({value!r})" if how == "positional" else f"@on_quorum({how}={value!r})"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AgentError(f"{spelled}: not a threshold; {_SPELLINGS}")
    if how == "agents" and not isinstance(value, int):
        raise AgentError(
            f"{spelled}: agents= counts agents and takes an int >= 1; for a share of the "
            f"assignees write @on_quorum(fraction={value!r})"
        )
    if how == "fraction" or isinstance(value, float):
        share = float(value)
        if not 0 < share <= 1:  # also refuses NaN
            count = f"@on_quorum({int(share)})" if share.is_integer() and share >= 1 else None
            fix = (f"to count agents pass an int: {count} or @on_quorum(agents={int(share)})"
                   if count else _SPELLINGS)
            raise AgentError(
                f"{spelled}: a fraction of the assignees (a float, or fraction=) must be in "
                f"(0, 1]; {fix}"
            )
        return share
    if value < 1:
        raise AgentError(f"{spelled}: an int counts agents and must be at least 1; {_SPELLINGS}")
    return value


def quorum_needed(threshold: int | float, assignees: int) -> int:
    """How many answers a threshold needs among ``assignees``."""
    if isinstance(threshold, float):
        # Rounded first: 0.7 * 10 is 7.000000000000001 in floating point, and needs 7.
        return max(1, math.ceil(round(threshold * assignees, 9)))
    return threshold


def quorum_rationale(threshold: int | float, assignees: int) -> str:
    """The ``quorum_reached`` decision's rationale: ``"1 of 3 agents answered"`` for an int,
    ``"all 3 assignees answered (fraction 1.0)"`` for a fraction."""
    needed = quorum_needed(threshold, assignees)
    if isinstance(threshold, int):
        return f"{needed} of {assignees} agents answered"
    if needed == assignees:
        return f"all {assignees} assignees answered (fraction {threshold})"
    return f"{needed} of {assignees} assignees answered (fraction {threshold}, rounded up)"
