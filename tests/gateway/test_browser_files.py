"""The session's files page in a real headless Chromium, from a normal login.

The technician logs in through the form (tests/browser_login.py), opens the files page of a
session approved for ``files`` on a real agent, sees the allowed folder, drops a file on the
page (uploaded with progress through the broker) and downloads a device file; both transfers
are sealed with both hashes. An admin (a watcher) is not allowed the page."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests.browser_login import Logins
from tests.gateway.helpers import (
    ScriptedPrompter,
    enrolled_agent,
    events,
    request_session,
    ticket_ref,
    wait_state,
)
from tests.gateway.test_browser_terminal import desk, logins, xterm_installed

__all__ = ["desk", "logins", "xterm_installed"]  # fixtures used by this module's tests

STATUS = "(document.getElementById('status').textContent || '')"
DROP = """(text) => {
  const data = new DataTransfer();
  data.items.add(new File([text], "dropped.txt", {type: "text/plain"}));
  const drop = document.getElementById("drop");
  drop.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
  drop.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
}"""


# One Chromium run: the data path under the page is test_files.py's, on both databases.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_technician_drops_and_downloads_files_in_the_browser(
    app: Any,
    gateway: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    logins: Logins,
    desk: Any,
) -> None:
    from sqlalchemy import update

    from broker.devices.models import DeviceGroup

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "report.txt").write_bytes(b"report from the device\n")
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(DeviceGroup)
            .where(DeviceGroup.id == desk["group"].id)
            .values(allowed_paths=[str(shared)])
        )
        await db.commit()
    agent = await enrolled_agent(
        app, gateway, tmp_path, desk["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, desk["token"], agent.device_id, ["files"])
        sid = session["id"]
        await wait_state(client, desk["token"], sid, "approved")
        tech, password = desk["tech"]
        page = await logins.open(tech.username, password, f"/files/{sid}")
        await page.wait_for_function(f"{STATUS}.includes('entries in')")
        assert await page.locator("#folder").input_value() == str(shared)

        text = "dropped from the technician's desk\n" * 500
        await page.evaluate(DROP, text)
        await page.wait_for_function(f"{STATUS}.includes('uploaded dropped.txt')")
        assert (shared / "dropped.txt").read_text() == text
        assert await page.locator("#progress").evaluate("p => p.value === p.max")

        async with page.expect_download() as found:
            await page.get_by_role("button", name="Download report.txt").click()
        saved = tmp_path / "saved.txt"
        await (await found.value).save_as(saved)
        assert saved.read_bytes() == b"report from the device\n"
        log = await page.locator("#log").inner_text()
        assert hashlib.sha256(b"report from the device\n").hexdigest() in log

        sealed = await events(app, await ticket_ref(app, sid), "session.file_transfer")
        data = [e.payload["data"] for e in sealed]
        assert [(d["direction"], d["outcome"]) for d in data] == [
            ("upload", "ok"),
            ("download", "ok"),
        ]
        assert data[0]["sha256"] == data[0]["device_sha256"]

        admin, admin_pw = desk["admin"]
        watcher = await logins.open(admin.username, admin_pw, f"/files/{sid}")
        assert await watcher.title() == "Not allowed · supportbroker"
        assert await watcher.locator("#drop").count() == 0
    finally:
        await agent.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_watcher_sees_transfers_live_and_an_auditor_downloads_a_kept_file(
    app: Any,
    gateway: Any,
    tmp_path: Any,
    client: httpx.AsyncClient,
    logins: Logins,
    desk: Any,
) -> None:
    """The admin watching the session sees each transfer appear on the watch page (and has
    nothing to start one with); the group keeps files, so an auditor later lists the kept
    file on the session's audit page and downloads it with a reason, sealed first."""
    from sqlalchemy import update

    from broker.devices.models import DeviceGroup
    from tests.factories import make_user

    shared = tmp_path / "shared"
    shared.mkdir()
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(DeviceGroup)
            .where(DeviceGroup.id == desk["group"].id)
            .values(allowed_paths=[str(shared)], keep_files=True)
        )
        await db.commit()
    agent = await enrolled_agent(
        app, gateway, tmp_path, desk["group"].name, ScriptedPrompter([True])
    )
    try:
        session = await request_session(client, desk["token"], agent.device_id, ["files"])
        sid = session["id"]
        await wait_state(client, desk["token"], sid, "approved")
        admin, admin_pw = desk["admin"]
        watcher = await logins.open(admin.username, admin_pw, f"/terminal/{sid}?mode=watch")
        await watcher.locator("#no-transfers").wait_for()
        assert await watcher.locator("#drop, input[type=file]").count() == 0

        tech, password = desk["tech"]
        page = await logins.open(tech.username, password, f"/files/{sid}")
        await page.wait_for_function(f"{STATUS}.includes('entries in')")
        text = "kept for the auditors\n" * 300
        await page.evaluate(DROP, text)
        await page.wait_for_function(f"{STATUS}.includes('uploaded dropped.txt')")

        digest = hashlib.sha256(text.encode()).hexdigest()
        row = watcher.locator("#watched-transfers tr[data-outcome=ok]")
        await row.wait_for()
        shown = await row.inner_text()
        assert "dropped.txt" in shown
        assert digest in shown
        assert "to the device" in shown

        # Someone who may not watch (an uninvited colleague) reads nothing of it.
        expert, expert_pw = desk["expert"]
        colleague = await logins.context(expert.username, expert_pw)
        nosy = await colleague.request.get(f"{logins.base_url}/terminal/{sid}/transfers")
        assert nosy.status == 403

        auditor, auditor_pw = await make_user(app, "auditor")
        audit = await logins.open(auditor.username, auditor_pw, f"/ui/audit/sessions/{sid}")
        kept_row = audit.locator("#kept-files tbody tr")
        assert await kept_row.count() == 1
        assert digest in await kept_row.inner_text()
        await audit.get_by_label("Why do you need dropped.txt?").fill("incident INC-42")
        async with audit.expect_download() as found:
            await audit.get_by_role("button", name="Download dropped.txt").click()
        saved = tmp_path / "kept.txt"
        await (await found.value).save_as(saved)
        assert saved.read_text() == text

        viewed = await events(app, await ticket_ref(app, sid), "file.viewed")
        assert [e.payload["data"]["reason"] for e in viewed] == ["incident INC-42"]
        assert viewed[0].payload["data"]["sha256"] == digest
    finally:
        await agent.stop()
