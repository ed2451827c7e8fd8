"""Faults among the replicas (issue 20; docs/DEPLOY.md, "Failures"): a replica cut off from
PostgreSQL leaves the rotation and gives up the background jobs; a replica killed with
sessions running has them failed by the one that takes over, their recordings ending in a
gap record, while sessions on other replicas go on. Runs on the folder's cluster after
test_replicas.py (one replica may already be dead: at least two are needed)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from typing import Any

import httpx
import pytest

from tests.e2e.processes import BIN, Agent, Output, clean_env, enrolled_agent
from tests.replicas.conftest import Cluster, enroll_through_balancer
from tests.replicas.test_replicas import SIGNAL_WAIT, _until, holder

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]
GROUP = "night-shift"


def _token(cluster: Cluster, user: str, *scopes: str) -> str:
    any_replica = next(iter(cluster.replicas.values()))
    wanted = [arg for scope in scopes for arg in ("--scope", scope)]
    issued = any_replica.cli("token", "create", "--name", f"{user}-cli", "--user", user, *wanted)
    found = re.search(r"secret \(shown only now\): (\S+)", issued.stdout)
    assert found, issued.stdout
    return found.group(1)


@pytest.fixture(scope="module")
def staff(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A technician of the night shift's group and an auditor, each with an API token, and
    a device of the group whose agent dials in through the load balancer."""
    cli = next(iter(cluster.replicas.values())).cli
    cli("group", "add", GROUP)
    cli("user", "create", "nina", "--role", "technician", "--display-name", "Nina N")
    cli("group", "add-member", GROUP, "nina")
    cli("user", "create", "otto", "--role", "auditor", "--display-name", "Otto O")
    agent = enroll_through_balancer(cluster, tmp_path_factory.mktemp("roaming"), GROUP)
    return {
        "tech": _token(cluster, "nina", "sessions:read", "sessions:write"),
        "auditor": _token(cluster, "otto", "audit:read"),
        "agent": agent,
        "device": _device(agent),
    }


def _device(agent: Agent) -> str:
    return str(json.loads((agent.config_dir / "agent.json").read_text())["device_id"])


def _not_ready(url: str) -> dict[str, Any] | None:
    """The replica's /readyz refusal, if it refuses."""
    answer = httpx.get(f"{url}/readyz", timeout=15)
    return dict(answer.json()) if answer.status_code == 503 else None


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=15).status_code == 200


def _api(url: str, token: str, method: str, path: str, **body: Any) -> Any:
    answer = httpx.request(
        method,
        f"{url}/api/v1{path}",
        headers={"Authorization": f"Bearer {token}"},
        json=body or None,
        timeout=15,
    )
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def _request(url: str, token: str, device_id: str, ticket: str) -> str:
    created = _api(
        url,
        token,
        "POST",
        "/sessions",
        ticket={"system": "helpdesk", "external_id": ticket, "subject": "Mail"},
        device_id=device_id,
        reason="Mail client stopped syncing: needs a look at its logs",
        capabilities=["shell"],
        duration_minutes=30,
    )
    return str(created["id"])


def _state(url: str, token: str, session_id: str) -> str:
    return str(_api(url, token, "GET", f"/sessions/{session_id}")["state"])


def _lease_holder(cluster: Cluster) -> str:
    return str(cluster.sql("SELECT holder FROM replica_leases")[0]["holder"])


def test_a_replica_cut_off_from_the_database_leaves_the_rotation(
    cluster: Cluster, staff: dict[str, Any]
) -> None:
    # The background lease's holder: it must give up the jobs as well as the requests.
    cut = str(_until("a live replica holds the lease", lambda: _lease_holder(cluster)))
    assert cut in cluster.live()
    others = [n for n in cluster.live() if n != cut]
    assert others
    seen = cluster.haproxy_log.stat().st_size
    cluster.proxies[cut].cut()
    try:
        # Its own /readyz says so in bounded time (the probe does not hang with the
        # connection); the others stay ready.
        said = _until(
            "the cut replica says it is not ready", lambda: _not_ready(cluster.replicas[cut].url)
        )
        assert said["error"] == "database_unreachable", said
        assert "has not answered within 2 s" in said["detail"], said
        for name in others:
            assert _ready(cluster.replicas[name].url)
        # The jobs move to a replica that reaches the database.
        assert _until("the lease moves", lambda: _lease_holder(cluster) != cut)
        assert _lease_holder(cluster) in others
        # HAProxy's health check takes it out; new requests reach the others.
        _until(
            "HAProxy marks the cut replica down",
            lambda: re.search(
                rf"broker_http/{cut} is DOWN",
                cluster.haproxy_log.read_bytes()[seen:].decode(errors="replace"),
            ),
        )
        for i in range(4):  # a cut replica would hang them (the client gives up at 15 s)
            assert _ready(cluster.url)
            created = _request(cluster.url, staff["tech"], staff["device"], f"HD-61{i:02d}")
            _api(cluster.url, staff["tech"], "POST", f"/sessions/{created}/cancel", reason="x")
    finally:
        cluster.proxies[cut].restore()
    _until("the replica is ready again", lambda: _ready(cluster.replicas[cut].url))
    # Back in the rotation, it does not take the jobs back from the replica that has them.
    assert _lease_holder(cluster) in others


