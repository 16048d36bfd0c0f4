"""``openintent approve STORE ID INTENT --by NAME`` and ``openintent deny ...``: decide a run's
pending approval from another process than the one running it (see :mod:`openintent._inbox`)."""

from __future__ import annotations

import argparse

from .._inbox import inbox_of, submit_decision
from .._stores import open_backend
from ..errors import OpenIntentError
from ._common import EXIT_OK, Streams, fail
from ._parser import default_approver
from ._store_url import existing_store, explain, store_url

__all__ = ["approve_command", "deny_command"]


def approve_command(args: argparse.Namespace, streams: Streams) -> int:
    """Send an approval of ``args.intent`` in run ``args.id`` to the process running it."""
    return _decide(args, streams, approve=True)


def deny_command(args: argparse.Namespace, streams: Streams) -> int:
    """Send a denial of ``args.intent`` in run ``args.id`` to the process running it."""
    return _decide(args, streams, approve=False)


def _decide(args: argparse.Namespace, streams: Streams, *, approve: bool) -> int:
    by = args.by or default_approver()
    if store_url(args.store) == "memory://":
        return fail(streams, "memory:// has no other process to approve from: a memory:// "
                    "run is decided in the process running it (on its terminal, or with "
                    "--approve-all); run it with --store sqlite:///runs.db to approve it from "
                    "another shell")
    try:
        backend = open_backend(existing_store(args.store))
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    try:
        sent = submit_decision(backend, args.id, args.intent, approve, by, args.note)
        running = inbox_of(backend).lease_live(args.id)
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    finally:
        backend.close()
    verb = "approval" if approve else "denial"
    print(f"openintent: {verb} of {args.intent!r} ({sent.intent_id}) in run {args.id} by "
          f"{by} recorded (decision {sent.id})", file=streams.out, flush=True)
    if running:
        print("openintent: the process running the run applies it within about a second",
              file=streams.err, flush=True)
    else:
        print(f"openintent: no process runs {args.id} now; it is applied once the run is "
              f"resumed: openintent resume {args.store} {args.id}", file=streams.err,
              flush=True)
    return EXIT_OK
