"""The replicas' peering handshake against a served replica (broker.replicas.peering): only a
live registered replica's grant, signed with its published key, for this replica as it is
now, unexpired and used once, is served; the served replica proves itself with its own
published key. Refusals close the peer socket with 4403 and a JSON error. Both databases."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from broker.auth.principal import Principal
from broker.db.base import utcnow
from broker.gateway.server import start_gateway
from broker.replicas.models import Replica
from broker.replicas.peering import (
    GRANT_CONTEXT,
    Grant,
    Peering,
    PeeringRefused,
    Relayed,
    ws_address,
)
from broker.replicas.service import heartbeat, public_text

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"gateway_port": 0}


@pytest.fixture
async def served(app: Any, live_url: str) -> AsyncIterator[Replica]:
    """This test's app with its gateway, served on a port: the replica ``b`` dials (its row
    as ``b`` reads it, with the address it is served at)."""
    stop = await start_gateway(app)
    try:
        async with app.state.sessionmaker() as db:
            row = await db.get(Replica, app.state.replica.id)
            assert row is not None
            assert row.peering_key == app.state.gateway.peering.public
            yield Replica(id=row.id, address=live_url, peering_key=row.peering_key)
    finally:
        await stop()


async def _register(app: Any, name: str, *, beat_ago: float = 0.0) -> Peering:
    """Another replica, as its heartbeat registers it (``beat_ago``: silent that long)."""
    peering = Peering(app.state.settings, app.state.sessionmaker, name)
    async with app.state.sessionmaker() as db, db.begin():
        await heartbeat(db, name, "http://127.0.0.1:9", utcnow(), peering.public)
        if beat_ago:
            await db.flush()
            row = await db.get(Replica, name)
            assert row is not None
            row.heartbeat_at = utcnow() - timedelta(seconds=beat_ago)
    return peering


def _grant(peering: Peering, target: Replica, desk: Any, **changed: Any) -> Grant:
    who = Principal(
        kind="user",
        role="technician",
        name="Tech",
        scopes=frozenset(),
        user_id=desk.tech.id,
        ip="198.51.100.7",
    )
    made = peering.grant(
        target, principal=who, session_id="no-such-session", mode="control", channel="terminal"
    )
    return made.model_copy(update=changed)


async def _send(
    target: Replica, grant: Grant, signer: Ed25519PrivateKey, channel: str = "terminal"
) -> tuple[dict[str, Any], int | None]:
    """One grant on a peer socket: the first frame back and the close code, if it closed."""
    raw = grant.encode()
    signature = base64.b64encode(signer.sign(GRANT_CONTEXT + raw)).decode()
    async with connect(ws_address(target.address) + channel) as conn:
        await conn.send(
            json.dumps({"type": "grant", "grant": raw.decode(), "signature": signature})
        )
        first = json.loads(await conn.recv())
        if "proof" in first:
            return first, None
        with contextlib.suppress(ConnectionClosed):
            await conn.recv()
        return first, conn.close_code


async def test_a_live_registered_replica_is_served_once(
    app: Any, served: Replica, desk: Any
) -> None:
    b = await _register(app, "replica-b")
    grant = _grant(b, served, desk)
    # Both ends proven: b's grant accepted, the served replica's proof checked by b.
    conn = await b.dial(served, grant)
    try:
        # Then the served replica runs its own terminal handler: the session is its to refuse.
        said = json.loads(await conn.recv())
        assert said["error"] == "not_found", said
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code == 4403
    finally:
        await conn.close()
    # The same grant again: a replay.
    first, code = await _send(served, grant, b.key)
    assert (first["error"], code) == ("not_authenticated", 4403)
    assert "already used" in first["detail"]


REFUSALS = {  # what is wrong with the grant -> what the refusal says
    "unknown replica": "not a registered live broker replica",
    "dead replica": "not a registered live broker replica",
    "bad signature": "signature",
    "expired": "expired",
    "other replica": "as it was",
    "channel": "not a forward",
    "malformed": "malformed",
}


async def test_peering_refusals(app: Any, served: Replica, desk: Any) -> None:
    b = await _register(app, "replica-b")
    await _register(app, "replica-d", beat_ago=600)  # stopped heartbeating
    for case, says in REFUSALS.items():
        grant, signer, channel = _grant(b, served, desk), b.key, "terminal"
        if case == "unknown replica":
            grant = grant.model_copy(update={"origin": "replica-x"})
        elif case == "dead replica":
            grant = grant.model_copy(update={"origin": "replica-d"})
        elif case == "bad signature":
            signer = Ed25519PrivateKey.generate()
        elif case == "expired":
            grant = grant.model_copy(update={"expires": time.time() - 1})
        elif case == "other replica":  # made for the served replica's predecessor (other key)
            grant = grant.model_copy(update={"target_key": public_text(signer)})
        elif case == "channel":
            channel = "forward"
        elif case == "malformed":
            grant = grant.model_copy(update={"nonce": "short"})
        first, code = await _send(served, grant, signer, channel)
        assert code == 4403, (case, first)
        assert first["error"] == "not_authenticated", (case, first)
        assert says in first["detail"], (case, first)
    # A replica never registered is refused, and the dialler hands that refusal on as is.
    ghost = Peering(app.state.settings, app.state.sessionmaker, "ghost")
    with pytest.raises(Relayed) as refused:
        await ghost.dial(served, _grant(ghost, served, desk))
    assert refused.value.code == "not_authenticated"
    assert "not a registered live broker replica" in refused.value.detail
    # The dialler believes another key is the served replica's: the proof does not check out.
    impostor = Replica(
        id=served.id,
        address=served.address,
        peering_key=public_text(Ed25519PrivateKey.generate()),
    )
    grant = _grant(b, impostor, desk, target_key=served.peering_key)
    with pytest.raises(PeeringRefused, match="did not prove"):
        await b.dial(impostor, grant)
