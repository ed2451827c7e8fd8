"""A log's per-ticket data keys: created on a ticket's first event, stored only wrapped by the
key-encryption key, unwrapped on demand into cached AES-GCM objects, destroyed on erasure and
re-wrapped on KEK rotation (records are never touched)."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from audit import schema
from audit.driver import AppendOps
from audit.errors import KeyUnavailable
from audit.keys import KeyProvider, new_data_key

CIPHER_CACHE_SIZE = 10_000


class Keyring:
    """Data keys in ``audit_data_keys``, wrapped by ``provider``; one AESGCM per key, cached."""

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self.ciphers: dict[str, AESGCM] = {}

    def cipher(self, key_id: str, kek_id: str, wrapped: bytes) -> AESGCM:
        cipher = self.ciphers.get(key_id)
        if cipher is None:
            cipher = self._remember(key_id, self.provider.unwrap(kek_id, wrapped))
        return cipher

    def _remember(self, key_id: str, data_key: bytes) -> AESGCM:
        if len(self.ciphers) >= CIPHER_CACHE_SIZE:  # bound the cache; keys unwrap on demand
            self.ciphers.clear()
        cipher = self.ciphers[key_id] = AESGCM(data_key)
        return cipher

    async def for_streams(
        self, ops: AppendOps, streams: set[str], now_us: int
    ) -> dict[str, tuple[str, AESGCM]]:
        """Each stream's current (key id, cipher); a stream without a live key gets one."""
        found = {s: (k, self.cipher(k, kek, w)) for s, k, kek, w in await ops.live_keys(streams)}
        new_rows = []
        for stream in streams - found.keys():
            key = new_data_key()
            kek_id, wrapped = self.provider.wrap(key)
            key_id = uuid.uuid4().hex
            found[stream] = (key_id, self._remember(key_id, key))
            new_rows.append((key_id, stream, kek_id, wrapped, now_us))
        if new_rows:
            await ops.insert_keys(new_rows)
        return found

    async def live(self, conn: AsyncConnection, key_ids: set[str]) -> dict[str, AESGCM]:
        """Ciphers of the given keys that still exist (destroyed ones are absent)."""
        dk = schema.data_keys
        rows = await conn.execute(
            select(dk.c.key_id, dk.c.kek_id, dk.c.wrapped_key).where(
                dk.c.key_id.in_(key_ids), dk.c.wrapped_key.is_not(None)
            )
        )
        return {k: self.cipher(k, kek, bytes(w)) for k, kek, w in rows}

    async def raw_keys(self, conn: AsyncConnection, key_ids: set[str]) -> dict[str, bytes]:
        """Raw data keys (for a plaintext export); destroyed ones are absent."""
        dk = schema.data_keys
        rows = await conn.execute(
            select(dk.c.key_id, dk.c.kek_id, dk.c.wrapped_key).where(
                dk.c.key_id.in_(key_ids), dk.c.wrapped_key.is_not(None)
            )
        )
        try:
            return {k: self.provider.unwrap(kek, bytes(w)) for k, kek, w in rows}
        except KeyUnavailable:
            raise
        except Exception as exc:  # pragma: no cover - providers raise KeyUnavailable
            raise KeyUnavailable(str(exc)) from exc

    async def destroy(self, conn: AsyncConnection, stream: str, now_us: int) -> list[str]:
        """Null the stream's wrapped keys (crypto-shredding); returns the destroyed key ids."""
        dk = schema.data_keys
        rows = await conn.execute(
            select(dk.c.key_id).where(dk.c.stream == stream, dk.c.wrapped_key.is_not(None))
        )
        destroyed = sorted(r[0] for r in rows)
        if destroyed:
            await conn.execute(
                update(dk)
                .where(dk.c.key_id.in_(destroyed))
                .values(wrapped_key=None, destroyed_at_us=now_us)
            )
        for key_id in destroyed:
            self.ciphers.pop(key_id, None)
        return destroyed

    async def rewrap(self, conn: AsyncConnection, new_provider: KeyProvider) -> int:
        """Re-wrap every live data key under ``new_provider``'s current KEK, then use it."""
        dk = schema.data_keys
        rows = (
            await conn.execute(
                select(dk.c.key_id, dk.c.kek_id, dk.c.wrapped_key).where(
                    dk.c.wrapped_key.is_not(None)
                )
            )
        ).all()
        for key_id, kek_id, wrapped in rows:
            data_key = self.provider.unwrap(kek_id, bytes(wrapped))
            new_kek, new_wrapped = new_provider.wrap(data_key)
            await conn.execute(
                update(dk)
                .where(dk.c.key_id == key_id)
                .values(kek_id=new_kek, wrapped_key=new_wrapped)
            )
        self.provider = new_provider
        return len(rows)
