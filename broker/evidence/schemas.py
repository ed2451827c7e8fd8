"""Bodies of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from broker.sessions.schemas import CleanText


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


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CleanText = Field(min_length=3, max_length=500)
    include_plaintext: bool = False


class EraseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CleanText = Field(min_length=3, max_length=500)


class EraseOut(BaseModel):
    stream: str
    erasure_position: int
