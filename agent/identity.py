"""The device key (Ed25519), fingerprints, and signed consent receipts.

A receipt is the canonical JSON of the decision (sorted keys, no spaces, UTF-8) signed with
the device key in SSH signature format; the broker verifies it with the key it enrolled.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import asyncssh

from agent.config import check_private, write_private
from agent.errors import ConfigError


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def load_or_create_key(path: Path) -> asyncssh.SSHKey:
    if path.exists():
        check_private(path)
        try:
            return asyncssh.read_private_key(str(path))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ConfigError(f"cannot read device key {path}: {exc}") from exc
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_private(path, bytes(key.export_private_key()))
    return key


def sign_receipt(key: asyncssh.SSHKey, receipt: dict[str, Any]) -> str:
    return base64.b64encode(bytes(key.sign(canonical(receipt), key.sig_algorithms[0]))).decode()
