"""The proofs an outside monitor needs (SQLite and PostgreSQL): any signed checkpoint by its
size, and the consistency proof between any two, read from the stored subtrees; the monitor
checks each against the public key and RFC 9162, so a fork or a shrunken log cannot pass.
The checkpoint an ``evidence.sealed`` digest names is one of them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, select

from audit.checkpoint import load_verifier
from audit.errors import AuditError
from audit.merkle import verify_consistency
from broker.evidence import digest
from broker.evidence.checkpoints import sign_if_due
from broker.evidence.events import EventType
from broker.evidence.service import SYSTEM_ACTOR, audit_log_of, flush_events, record_event
from broker.tasks import publish_checkpoint
from tests.evidence.test_published_rollback import TABLES
from tests.factories import bearer, make_token, make_user

V1 = "/api/v1/audit"


async def _grow(app: Any, n: int) -> int:
    """Append ``n`` events and a checkpoint signed over them; its size."""
    async with app.state.sessionmaker() as db:
        for i in range(n):
            await record_event(
                db, EventType.ticket_updated, ticket="local:T-9", actor=SYSTEM_ACTOR, data={"i": i}
            )
        await db.commit()
    await sign_if_due(app.state.sessionmaker)  # unless the broker's cadence signed first
    async with app.state.sessionmaker() as db:
        conn = await db.connection()
        log = audit_log_of(db)
        latest = await log.latest_checkpoint(conn)
        assert latest is not None
        assert latest.size == await log.size(conn)
    return latest.size


@pytest.fixture
async def auditor(app: Any) -> dict[str, str]:
    user, _ = await make_user(app, "auditor")
    return bearer(await make_token(app, user))


async def test_every_checkpoint_is_fetched_by_size_and_proven_consistent(
    app: Any, client: httpx.AsyncClient, auditor: dict[str, str]
) -> None:
    sizes = [await _grow(app, n) for n in (3, 1, 8, 5)]
    key = (await client.get(f"{V1}/public-key")).text.strip()
    verifier = load_verifier(key)
    heads = {}
    for size in sizes:
        got = await client.get(f"{V1}/checkpoints/{size}", headers=auditor)
        assert got.status_code == 200, got.text
        body = got.json()
        signed = verifier.verify(body["note"])  # the monitor trusts the signature, not the JSON
        assert (signed.size, signed.root.hex()) == (size, body["root"])
        assert body["fingerprint"] == verifier.fingerprint
        heads[size] = signed.root
    for i, old in enumerate(sizes):
        for new in sizes[i:]:
            got = await client.get(f"{V1}/consistency?old={old}&new={new}", headers=auditor)
            assert got.status_code == 200, got.text
            body = got.json()
            assert (body["old_root"], body["new_root"]) == (heads[old].hex(), heads[new].hex())
            proof = [bytes.fromhex(h) for h in body["proof"]]
            verify_consistency(old, new, heads[old], heads[new], proof)
            if old < new and proof:  # a forged head fails against the same proof
                with pytest.raises(AuditError):
                    verify_consistency(old, new, heads[old], bytes(32), proof)


async def test_unknown_or_backward_sizes_are_refused(
    app: Any, client: httpx.AsyncClient, auditor: dict[str, str]
) -> None:
    first, second = await _grow(app, 2), await _grow(app, 2)
    missing = await client.get(f"{V1}/checkpoints/{first + 1}", headers=auditor)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found",
        "detail": f"no checkpoint was signed at tree size {first + 1}",
    }
    not_signed = await client.get(f"{V1}/consistency?old={first + 1}&new={second}", headers=auditor)
    assert not_signed.status_code == 404
    backward = await client.get(f"{V1}/consistency?old={second}&new={first}", headers=auditor)
    assert backward.status_code == 422
    assert backward.json()["error"] == "invalid_request"
    for bad in ("0", "-1", str(2**63), "x"):
        assert (await client.get(f"{V1}/checkpoints/{bad}", headers=auditor)).status_code == 422


async def test_the_sealed_digest_names_a_checkpoint_that_can_be_fetched(
    app: Any, client: httpx.AsyncClient, auditor: dict[str, str]
) -> None:
    await _grow(app, 4)
    async with app.state.sessionmaker() as db:
        await record_event(db, EventType.ticket_updated, ticket="local:T-9", actor=SYSTEM_ACTOR)
        (sealed,) = await flush_events(db)
        await db.commit()
    async with app.state.sessionmaker() as db, db.begin():
        data = await digest.complete(db, {digest.POSITION: sealed.position, "ticket": "T-9"})
    assert data is not None
    got = await client.get(f"{V1}/checkpoints/{data['tree_size']}", headers=auditor)
    assert got.status_code == 200, got.text
    assert got.json()["root"] == data["root_hash"]


async def test_verify_catches_a_consistent_rollback(
    app: Any, client: httpx.AsyncClient, auditor: dict[str, str]
) -> None:
    """Records, tree, heads, keys and checkpoints put back together: only the published head
    (the broker's publication directory) shows it, and the verify API compares with it."""
    await _grow(app, 5)
    assert await publish_checkpoint(app) > 0
    async with app.state.engine.connect() as conn:
        backup = {t.name: [dict(r._mapping) for r in await conn.execute(select(t))] for t in TABLES}
    await _grow(app, 5)
    assert await publish_checkpoint(app) > 0
    ok = (await client.get(f"{V1}/verify", headers=auditor)).json()
    assert ok["ok"] is True, ok
    async with app.state.engine.begin() as conn:
        for table in TABLES:
            await conn.execute(delete(table))
            if backup[table.name]:
                await conn.execute(insert(table), backup[table.name])
    verdict = (await client.get(f"{V1}/verify", headers=auditor)).json()
    assert verdict["ok"] is False
    assert "rolled back" in verdict["verdict"]
