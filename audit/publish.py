"""Publishing signed checkpoints outside the database, and reading back the last one.

A copy of the tree head kept elsewhere is what turns "the database says so" into evidence:
at start-up the broker compares its log with the last published checkpoint, so restoring an
old backup or truncating the log is reported loudly (see ``AuditLog.check_published``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from audit.checkpoint import Checkpoint, SignedCheckpoint, parse_checkpoint
from audit.errors import VerificationError

SEPARATOR = "\n%%\n"


class CheckpointPublisher(Protocol):
    def publish(self, signed: SignedCheckpoint) -> None: ...

    def latest(self) -> SignedCheckpoint | None: ...


def _from_note(note: str) -> SignedCheckpoint:
    text, sep, _ = note.partition("\n\n")
    if not sep:
        raise VerificationError("published checkpoint has no signature block")
    checkpoint: Checkpoint = parse_checkpoint(text + "\n")
    return SignedCheckpoint(checkpoint, note)


def _write_atomically(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class DirectoryPublisher:
    """One file per checkpoint (``checkpoint-<size>.note``) plus ``latest.note``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def publish(self, signed: SignedCheckpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        current = self.latest()
        if current is not None and current.size >= signed.size:
            return  # never move the published head backwards
        _write_atomically(self.directory / f"checkpoint-{signed.size:012d}.note", signed.note)
        _write_atomically(self.directory / "latest.note", signed.note)

    def latest(self) -> SignedCheckpoint | None:
        path = self.directory / "latest.note"
        if not path.exists():
            return None
        return _from_note(path.read_text(encoding="utf-8"))


class FileAppendPublisher:
    """All checkpoints appended to one file, separated by ``%%`` lines (easy to ship off-box)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, signed: SignedCheckpoint) -> None:
        current = self.latest()
        if current is not None and current.size >= signed.size:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(signed.note + SEPARATOR)
            fh.flush()
            os.fsync(fh.fileno())

    def latest(self) -> SignedCheckpoint | None:
        if not self.path.exists():
            return None
        notes = [n for n in self.path.read_text(encoding="utf-8").split(SEPARATOR) if n.strip()]
        return _from_note(notes[-1]) if notes else None
