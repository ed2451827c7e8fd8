"""The gateway's own SSH key (``gateway_key_path``, default data_dir/keys/gateway_ed25519),
created on first run.

In the reverse connection the broker is the SSH *client*, so this key authenticates the broker
to agents; agents pin its fingerprint at enrollment.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from broker.config import Settings

KEY_NAME = "gateway_ed25519"


def key_path(settings: Settings) -> Path:
    return settings.resolved_gateway_key_path


def load_or_create(settings: Settings) -> asyncssh.SSHKey:
    path = key_path(settings)
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, bytes(key.export_private_key()))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))
