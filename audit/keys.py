"""Key-encryption keys (KEKs) behind one protocol, and wrapping of per-ticket data keys.

A data key encrypts one stream's (ticket's) payloads; it is stored only wrapped by a KEK.
Two providers: a local key file (default; created on first use, mode 0600, outside the
database) and HashiCorp Vault's transit engine. KEKs are versioned: rotation adds a version,
old versions stay to unwrap until every data key has been re-wrapped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.errors import KeyUnavailable

DATA_KEY_BYTES = 32


@runtime_checkable
class KeyProvider(Protocol):
    def current_kek_id(self) -> str: ...

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap under the current KEK; returns ``(kek_id, wrapped)``."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes: ...


def new_data_key() -> bytes:
    return secrets.token_bytes(DATA_KEY_BYTES)


class LocalFileKeyProvider:
    """KEKs in a JSON file: ``{"current": "kek-2", "keys": {"kek-1": b64, "kek-2": b64}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, bytes] = {}
        self._current = ""
        self._load_or_create()

    def _load_or_create(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._keys = {"kek-1": secrets.token_bytes(32)}
            self._current = "kek-1"
            self._save(create=True)
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            self._keys = {k: base64.b64decode(v) for k, v in doc["keys"].items()}
            self._current = str(doc["current"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyUnavailable(f"key file {self.path} is unreadable: {exc}") from exc
        if self._current not in self._keys:
            raise KeyUnavailable(f"key file {self.path} names a current key it does not hold")

    def _save(self, *, create: bool = False) -> None:
        doc = {
            "current": self._current,
            "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(tmp, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if create and self.path.exists():  # pragma: no cover - a racing creator won
            tmp.unlink()
            return
        os.replace(tmp, self.path)

    def current_kek_id(self) -> str:
        return self._current

    def fingerprints(self) -> dict[str, str]:
        """Each KEK's id and the SHA-256 of its bytes (not the key): what a second process
        compares to tell whether it holds the same keys."""
        return {
            kek_id: "SHA256:" + hashlib.sha256(key).hexdigest()
            for kek_id, key in sorted(self._keys.items())
        }

    def rotate(self) -> str:
        """Add a new KEK version and make it current; returns its id."""
        number = 1 + max(int(k.rsplit("-", 1)[1]) for k in self._keys)
        self._current = f"kek-{number}"
        self._keys[self._current] = secrets.token_bytes(32)
        self._save()
        return self._current

    def retire(self, kek_id: str) -> None:
        """Forget an old KEK once nothing is wrapped by it any more."""
        if kek_id == self._current:
            raise KeyUnavailable("the current key-encryption key cannot be retired")
        self._keys.pop(kek_id, None)
        self._save()

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        kek = AESGCM(self._keys[self._current])
        return self._current, nonce + kek.encrypt(nonce, data_key, self._current.encode())

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        key = self._keys.get(kek_id)
        if key is None:
            raise KeyUnavailable(f"key-encryption key {kek_id!r} is not in {self.path}")
        try:
            return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], kek_id.encode())
        except InvalidTag as exc:
            raise KeyUnavailable(f"data key does not unwrap with {kek_id!r}") from exc


class VaultTransitKeyProvider:
    """KEK held by Vault's transit engine; Vault's ciphertext (``vault:vN:…``) is the wrapping.

    ``client`` is an ``hvac.Client``; the KEK id records the key name and version so rotation
    (``vault write -f transit/keys/NAME/rotate``) is visible in our rows.
    """

    def __init__(self, client: Any, key_name: str, mount_point: str = "transit") -> None:
        self.client = client
        self.key_name = key_name
        self.mount_point = mount_point

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client.secrets.transit, method)(
                name=self.key_name, mount_point=self.mount_point, **kwargs
            )
        except Exception as exc:  # hvac raises many types; all mean "Vault did not help"
            raise KeyUnavailable(f"Vault transit {method} failed: {exc}") from exc
        return result

    def current_kek_id(self) -> str:
        data = self._call("read_key")["data"]
        return f"vault:{self.key_name}:v{data['latest_version']}"

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        reply = self._call("encrypt_data", plaintext=base64.b64encode(data_key).decode())
        ciphertext = str(reply["data"]["ciphertext"])
        version = ciphertext.split(":")[1]
        return f"vault:{self.key_name}:{version}", ciphertext.encode()

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        reply = self._call("decrypt_data", ciphertext=wrapped.decode())
        return base64.b64decode(reply["data"]["plaintext"])
