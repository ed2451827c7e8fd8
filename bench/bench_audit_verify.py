"""Verification of a large log (leaf hashes, ticket chains, tree, checkpoints) vs raw SHA-256
over the same bytes, measured in the same run.

Records are sealed in memory (``seal_rows``, 64 tickets, one signed checkpoint per 10,000
records) before timing, as row tuples in column order, which is what ``verify_database``
reads from the database. Timed, best of ``--rounds``:

- ``LogVerifier.feed_rows``: one process;
- ``feed_segments``: 2 worker processes (``fork``: they read the parent's rows), segments of
  65,536 rows, started inside the timing;
- ``verify_database`` over the same rows written to a SQLite file (the path of ``audit
  verify-log``: engine, connection, checkpoints, tree state, rows read from the database),
  with 1 process and with 2 worker processes (``--processes 2``: started with ``spawn`` inside
  the timing, each reading its own segments by position);
- baseline A, raw SHA-256 of every byte string the verifier hashes: each leaf input
  (``0x00 || leaf data``, pre-built) and each node input (``0x01 || left || right``,
  pre-built, n - 1 of them), one ``hashlib.sha256(x).digest()`` per string, one process;
- baseline B, the leaf inputs alone;
- baseline C, for the ``verify_database`` rows: the ``sqlite3`` module reading every row of
  the same file (``SELECT *``, pages of 8,192), plus A: the least any verifier of that file
  must do, read the bytes and hash them.

    .venv/bin/python bench/bench_audit_verify.py [--records 1000000] [--rounds 3] [--db PATH]

The SQLite file (about 310 MB for 10^6 records) is written to a temporary directory unless
``--db`` names one (it is replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from audit import schema
from audit.checkpoint import CheckpointSigner, VerifierKey
from audit.dbverify import verify_database
from audit.merkle import Frontier
from audit.records import FieldCodec, leaf_data
from audit.sealing import NewEvent, Row, StreamHead, seal_rows
from audit.segments import feed_segments
from audit.verify import LogVerifier

LOG_ID = "bench.example/log"
ROWS: list[Row] = []  # the workers (forked) read their segments from here


def fetch(start: int, count: int) -> Sequence[Any]:
    return ROWS[start : start + count]


def node_inputs(leaves: list[bytes]) -> list[bytes]:
    """Every ``0x01 || left || right`` of the RFC 9162 tree over ``leaves`` (n - 1 of them)."""
    out: list[bytes] = []
    carry: list[bytes] = []  # odd ones out, combined right to left at the end
    level = leaves
    while len(level) > 1:
        if len(level) & 1:
            carry.append(level.pop())
        pairs = [b"\x01" + level[i] + level[i + 1] for i in range(0, len(level), 2)]
        out += pairs
        level = [hashlib.sha256(p).digest() for p in pairs]
    acc = level[0]
    for node in carry:  # lowest level last: it is the rightmost subtree
        pair = b"\x01" + acc + node
        out.append(pair)
        acc = hashlib.sha256(pair).digest()
    return out


def seal(records: int) -> tuple[CheckpointSigner, dict[int, str], Frontier]:
    signer = CheckpointSigner.generate(LOG_ID)
    cipher = AESGCM(AESGCM.generate_key(256))
    codec = FieldCodec(LOG_ID)
    frontier, heads, checkpoints = Frontier(), dict[str, StreamHead](), {}
    step = 10_000
    for start in range(0, records, step):
        n = min(step, records - start)
        events = [
            NewEvent(f"HD-{(start + i) % 64}", "session.event", {"n": start + i, "who": "t"})
            for i in range(n)
        ]
        ROWS.extend(seal_rows(codec, events, frontier, heads, lambda s: ("k" * 32, cipher)))
        checkpoints[frontier.size] = signer.sign(frontier.size, frontier.root()).note
    return signer, checkpoints, frontier


def write_database(path: Path, checkpoints: dict[int, str], frontier: Frontier) -> None:
    """``ROWS`` with their checkpoints and tree state in a SQLite file with the audit schema
    (WAL, as the broker's engine sets it)."""
    path.unlink(missing_ok=True)
    sync = create_engine(f"sqlite:///{path}")
    schema.metadata.create_all(sync)
    sync.dispose()
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        marks = "?, " * (len(ROWS[0]) - 1) + "?"
        db.executemany(f"INSERT INTO audit_records VALUES ({marks})", ROWS)
        db.executemany(
            "INSERT INTO audit_checkpoints (size, root, note, created_at_us) VALUES (?, ?, ?, 0)",
            [(size, b"", note) for size, note in checkpoints.items()],
        )
        db.execute(
            "INSERT INTO audit_tree_state (id, size, frontier, root) VALUES (1, ?, ?, ?)",
            (frontier.size, frontier.pack(), frontier.root()),
        )
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def verify_file(path: Path, verifier: VerifierKey, processes: int) -> tuple[float, bytes]:
    start = time.perf_counter()
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            report = await verify_database(conn, verifier, processes=processes)
    finally:
        await engine.dispose()
    elapsed = time.perf_counter() - start
    assert report.ok, report.verdict()
    assert report.root is not None
    return elapsed, report.root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", type=Path, help="where to write the SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, args.db or Path(tmp) / "audit.db")


