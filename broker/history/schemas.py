"""What the history API answers: one device's sessions as the end user sees them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from broker.flows.history import Entry, History


class HistorySessionOut(BaseModel):
    session_id: str
    technician: str
    ticket: str
    ticket_subject: str | None
    reason: str
    capabilities: list[str]
    requested_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    allowed_minutes: int
    ran_minutes: int | None
    state: str
    unattended: bool
    decided_by: str | None
    # Where the consent receipt can be downloaded (None: nobody decided).
    receipt_url: str | None

    @classmethod
    def of(cls, entry: Entry, base: str) -> HistorySessionOut:
        f: dict[str, Any] = entry.facts
        receipt = entry.receipt
        decided_by = None
        if receipt is not None:
            decided_by = receipt.data.get("decided_by") or (
                (receipt.data.get("receipt") or {}).get("decided_by")
            )
        return cls(
            session_id=f["session_id"],
            technician=f["technician"],
            ticket=f["ticket"],
            ticket_subject=f["ticket_subject"],
            reason=f["reason"],
            capabilities=f["capabilities"],
            requested_at=f["requested_at"],
            started_at=f["started_at"],
            ended_at=f["ended_at"],
            allowed_minutes=f["allowed_minutes"],
            ran_minutes=f["ran_minutes"],
            state=f["state"],
            unattended=f["unattended"],
            decided_by=None if decided_by is None else str(decided_by),
            receipt_url=f"{base}/receipts/{f['session_id']}" if receipt is not None else None,
        )


class HistoryOut(BaseModel):
    device: str
    expires_at: datetime
    sessions: list[HistorySessionOut]

    @classmethod
    def of(cls, history: History, base: str) -> HistoryOut:
        return cls(
            device=history.device.name,
            expires_at=history.expires_at,
            sessions=[HistorySessionOut.of(e, base) for e in history.entries],
        )
