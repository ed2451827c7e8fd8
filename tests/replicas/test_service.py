"""The replicas' bookkeeping on both databases: leases by compare-and-set, the sealed
identity, and the expiry of replicas that stopped heartbeating (broker.replicas.service)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from broker.config import Settings
from broker.db.base import utcnow
from broker.errors import IdentityMismatch
from broker.replicas.models import Replica
from broker.replicas.service import (
    BACKGROUND,
    alive,
    check_identity,
    expire_dead,
    take_lease,
)


async def test_a_lease_has_one_holder_and_moves_once_it_runs_out(app: Any) -> None:
    maker = app.state.sessionmaker
    assert app.state.replica.holds_background()  # the app's own replica, alone: it runs jobs
    assert not await take_lease(maker, BACKGROUND, "someone-else", 30)
    assert await take_lease(maker, "outbox", "r1", 30)
    assert not await take_lease(maker, "outbox", "r2", 30)
    assert await take_lease(maker, "outbox", "r1", 30)  # renewed by its holder
    assert await take_lease(maker, "sweeps", "r1", -1)  # r1 "dies": the lease ran out
    assert await take_lease(maker, "sweeps", "r2", 30)
    assert not await take_lease(maker, "sweeps", "r1", 30)


async def test_the_identity_is_sealed_once_and_other_keys_are_refused(app: Any) -> None:
    maker = app.state.sessionmaker
    held = {"kek:kek-1": "SHA256:k1", "checkpoint-key": "SHA256:c", "ssh-host-key": "SHA256:h"}
    async with maker() as db, db.begin():  # the first start seals (serve does this)
        assert await check_identity(db, held) == sorted(held)
    async with maker() as db, db.begin():  # every later start with the same keys: nothing new
        assert await check_identity(db, held) == []
    async with maker() as db, db.begin():  # a rotated-in KEK is sealed when first seen
        assert await check_identity(db, {**held, "kek:kek-2": "SHA256:k2"}) == ["kek:kek-2"]
    for other in (
        {**held, "checkpoint-key": "SHA256:other"},
        {**held, "kek:kek-1": "SHA256:other"},
        {"kek:kek-9": "SHA256:x", "checkpoint-key": "SHA256:c", "ssh-host-key": "SHA256:h"},
    ):
        async with maker() as db:
            with pytest.raises(IdentityMismatch, match="sealed with"):
                await check_identity(db, other)


async def test_a_replica_that_stopped_heartbeating_is_expired(app: Any) -> None:
    maker = app.state.sessionmaker
    lease = timedelta(seconds=20)
    async with maker() as db, db.begin():
        old = utcnow() - timedelta(minutes=5)
        db.add(Replica(id="gone", address="http://10.0.0.9", started_at=old, heartbeat_at=old))
    async with maker() as db, db.begin():
        assert "gone" not in await alive(db, lease)
        assert app.state.replica.id in await alive(db, lease)
        await expire_dead(db, lease)
    async with maker() as db:
        assert await db.get(Replica, "gone") is None


def test_the_lease_must_outlive_the_heartbeat() -> None:
    with pytest.raises(ValidationError, match="LEASE_SECONDS must be longer"):
        Settings(replica_heartbeat_seconds=10, replica_lease_seconds=5)
