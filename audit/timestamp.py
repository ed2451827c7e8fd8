"""RFC 3161 timestamps of signed checkpoints: proof of *when* a tree head existed that does
not rest on the broker's own clock.

The broker asks a time-stamping authority (TSA) to sign the SHA-256 of a checkpoint's whole
signed note and keeps the answer (the DER ``TimeStampResp``) in ``audit_timestamps`` beside
the checkpoint. Verification (:func:`verify_timestamp`, through ``rfc3161-client``) trusts
only the certificates it is given: the signer's certificate must chain to one of them, carry
the critical extended key usage ``timeStamping``, and sign a token whose message imprint is
the hash of exactly this note. Certificates inside the token are used to build the chain,
never trusted by themselves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    VerifierBuilder,
    decode_timestamp_response,
)
from rfc3161_client import VerificationError as TokenInvalid

from audit.errors import AuditError, VerificationError

SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")


@dataclass(frozen=True)
class Timestamp:
    """What a verified token says: when, and who (the signer certificate's subject)."""

    gen_time: datetime
    tsa: str

    def describe(self) -> str:
        return f"checkpoint timestamped at {self.gen_time.isoformat()} by {self.tsa}"


def _why(exc: Exception) -> str:
    """The library's reason; OpenSSL's error stack shortened to its reasons and details."""
    text = str(exc)
    found = re.findall(r'(?:reason|data): "([^"]+)"', text)
    return "; ".join(dict.fromkeys(found)) if found else text


def request_for(note: str) -> tuple[bytes, int | None]:
    """A DER ``TimeStampReq`` over SHA-256(note), asking for the TSA's certificate (so the
    token carries it) and with a fresh nonce; returns the request and its nonce."""
    request = (
        TimestampRequestBuilder()
        .data(note.encode())
        .hash_algorithm(HashAlgorithm.SHA256)
        .cert_request(cert_request=True)
        .nonce(nonce=True)
        .build()
    )
    return request.as_bytes(), request.nonce


def load_tsa_certificates(path: Path) -> list[x509.Certificate]:
    """The trusted TSA certificates (one PEM file, one or more certificates)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"cannot read TSA certificates {path}: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise AuditError(f"{path} holds no PEM certificate: {exc}") from exc


def verify_timestamp(
    response: bytes,
    note: str,
    trusted: Sequence[x509.Certificate],
    *,
    nonce: int | None = None,
) -> Timestamp:
    """Check a ``TimeStampResp`` over ``note`` against the ``trusted`` TSA certificates."""
    if not trusted:
        raise AuditError("no trusted TSA certificate given")
    try:
        resp = decode_timestamp_response(response)
    except ValueError as exc:
        raise VerificationError(
            f"the timestamp is not a readable RFC 3161 response: {exc}"
        ) from exc
    if resp.status != PKIStatus.GRANTED:
        raise VerificationError(
            f"the time-stamping authority did not grant it (status {resp.status})"
        )
    imprint = resp.tst_info.message_imprint
    if (
        imprint.hash_algorithm != SHA256_OID
        or imprint.message != hashlib.sha256(note.encode()).digest()
    ):
        raise VerificationError(
            "the timestamp is for another document: its message imprint is not the SHA-256 "
            "of the checkpoint note"
        )
    builder = VerifierBuilder(nonce=nonce)
    for cert in trusted:
        builder = builder.add_root_certificate(cert)
    try:
        builder.build().verify_message(resp, note.encode())
    except TokenInvalid as exc:
        raise VerificationError(
            f"the timestamp does not verify against the trusted TSA certificates: {_why(exc)}"
        ) from exc
    # The verifier found the signer's certificate by the SignerInfo's issuer and serial.
    (signer,) = resp.signed_data.signer_infos
    certs = [x509.load_der_x509_certificate(der) for der in resp.signed_data.certificates]
    leaf = next(
        c for c in certs if (c.issuer, c.serial_number) == (signer.issuer, signer.serial_number)
    )
    return Timestamp(resp.tst_info.gen_time, leaf.subject.rfc4514_string())
