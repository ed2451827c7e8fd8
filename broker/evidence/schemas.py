"""Bodies of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from broker.types import CleanText


class EventOut(BaseModel):
    position: int
    record_id: str
    seq: int
    event_type: str
    occurred_at: datetime
    erased: bool
    payload: dict[str, Any] | None


class SystemEventsOut(BaseModel):
    events: list[EventOut]
    limit: int
    offset: int
    has_more: bool


class TimelineOut(BaseModel):
    stream: str
    integrity_ok: bool
    problem: str | None
    events: list[EventOut]


class VerifyOut(BaseModel):
    ok: bool
    size: int
    verdict: str
    position: int | None
    record_id: str | None


class CheckpointOut(BaseModel):
    size: int
    root: str
    note: str
    public_key: str
    fingerprint: str
    published: dict[str, Any]


class SignedCheckpointOut(BaseModel):
    size: int
    root: str
    note: str = Field(description="the signed note; verify it with the public key")
    signed_at: datetime
    fingerprint: str


class ConsistencyOut(BaseModel):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str] = Field(description="RFC 9162 consistency proof, hex hashes")


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CleanText = Field(min_length=3, max_length=500)
    include_plaintext: bool = False


class PlaybackAskIn(BaseModel):
    """Ask a second auditor: a replay (``session_id``) or a plaintext export (the ticket)."""

    model_config = ConfigDict(extra="forbid")

    reason: CleanText = Field(min_length=3, max_length=500)
    session_id: str | None = Field(default=None, max_length=36)
    system: str | None = Field(default=None, min_length=1, max_length=50)
    external_id: str | None = Field(default=None, min_length=1, max_length=100)


class PlaybackDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: str = Field(pattern="^(approve|deny)$")
    reason: CleanText | None = Field(default=None, max_length=500)


class DualControlIn(BaseModel):
    """A ticket's own dual-control switch (docs/OVERSIGHT.md), with why."""

    model_config = ConfigDict(extra="forbid")

    dual_control: bool
    reason: CleanText = Field(min_length=3, max_length=500)


class EraseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CleanText = Field(min_length=3, max_length=500)


class EraseOut(BaseModel):
    stream: str
    erasure_position: int
