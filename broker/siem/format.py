"""What a SIEM receives for one audit record: a JSON object, or an RFC 5424 syslog message.

Both carry the record's log position (the key a receiver drops repeats by), its id, its
ticket stream and sequence, event type, time, OCSF class and leaf hash (so an event can be
checked against an evidence bundle or a checkpoint later). The encrypted payload goes out
decrypted only for a target whose policy allows it; a record whose ticket was erased then
says ``"erased": true`` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.evidence.events import SECURITY_EVENTS
from broker.siem.ocsf import ocsf_class

SD_ID = "sbAudit@32473"  # 32473: the documentation enterprise number (RFC 5612)
APP_NAME = "supportbroker"
SEVERITY_NOTICE = 5
SEVERITY_WARNING = 4  # the catalogue's security events (refusals, lockouts, alerts)


@dataclass(frozen=True, slots=True)
class SiemEvent:
    position: int
    record_id: str
    stream: str
    stream_seq: int
    event_type: str
    occurred_at: datetime
    payload_size: int
    leaf_hash: bytes
    payload: dict[str, Any] | None = None  # only for targets allowed payloads
    erased: bool = False

    def as_json(self, log_id: str) -> dict[str, Any]:
        found = ocsf_class(self.event_type)
        out: dict[str, Any] = {
            "log_id": log_id,
            "position": self.position,
            "record_id": self.record_id,
            "stream": self.stream,
            "stream_seq": self.stream_seq,
            "event_type": self.event_type,
            "time": _timestamp(self.occurred_at),
            "ocsf_class_uid": found[0] if found else None,
            "ocsf_class_name": found[1] if found else None,
            "payload_size": self.payload_size,
            "leaf_hash": self.leaf_hash.hex(),
        }
        if self.payload is not None:
            out["payload"] = self.payload
        if self.erased:
            out["erased"] = True
        return out


def json_line(event: SiemEvent, log_id: str) -> bytes:
    """One JSON-lines line (compact, UTF-8, ``\\n``-terminated)."""
    text = json.dumps(event.as_json(log_id), separators=(",", ":"), ensure_ascii=False)
    return text.encode() + b"\n"


def syslog_message(event: SiemEvent, log_id: str, *, hostname: str, facility: int) -> bytes:
    """The RFC 5424 message: MSGID is the event type, structured data the record's
    coordinates, MSG the same JSON object as over HTTPS."""
    severity = SEVERITY_WARNING if event.event_type in SECURITY_EVENTS else SEVERITY_NOTICE
    sd = (
        f"[{SD_ID} log={_param(log_id)} pos={_param(str(event.position))} "
        f"id={_param(event.record_id)} stream={_param(event.stream)} "
        f"seq={_param(str(event.stream_seq))}]"
    )
    header = (
        f"<{facility * 8 + severity}>1 {_timestamp(event.occurred_at)} "
        f"{_token(hostname, 255)} {APP_NAME} - {_token(event.event_type, 32)} "
    )
    body = json.dumps(event.as_json(log_id), separators=(",", ":"), ensure_ascii=False)
    return (header + sd + " ").encode() + body.encode()


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _param(value: str) -> str:
    # RFC 5424, 6.3.3: '"', '\' and ']' are escaped inside a PARAM-VALUE.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return f'"{escaped}"'


def _token(value: str, limit: int) -> str:
    # Header fields are PRINTUSASCII without spaces; "-" is the nil value.
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"
