"""Key-encryption keys: the local key file and Vault transit (against a fake Vault server).

The fake implements the three transit endpoints the provider uses, as documented in Vault's
transit API (https://developer.hashicorp.com/vault/api-docs/secret/transit):
``GET /v1/<mount>/keys/:name`` (``data.latest_version``), ``POST /v1/<mount>/encrypt/:name``
(base64 ``plaintext`` in, ``data.ciphertext`` = ``vault:v<N>:<base64>`` out) and
``POST /v1/<mount>/decrypt/:name`` (``ciphertext`` in, base64 ``data.plaintext`` out), plus
``POST /v1/<mount>/keys/:name/rotate``. Errors answer ``{"errors": [...]}`` with 400.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.errors import KeyUnavailable
from audit.keys import KeyProvider, LocalFileKeyProvider, VaultTransitKeyProvider, new_data_key


class FakeVault:
    def __init__(self) -> None:
        self.keys: dict[str, list[bytes]] = {}
        self.calls: list[str] = []

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append(f"{method} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] != ["v1", "transit"] or len(parts) < 4:
            return 404, {"errors": ["no handler for route"]}
        op, name = parts[2], parts[3]
        if op == "keys" and len(parts) == 5 and parts[4] == "rotate" and method == "POST":
            self.keys.setdefault(name, [AESGCM.generate_key(256)]).append(AESGCM.generate_key(256))
            return 204, {}
        if op == "keys" and method == "POST":
            self.keys.setdefault(name, [AESGCM.generate_key(256)])
            return 204, {}
        versions = self.keys.get(name)
        if versions is None:
            return 400, {"errors": [f"encryption key not found: {name}"]}
        if op == "keys":
            return 200, {
                "data": {"name": name, "latest_version": len(versions), "type": "aes256-gcm96"}
            }
        if op == "encrypt":
            plain = base64.b64decode(body["plaintext"])
            nonce = os.urandom(12)
            sealed = AESGCM(versions[-1]).encrypt(nonce, plain, None)
            text = base64.b64encode(nonce + sealed).decode()
            return 200, {
                "data": {
                    "ciphertext": f"vault:v{len(versions)}:{text}",
                    "key_version": len(versions),
                }
            }
        if op == "decrypt":
            _, version, text = str(body["ciphertext"]).split(":", 2)
            raw = base64.b64decode(text)
            try:
                plain = AESGCM(versions[int(version[1:]) - 1]).decrypt(raw[:12], raw[12:], None)
            except (InvalidTag, IndexError):
                return 400, {"errors": ["cipher: message authentication failed"]}
            return 200, {"data": {"plaintext": base64.b64encode(plain).decode()}}
        return 404, {"errors": ["unsupported"]}


@pytest.fixture
def vault() -> Iterator[tuple[FakeVault, str]]:
    fake = FakeVault()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            status, reply = fake.handle(method, self.path, body)
            data = json.dumps(reply).encode() if status != 204 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_local_file_provider(tmp_path: Path) -> None:
    path = tmp_path / "k" / "kek.json"
    provider = LocalFileKeyProvider(path)
    assert isinstance(provider, KeyProvider)
    assert path.stat().st_mode & 0o777 == 0o600
    assert provider.current_kek_id() == "kek-1"
    key = new_data_key()
    kek_id, wrapped = provider.wrap(key)
    assert kek_id == "kek-1"
    assert provider.unwrap(kek_id, wrapped) == key
    assert provider.rotate() == "kek-2"
    reopened = LocalFileKeyProvider(path)
    assert reopened.current_kek_id() == "kek-2"
    assert reopened.unwrap("kek-1", wrapped) == key
    # Fingerprints tell two processes' key files apart without showing the keys.
    prints = reopened.fingerprints()
    assert sorted(prints) == ["kek-1", "kek-2"]
    assert prints == provider.fingerprints()
    assert all(p.startswith("SHA256:") for p in prints.values())
    assert LocalFileKeyProvider(tmp_path / "other.json").fingerprints()["kek-1"] != prints["kek-1"]
    with pytest.raises(KeyUnavailable, match="cannot be retired"):
        reopened.retire("kek-2")
    reopened.retire("kek-1")
    with pytest.raises(KeyUnavailable, match="is not in"):
        LocalFileKeyProvider(path).unwrap("kek-1", wrapped)
    with pytest.raises(KeyUnavailable, match="does not unwrap"):
        reopened.unwrap("kek-2", wrapped)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "unreadable"),
        ('{"keys": {}}', "unreadable"),
        ('{"current": "kek-9", "keys": {"kek-1": "AAAA"}}', "does not hold"),
    ],
)
def test_local_file_provider_refuses_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "kek.json"
    path.write_text(content)
    with pytest.raises(KeyUnavailable, match=message):
        LocalFileKeyProvider(path)


def test_vault_transit_provider(vault: tuple[FakeVault, str]) -> None:
    fake, url = vault
    client = hvac.Client(url=url, token="test-token")
    client.secrets.transit.create_key(name="audit-kek")
    provider = VaultTransitKeyProvider(client, "audit-kek")
    assert isinstance(provider, KeyProvider)
    assert provider.current_kek_id() == "vault:audit-kek:v1"
    key = new_data_key()
    kek_id, wrapped = provider.wrap(key)
    assert kek_id == "vault:audit-kek:v1"
    assert wrapped.startswith(b"vault:v1:")
    assert provider.unwrap(kek_id, wrapped) == key
    client.secrets.transit.rotate_key(name="audit-kek")
    assert provider.current_kek_id() == "vault:audit-kek:v2"
    kek2, wrapped2 = provider.wrap(key)
    assert kek2 == "vault:audit-kek:v2"
    assert provider.unwrap(kek_id, wrapped) == provider.unwrap(kek2, wrapped2) == key
    assert "POST /v1/transit/encrypt/audit-kek" in fake.calls
    with pytest.raises(KeyUnavailable, match="Vault transit decrypt_data failed"):
        provider.unwrap(kek_id, wrapped.replace(b"vault:v1:", b"vault:v2:"))
    with pytest.raises(KeyUnavailable, match="Vault transit read_key failed"):
        VaultTransitKeyProvider(client, "missing").current_kek_id()
