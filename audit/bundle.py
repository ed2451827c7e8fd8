"""Per-ticket evidence bundles: one zip that a third party verifies offline with a public key.

Contents: ``manifest.json`` (format, log id, ticket, counts, SHA-256 of every other file),
``records.jsonl`` (every sealed record of the ticket: header, nonce, ciphertext, chain),
``proof.json`` (inclusion proof of the ticket's last record in the signed tree),
``checkpoint.note`` (the signed tree head), ``public.vkey`` (the signer's verifier key) and,
for an exporter allowed to read content, ``payloads.jsonl`` with ``data_keys.json`` so a
verifier can check that each plaintext is exactly what the ciphertext holds.

When a checkpoint the bundle's one extends was timestamped (RFC 3161, see audit.timestamp),
``timestamp.tsr`` (the token), ``timestamped.note`` (that checkpoint) and ``timestamp.json``
(its size and the consistency proof to the bundle's checkpoint) come along: the records up
to that size existed at the TSA's time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.canonical import canonical_json, parse
from audit.checkpoint import Checkpoint, VerifierKey
from audit.errors import AuditError, BundleError, VerificationError
from audit.merkle import verify_consistency, verify_inclusion
from audit.records import ZERO_HASH, Record, record_leaf_hash
from audit.sealing import open_record
from audit.timestamp import verify_timestamp

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from audit.store import AuditLog

FORMAT = "supportbroker-evidence/1"
ERASED_EVENT = "ticket.erased"  # the record an erasure seals (audit.store.erase_stream)
REQUIRED = frozenset({"records.jsonl", "proof.json", "checkpoint.note", "public.vkey"})
_FIXED_TIME = (2000, 1, 1, 0, 0, 0)


def _record_json(r: Record) -> dict[str, Any]:
    return {
        "position": r.position,
        "record_id": r.record_id,
        "stream": r.stream,
        "stream_seq": r.stream_seq,
        "event_type": r.event_type,
        "occurred_at_us": r.occurred_at_us,
        "key_id": r.key_id,
        "payload_size": r.payload_size,
        "nonce": base64.b64encode(r.nonce).decode(),
        "ciphertext": base64.b64encode(r.ciphertext).decode(),
        "prev_hash": r.prev_hash.hex(),
        "leaf_hash": r.leaf_hash.hex(),
    }


def _record_from_json(doc: dict[str, Any]) -> Record:
    try:
        return Record(
            int(doc["position"]),
            str(doc["record_id"]),
            str(doc["stream"]),
            int(doc["stream_seq"]),
            str(doc["event_type"]),
            int(doc["occurred_at_us"]),
            str(doc["key_id"]),
            int(doc["payload_size"]),
            base64.b64decode(doc["nonce"]),
            base64.b64decode(doc["ciphertext"]),
            bytes.fromhex(doc["prev_hash"]),
            bytes.fromhex(doc["leaf_hash"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"records.jsonl: malformed record ({exc})") from exc


def _jsonl(items: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(i, sort_keys=True).encode() + b"\n" for i in items)


async def build_bundle(
    log: AuditLog, conn: AsyncConnection, stream: str, *, include_plaintext: bool
) -> bytes:
    everything = await log.records(conn, stream=stream)
    if not everything:
        raise AuditError(f"the audit log has no records for {stream!r}")
    checkpoint = await log.latest_checkpoint(conn)
    # Checkpoints are signed on a cadence: a bundle holds what the latest one covers, and
    # says how many later records of the ticket it leaves out.
    records = [r for r in everything if checkpoint is not None and r.position < checkpoint.size]
    if checkpoint is None or not records:
        raise AuditError(
            f"no record of {stream!r} is covered by a signed checkpoint yet; sign one first"
        )
    last = records[-1]
    proof = await log.inclusion_proof(conn, last.position, checkpoint.size)
    files: dict[str, bytes] = {
        "records.jsonl": _jsonl([_record_json(r) for r in records]),
        "proof.json": json.dumps(
            {
                "leaf_position": last.position,
                "tree_size": checkpoint.size,
                "path": [p.hex() for p in proof],
            },
            sort_keys=True,
        ).encode(),
        "checkpoint.note": checkpoint.note.encode(),
        "public.vkey": (log.signer.verifier.encode() + "\n").encode(),
    }
    from audit.stamps import latest_timestamp  # the offline verifier needs no SQLAlchemy

    stamped = await latest_timestamp(conn, checkpoint.size)
    if stamped is not None:
        consistency = await log.consistency_proof(conn, stamped.checkpoint.size, checkpoint.size)
        files["timestamp.tsr"] = stamped.response
        files["timestamped.note"] = stamped.checkpoint.note.encode()
        files["timestamp.json"] = json.dumps(
            {"size": stamped.checkpoint.size, "consistency": [p.hex() for p in consistency]},
            sort_keys=True,
        ).encode()
    if include_plaintext:
        keys = await log.data_keys_for(conn, {r.key_id for r in records})
        payloads = []
        for r in records:
            if r.key_id in keys:
                plain = open_record(log.log_id, r, AESGCM(keys[r.key_id]))
                payloads.append({"record_id": r.record_id, "payload": parse(plain)})
        files["payloads.jsonl"] = _jsonl(payloads)
        files["data_keys.json"] = json.dumps(
            {k: base64.b64encode(v).decode() for k, v in sorted(keys.items())}, sort_keys=True
        ).encode()
    manifest = {
        "format": FORMAT,
        "log_id": log.log_id,
        "stream": stream,
        "records": len(records),
        "include_plaintext": include_plaintext,
        "exported_at": datetime.now(UTC).isoformat(),
        "public_key_fingerprint": log.signer.verifier.fingerprint,
        "checkpoint_size": checkpoint.size,
        "not_yet_covered": len(everything) - len(records),
        # The clear headers say so too (the verifier checks the flag against them): records
        # sealed before an erasure carry ciphertext whose key is gone.
        "erased": any(r.event_type == ERASED_EVENT for r in records),
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in [
            ("manifest.json", json.dumps(manifest, indent=2).encode()),
            *sorted(files.items()),
        ]:
            zf.writestr(zipfile.ZipInfo(name, date_time=_FIXED_TIME), data)
    return buffer.getvalue()


@dataclass
class BundleReport:
    ok: bool
    stream: str = ""
    records: int = 0
    checks: list[str] = field(default_factory=list)
    problem: str | None = None
    not_yet_covered: int = 0  # later records of the ticket the export left out
    erasures: list[Record] = field(default_factory=list)  # the ticket's ticket.erased records
    unchecked: list[str] = field(default_factory=list)  # present, but not checked (and why)
    timestamp: str | None = None  # "checkpoint timestamped at ... by ..." once verified

    def verdict(self) -> str:
        lines = [f"  ok  {c}" for c in self.checks]
        lines += [f"  --  {u}" for u in self.unchecked]
        if self.ok:
            lines.append(f"VERIFIED: {self.records} records of {self.stream!r}; all checks passed")
            if self.not_yet_covered:
                lines.append(
                    f"NOT YET COVERED: {self.not_yet_covered} later records of the ticket were "
                    "not covered by a signed checkpoint when exported and are not in this bundle"
                )
            for e in self.erasures:
                when = datetime.fromtimestamp(e.occurred_at_us / 1e6, UTC).isoformat()
                lines.append(
                    f"ERASED: the ticket's content was erased at {when} (record at position "
                    f"{e.position}); the payloads of the {e.stream_seq - 1} records sealed "
                    "before it can never be read again; their hashes still verify"
                )
        else:
            lines.append(f"FAILED: {self.problem}")
        return "\n".join(lines)


def _read_zip(data: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"not a readable evidence bundle: {exc}") from exc


def verify_bundle(
    data: bytes, verifier: VerifierKey, tsa_certs: Sequence[x509.Certificate] = ()
) -> BundleReport:
    """Check everything in a bundle offline; never raises on bad evidence, reports it.

    ``tsa_certs``: the trusted TSA certificates; given, the bundle must carry a timestamp
    that verifies against them; not given, a timestamp is reported as not checked."""
    report = BundleReport(ok=False)
    try:
        _verify(data, verifier, report, tsa_certs)
    except VerificationError as exc:
        where = ""
        if exc.position is not None:
            where = f" (record at position {exc.position}, id {exc.record_id})"
        report.problem = f"{exc}{where}"
        return report
    except (ValueError, KeyError, TypeError) as exc:  # JSON or text that is not what we wrote
        report.problem = f"the bundle is malformed: {type(exc).__name__}: {exc}"
        return report
    report.ok = True
    return report


def _verify(
    data: bytes,
    verifier: VerifierKey,
    report: BundleReport,
    tsa_certs: Sequence[x509.Certificate],
) -> None:
    files = _read_zip(data)
    try:
        manifest = json.loads(files.pop("manifest.json"))
    except (KeyError, ValueError) as exc:
        raise BundleError("the bundle has no readable manifest.json") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"unknown bundle format (expected {FORMAT})")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or set(listed) != set(files):
        raise BundleError("the files in the bundle are not the ones its manifest lists")
    if missing := REQUIRED - set(files):
        raise BundleError(f"the bundle lacks {', '.join(sorted(missing))}")
    for name, digest in listed.items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise BundleError(f"{name} was changed after export (hash mismatch)")
    report.checks.append("manifest lists every file and every file hash matches")
    report.stream = str(manifest.get("stream", ""))
    report.not_yet_covered = int(manifest.get("not_yet_covered", 0))
    log_id = str(manifest.get("log_id", ""))
    if log_id != verifier.name:
        raise BundleError(
            f"the bundle is from log {log_id!r}, the public key is for {verifier.name!r}"
        )
    if files["public.vkey"].decode().strip() != verifier.encode():
        raise BundleError("the bundle was signed by another key than the one given")
    checkpoint = verifier.verify(files["checkpoint.note"].decode())
    report.checks.append(f"checkpoint at size {checkpoint.size} is signed by the given key")
    records = _check_chain(files["records.jsonl"], log_id, report.stream)
    report.records = len(records)
    report.checks.append(f"{len(records)} records hash correctly and chain without gaps")
    report.erasures = [r for r in records if r.event_type == ERASED_EVENT]
    flag = manifest.get("erased")
    if flag is not None and flag != bool(report.erasures):
        raise BundleError("the manifest's erased flag disagrees with the ticket's records")
    _check_proof(files["proof.json"], records[-1], checkpoint.size, checkpoint.root)
    report.checks.append("the ticket's last record is included in the signed tree")
    if "payloads.jsonl" in files:
        count = _check_payloads(files, records, log_id)
        report.checks.append(f"{count} decrypted payloads match their ciphertexts")
    _check_timestamp(files, verifier, checkpoint, tsa_certs, report, records)


def _check_timestamp(
    files: dict[str, bytes],
    verifier: VerifierKey,
    checkpoint: Checkpoint,
    tsa_certs: Sequence[x509.Certificate],
    report: BundleReport,
    records: list[Record],
) -> None:
    """The timestamp of a checkpoint that the bundle's checkpoint extends, if it has one."""
    if "timestamp.tsr" not in files:
        if tsa_certs:
            raise BundleError(
                "TSA certificates were given but the bundle carries no timestamp "
                "(no checkpoint covering it had been timestamped when it was exported)"
            )
        return
    if not tsa_certs:
        report.unchecked.append(
            "the bundle carries an RFC 3161 timestamp; give --tsa-cert to check it"
        )
        return
    try:
        note = files["timestamped.note"].decode()
        meta = json.loads(files["timestamp.json"])
        proof = [bytes.fromhex(p) for p in meta["consistency"]]
        size = int(meta["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"the timestamp comes without a readable checkpoint ({exc})") from exc
    stamped = verifier.verify(note)
    if stamped.size != size:
        raise BundleError("timestamp.json names another size than the timestamped checkpoint")
    verify_consistency(stamped.size, checkpoint.size, stamped.root, checkpoint.root, proof)
    stamp = verify_timestamp(files["timestamp.tsr"], note, tsa_certs)
    report.timestamp = stamp.describe()
    then = sum(1 for r in records if r.position < stamped.size)
    report.checks.append(
        f"{stamp.describe()} (checkpoint at size {stamped.size}, which the bundle's extends; "
        f"{then} of the bundle's {len(records)} records were in the log then)"
    )


def _check_chain(raw: bytes, log_id: str, stream: str) -> list[Record]:
    records = [_record_from_json(json.loads(line)) for line in raw.splitlines() if line.strip()]
    if not records:
        raise BundleError("the bundle holds no records")
    prev = ZERO_HASH
    for seq, r in enumerate(records, start=1):
        problem = None
        if r.stream != stream:
            problem = f"record of another ticket ({r.stream!r})"
        elif r.stream_seq != seq:
            problem = f"sequence {r.stream_seq} where {seq} was expected"
        elif r.prev_hash != prev:
            problem = "record does not link to the previous record"
        elif record_leaf_hash(log_id, r) != r.leaf_hash:
            problem = "record was altered: its hash does not match"
        if problem is not None:
            raise VerificationError(problem, position=r.position, record_id=r.record_id)
        prev = r.leaf_hash
    return records


def _check_proof(raw: bytes, last: Record, size: int, root: bytes) -> None:
    try:
        proof = json.loads(raw)
        path = [bytes.fromhex(p) for p in proof["path"]]
        position, tree_size = int(proof["leaf_position"]), int(proof["tree_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"proof.json is malformed ({exc})") from exc
    if position != last.position or tree_size != size:
        raise BundleError("the inclusion proof is not for the last record and the checkpoint")
    verify_inclusion(last.leaf_hash, position, size, path, root)


def _check_payloads(files: dict[str, bytes], records: list[Record], log_id: str) -> int:
    try:
        keys = {
            k: AESGCM(base64.b64decode(v)) for k, v in json.loads(files["data_keys.json"]).items()
        }
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleError("payloads come without a readable data_keys.json") from exc
    payloads = {}
    for line in files["payloads.jsonl"].splitlines():
        doc = json.loads(line)
        payloads[doc["record_id"]] = doc["payload"]
    by_id = {r.record_id: r for r in records}
    if set(payloads) - set(by_id):
        raise BundleError("payloads.jsonl has a payload for a record not in the bundle")
    for record_id, payload in payloads.items():
        r = by_id[record_id]
        key = keys.get(r.key_id)
        if key is None:
            raise BundleError(f"no data key for record {record_id}")
        try:
            plain = open_record(log_id, r, key)
        except InvalidTag as exc:
            raise VerificationError(
                "ciphertext does not decrypt with its key",
                position=r.position,
                record_id=record_id,
            ) from exc
        if plain != canonical_json(payload):
            raise VerificationError(
                "the exported payload is not what the record holds",
                position=r.position,
                record_id=record_id,
            )
    return len(payloads)
