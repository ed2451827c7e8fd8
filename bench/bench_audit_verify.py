"""Verification of a large log (``LogVerifier``: leaf hashes, chains, tree, checkpoints) vs raw
SHA-256 over the same leaf bytes, measured in the same run. Records are sealed in memory
(``seal_rows``, 64 tickets, one signed checkpoint per 10,000 records) before timing, as row
tuples in column order, which is what ``verify_database`` reads from the database.

    .venv/bin/python bench/bench_audit_verify.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.checkpoint import CheckpointSigner
from audit.merkle import Frontier
from audit.records import FieldCodec, leaf_data
from audit.sealing import NewEvent, StreamHead, seal_rows
from audit.verify import LogVerifier

LOG_ID = "bench.example/log"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    signer = CheckpointSigner.generate(LOG_ID)
    cipher = AESGCM(AESGCM.generate_key(256))
    codec = FieldCodec(LOG_ID)
    frontier, heads, records, checkpoints = Frontier(), dict[str, StreamHead](), [], {}
    t0 = time.perf_counter()
    step = 10_000
    for start in range(0, args.records, step):
        n = min(step, args.records - start)
        events = [
            NewEvent(f"HD-{(start + i) % 64}", "session.event", {"n": start + i, "who": "t"})
            for i in range(n)
        ]
        records += seal_rows(codec, events, frontier, heads, lambda s: ("k" * 32, cipher))
        checkpoints[frontier.size] = signer.sign(frontier.size, frontier.root()).note
    print(f"sealed {len(records):,} records in {time.perf_counter() - t0:.1f} s (setup)")
    blobs = [leaf_data(LOG_ID, *r[:11]) for r in records]
    total_bytes = sum(len(b) for b in blobs)
    sha = hashlib.sha256
    t0 = time.perf_counter()
    for blob in blobs:
        sha(b"\x00" + blob).digest()
    raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    checker = LogVerifier(LOG_ID, signer.verifier, checkpoints)
    checker.feed_rows(records)
    report = checker.finish(frontier.size, frontier.root())
    ours = time.perf_counter() - t0
    assert report.ok
    print(f"{len(records):,} records, {total_bytes / 1e6:.0f} MB of leaf data")
    print(f"  LogVerifier     {ours:6.2f} s   {len(records) / ours:>12,.0f} records/s")
    print(f"  raw SHA-256     {raw:6.2f} s   {len(records) / raw:>12,.0f} records/s")
    print(f"  ratio           {raw / ours:6.2f}x  target >= 0.5x")


if __name__ == "__main__":
    main()
