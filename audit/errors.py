"""The audit library's one error tree. Messages say what is wrong and where."""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error this library raises on purpose."""


class CanonicalError(AuditError):
    """A payload cannot be put in canonical form (floats, non-string keys, huge integers)."""


class KeyUnavailable(AuditError):
    """A key-encryption key or data key is missing, destroyed or wrong."""


class VerificationError(AuditError):
    """Evidence failed a check; ``position``/``record_id`` name the first bad record if known."""

    def __init__(
        self, message: str, *, position: int | None = None, record_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.position = position
        self.record_id = record_id


class BundleError(VerificationError):
    """An evidence bundle is malformed, incomplete or inconsistent."""


class RollbackDetected(VerificationError):
    """The database is behind (or diverges from) a checkpoint published outside it."""
