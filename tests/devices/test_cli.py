"""``supportbroker device add|list`` and ``group add|add-member`` on a temporary SQLite file."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.service import create_user
from broker.cli import main, run_in_transaction
from broker.config import Settings
from broker.devices.models import Device, DeviceGroup, GroupMember

# On SQLite only, as the command line is run in these tests (broker_env: tests/conftest.py).
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def in_db(settings: Settings, fn: Any) -> Any:
    """Run ``await fn(db)`` in one committed transaction with the CLI's own wiring."""
    result: list[Any] = []

    async def handler(db: AsyncSession, _: argparse.Namespace) -> int:
        result.append(await fn(db))
        return 0

    asyncio.run(run_in_transaction(settings, handler, argparse.Namespace()))
    return result[0]


def count(settings: Settings, model: Any) -> int:
    async def fn(db: AsyncSession) -> int:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)

    result: int = in_db(settings, fn)
    return result


def events(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    async def fn(db: AsyncSession) -> list[tuple[str, dict[str, Any]]]:
        conn = await db.connection()
        found = await db.info["audit_log"].read_stream(conn, "_system")
        return [(e.event_type, e.payload) for e in found]

    result: list[tuple[str, dict[str, Any]]] = in_db(settings, fn)
    return result


def add_user(settings: Settings, username: str, role: str) -> None:
    async def fn(db: AsyncSession) -> None:
        await create_user(
            db, username=username, display_name=username.title(), role=role, password="x" * 16
        )

    in_db(settings, fn)


def test_group_add_and_device_add(broker_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["group", "add", "Finance", "--unattended"]) == 0
    assert "created device group Finance" in capsys.readouterr().out
    code = main(
        [
            "device", "add", "FIN-LT-042", "--group", "Finance", "--provider", "anydesk",
            "--provider-id", "123456789", "--asset-tag", "INV-42", "--owner", "Erika",
            "--contact", "erika@example.test",
        ]
    )  # fmt: skip
    assert code == 0
    assert "added device FIN-LT-042" in capsys.readouterr().out

    assert main(["device", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 1
    [device] = listed["items"]
    assert device["group"]["name"] == "Finance"
    assert device["provider_device_id"] == "123456789"
    assert device["owner_contact"] == "erika@example.test"

    assert main(["device", "list"]) == 0
    table = capsys.readouterr().out
    assert "FIN-LT-042" in table
    assert "Finance" in table

    types = [e for e, _ in events(broker_env)]
    assert types == ["device_group.created", "device.created"]
    group_event = events(broker_env)[0][1]
    assert group_event["data"]["unattended_allowed"] is True
    assert group_event["actor"] == {"kind": "system", "name": "cli"}


def test_device_add_with_create_group(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["device", "add", "pc1", "--group", "Lab", "--provider", "agent", "--provider-id", "k"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no device group named 'Lab'" in err
    assert "--create-group" in err
    assert count(broker_env, DeviceGroup) == 0

    assert main([*args, "--create-group"]) == 0
    assert "new group" in capsys.readouterr().out
    assert count(broker_env, DeviceGroup) == 1
    assert count(broker_env, Device) == 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--provider", "teamviewer"], "unknown provider 'teamviewer'"),
        (["--provider-id", "1\x002"], "--provider-id: "),
        (["--owner", "x" * 201], "--owner: "),
        (["--contact", "a\nb"], "--contact: "),
    ],
)
def test_device_add_bad_input(
    broker_env: Settings, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    base = ["device", "add", "pc1", "--group", "Lab", "--create-group"]
    defaults = {"--provider": "anydesk", "--provider-id": "42"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        defaults[flag] = value
    args = base + [part for pair in defaults.items() for part in pair]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert words in captured.err
    assert captured.err.startswith("supportbroker: error: ")
    assert "Traceback" not in captured.err
    # Nothing written, not even the group --create-group would have made.
    assert count(broker_env, DeviceGroup) == 0
    assert count(broker_env, Device) == 0
    assert events(broker_env) == []


def test_device_add_duplicate(broker_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["device", "add", "pc1", "--group", "Lab", "--provider", "anydesk", "--provider-id", "9"]
    assert main([*args, "--create-group"]) == 0
    assert main(["device", "add", "pc2", *args[3:]]) == 1
    assert "already registered as 'pc1'" in capsys.readouterr().err
    assert count(broker_env, Device) == 1


def test_group_add_duplicate_and_bad_name(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["group", "add", "Lab"]) == 0
    assert main(["group", "add", "Lab"]) == 1
    assert "'Lab' already exists" in capsys.readouterr().err
    assert main(["group", "add", "Bad\x07Name"]) == 1
    assert "NAME: " in capsys.readouterr().err
    assert count(broker_env, DeviceGroup) == 1


def test_group_add_member(broker_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    add_user(broker_env, "tina", "technician")
    add_user(broker_env, "alice", "admin")
    assert main(["group", "add", "Lab"]) == 0
    capsys.readouterr()

    assert main(["group", "add-member", "Lab", "tina"]) == 0
    assert "tina is now a member of Lab" in capsys.readouterr().out
    assert main(["group", "add-member", "Lab", "tina"]) == 0
    assert "already a member" in capsys.readouterr().out
    assert count(broker_env, GroupMember) == 1

    assert main(["group", "add-member", "Lab", "alice"]) == 1
    assert "only technicians" in capsys.readouterr().err
    assert main(["group", "add-member", "Lab", "nobody"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
    assert main(["group", "add-member", "Nope", "tina"]) == 1
    assert "no device group named 'Nope'" in capsys.readouterr().err
    assert count(broker_env, GroupMember) == 1
    types = [e for e, _ in events(broker_env)]
    assert types.count("device_group.member_added") == 1


def test_device_list_empty_and_filters(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["device", "list"]) == 0
    assert "no devices" in capsys.readouterr().out
    for name, group, provider in (("a", "One", "anydesk"), ("b", "Two", "meshcentral")):
        args = ["device", "add", name, "--group", group, "--provider", provider]
        assert main([*args, "--provider-id", name, "--create-group"]) == 0
    capsys.readouterr()
    assert main(["device", "list", "--group", "Two", "--json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["items"]] == ["b"]
    assert main(["device", "list", "--provider", "anydesk", "--json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["items"]] == ["a"]
    assert main(["device", "list", "--group", "Nope"]) == 1
    assert main(["device", "list", "--limit", "0"]) == 1


def test_missing_required_flag_is_usage_error(
    broker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["device", "add", "pc1", "--group", "Lab"])
    assert exc.value.code == 2
    assert "--provider" in capsys.readouterr().err
