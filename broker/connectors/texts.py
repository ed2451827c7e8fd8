"""The comments a ticket receives, as plain text (each connector renders it for its system).

One builder per moment of a session: the request (who, why, which rights, how long), the
end user's decision, the start, the end (duration and summary) and the evidence digest
(latest signed checkpoint, and how to export and verify the ticket's bundle with the real
``supportbroker audit`` commands). Texts name people and facts, never secrets or links that
grant access (the auditor's page needs an auditor's login).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from datetime import datetime

from broker.connectors.base import marker_line

HEADER = "[supportbroker]"


def with_marker(text: str, marker: str) -> str:
    """The comment as posted: its text, then the (session, step) reference it is found by."""
    return f"{text}\n{marker_line(marker)}"


def link_text(link: str) -> str:
    return "\n".join(
        [
            f"{HEADER} Remote session for this ticket",
            f"Start it here: {link}",
            "The technician signs in to the broker; the end user is asked for consent.",
        ]
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def duration_text(start: datetime, end: datetime) -> str:
    seconds = max(0, int((end - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def request_text(
    *,
    technician: str,
    reason: str,
    capabilities: Sequence[str],
    duration_minutes: int,
    device: str,
    provider: str,
    session_id: str,
    unattended: bool = False,
) -> str:
    consent = (
        "Unattended access allowed by the device group's policy (recorded as such)."
        if unattended
        else "Waiting for the end user's consent."
    )
    return "\n".join(
        [
            f"{HEADER} Remote session requested",
            f"Technician: {technician}",
            f"Device: {device} (via {provider})",
            f"Reason: {reason}",
            f"Rights: {', '.join(capabilities) or 'none'}; time limit {duration_minutes} min",
            consent,
            f"Session: {session_id}",
        ]
    )


def decision_text(
    *,
    approved: bool,
    decided_by: str,
    session_id: str,
    until: datetime | None = None,
    note: str | None = None,
) -> str:
    lines = [
        f"{HEADER} Remote session {'approved' if approved else 'denied'} by {decided_by}",
        f"Session: {session_id}",
    ]
    if approved and until is not None:
        lines.append(f"Valid until: {_when(until)}")
    if note:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


def start_text(
    *, technician: str, device: str, provider: str, started_at: datetime, session_id: str
) -> str:
    return "\n".join(
        [
            f"{HEADER} Remote session started {_when(started_at)}",
            f"Technician: {technician}; device: {device} (via {provider})",
            f"Session: {session_id}",
        ]
    )


def end_text(
    *,
    technician: str,
    session_id: str,
    started_at: datetime | None,
    ended_at: datetime,
    outcome: str,
    reason: str,
    capabilities: Sequence[str],
    end_reason: str | None = None,
    summary: str | None = None,
) -> str:
    took = duration_text(started_at, ended_at) if started_at is not None else "not started"
    lines = [
        f"{HEADER} Remote session {outcome} {_when(ended_at)}",
        f"Technician: {technician}",
        f"Duration: {took}",
        f"Why: {reason}",
        f"Rights used: {', '.join(capabilities) or 'none'}",
    ]
    if end_reason:
        lines.append(f"Ended because: {end_reason}")
    if summary:
        lines.append(f"Summary: {summary}")
    lines.append(f"Session: {session_id}")
    return "\n".join(lines)


def export_command(ticket_ref: str) -> str:
    """The CLI call that writes the ticket's bundle (``broker.evidence.cli``: ``audit export``).

    Ticket numbers are free text: the reference is shell-quoted so the line can be pasted.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", ticket_ref).strip("-.") or "ticket"
    return (
        f"supportbroker audit export {shlex.quote(ticket_ref)} "
        f"--out evidence-{name}.zip --reason '<why>'"
    )


def evidence_text(
    *,
    ticket_ref: str,
    tree_size: int,
    root_hash: str,
    signed_at: datetime,
    key_fingerprint: str | None = None,
    audit_page: str | None = None,
) -> str:
    lines = [
        f"{HEADER} Audit evidence sealed for {ticket_ref}",
        f"Latest signed checkpoint: size {tree_size}, root {root_hash}, {_when(signed_at)}",
    ]
    if key_fingerprint:
        lines.append(f"Signing key fingerprint: {key_fingerprint}")
    lines.append(f"Export the verifiable bundle: {export_command(ticket_ref)}")
    if audit_page:
        lines.append(f"or as an auditor: {audit_page} (Export bundle)")
    lines.append("Verify it offline: supportbroker audit verify <bundle.zip> --public-key <key>")
    return "\n".join(lines)