def _terminal(
    replica_url: str, token: str, session_id: str
) -> tuple[subprocess.Popen[bytes], Output]:
    """The technician's ``supportbroker connect``, kept open: typed into, read from."""
    proc = subprocess.Popen(
        [str(BIN / "supportbroker"), "connect", session_id, "--url", replica_url],
        env=clean_env(SUPPORTBROKER_TOKEN=token),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    return proc, Output(proc.stdout)


def _type(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.encode())
    proc.stdin.flush()


def _approved(cluster: Cluster, agent: Agent, token: str, device_id: str, ticket: str) -> str:
    mark = agent.out.mark()
    created = _request(cluster.url, token, device_id, ticket)
    agent.out.wait_for(r"Allow\? \[y/N\] ", after=mark, timeout=SIGNAL_WAIT)
    agent.type("y\n")
    _until("approved", lambda: _state(cluster.url, token, created) == "approved")
    return created


def _events(url: str, token: str, ticket: str, kind: str) -> list[dict[str, Any]]:
    found = _api(url, token, "GET", f"/audit/tickets/helpdesk/{ticket}/events")
    return [e["payload"]["data"] for e in found["events"] if e["event_type"] == kind]


def _recordings(url: str, token: str, session_id: str) -> list[dict[str, Any]]:
    return list(_api(url, token, "GET", f"/sessions/{session_id}/recordings")["recordings"])


def test_kill_of_a_replica_fails_its_sessions_and_spares_the_others(
    cluster: Cluster, staff: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tech, auditor, url = staff["tech"], staff["auditor"], cluster.url
    # The roaming agent (through the balancer) is on the replica to be killed; another agent
    # dials straight at a second replica. A terminal is open on each.
    roaming, device = staff["agent"], staff["device"]
    victim = holder(cluster, device)
    spared = next(n for n in cluster.live() if n != victim)
    staying = enrolled_agent(cluster.replicas[spared], tmp_path_factory.mktemp("staying"), GROUP)
    elsewhere = _device(staying)
    assert holder(cluster, elsewhere) == spared
    doomed = _approved(cluster, roaming, tech, device, "HD-6201")
    going_on = _approved(cluster, staying, tech, elsewhere, "HD-6202")
    # Before peering, a terminal is served by the replica holding the agent (test_replicas).
    cut_off, cut_out = _terminal(cluster.replicas[victim].url, tech, doomed)
    kept, kept_out = _terminal(cluster.replicas[spared].url, tech, going_on)
    try:
        _type(cut_off, "echo doomed-$((40+2))\n")
        cut_out.wait_for(r"doomed-42", timeout=30)
        _type(kept, "echo kept-$((40+3))\n")
        kept_out.wait_for(r"kept-43", timeout=30)
        # What the technician saw is sealed chunk by chunk: wait for the first chunk.
        before = _until(
            "a chunk of the doomed session's recording is sealed",
            lambda: [r for r in _recordings(url, auditor, doomed) if r["chunks"] >= 1],
        )[0]
        assert _state(url, tech, doomed) == "active"
        cluster.replicas[victim].proc.send_signal(signal.SIGKILL)
        cluster.replicas[victim].proc.wait(10)
        # The replica that takes over fails the session, naming the dead replica.
        _until("the dead replica's session fails", lambda: _state(url, tech, doomed) == "failed")
        ended = _api(url, tech, "GET", f"/sessions/{doomed}")
        assert f"({victim}) stopped" in ended["end_reason"], ended
        # Its recording keeps every chunk sealed before the kill and ends in a gap record.
        (recording,) = _recordings(url, auditor, doomed)
        assert recording["recording_id"] == before["recording_id"]
        assert recording["chunks"] >= before["chunks"]
        assert not recording["sealed"]  # no end record: the gap says why
        (gap,) = _events(url, auditor, "HD-6201", "recording.gap")
        assert gap["recording_id"] == recording["recording_id"]
        assert gap["replica"] == victim
        assert gap["chunks"] == recording["chunks"]
        assert gap["last_chunk"] == recording["chunks"] - 1
        assert f"stopped with the broker replica {victim}, after chunk" in gap["why"], gap
        (failed,) = _events(url, auditor, "HD-6201", "session.failed")
        assert victim in json.dumps(failed), failed
        # By the background lease's holder, whose log names the session it took over.
        taker = _lease_holder(cluster)
        assert taker != victim
        lines = cluster.replicas[taker].log.read_text().splitlines()
        assert [line for line in lines if "session_taken_over" in line and doomed in line]
        # The agent is back on a live replica (jittered redial through HAProxy).
        assert holder(cluster, device) in cluster.live()
        # The session on the other replica goes on: its terminal still answers.
        assert _state(url, tech, going_on) == "active"
        _type(kept, "echo still-$((40+4))\n")
        kept_out.wait_for(r"still-44", timeout=30)
        assert not _events(url, auditor, "HD-6202", "recording.gap")
        _api(url, tech, "POST", f"/sessions/{going_on}/end", reason="done")
    finally:
        for proc in (cut_off, kept):
            proc.kill()
            proc.wait(10)
    verified = cluster.replicas[spared].cli("audit", "verify-log", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
