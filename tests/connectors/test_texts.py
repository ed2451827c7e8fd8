"""The comment texts: the evidence digest names commands that really exist (parsed with the
broker's own CLI parser, so a renamed command fails here), free-text ticket numbers are
quoted for the shell, and durations read like a person would write them."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

import pytest

from broker.cli import build_parser
from broker.connectors import texts

AT = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def _command_line(text: str, prefix: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
    words = shlex.split(line.removeprefix(prefix))
    assert words[0] == "supportbroker"
    return words[1:]


@pytest.mark.parametrize("ref", ["zammad:4711", "paper:HD 47'11; rm -rf /", "jira:HD-5/a"])
def test_evidence_digest_commands_parse_with_the_real_cli(ref: str) -> None:
    text = texts.evidence_text(
        ticket_ref=ref,
        tree_size=42,
        root_hash="ab" * 32,
        signed_at=AT,
        key_fingerprint="SHA256:xyz",
        audit_page="https://broker.example/ui/audit/tickets/zammad/4711",
    )
    assert "size 42, root " + "ab" * 32 in text
    assert "GET /api/v1/audit/checkpoints/42" in text  # the digest names a fetchable checkpoint
    assert "2025-03-01 09:30 UTC" in text
    assert "SHA256:xyz" in text
    assert "https://broker.example/ui/audit/tickets/zammad/4711" in text

    export = build_parser().parse_args(_command_line(text, "Export the verifiable bundle: "))
    assert (export.command, export.audit_command) == ("audit", "export")
    assert export.ticket == ref  # the whole reference, one argument, however odd
    assert str(export.out).startswith("evidence-")
    assert "/" not in str(export.out)
    verify = build_parser().parse_args(_command_line(text, "Verify it offline: "))
    assert (verify.command, verify.audit_command) == ("audit", "verify")


def test_duration_text() -> None:
    assert texts.duration_text(AT, AT + timedelta(seconds=7)) == "7 s"
    assert texts.duration_text(AT, AT + timedelta(minutes=3, seconds=5)) == "3 min 05 s"
    assert texts.duration_text(AT, AT + timedelta(hours=1, minutes=2)) == "1 h 02 min"
    assert texts.duration_text(AT, AT - timedelta(seconds=5)) == "0 s"  # clock skew


def test_request_text_names_who_why_and_rights() -> None:
    text = texts.request_text(
        technician="Tom Tech",
        reason="printer driver",
        capabilities=["control", "view"],
        duration_minutes=30,
        device="pc-17",
        provider="agent",
        session_id="s-1",
    )
    assert "Technician: Tom Tech" in text
    assert "Reason: printer driver" in text
    assert "Rights: control, view; time limit 30 min" in text
    assert "Waiting for the end user's consent." in text