def run(args: argparse.Namespace, db_path: Path) -> None:
    t0 = time.perf_counter()
    signer, checkpoints, frontier = seal(args.records)
    leaf_in = [b"\x00" + leaf_data(LOG_ID, *r[:11]) for r in ROWS]
    nodes_in = node_inputs([r[11] for r in ROWS])
    print(f"sealed {len(ROWS):,} records in {time.perf_counter() - t0:.1f} s (setup)")
    t0 = time.perf_counter()
    write_database(db_path, checkpoints, frontier)
    size_mb = db_path.stat().st_size / 1e6
    print(f"wrote {db_path} ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s (setup)")
    sha = hashlib.sha256

    def raw(inputs: list[bytes]) -> float:
        start = time.perf_counter()
        for x in inputs:
            sha(x).digest()
        return time.perf_counter() - start

    def ours(processes: int) -> float:
        start = time.perf_counter()
        checker = LogVerifier(LOG_ID, signer.verifier, checkpoints)
        if processes == 1:
            checker.feed_rows(ROWS)
        else:
            feed_segments(checker, len(ROWS), fetch, processes=processes, context="fork")
        report = checker.finish(frontier.size, frontier.root())
        elapsed = time.perf_counter() - start
        assert report.ok
        assert report.root == frontier.root()
        return elapsed

    def read_file() -> float:
        """The database side of baseline C: every row read by the ``sqlite3`` module."""
        start = time.perf_counter()
        db = sqlite3.connect(db_path)
        try:
            cur = db.execute("SELECT * FROM audit_records ORDER BY position")
            while cur.fetchmany(8192):
                pass
        finally:
            db.close()
        return time.perf_counter() - start

    def from_file(processes: int) -> float:
        elapsed, root = asyncio.run(verify_file(db_path, signer.verifier, processes))
        assert root == frontier.root()
        return elapsed

    keys = ("one", "two", "db1", "db2", "leaves", "all", "read")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(args.rounds):  # interleaved, so the machine's load hits all alike
        times["one"].append(ours(1))
        times["two"].append(ours(2))
        times["db1"].append(from_file(1))
        times["db2"].append(from_file(2))
        leaves = raw(leaf_in)
        times["leaves"].append(leaves)
        times["all"].append(leaves + raw(nodes_in))
        times["read"].append(times["all"][-1] + read_file())
    n = len(ROWS)
    leaf_mb = sum(len(x) for x in leaf_in) / 1e6
    print(f"{n:,} records: {leaf_mb:.0f} MB of leaf inputs + {len(nodes_in):,} node inputs")
    print("best of", args.rounds, "rounds (all rounds in seconds in brackets)")
    labels = {
        "one": "LogVerifier, 1 process",
        "two": "feed_segments, 2 processes",
        "db1": "verify_database, SQLite, 1 process",
        "db2": "verify_database, SQLite, 2 processes",
        "all": "raw SHA-256, leaves + nodes (A)",
        "leaves": "raw SHA-256, leaves only (B)",
        "read": "sqlite3 reads the rows, then A (C)",
    }
    best = {k: min(v) for k, v in times.items()}
    for key, label in labels.items():
        runs = " ".join(f"{t:.2f}" for t in times[key])
        print(f"  {label:38} {best[key]:6.2f} s {n / best[key]:>12,.0f} records/s  [{runs}]")
    for key in ("one", "two", "db1", "db2"):
        from_db = f", vs C {best['read'] / best[key]:.2f}x" if key.startswith("db") else ""
        print(
            f"  ratio {labels[key]:38} vs A {best['all'] / best[key]:.2f}x, "
            f"vs B {best['leaves'] / best[key]:.2f}x{from_db}   target >= 0.5x"
        )


if __name__ == "__main__":
    main()
