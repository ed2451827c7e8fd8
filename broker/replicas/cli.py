"""``supportbroker keys create``: the service's keys, made once before the replicas start.

Creates whichever of the KEK file, the checkpoint signing key and the gateway's SSH key do
not exist yet at the configured paths (``SUPPORTBROKER_KEK_PATH``, ``..._SIGNING_KEY_PATH``,
``..._GATEWAY_KEY_PATH``; docs/DEPLOY.md) and prints every key's fingerprint, the values a
replica is compared with at start-up (``sealed_keys``). No database is needed.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="the service's keys (shared by all replicas)")
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="create missing key files, print fingerprints")
    create.set_defaults(plain=_create)


def _create(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from broker.config import Settings
    from broker.errors import ValidationFailed
    from broker.evidence.setup import build_audit_log
    from broker.replicas.service import fingerprints

    try:  # the settings as every command reads them; a bad one is the CLI's error message
        settings = Settings()
    except ValidationError as exc:
        raise ValidationFailed(f"configuration error: {exc.errors()[0]['msg']}") from exc
    for name, fingerprint in fingerprints(settings, build_audit_log(settings)).items():
        print(f"{name}: {fingerprint}")
    return 0
