"""Replicas, their leases and the fingerprints of the keys the database was sealed with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class Replica(Base):
    """One running ``supportbroker serve``; gone once its heartbeat is older than the lease."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    address: Mapped[str] = mapped_column(String(500), nullable=False)
    # The public half of its Ed25519 peering key (broker.replicas.peering), made at each start.
    peering_key: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class Lease(Base):
    """Who runs a piece of background work until when (compare-and-set, see leases.py)."""

    __tablename__ = "replica_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SealedKey(Base):
    """The fingerprint of a key the service uses, written by the first replica to start."""

    __tablename__ = "sealed_keys"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(200), nullable=False)
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
