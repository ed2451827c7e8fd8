"""The comments a ticket receives, as plain text (each connector renders it for its system).

One builder per step of a session's story: the request (who, why, which rights, how long,
the device and its asset tag), the end user's decision (who, which rights, the digest of the
consent receipt), the start, each expert who joined, each file that moved (name, size,
SHA-256), the end (who, why, how long, the device), the evidence digest (latest signed
checkpoint, and how to export and verify the ticket's bundle with the real
``supportbroker audit`` commands) and the end user's rating. Each comment ends with the
(session, step) marker it is found by (:func:`with_marker`). Texts name people and facts,
never secrets or links that grant access (the auditor's page needs an auditor's login).
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


def device_text(device: str, asset_tag: str | None, provider: str) -> str:
    tag = f", asset tag {asset_tag}" if asset_tag else ""
    return f"{device}{tag} (via {provider})"


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
    asset_tag: str | None = None,
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
            f"Device: {device_text(device, asset_tag, provider)}",
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
    capabilities: Sequence[str] = (),
    receipt_digest: str | None = None,
) -> str:
    lines = [
        f"{HEADER} Remote session {'approved' if approved else 'denied'} by {decided_by}",
    ]
    if capabilities:
        verb = "Rights approved" if approved else "Rights asked for"
        lines.append(f"{verb}: {', '.join(capabilities)}")
    if approved and until is not None:
        lines.append(f"Valid until: {_when(until)}")
    if receipt_digest:
        lines.append(f"Consent receipt (SHA-256): {receipt_digest}")
    if note:
        lines.append(f"Note: {note}")
    lines.append(f"Session: {session_id}")
    return "\n".join(lines)


def expert_text(*, expert: str, joined_at: datetime, session_id: str) -> str:
    return "\n".join(
        [
            f"{HEADER} Expert joined the remote session {_when(joined_at)}",
            f"Expert: {expert}",
            f"Session: {session_id}",
        ]
    )


def size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit} ({size} bytes)"
    return f"{size} bytes"


def file_text(
    *, name: str, size: int | None, sha256: str | None, direction: str | None, session_id: str
) -> str:
    way = {"upload": "to the device", "download": "from the device"}.get(direction or "", "")
    return "\n".join(
        [
            f"{HEADER} File transferred{' ' + way if way else ''}",
            f"File: {name}; {size_text(size)}",
            f"SHA-256: {sha256 or 'not reported'}",
            f"Session: {session_id}",
        ]
    )


def rating_text(*, score: int, comment: str | None, session_id: str) -> str:
    lines = [f"{HEADER} The end user rated the remote session {score} out of 5"]
    if comment:
        lines.append(f"Comment: {comment}")
    lines.append(f"Session: {session_id}")
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
    ended_by: str | None = None,
    device: str | None = None,
) -> str:
    took = duration_text(started_at, ended_at) if started_at is not None else "not started"
    lines = [
        f"{HEADER} Remote session {outcome} {_when(ended_at)}",
        f"Technician: {technician}",
        f"Duration: {took}",
        f"Why: {reason}",
        f"Rights used: {', '.join(capabilities) or 'none'}",
    ]
    if device:
        lines.append(f"Device: {device}")
    if ended_by:
        lines.append(f"Ended by: {ended_by}")
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
        f"Fetch it (and prove later heads consistent with it): "
        f"GET /api/v1/audit/checkpoints/{tree_size}",
    ]
    if key_fingerprint:
        lines.append(f"Signing key fingerprint: {key_fingerprint}")
    lines.append(f"Export the verifiable bundle: {export_command(ticket_ref)}")
    if audit_page:
        lines.append(f"or as an auditor: {audit_page} (Export bundle)")
    lines.append("Verify it offline: supportbroker audit verify <bundle.zip> --public-key <key>")
    return "\n".join(lines)
