"""Shared fixtures: every test gets an empty default registry of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openintent._registry import Registry, isolated_registry


@pytest.fixture(autouse=True)
def registry() -> Iterator[Registry]:
    """Classes decorated inside a test register here and never leak into another test."""
    with isolated_registry() as fresh:
        yield fresh
