"""Build the broker's AuditLog from settings: KEK file, checkpoint key, publication directory."""

from __future__ import annotations

from audit.checkpoint import CheckpointSigner
from audit.keys import LocalFileKeyProvider
from audit.publish import DirectoryPublisher
from audit.store import AuditLog
from broker.config import Settings


def build_audit_log(settings: Settings) -> AuditLog:
    settings.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = CheckpointSigner.load_or_create(
        settings.resolved_signing_key_path, origin=settings.audit_log_id
    )
    return AuditLog(
        log_id=settings.audit_log_id,
        keys=LocalFileKeyProvider(settings.resolved_kek_path),
        signer=signer,
        publisher=DirectoryPublisher(settings.resolved_publish_dir),
    )
