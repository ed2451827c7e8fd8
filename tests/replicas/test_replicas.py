"""Several replicas as one service (issue 20; docs/DEPLOY.md): one identity, presence of each
agent on the replica holding it, approvals carried by LISTEN/NOTIFY, background jobs run
once, and the jobs moving when their replica is killed. PostgreSQL only (the fixture)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import BIN, Served, clean_env, created_password, free_port
from tests.replicas.conftest import Cluster, Hook, enroll_through_balancer

pytestmark = pytest.mark.timeout(240)
SIGNAL_WAIT = 30.0  # well under the 60 s fallback sweep: only a notice can be this quick


@pytest.fixture(scope="module")
def desk(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    a = cluster.replicas["a"]
    a.cli("group", "add", "front-office")
    tom = a.cli("user", "create", "tom", "--role", "technician", "--display-name", "Tom T")
    a.cli("group", "add-member", "front-office", "tom")
    issued = a.cli(
        "token", "create", "--name", "tom-cli", "--user", "tom",
        "--scope", "sessions:read", "--scope", "sessions:write",
    ).stdout  # fmt: skip
    token = re.search(r"secret \(shown only now\): (\S+)", issued)
    assert token, issued
    # Before the agent connects: it learns its group's ports and folders when its link starts.
    port, folder = _echo_service(), tmp_path_factory.mktemp("device-files")
    _allow(cluster, "front-office", port, folder)
    agent = enroll_through_balancer(cluster, tmp_path_factory.mktemp("device"), "front-office")
    device = json.loads(a.cli("device", "list", "--json").stdout)["items"][0]
    created_password(tom.stdout)
    return {
        "token": token.group(1),
        "agent": agent,
        "device": device,
        "echo": port,
        "folder": folder,
    }


def _until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def holder(cluster: Cluster, device_id: str) -> str:
    """The replica whose link to the device's agent the database records (and is alive)."""
    live = set(cluster.live())

    def read() -> str | None:
        rows = cluster.sql("SELECT connected_node FROM agent_keys WHERE device_id = $1", device_id)
        node = rows[0]["connected_node"] if rows else None
        return node if node in live else None

    return str(_until("the agent's link is recorded", read))


