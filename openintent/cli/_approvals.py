"""Approvals during ``openintent run``: granted with ``--approve-all``, asked for on a
terminal, and otherwise reported (nothing could ever approve them: the run is cancelled)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TextIO

import anyio

from .._handle import RunHandle
from ..errors import ApprovalError
from ..models import EventType

__all__ = ["ApprovalPolicy", "answer_approvals"]


class ApprovalPolicy:
    """How the approvals of one run are decided.

    ``approve_all``: every request is granted by ``by``. Otherwise ``ask`` (set on a terminal)
    reads each answer from the terminal; with neither, the first request cancels the run,
    after saying what waits and how to approve it (with no durable store yet, no other process
    could approve it, so waiting would hang forever).
    """

    def __init__(
        self, *, approve_all: bool, by: str, ask: Callable[[str], str] | None, err: TextIO
    ) -> None:
        self.approve_all = approve_all
        self.by = by
        self.ask = ask
        self.err = err
        self.unanswerable: list[str] = []  # titles of requests the run was cancelled over


async def answer_approvals(handle: RunHandle, policy: ApprovalPolicy) -> None:
    """Decide each approval ``handle``'s run requests, as they come, until the run ends."""
    async for event in handle.events():
        if event.type != EventType.APPROVAL_REQUESTED or event.intent_id is None:
            continue
        title = event.title or event.intent_id
        if policy.approve_all:
            await _decide(handle, policy, event.intent_id, title, True, "--approve-all")
        elif policy.ask is not None:
            answer = await _ask(policy.ask, f"Approve {title!r} ({event.intent_id}) as "
                                           f"{policy.by}? [y/N] ")
            approve = answer.strip().lower() in ("y", "yes")
            await _decide(handle, policy, event.intent_id, title, approve, "asked on the terminal")
        else:
            policy.unanswerable.append(title)
            print(
                f"openintent: {title!r} ({event.intent_id}) waits for approval, and there is "
                "no terminal to ask on; cancelling the run. Re-run with --approve-all (approves "
                "as --by NAME, default your login name), or on a terminal to be asked.",
                file=policy.err,
            )
            await handle.cancel()
            return


async def _decide(
    handle: RunHandle, policy: ApprovalPolicy, intent_id: str, title: str, approve: bool,
    note: str,
) -> None:
    try:
        if approve:
            await handle.approve(intent_id, by=policy.by, note=note)
        else:
            await handle.deny(intent_id, by=policy.by, note=note)
    except ApprovalError as exc:
        if handle.done:
            return
        policy.unanswerable.append(title)
        print(f"openintent: cannot decide {title!r}: {exc} (choose who decides with --by "
              "NAME); cancelling the run.", file=policy.err)
        await handle.cancel()


async def _ask(ask: Callable[[str], str], prompt: str) -> str:
    """Ask on a daemon thread: an unanswered prompt never keeps the process alive after a
    Ctrl-C (anyio's worker threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    answered = anyio.Event()
    answer: list[str] = []

    def read() -> None:
        try:
            answer.append(ask(prompt))
        except (EOFError, OSError):
            answer.append("")
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the run ended (Ctrl-C) while the prompt waited
            pass

    threading.Thread(target=read, name="openintent approval prompt", daemon=True).start()
    await answered.wait()
    return answer[0]
