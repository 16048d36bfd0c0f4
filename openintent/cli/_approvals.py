"""Approvals during ``openintent run``: granted with ``--approve-all``, asked for on a
terminal, and otherwise reported (nothing could ever approve them: the run is cancelled)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TextIO

import anyio

from .._handle import RunHandle
from .._progress import ask_approval
from ..errors import ApprovalError
from ..guardrails import ApprovalRequest
from ..models import EventType

__all__ = ["ApprovalPolicy", "answer_approvals"]


class ApprovalPolicy:
    """How the approvals of one run are decided (``await policy(request)`` decides one).

    ``approve_all``: every request is granted by ``by``. Otherwise ``ask`` (given on a
    terminal) reads each answer from the terminal; with neither, the first request cancels the
    run, after saying what waits and how to approve it: no other process could approve it, so
    waiting would hang forever. ``resume`` is the command that continues a journaled run
    (``openintent resume STORE ID``): the message suggests it with ``--approve-all``.
    """

    def __init__(
        self,
        handle: RunHandle,
        *,
        approve_all: bool,
        by: str,
        ask: Callable[[str], str] | None,
        err: TextIO,
        resume: str | None = None,
        elsewhere: str | None = None,
    ) -> None:
        self.handle = handle
        self.approve_all = approve_all
        self.by = by
        self.ask = ask
        self.err = err
        self.resume = resume
        #: With ``--wait-approvals`` (a durable store): how another shell decides a request
        #: (``openintent approve STORE ID``); then a request without a terminal waits.
        self.elsewhere = elsewhere
        self.unanswered: list[str] = []  # titles of requests the run was cancelled over

    async def __call__(self, request: ApprovalRequest) -> None:
        if request.decision is not None or self.handle.done:
            return
        title = request.title
        if self.approve_all:
            await self._decide(request, True, "--approve-all")
        elif self.ask is not None:
            answer = await self._ask(
                f"Approve {title!r} ({request.intent_id}) as {self.by}? [y/N] ", request
            )
            if request.decision is not None:
                # Decided meanwhile from another process (openintent approve): nothing to ask.
                print(f"\nopenintent: {title!r} was {request.decision} by "
                      f"{request.decided_by} from another process", file=self.err, flush=True)
            elif answer is not None:
                approve = answer.strip().lower() in ("y", "yes")
                await self._decide(request, approve, "asked on the terminal")
        elif self.elsewhere is not None:
            print(f"openintent: {title!r} ({request.intent_id}) waits for approval; decide it "
                  f"from another shell: {self.elsewhere} {request.intent_id} --by NAME "
                  "(or deny)", file=self.err, flush=True)
        else:
            self.unanswered.append(title)
            again = (f"Continue it with `{self.resume} --approve-all`" if self.resume
                     else "Re-run with --approve-all")
            print(
                f"openintent: {title!r} ({request.intent_id}) waits for approval, and there is "
                f"no terminal to ask on; cancelling the run. {again} (approves as --by NAME, "
                "default your login name), or on a terminal to be asked.",
                file=self.err,
                flush=True,
            )
            await self.handle.cancel()

    async def _decide(self, request: ApprovalRequest, approve: bool, note: str) -> None:
        decide = self.handle.approve if approve else self.handle.deny
        try:
            await decide(request.intent_id, by=self.by, note=note)
        except ApprovalError as exc:
            if self.handle.done:
                return
            self.unanswered.append(request.title)
            print(f"openintent: cannot decide {request.title!r}: {exc} (choose who decides "
                  "with --by NAME); cancelling the run.", file=self.err, flush=True)
            await self.handle.cancel()

    async def _ask(self, prompt: str, request: ApprovalRequest) -> str | None:
        """The answer typed, or ``None`` when the run ended first (Ctrl-C) or ``request``
        was decided from elsewhere first.

        Read on a daemon thread: an unanswered prompt must not keep the process alive after
        the run ended (anyio's worker threads are joined at exit).
        """
        assert self.ask is not None
        ask = self.ask
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
            except RuntimeError:  # the event loop has closed: nobody waits any more
                pass

        threading.Thread(target=read, name="openintent approval prompt", daemon=True).start()
        async with anyio.create_task_group() as race:

            async def run_ends() -> None:
                await _ended(self.handle)
                race.cancel_scope.cancel()

            async def decided_elsewhere() -> None:
                await request._decided.wait()
                race.cancel_scope.cancel()

            race.start_soon(run_ends)
            race.start_soon(decided_elsewhere)
            await answered.wait()
            race.cancel_scope.cancel()
        return answer[0] if answer else None


async def _ended(handle: RunHandle) -> None:
    try:
        await handle.result()
    except Exception:  # a fault of the runtime: the run has ended all the same
        pass


async def answer_approvals(handle: RunHandle, policy: ApprovalPolicy) -> None:
    """Decide each approval ``handle``'s run requests, as they come, until the run ends."""
    async for event in handle.events():
        if event.type == EventType.APPROVAL_REQUESTED:
            await ask_approval(handle, event.intent_id, policy)
