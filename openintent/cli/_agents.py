"""``--agents module[:attr]``: import the agents a run uses."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import OpenIntentError

__all__ = ["AgentImportError", "import_agents"]


class AgentImportError(OpenIntentError):
    """An ``--agents`` option named a module or attribute that cannot be imported."""


def import_agents(references: Sequence[str]) -> list[Any] | None:
    """Import each ``module`` or ``module:attr`` reference.

    A bare module is imported for its side effect: its ``@Agent``/``@Coordinator`` classes
    register in the default registry, where the runtime finds them by id (``None`` is
    returned when every reference is a bare module). ``module:attr`` names an agent class or
    instance, or a list/tuple of them, which are passed to ``Runtime(agents=...)``.
    The current directory is importable, as with ``python -m``.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    chosen: list[Any] = []
    any_attr = False
    for reference in references:
        module_name, _, attr = reference.partition(":")
        module = _import(module_name.strip(), reference)
        if not attr:
            continue
        any_attr = True
        value: Any = module
        for part in attr.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise AgentImportError(
                    f"--agents {reference}: module {module_name!r} has no attribute "
                    f"{attr!r}; name an agent class or instance, or a list of them"
                ) from None
        if isinstance(value, Iterable) and not isinstance(value, str | bytes | type):
            chosen.extend(value)
        else:
            chosen.append(value)
    return chosen if any_attr else None


def _import(module_name: str, reference: str) -> Any:
    if not module_name:
        raise AgentImportError(
            f"--agents {reference!r}: expected MODULE or MODULE:ATTR, e.g. myapp.agents:ALL"
        )
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise AgentImportError(
                f"--agents {reference}: no module named {module_name!r} (looked in the "
                "current directory and the installed packages); check the name, or run from "
                "the directory that contains it"
            ) from None
        raise AgentImportError(
            f"--agents {reference}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise AgentImportError(
            f"--agents {reference}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
