"""The consent requests this device is showing, and what the person here is told of them.

A request can be settled in three places: here (the prompt), on the web consent page (the
code the technician gave), or by its own expiry. What the person is told must be what
happened, so:

- an answer typed here is reported only once the broker has taken it (``consent_result``);
  when the request was settled first elsewhere the broker says how, and that is what is
  shown (never "approved" for a request that was no longer pending);
- a request settled elsewhere while its prompt is up closes the prompt and says how
  (``approved_remotely`` with who approved, ``consent_closed`` for denied, expired,
  withdrawn);
- with nobody to answer (no terminal) nothing is answered here: the prompter says where
  the request waits, and its fate is reported when the broker settles it.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncssh
import structlog

from agent.consent import Answer, ConsentPrompt, Prompter
from agent.errors import CapabilityDeniedError
from agent.identity import digest, fingerprint, sign_receipt
from agent.state import Grant, Grants

log = structlog.get_logger("agent")
# How long a typed answer waits for the broker to say it was taken; an older broker never
# says, and the answer then stands as sent.
RESULT_SECONDS = 30.0
RUNNING = frozenset({"approved", "active"})


class Asking:
    """Consent requests from the broker: asked, answered, closed when settled elsewhere."""

    def __init__(
        self,
        key: asyncssh.SSHKey,
        prompter: Prompter,
        grants: Grants,
        send: Callable[[dict[str, Any]], None],
        *,
        grant: Callable[[Grant], None],
        timeout: float,
    ) -> None:
        """``grant`` holds a grant (and starts what it needs, such as the desktop server);
        ``grants`` is where grants are dropped."""
        self.key, self.prompter, self.grants, self.send = key, prompter, grants, send
        self.grant = grant
        self.timeout = timeout
        self.consent_page = ""  # from the broker's welcome
        self._shown: dict[str, ConsentPrompt] = {}  # requests not yet settled, by session
        self._asking: dict[str, asyncio.Task[tuple[bool | None, str] | Answer]] = {}
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def request(self, msg: dict[str, Any]) -> None:
        """A ``consent_request``: ask, send the signed answer, say what became of it."""
        prompt = ConsentPrompt.from_message(msg, self.consent_page)
        sid = prompt.session_id
        if sid in self._shown:
            return  # sent again after a reconnect: the prompt is still up
        self._shown[sid] = prompt
        asking: asyncio.Task[tuple[bool | None, str] | Answer] = asyncio.create_task(
            self.prompter.ask(prompt, self.timeout)
        )
        self._asking[sid] = asking
        try:
            # The prompter is given the deadline, but it is enforced here as well: a prompt
            # that hangs (a stuck notification, a blocked terminal) still ends.
            done, _ = await asyncio.wait({asking}, timeout=self.timeout + 0.5)
        finally:
            self._asking.pop(sid, None)
        approved: bool | None
        granted: tuple[str, ...] | None = None
        if not done:
            asking.cancel()
            approved, why = False, "timeout"
        elif asking.cancelled():
            return  # settled elsewhere; whoever closed the prompt said how
        else:
            answer = asking.result()
            approved, why = answer[0], answer[1]
            if isinstance(answer, Answer):
                granted = answer.granted
        if approved is None:
            return  # nobody here to answer: it waits on the web (the prompter said so)
        await self._answer(prompt, msg, approved=approved, why=why, granted=granted)

    async def _answer(
        self,
        prompt: ConsentPrompt,
        msg: dict[str, Any],
        *,
        approved: bool,
        why: str,
        granted: tuple[str, ...] | None = None,
    ) -> None:
        sid = prompt.session_id
        # An approval states (and the grant holds) only the rights left ticked, as on the
        # web page; a deny names the request as asked.
        rights = prompt.capabilities
        if approved and granted is not None:
            rights = tuple(c for c in prompt.capabilities if c in granted)
            if not rights:  # approved with every right unticked: a denial
                approved, why, rights = False, "declined", prompt.capabilities
        receipt = {
            "v": 1,
            "session_id": sid,
            "decision": "approve" if approved else "deny",
            "why": why,
            "request_digest": digest(msg),
            "capabilities": list(rights),
            "duration_minutes": prompt.duration_minutes,
            "device_fingerprint": fingerprint(self.key),
            "decided_by": getpass.getuser(),
            "decided_at": datetime.now(UTC).isoformat(),
        }
        if approved:  # before the answer leaves: the broker opens channels right after it
            until = time.monotonic() + prompt.duration_minutes * 60
            self.grant(Grant(sid, frozenset(rights), until))
        result = asyncio.get_running_loop().create_future()
        self._results[sid] = result
        try:
            self.send(
                {
                    "type": "consent_decision",
                    "receipt": receipt,
                    "signature": sign_receipt(self.key, receipt),
                }
            )
            reply = await asyncio.wait_for(result, RESULT_SECONDS)
        except CapabilityDeniedError:  # no control channel: the link is down
            reply = {"accepted": False, "lost": True}
        except TimeoutError:
            reply = {"accepted": True, "unconfirmed": True}
        finally:
            self._results.pop(sid, None)
        self._shown.pop(sid, None)
        self._report(prompt, reply, approved=approved, why=why)

    def _report(
        self, prompt: ConsentPrompt, reply: dict[str, Any], *, approved: bool, why: str
    ) -> None:
        sid = prompt.session_id
        if reply.get("lost"):
            self.grants.drop(sid)
            self.prompter.notice(
                f"the connection to the broker was lost: your answer to {prompt.who} was not "
                "taken; the request can still be answered when the agent is back"
            )
        elif not reply.get("accepted"):
            state = str(reply.get("state", ""))
            if state in RUNNING:
                return  # approved elsewhere too: the grant stands; approved_remotely says so
            self.grants.drop(sid)
            outcome = reply.get("outcome") or reply.get("detail") or "settled elsewhere"
            self.prompter.notice(
                f"the request from {prompt.who} was already {outcome}; your answer was not used"
            )
        elif approved:
            self.prompter.notice(
                f"approved: {prompt.who} may connect now; type 'end' and Enter to end the "
                "session at any time"
            )
        elif why == "timeout":
            self.prompter.notice(f"no answer in time: the request from {prompt.who} is denied")
        else:
            self.prompter.notice(f"denied: {prompt.technician} is told")

    def result(self, msg: dict[str, Any]) -> None:
        """The broker's ``consent_result`` for an answer sent from here."""
        found = self._results.get(str(msg.get("session_id")))
        if found is not None and not found.done():
            found.set_result(msg)

    def _close(self, sid: str) -> ConsentPrompt | None:
        """Take a request down (its prompt too); the prompt it was, if it was shown."""
        asking = self._asking.pop(sid, None)
        if asking is not None:
            asking.cancel()
        if sid in self._results:
            return None  # an answer of ours is on its way: its result tells what happened
        return self._shown.pop(sid, None)

    def closed(self, msg: dict[str, Any]) -> None:
        """``consent_closed``: denied, expired or withdrawn elsewhere."""
        prompt = self._close(str(msg.get("session_id")))
        if prompt is not None:
            outcome = msg.get("outcome") or "withdrawn"
            self.prompter.notice(f"the request from {prompt.who} was {outcome}")
            log.info("agent.consent_closed", session_id=prompt.session_id, outcome=outcome)

    def approved_elsewhere(self, msg: dict[str, Any]) -> ConsentPrompt | None:
        """An approval from the web or the group's policy: the prompt, if one was up."""
        return self._close(str(msg.get("session_id")))

    def lost(self) -> None:
        """The connection went: answers waiting for their result will not get one."""
        for found in self._results.values():
            if not found.done():
                found.set_result({"accepted": False, "lost": True})
