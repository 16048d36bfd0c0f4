"""Wired inputs: ``IntentSpec(inputs={"draft": ("Write", "text")})`` (a workflow step's
``inputs: {draft: write.text}``) puts ``Write``'s final ``state["text"]`` at
``intent.inputs["draft"]``, beside each dependency's state by title.

Intents without wiring never reach this module: their inputs are built by
:func:`openintent._data.inputs` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._data import Inputs
from ._specs import IntentSpec
from .errors import UnresolvableInputError
from .models import Intent

__all__ = ["check_wired", "wired"]


def wired(made: Inputs, wiring: Mapping[str, tuple[str, str]]) -> Inputs:
    """``made`` (the dependencies' states by title) with the wired values beside them: a new
    :class:`Inputs`. A value its dependency's state lacks is left out (see
    :func:`check_wired`, which fails the attempt at dispatch)."""
    values = dict.__new__(Inputs)
    dict.update(values, made)
    for name, (title, key) in wiring.items():
        state = made[title]
        if key in state:
            dict.__setitem__(values, name, state[key])
    return values


def check_wired(spec: IntentSpec, intent: Intent) -> None:
    """Raise :class:`UnresolvableInputError` when a wired input of ``intent`` is missing."""
    inputs: Mapping[str, Any] = intent.inputs
    for name, (title, key) in spec.inputs.items():
        if name in inputs:
            continue
        where = f"step {spec.key!r}" if spec.key else f"intent {spec.title!r}"
        have = sorted(inputs[title]) if title in inputs else []
        raise UnresolvableInputError(
            f"{where} input {name!r} reads {key!r} from {title!r}, whose final state has no "
            f"{key!r} (it has {', '.join(map(repr, have)) or 'no keys'}); make {title!r} "
            f"return {{{key!r}: ...}}, or wire the input to a key it does return",
            phase_name=spec.key or spec.title, input=name, unresolvable_refs=[f"{title}.{key}"],
            task_id=intent.id,
        )
