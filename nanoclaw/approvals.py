"""Approvals for blocked hosts: a run's egress proxy asks main's chat about a host its group's
allowlist lacks and waits for `/allow` or `/deny`. Owns the pending questions per (group,
host), each run's memory of verdicts, and the words of the question; one per daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

from nanoclaw.commands import Verdict
from nanoclaw.models import Group
from nanoclaw.sandbox.egress import WEB_PORTS, EgressProxy, Resolver, public_addresses
from nanoclaw.store.tape import TapeWriter

log = logging.getLogger(__name__)
ASK_TIMEOUT_S = 120.0
MAX_PENDING = 3  # open questions per group: an agent cannot flood main's chat
MAX_ASKED = 10  # questions per run; past it, unlisted hosts are refused at once as before
Refused = Literal["deny", "timeout"]
Post = Callable[[str], Awaitable[None]]  # a text to main's chat


def covers(domain: str, host: str) -> bool:
    """Whether an answer about `domain` is one about `host` (the domain or a subdomain)."""
    return host == domain or host.endswith("." + domain)


def question_text(folder: str, host: str, port: int) -> str:
    return (
        f"{folder} wants {host}:{port} — /allow {folder} {host} [once|always] "
        f"or /deny {folder} {host}"
    )


def refused_text(why: Refused, host: str, reason: str, timeout_s: float) -> str:
    """What the agent reads when the host stays refused (`reason`: the allowlist's words)."""
    if why == "deny":
        return f"{host} was denied by the admin; {reason}"
    return f"no answer from the admin within {timeout_s:g} s; {reason}"


@dataclass(eq=False)
class Question:
    folder: str
    host: str
    deadline: float  # loop time
    answer: asyncio.Future[Verdict]
    waiting: int = 0


@dataclass(eq=False)  # one per run: two are never the same, whatever they hold
class RunApprovals:
    """One run's side: what it was told (remembered until the run ends) and its questions."""

    owner: Approvals
    folder: str
    label: str
    granted: set[str] = field(default_factory=set)  # `always` answers during this run
    refused: dict[str, Refused] = field(default_factory=dict)  # host or domain -> why
    asked: int = 0

    def remembered(self, host: str) -> Verdict | Refused | None:
        if any(covers(d, host) for d in self.granted):
            return "always"
        for domain, why in self.refused.items():
            if covers(domain, host):
                return why
        return None

    async def ask(self, host: str, port: int, reason: str) -> str | None:
        """Wait for main's verdict on `host` (joining a question already open); None: pass."""
        verdict = self.remembered(host) or await self.owner.wait(self, host, port)
        if verdict == "once" or verdict == "always":
            return None
        if verdict == "busy":
            return f"{reason} (too many questions to the admin open)"
        return refused_text(verdict, host, reason, self.owner.timeout_s)

    def close(self) -> None:
        self.owner.forget(self)


class Approvals:
    """The daemon's open questions; `egress` is the launcher's factory of run proxies."""

    def __init__(
        self,
        post: Post,
        tape: TapeWriter,
        *,
        timeout_s: float = ASK_TIMEOUT_S,
        ports: Collection[int] = WEB_PORTS,
        resolve: Resolver = public_addresses,
    ) -> None:
        self._post = post
        self._tape = tape
        self.timeout_s = timeout_s
        self._ports = ports  # the proxies' (tests reach servers on loopback ports)
        self._resolve = resolve
        self._pending: dict[tuple[str, str], Question] = {}
        self._runs: dict[str, list[RunApprovals]] = {}

    def egress(self, group: Group, label: str) -> EgressProxy:
        run = RunApprovals(self, group.folder, label)
        self._runs.setdefault(group.folder, []).append(run)
        return EgressProxy(group.domains, label, ports=self._ports, resolve=self._resolve, ask=run)

    def forget(self, run: RunApprovals) -> None:
        runs = self._runs.get(run.folder, [])
        if run in runs:
            runs.remove(run)
        if not runs:
            self._runs.pop(run.folder, None)

    def pending(self, folder: str) -> list[str]:
        return [host for (f, host) in self._pending if f == folder]

    async def wait(
        self, run: RunApprovals, host: str, port: int
    ) -> Verdict | Refused | Literal["busy"]:
        loop = asyncio.get_running_loop()
        key = (run.folder, host)
        question = self._pending.get(key)
        if question is None:
            if run.asked >= MAX_ASKED or len(self.pending(run.folder)) >= MAX_PENDING:
                return "busy"
            deadline = loop.time() + self.timeout_s
            question = Question(run.folder, host, deadline, loop.create_future())
            self._pending[key] = question
            run.asked += 1
            ask = True
        else:
            ask = False
        question.waiting += 1
        try:
            if ask:
                await self._ask(run, host, port)
            async with asyncio.timeout_at(question.deadline):
                return await asyncio.shield(question.answer)
        except TimeoutError:
            if self._pending.get(key) is question:
                del self._pending[key]
                run.refused[host] = "timeout"  # asked once: the run is not asked again
                await self._tape.tape_event(
                    run.folder, "refusal", f"{host}:{port}: no answer within the timeout"
                )
            return "timeout"
        finally:
            question.waiting -= 1
            # The run ended while waiting (its proxy cancels the connections): nobody waits,
            # so the question is dropped (an answer found in `_pending` was removed already).
            if question.waiting == 0 and self._pending.get(key) is question:
                del self._pending[key]

    async def _ask(self, run: RunApprovals, host: str, port: int) -> None:
        text = question_text(run.folder, host, port)
        log.info("approval group=%s %s: asking main about %s:%s", run.folder, run.label, host, port)
        try:
            await self._post(text)
        except Exception:  # the question stays open: its timeout refuses as before
            log.exception("approval group=%s: cannot post the question", run.folder)
        # The host name is the agent's own words.
        await self._tape.tape_event(run.folder, "refusal", f"asked main: {text}", untrusted=True)

    def decide(self, folder: str, domain: str, verdict: Verdict) -> int:
        """Main answered about `domain` for the group: the waiting connections it covers learn
        it, and the group's live runs remember `always` and `deny`. How many were waiting."""
        for run in self._runs.get(folder, []):
            if verdict == "always":
                run.granted.add(domain)
            elif verdict == "deny":
                run.refused[domain] = "deny"
        answered = 0
        for key, question in list(self._pending.items()):
            if key[0] == folder and covers(domain, key[1]):
                del self._pending[key]
                question.answer.set_result(verdict)
                answered += 1
        return answered