def _request(
    replica: Served,
    token: str,
    device: dict[str, Any],
    ticket: str,
    capabilities: tuple[str, ...] = ("shell",),
) -> Any:
    with httpx.Client(
        base_url=replica.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        created = client.post(
            "/api/v1/sessions",
            json={
                "ticket": {"system": "helpdesk", "external_id": ticket, "subject": "Printer"},
                "device_id": device["id"],
                "reason": "Printer queue is stuck: needs a look at the logs",
                "capabilities": list(capabilities),
                "duration_minutes": 30,
            },
        )
    assert created.status_code == 201, created.text
    return created.json()


def _state(replica: Served, token: str, session_id: str) -> str:
    found = httpx.get(
        f"{replica.url}/api/v1/sessions/{session_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return str(found.json()["state"])


def _end(replica: Served, token: str, session_id: str) -> None:
    """End a running session, cancel one not started (what the technician's page offers)."""
    for how in ("end", "cancel"):
        ended = httpx.post(
            f"{replica.url}/api/v1/sessions/{session_id}/{how}",
            headers={"Authorization": f"Bearer {token}"},
            json={"reason": "done"},
            timeout=30,
        )
        if ended.status_code != 409:
            break
    assert ended.status_code == 200, ended.text


def _connect(cluster: Cluster, replica: Served, token: str, session_id: str, text: bytes) -> Any:
    return subprocess.run(
        [str(BIN / "supportbroker"), "connect", session_id, "--url", replica.url],
        env=clean_env(SUPPORTBROKER_TOKEN=token),
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_replicas_share_one_identity_and_other_keys_are_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    sealed = {r["name"]: r["fingerprint"] for r in cluster.sql("SELECT * FROM sealed_keys")}
    assert {"checkpoint-key", "ssh-host-key", "kek:kek-1"} <= set(sealed)
    key = httpx.get(f"{cluster.url}/api/v1/audit/public-key", timeout=10).text
    for replica in cluster.replicas.values():  # one checkpoint key, whichever replica answers
        assert httpx.get(f"{replica.url}/api/v1/audit/public-key", timeout=10).text == key
    # A fourth replica started with keys of its own (its ./var) on the same database.
    env = clean_env(
        SUPPORTBROKER_DATABASE_URL=cluster.database_url,
        SUPPORTBROKER_SECRET_KEY=cluster.settings["SUPPORTBROKER_SECRET_KEY"],
        SUPPORTBROKER_DATA_DIR=str(tmp_path / "data"),
        SUPPORTBROKER_KEK_PATH=cluster.settings["SUPPORTBROKER_KEK_PATH"],
        SUPPORTBROKER_PORT=str(free_port()),
        SUPPORTBROKER_GATEWAY_PORT=str(free_port()),
        SUPPORTBROKER_REPLICA_ID="stray",
    )
    stray = subprocess.run(
        [str(BIN / "supportbroker"), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert stray.returncode != 0
    assert "refuses to start" in stray.stderr, stray.stderr[-2000:]
    assert "checkpoint-key" in stray.stderr
    assert "ssh-host-key" in stray.stderr
    assert "kek:" not in stray.stderr  # the KEK it shares is not named as differing
    # It sealed nothing and never registered.
    assert {r["name"]: r["fingerprint"] for r in cluster.sql("SELECT * FROM sealed_keys")} == (
        sealed
    )
    assert not cluster.sql("SELECT id FROM replicas WHERE id = 'stray'")


def test_presence_names_the_replica_holding_the_agent(
    cluster: Cluster, desk: dict[str, Any]
) -> None:
    live = {r["id"] for r in cluster.sql("SELECT id FROM replicas")}
    assert live == {"a", "b", "c"}
    on = holder(cluster, desk["device"]["id"])
    others = [n for n in cluster.live() if n != on]
    agent, token = desk["agent"], desk["token"]
    # Asked on another replica; the agent's prompt comes from the holder (by a notice).
    mark = agent.out.mark()
    created = _request(cluster.replicas[others[0]], token, desk["device"], "HD-2001")
    agent.out.wait_for(r"Allow\? \[y/N\] ", after=mark, timeout=SIGNAL_WAIT)
    agent.type("y\n")
    _until("approved", lambda: _state(cluster.replicas[on], token, created["id"]) == "approved")
    # On the holder the terminal works (on the others too: test_peering_* below).
    works = _connect(
        cluster, cluster.replicas[on], token, created["id"], b"echo held-$((20+1))\nexit\n"
    )
    assert b"held-21" in works.stdout, works.stderr
    _end(cluster.replicas[on], token, created["id"])


def test_web_approval_on_one_replica_reaches_the_agent_on_another(
    cluster: Cluster, desk: dict[str, Any]
) -> None:
    on = holder(cluster, desk["device"]["id"])
    asked_on, approved_on = [n for n in cluster.live() if n != on]
    agent, token = desk["agent"], desk["token"]
    mark = agent.out.mark()
    created = _request(cluster.replicas[asked_on], token, desk["device"], "HD-2002")
    agent.out.wait_for(r"Allow\? \[y/N\] ", after=mark, timeout=SIGNAL_WAIT)
    approver = cluster.replicas[approved_on]
    code = created["consent"]["code"]
    looked = httpx.post(f"{approver.url}/api/v1/consent/lookup", json={"code": code}, timeout=30)
    assert looked.status_code == 200, looked.text
    decided = httpx.post(
        f"{approver.url}/api/v1/consent/{looked.json()['token']}/decision",
        json={"decision": "approve", "name": "Erika Mustermann"},
        timeout=30,
    )
    assert decided.status_code == 200, decided.text
    # The holder hears of it by LISTEN/NOTIFY: its fallback sweep would take 60 s.
    agent.out.wait_for(r"approved on the web by Erika Mustermann", after=mark, timeout=SIGNAL_WAIT)
    _end(cluster.replicas[asked_on], token, created["id"])


def _echo_service() -> int:
    """A service on the device (the agent runs on this machine) echoing what it gets: the
    far end of a forward."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=run, daemon=True).start()
    return int(server.getsockname()[1])


def _allow(cluster: Cluster, group: str, port: int, folder: Path) -> None:
    """The admin lets the group's sessions forward to ``port`` and move files in ``folder``
    (through the load balancer)."""
    a = cluster.replicas["a"]
    issued = a.cli("token", "create", "--name", f"ops-{port}", "--user", "admin",
                   "--scope", "devices:read", "--scope", "devices:write").stdout  # fmt: skip
    found = re.search(r"secret \(shown only now\): (\S+)", issued)
    assert found, issued
    with httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {found.group(1)}"}, timeout=30
    ) as client:
        groups = client.get("/api/v1/device-groups").json()["items"]
        gid = next(g["id"] for g in groups if g["name"] == group)
        changed = client.patch(
            f"/api/v1/device-groups/{gid}",
            json={"allowed_ports": [port], "allowed_paths": [str(folder)]},
        )
        assert changed.status_code == 200, changed.text


def _through(local: int, payload: bytes) -> bytes:
    """Send ``payload`` into a forward's local port and read as much back."""
    deadline = time.monotonic() + 30
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", local), timeout=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        got = b""
        for start in range(0, len(payload), 65536):  # read back as it comes, as a client does
            sock.sendall(payload[start : start + 65536])
            while len(got) < min(len(payload), start + 65536) and (data := sock.recv(65536)):
                got += data
    return got


def test_a_terminal_forward_and_files_on_another_replica_reach_the_agent(
    cluster: Cluster, desk: dict[str, Any], tmp_path: Path
) -> None:
    on = holder(cluster, desk["device"]["id"])
    via = next(n for n in cluster.live() if n != on)
    agent, token, port = desk["agent"], desk["token"], desk["echo"]
    device_folder = desk["folder"]  # the device's files (the agent runs here)
    (device_folder / "report.txt").write_bytes(b"printer log\n" * 5000)
    mark = agent.out.mark()
    created = _request(
        cluster.replicas[via], token, desk["device"], "HD-2003", ("shell", "forward", "files")
    )
    agent.out.wait_for(r"Allow\? \[y/N\] ", after=mark, timeout=SIGNAL_WAIT)
    agent.type("y\n")
    _until("approved", lambda: _state(cluster.replicas[via], token, created["id"]) == "approved")
    started = "SELECT count(*) AS n FROM audit_records WHERE event_type = 'recording.started'"
    before = cluster.sql(started)[0]["n"]
    # The technician's terminal socket is opened on a replica without the agent.
    works = _connect(
        cluster, cluster.replicas[via], token, created["id"], b"echo peered-$((40+2))\nexit\n"
    )
    assert b"peered-42" in works.stdout, works.stderr
    # Relayed by `via`, served and recorded by the holder: one recording, begun once.
    assert cluster.sql(started)[0]["n"] == before + 1
    assert "gateway.peered" in cluster.replicas[via].log.read_text()
    assert "gateway.peer_accepted" in cluster.replicas[on].log.read_text()
    assert "gateway.peer_accepted" not in cluster.replicas[via].log.read_text()
    # A forward through the same replica reaches the device's port.
    local = free_port()
    forward = subprocess.Popen(
        [str(BIN / "supportbroker"), "connect", created["id"], "--url",
         cluster.replicas[via].url, "--forward", f"{local}:{port}"],
        env=clean_env(SUPPORTBROKER_TOKEN=token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        payload = b"through-another-replica " * 40000  # ~1 MiB, more than one frame
        echoed = _through(local, payload)
    finally:
        forward.terminate()
        _, said = forward.communicate(timeout=10)
    assert echoed == payload, (len(echoed), said.decode(errors="replace")[-2000:])
    # A download and an upload through the same replica, hashed and sealed by the holder.
    got = tmp_path / "got.txt"
    for move in (
        ["--get", str(device_folder / "report.txt"), str(got)],
        ["--put", str(got), str(device_folder / "back.txt")],
    ):
        moved = subprocess.run(
            [str(BIN / "supportbroker"), "connect", created["id"], "--url",
             cluster.replicas[via].url, *move],
            env=clean_env(SUPPORTBROKER_TOKEN=token),
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
    assert got.read_bytes() == (device_folder / "report.txt").read_bytes()
    assert (device_folder / "back.txt").read_bytes() == got.read_bytes()
    _end(cluster.replicas[via], token, created["id"])


def test_background_jobs_run_on_one_replica_only(cluster: Cluster, desk: dict[str, Any]) -> None:
    token = desk["token"]
    # Work for every job over ~30 s: sessions asked for and ended on all three replicas.
    started = time.monotonic()
    for i, name in enumerate(list(cluster.live()) * 2):
        created = _request(cluster.replicas[name], token, desk["device"], f"HD-30{i:02d}")
        _end(cluster.replicas[name], token, created["id"])
    time.sleep(max(0.0, 30 - (time.monotonic() - started)))
    holders = [r["holder"] for r in cluster.sql("SELECT holder FROM replica_leases")]
    assert len(holders) == 1
    taken = [n for n, r in cluster.replicas.items() if "replicas.lease_taken" in r.log.read_text()]
    assert taken == holders  # nobody else ever ran the background jobs
    # Every ticket comment reached the ticket system once, none twice.
    ids = Counter(d["id"] for d in Hook.received)
    assert ids
    assert max(ids.values()) == 1, ids.most_common(3)
    refs = Counter(
        re.findall(
            r"\[supportbroker-ref ([^\]]+)\]", json.dumps([d["text"] for d in Hook.received])
        )
    )
    assert refs
    assert max(refs.values()) == 1, refs.most_common(3)
    # Checkpoints: signed by one replica, so no replica ever lost a race for the same size.
    assert cluster.sql("SELECT count(*) AS n FROM audit_checkpoints")[0]["n"] > 0
    for name, replica in cluster.replicas.items():
        text = replica.log.read_text()
        failed = text.find("background.job_failed")
        assert failed < 0, text[failed : failed + 3000]  # the failure and its traceback
        if name not in holders:  # the others delivered and signed nothing
            assert not re.search(r"connectors\.delivered\s+count=", text)
            assert not re.search(r"audit\.published\s+count=", text)


def test_kill_of_the_lease_holder_moves_the_jobs(cluster: Cluster, desk: dict[str, Any]) -> None:
    token = desk["token"]
    before = cluster.sql("SELECT holder FROM replica_leases")[0]["holder"]
    victim = cluster.replicas[before]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    survivors = list(cluster.live())
    after = _until(
        "another replica takes the background lease",
        lambda: [
            r["holder"]
            for r in cluster.sql("SELECT holder FROM replica_leases")
            if r["holder"] != before
        ],
    )[0]
    assert after in survivors
    # The killed replica is forgotten, its agent links with it; the agent is held again.
    _until(
        "the dead replica is expired",
        lambda: not cluster.sql("SELECT id FROM replicas WHERE id = $1", before),
    )
    assert holder(cluster, desk["device"]["id"]) in survivors
    # New records are covered by checkpoints the new holder signs and publishes.
    created = _request(cluster.replicas[survivors[0]], token, desk["device"], "HD-4001")
    _end(cluster.replicas[survivors[0]], token, created["id"])
    records = cluster.sql("SELECT count(*) AS n FROM audit_records")[0]["n"]
    _until(
        "a checkpoint covers the new records",
        lambda: cluster.sql("SELECT max(size) AS n FROM audit_checkpoints")[0]["n"] >= records,
    )
    verified = cluster.replicas[after].cli("audit", "verify-log", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
