"""File transfer through the broker to a real agent on loopback (docs/FILES.md).

Every transfer goes through ``/api/v1/gateway/sessions/{id}/files``: the broker checks the
path and the limit, hashes the bytes itself, compares with the device's hash and seals
``session.file_transfer`` with both. Bad input leaves nothing half-written and is sealed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from broker.devices.models import DeviceGroup
from tests.browser_login import form_login
from tests.factories import make_user
from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    events,
    request_session,
    ticket_ref,
    wait_state,
)

FILES = "/api/v1/gateway/sessions/{}/files"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _approved(app: Any, gateway: Any, people: Any, tmp_path: Any, client: Any) -> Any:
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    session = await request_session(client, people["tech_token"], agent.device_id, ["files"])
    await wait_state(client, people["tech_token"], session["id"], "approved")
    return agent, session["id"]


async def _sealed(app: Any, sid: str) -> list[dict[str, Any]]:
    found = await events(app, await ticket_ref(app, sid), "session.file_transfer")
    return [e.payload["data"] for e in found]


def _leftovers(folder: Any) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".sbpart"))


async def test_upload_list_download_with_both_hashes_sealed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, auth = people["allowed"], _auth(people["tech_token"])
    payload = os.urandom(3 << 20) + b"end"
    digest = hashlib.sha256(payload).hexdigest()
    try:
        folders = await client.get(FILES.format(sid), headers=auth)
        assert folders.status_code == 200, folders.text
        assert folders.json()["folders"] == [str(allowed)]
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/tool.bin"},
            content=payload,
            headers=auth,
        )
        assert put.status_code == 200, put.text
        assert put.json()["sha256"] == put.json()["device_sha256"] == digest
        assert (allowed / "tool.bin").read_bytes() == payload
        notice = f"file tool.bin ({len(payload)} bytes) written to this computer"
        assert notice in agent.prompter.notices  # the user at the device sees it
        assert _leftovers(allowed) == []
        listed = await client.get(FILES.format(sid), params={"path": str(allowed)}, headers=auth)
        assert listed.status_code == 200, listed.text
        assert {"name": "tool.bin", "dir": False, "size": len(payload)} in listed.json()["entries"]

        (allowed / "log.txt").write_bytes(b"device log\n" * 1000)
        got = await client.get(
            FILES.format(sid) + "/content", params={"path": f"{allowed}/log.txt"}, headers=auth
        )
        assert got.status_code == 200, got.text
        assert got.content == b"device log\n" * 1000
        tid = got.headers["x-transfer-id"]
        outcome = await client.get(FILES.format(sid) + f"/transfers/{tid}", headers=auth)
        assert outcome.json()["outcome"] == "ok"
        assert outcome.json()["sha256"] == hashlib.sha256(got.content).hexdigest()

        sealed = await _sealed(app, sid)
        assert [(d["direction"], d["outcome"]) for d in sealed] == [
            ("upload", "ok"),
            ("download", "ok"),
        ]
        assert sealed[0]["sha256"] == sealed[0]["device_sha256"] == digest
        assert sealed[0]["size"] == len(payload)
        assert sealed[0]["name"] == "tool.bin"

        # The auditor's timeline of the ticket shows both transfers with both hashes.
        auditor, password = await make_user(app, "auditor")
        transport = httpx.ASGITransport(app=app, client=("198.51.100.11", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as web:
            await form_login(web, auditor.username, password)
            system, external_id = (await ticket_ref(app, sid)).split(":", 1)
            page = await web.get(f"/ui/audit/tickets/{system}/{external_id}")
        assert page.status_code == 200, page.text
        assert page.text.count("session.file_transfer") >= 2
        assert digest in page.text
    finally:
        await agent.stop()


async def test_traversal_symlink_and_limit_refused_and_sealed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, auth = people["allowed"], _auth(people["tech_token"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the technician")
    (allowed / "escape").symlink_to(outside)
    content = FILES.format(sid) + "/content"
    try:
        trav = await client.get(
            content, params={"path": f"{allowed}/../outside/secret.txt"}, headers=auth
        )
        assert trav.status_code == 403
        assert "'..'" in trav.json()["detail"]
        link = await client.get(
            content, params={"path": f"{allowed}/escape/secret.txt"}, headers=auth
        )
        assert link.status_code == 403, link.text
        assert "refused by the device" in link.json()["detail"]
        up = await client.put(
            content, params={"path": f"{allowed}/escape/dropped.txt"}, content=b"x", headers=auth
        )
        assert up.status_code == 403
        assert not (outside / "dropped.txt").exists()

        async with app.state.sessionmaker() as db:
            await db.execute(update(DeviceGroup).values(max_file_bytes=1000))
            await db.commit()
        big = await client.put(
            content, params={"path": f"{allowed}/big.bin"}, content=b"y" * 1001, headers=auth
        )
        assert big.status_code == 403
        assert "limit of 1000 bytes" in big.json()["detail"]

        async def chunked() -> Any:  # no Content-Length: the limit stops the stream itself
            for _ in range(4):
                yield b"z" * 400

        streamed = await client.put(
            content, params={"path": f"{allowed}/big.bin"}, content=chunked(), headers=auth
        )
        assert streamed.status_code == 403, streamed.text
        assert not (allowed / "big.bin").exists()
        assert _leftovers(allowed) == []

        sealed = await _sealed(app, sid)
        assert len(sealed) == 5
        assert all(d["outcome"] == "failed" and d["why"] for d in sealed)
    finally:
        await agent.stop()


async def test_a_file_changing_during_download_is_a_sealed_mismatch(
    app: Any, gateway: Any, people: Any, tmp_path: Any, live_url: str
):
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as client:
        agent, sid = await _approved(app, gateway, people, tmp_path, client)
        allowed, auth = people["allowed"], _auth(people["tech_token"])
        (allowed / "growing.log").write_bytes(b"a" * (32 << 20))
        try:
            url = FILES.format(sid) + "/content"
            params = {"path": f"{allowed}/growing.log"}
            seen: dict[str, str] = {}

            async def read_while_it_changes() -> None:
                async with client.stream("GET", url, params=params, headers=auth) as got:
                    seen["tid"] = got.headers["x-transfer-id"]
                    chunks = got.aiter_bytes()
                    await chunks.__anext__()
                    with (allowed / "growing.log").open("r+b") as fh:
                        fh.write(b"CHANGED")  # the device's file changes mid-transfer
                    await asyncio.sleep(0.2)  # the broker is held back by this reader
                    async for _ in chunks:
                        pass

            with pytest.raises(httpx.RemoteProtocolError):  # cut: the bytes are not whole
                await read_while_it_changes()
            tid = seen["tid"]
            outcome = await client.get(FILES.format(sid) + f"/transfers/{tid}", headers=auth)
            data = outcome.json()
            assert data["outcome"] == "failed"
            assert "hash mismatch" in data["why"]
            assert data["sha256"] != data["device_sha256"]
            assert (await _sealed(app, sid))[-1]["outcome"] == "failed"
        finally:
            await agent.stop()


async def test_agent_lost_mid_upload_leaves_nothing_and_is_sealed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, auth = people["allowed"], _auth(people["tech_token"])

    async def body() -> Any:
        yield b"q" * (5 << 20)  # one batch is written to the device ...
        await asyncio.sleep(0.3)
        gateway.links[agent.device_id].conn.abort()  # ... then the link to the device drops
        yield b"q" * (5 << 20)

    try:
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/half.bin"},
            content=body(),
            headers=auth,
        )
        assert put.status_code == 502, put.text
        assert "disconnected" in put.json()["detail"]
        assert not (allowed / "half.bin").exists()
        # The broker could not remove its staging file (the link is gone): the agent does,
        # when it sees its SFTP session end.
        async with asyncio.timeout(10):
            while _leftovers(allowed):
                await asyncio.sleep(0.05)
        sealed = await _sealed(app, sid)
        assert sealed[-1]["outcome"] == "failed"
        assert sealed[-1]["direction"] == "upload"
    finally:
        await agent.stop()


@pytest.mark.parametrize("who", ["admin", "other_tech"])
async def test_watchers_and_others_cannot_transfer(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, who: str
):
    from tests.factories import make_token

    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    if who == "admin":
        token = people["admin_token"]
    else:
        other, _ = await make_user(app, "technician")
        token = await make_token(app, other)
    try:
        for method, suffix in [("GET", ""), ("GET", "/content"), ("PUT", "/content")]:
            found = await client.request(
                method,
                FILES.format(sid) + suffix,
                params={"path": f"{people['allowed']}/x"},
                headers=_auth(token),
            )
            assert found.status_code in (403, 404), found.text
            assert set(found.json()) == {"error", "detail"}
        assert not (people["allowed"] / "x").exists()
    finally:
        await agent.stop()


async def test_a_download_abandoned_by_the_technician_is_sealed_as_failed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, live_url: str
):
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as client:
        agent, sid = await _approved(app, gateway, people, tmp_path, client)
        allowed, auth = people["allowed"], _auth(people["tech_token"])
        (allowed / "big.iso").write_bytes(b"i" * (32 << 20))
        try:
            url = FILES.format(sid) + "/content"
            async with client.stream(
                "GET", url, params={"path": f"{allowed}/big.iso"}, headers=auth
            ) as got:
                await got.aiter_bytes().__anext__()  # one chunk, then the technician goes
            async with asyncio.timeout(10):
                while not (sealed := await _sealed(app, sid)):
                    await asyncio.sleep(0.05)
            assert sealed[-1]["outcome"] == "failed"
            assert "interrupted" in sealed[-1]["why"]
            assert sealed[-1]["size"] < 32 << 20
        finally:
            await agent.stop()


async def test_a_staging_file_changed_during_upload_is_a_sealed_mismatch(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, auth = people["allowed"], _auth(people["tech_token"])

    async def body() -> Any:
        yield b"u" * (5 << 20)  # one batch is written to the staging file on the device ...
        (staged,) = _leftovers(allowed)
        with (allowed / staged).open("r+b") as fh:
            fh.write(b"TAMPERED")  # ... which then changes on the device's disk
        yield b"u" * (1 << 20)

    try:
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/tool.bin"},
            content=body(),
            headers=auth,
        )
        assert put.status_code == 502, put.text
        assert "hash mismatch" in put.json()["detail"]
        assert not (allowed / "tool.bin").exists()
        assert _leftovers(allowed) == []  # the broker removed its staging file
        sealed = (await _sealed(app, sid))[-1]
        assert (sealed["direction"], sealed["outcome"]) == ("upload", "failed")
        assert "hash mismatch" in sealed["why"]
        expected = hashlib.sha256(b"u" * (6 << 20)).hexdigest()
        assert sealed["sha256"] == expected  # the broker's hash of what it relayed
        assert sealed["device_sha256"] not in ("", expected)  # the device's of what it holds
        assert sealed["size"] == 6 << 20
    finally:
        await agent.stop()


@pytest.fixture
def tiny_disk(people: Any) -> Any:
    """The allowed folder on a 64 KiB tmpfs (root only: skipped elsewhere), unmounted after."""
    import subprocess

    folder = people["allowed"]
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_a_full_disk_on_the_device_fails_cleanly_and_is_sealed(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient, tiny_disk: Any
):
    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    auth = _auth(people["tech_token"])
    try:
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{tiny_disk}/large.bin"},
            content=b"d" * (1 << 20),  # 1 MiB onto a 64 KiB disk
            headers=auth,
        )
        assert put.status_code == 502, put.text
        assert set(put.json()) == {"error", "detail"}
        assert "no space left" in put.json()["detail"].lower()
        assert os.listdir(tiny_disk) == []  # neither the file nor its staging file
        sealed = (await _sealed(app, sid))[-1]
        assert (sealed["direction"], sealed["outcome"]) == ("upload", "failed")
        assert "no space left" in sealed["why"].lower()
        # The disk is usable again: a file that fits goes through whole.
        small = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{tiny_disk}/small.txt"},
            content=b"fits\n",
            headers=auth,
        )
        assert small.status_code == 200, small.text
        assert (tiny_disk / "small.txt").read_bytes() == b"fits\n"
    finally:
        await agent.stop()


async def test_the_end_user_sees_each_transfer_on_the_status_page(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    from tests.factories import consent_token

    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    created = await request_session(client, people["tech_token"], agent.device_id, ["files"])
    sid, token = created["id"], consent_token(created)
    await wait_state(client, people["tech_token"], sid, "approved")
    allowed, auth = people["allowed"], _auth(people["tech_token"])
    payload = b"driver package\n" * 500
    try:
        page = await client.get(f"/consent/{token}")
        assert page.status_code == 200, page.text
        assert "consent-transfers" not in page.text  # nothing moved yet: no table
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/driver.inf"},
            content=payload,
            headers=auth,
        )
        assert put.status_code == 200, put.text
        (allowed / "crash.dmp").write_bytes(b"dump")
        got = await client.get(
            FILES.format(sid) + "/content", params={"path": f"{allowed}/crash.dmp"}, headers=auth
        )
        assert got.status_code == 200, got.text
        tid = got.headers["x-transfer-id"]
        await client.get(FILES.format(sid) + f"/transfers/{tid}", headers=auth)  # sealed
        refused = await client.get(
            FILES.format(sid) + "/content", params={"path": f"{allowed}/gone.txt"}, headers=auth
        )
        assert refused.status_code == 404

        page = await client.get(f"/consent/{token}")
        assert page.status_code == 200, page.text
        rows = page.text.split('id="consent-transfers"', 1)[1].split("</table>", 1)[0]
        rows_in_order = rows.split("<tr data-outcome=")[1:]
        assert len(rows_in_order) == 3
        up, down, failed = rows_in_order
        for row, words in [
            (up, ['"ok"', "driver.inf", "copied to this computer", f"{len(payload)} bytes",
                  hashlib.sha256(payload).hexdigest()]),
            (down, ['"ok"', "crash.dmp", "copied from this computer",
                    hashlib.sha256(b"dump").hexdigest()]),
            (failed, ['"failed"', "gone.txt", "not on the device"]),
        ]:  # fmt: skip
            for word in words:
                assert word in row

        # The JSON view the status page is built from says the same.
        view = (await client.get(f"/api/v1/consent/{token}")).json()
        assert [(t["name"], t["direction"], t["outcome"]) for t in view["transfers"]] == [
            ("driver.inf", "upload", "ok"),
            ("crash.dmp", "download", "ok"),
            ("gone.txt", "download", "failed"),
        ]
        assert view["transfers"][0]["size"] == len(payload)
    finally:
        await agent.stop()


async def test_whole_transfers_are_written_back_to_the_ticket(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    from broker.connectors import registry as registry_mod
    from broker.connectors.outbox import deliver_due
    from tests.connectors.harness import harness

    desk = harness("zammad")
    registry = desk.registry()
    registry_mod.install(registry)
    agent = await enrolled_agent(
        app, gateway, tmp_path, people["group"].name, ScriptedPrompter([True])
    )
    try:
        ticket = {"system": desk.kind, "external_id": desk.open_id}
        created = await request_session(
            client, people["tech_token"], agent.device_id, ["files"], ticket=ticket
        )
        sid, allowed, auth = created["id"], people["allowed"], _auth(people["tech_token"])
        await wait_state(client, people["tech_token"], sid, "approved")
        payload = b"setup\x00" * 7000
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/setup.exe"},
            content=payload,
            headers=auth,
        )
        assert put.status_code == 200, put.text
        refused = await client.put(  # a failed transfer is sealed, not written back
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/../nope.exe"},
            content=b"x",
            headers=auth,
        )
        assert refused.status_code == 403

        await deliver_due(app.state.sessionmaker)
        notes = [n["text"] for n in desk.fake.notes if n["ticket"] == desk.open_id]
        files = [t for t in notes if f"{sid}/file-" in t]
        assert len(files) == 1, notes
        assert "setup.exe" in files[0]
        assert f"{len(payload)} bytes" in files[0]
        assert hashlib.sha256(payload).hexdigest() in files[0]
        assert f"{sid}/file-1" in files[0]
    finally:
        await agent.stop()
        registry_mod.install(None)
        await registry.aclose()


async def test_a_kept_file_is_downloaded_by_an_auditor_with_a_reason(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    from tests.factories import make_token

    policy = await client.patch(  # the admin turns the group's policy on
        f"/api/v1/device-groups/{people['group'].id}",
        json={"keep_files": True},
        headers=_auth(people["admin_token"]),
    )
    assert policy.status_code == 200, policy.text
    assert policy.json()["keep_files"] is True
    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    allowed, auth = people["allowed"], _auth(people["tech_token"])
    payload = os.urandom(6 << 20)

    async def body() -> Any:  # two pieces: 4 MiB, then the last 2 MiB
        for at in range(0, len(payload), 2 << 20):
            yield payload[at : at + (2 << 20)]

    try:
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{allowed}/tool.bin"},
            content=body(),
            headers=auth,
        )
        assert put.status_code == 200, put.text
        assert put.json()["kept"] == 2
        up = put.json()["transfer_id"]
        (allowed / "report.txt").write_bytes(b"device report\n")
        got = await client.get(
            FILES.format(sid) + "/content", params={"path": f"{allowed}/report.txt"}, headers=auth
        )
        down = got.headers["x-transfer-id"]
        await client.get(FILES.format(sid) + f"/transfers/{down}", headers=auth)
        refused = await client.get(
            FILES.format(sid) + "/content", params={"path": f"{allowed}/none"}, headers=auth
        )
        assert refused.status_code == 404

        auditor, _ = await make_user(app, "auditor")
        audit = _auth(await make_token(app, auditor))
        kept = FILES.format(sid) + "/kept/{}"
        no_reason = await client.post(kept.format(up), json={"reason": " "}, headers=audit)
        assert no_reason.status_code == 422
        by_tech = await client.post(kept.format(up), json={"reason": "look"}, headers=auth)
        assert by_tech.status_code == 403
        assert set(by_tech.json()) == {"error", "detail"}
        file_up = await client.post(kept.format(up), json={"reason": "incident 7"}, headers=audit)
        assert file_up.status_code == 200, file_up.text
        assert file_up.content == payload
        assert "tool.bin" in file_up.headers["content-disposition"]
        file_down = await client.post(kept.format(down), json={"reason": "case 8"}, headers=audit)
        assert file_down.content == b"device report\n"
        failed = (await _sealed(app, sid))[-1]
        assert failed["outcome"] == "failed"
        gone = await client.post(
            kept.format(failed["transfer_id"]), json={"reason": "case 9"}, headers=audit
        )
        assert gone.status_code == 404

        viewed = await events(app, await ticket_ref(app, sid), "file.viewed")
        assert [
            (e.payload["data"]["transfer_id"], e.payload["data"]["reason"]) for e in viewed
        ] == [
            (up, "incident 7"),
            (down, "case 8"),
        ]
        assert viewed[0].payload["data"]["auditor_id"] == auditor.id
    finally:
        await agent.stop()


async def test_files_are_not_kept_without_the_group_policy(
    app: Any, gateway: Any, people: Any, tmp_path: Any, client: httpx.AsyncClient
):
    from tests.factories import make_token

    agent, sid = await _approved(app, gateway, people, tmp_path, client)
    try:
        put = await client.put(
            FILES.format(sid) + "/content",
            params={"path": f"{people['allowed']}/a.txt"},
            content=b"a",
            headers=_auth(people["tech_token"]),
        )
        assert "kept" not in put.json()
        assert await events(app, await ticket_ref(app, sid), "file.kept") == []
        auditor, _ = await make_user(app, "auditor")
        found = await client.post(
            FILES.format(sid) + f"/kept/{put.json()['transfer_id']}",
            json={"reason": "curious"},
            headers=_auth(await make_token(app, auditor)),
        )
        assert found.status_code == 404
        assert "did not keep" in found.json()["detail"]
    finally:
        await agent.stop()
