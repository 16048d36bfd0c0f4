"""The STORE argument of the commands that read or continue runs: a store URL, or the path
of a SQLite journal file (``runs.db`` means ``sqlite:///runs.db``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import OpenIntentError, RunNotFoundError, StoreError

__all__ = ["explain", "existing_store", "is_durable", "sqlite_path", "store_url"]

_SQLITE = "sqlite:///"


def store_url(store: str) -> str:
    """``store`` as a store URL: a URL stays as it is; a file path becomes ``sqlite:///path``
    (an absolute path ``/x/runs.db`` becomes ``sqlite:////x/runs.db``)."""
    if "://" in store:
        return store
    return _SQLITE + store


def is_durable(url: str) -> bool:
    """Whether runs in ``url`` outlive the process that ran them (all but ``memory://``)."""
    return url != "memory://"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (``None`` for other URLs)."""
    if not url.startswith(_SQLITE):
        return None
    path = urlsplit(url).path  # drops ?synchronous=full
    # sqlite:///runs.db -> "/runs.db" (relative), sqlite:////abs/runs.db -> "//abs/runs.db"
    return Path(path[1:]) if path else None


def existing_store(store: str) -> str:
    """The URL of ``store`` for a command that reads runs already there: its file must exist
    (reading never creates an empty journal). :class:`StoreError` otherwise."""
    url = store_url(store)
    if url == "memory://":
        raise StoreError(
            "memory:// keeps no runs once the process that ran them has ended; name a durable "
            "store, e.g. a SQLite file: `openintent run FILE --store sqlite:///runs.db`, then "
            "`openintent runs list runs.db`"
        )
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        where = "is not a file" if path.exists() else "not found"
        raise StoreError(
            f"store file {str(path)!r} {where} (working directory: {os.getcwd()}); check the "
            "path: runs are journaled there by `openintent run FILE --store sqlite:///PATH`"
        )
    return url


def explain(exc: OpenIntentError, store: str) -> str:
    """The message of a command's error: an unknown run id says how to list the store's."""
    if isinstance(exc, RunNotFoundError):
        return f"{exc}; `openintent runs list {store}` lists them"
    return str(exc)
