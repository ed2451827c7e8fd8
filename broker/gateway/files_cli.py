"""``supportbroker connect SESSION --get REMOTE LOCAL`` and ``--put LOCAL REMOTE``.

Both go through the broker's file endpoints (docs/FILES.md) with the technician's API token,
showing a progress bar on stderr. A download is written to ``LOCAL.sbpart`` and renamed to
``LOCAL`` only once the broker says the transfer is whole (its hash, the device's and ours
agree); otherwise the partial file is removed and the command exits 1 with the reason.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1 << 20
FILES = "/api/v1/gateway/sessions/{}/files"


class TransferFailed(Exception):
    """The transfer did not complete whole; the message says why."""


class Progress:
    """A one-line progress bar on stderr (redrawn at most ten times a second)."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._drawn = 0.0
        self._start = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def _draw(self, end: str = "") -> None:
        rate = self.done / max(time.monotonic() - self._start, 1e-6) / (1 << 20)
        if self.total:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * 30)
            line = f"{self.label} [{bar:<30}] {share:4.0%} {self.done}/{self.total} B"
        else:
            line = f"{self.label} {self.done} B"
        sys.stderr.write(f"\r{line} {rate:.1f} MiB/s{end}")
        sys.stderr.flush()

    def finish(self) -> None:
        self._draw("\n")


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))
    except ValueError:
        return resp.text or f"HTTP {resp.status_code}"


def put(url: str, token: str, session_id: str, local: str, remote: str) -> dict[str, Any]:
    """Upload ``local`` to ``remote`` on the device; the sealed outcome (both hashes)."""
    path = Path(local)
    if not path.is_file():
        raise TransferFailed(f"{local}: no such file")
    size = path.stat().st_size
    progress = Progress(f"put {path.name}", size)
    sha = hashlib.sha256()

    def body() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while data := fh.read(CHUNK):
                sha.update(data)
                progress.add(len(data))
                yield data

    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(size)}
    with httpx.Client(base_url=url, timeout=httpx.Timeout(60, connect=10)) as client:
        resp = client.put(
            FILES.format(session_id) + "/content",
            params={"path": remote},
            content=body(),
            headers=headers,
        )
    progress.finish()
    if resp.status_code != 200:
        raise TransferFailed(_detail(resp))
    outcome: dict[str, Any] = resp.json()
    if outcome.get("sha256") != sha.hexdigest():
        raise TransferFailed("the broker received other bytes than were sent (hash differs)")
    return outcome


def get(url: str, token: str, session_id: str, remote: str, local: str) -> dict[str, Any]:
    """Download ``remote`` to ``local``, kept only when the broker says it is whole."""
    target = Path(local)
    if target.is_dir():
        target = target / remote.rstrip("/").rsplit("/", 1)[-1]
    staging = target.with_name(target.name + ".sbpart")
    auth = {"Authorization": f"Bearer {token}"}
    sha = hashlib.sha256()
    with httpx.Client(base_url=url, timeout=httpx.Timeout(60, connect=10)) as client:
        try:
            with client.stream(
                "GET", FILES.format(session_id) + "/content", params={"path": remote}, headers=auth
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise TransferFailed(_detail(resp))
                transfer = resp.headers["x-transfer-id"]
                progress = Progress(f"get {target.name}", int(resp.headers.get("x-file-size", 0)))
                try:
                    with staging.open("wb") as fh:
                        for data in resp.iter_bytes(CHUNK):
                            sha.update(data)
                            fh.write(data)
                            progress.add(len(data))
                except OSError as exc:
                    # This computer's side: a full disk, no permission. Leaving the stream
                    # here closes it, so the broker seals the download as interrupted.
                    progress.finish()
                    raise TransferFailed(
                        f"cannot write {staging}: {exc.strerror or exc}; nothing was kept"
                    ) from exc
                progress.finish()
            found = client.get(FILES.format(session_id) + f"/transfers/{transfer}", headers=auth)
            outcome: dict[str, Any] = found.json()
            if found.status_code != 200:
                raise TransferFailed(_detail(found))
            if outcome.get("outcome") != "ok":
                raise TransferFailed(str(outcome.get("why", "the transfer failed")))
            if outcome.get("sha256") != sha.hexdigest():
                raise TransferFailed("the bytes received differ from what the broker relayed")
        except httpx.HTTPError as exc:
            staging.unlink(missing_ok=True)
            raise TransferFailed(f"the transfer broke off: {exc}") from exc
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
    try:
        os.replace(staging, target)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise TransferFailed(f"cannot write {target}: {exc.strerror or exc}") from exc
    return outcome


def run(args: Any) -> int:
    """``connect --get`` / ``--put``: 0 when whole (both hashes printed), 1 with the reason."""
    try:
        if args.get:
            outcome = get(args.url, args.token, args.session_id, *args.get)
        else:
            outcome = put(args.url, args.token, args.session_id, *args.put)
    except TransferFailed as exc:
        print(f"supportbroker: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{outcome['direction']} {outcome['name']}: {outcome['size']} bytes, "
        f"sha256 {outcome['sha256']} (checked by the broker and the device)"
    )
    return 0
