"""Offline verification of a 100-record evidence bundle (with plaintext payloads): median of
many runs of ``verify_bundle``; baseline in the same run: reading the zip's members only.

    .venv/bin/python bench/bench_audit_bundle.py [--records 100] [--runs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_audit_append import make_log, sqlite_engine

from audit import schema
from audit.bundle import verify_bundle
from audit.store import NewEvent


async def build(workdir: Path, records: int) -> tuple[bytes, object]:
    engine = sqlite_engine(workdir / "b.db")
    async with engine.begin() as conn:
        await conn.run_sync(schema.metadata.create_all)
    log = make_log(workdir)
    for i in range(records):
        async with engine.begin() as conn:
            await log.append(
                conn,
                [
                    NewEvent("HD-4711", "session.event", {"n": i, "cmd": "ls -la"}),
                    NewEvent(f"HD-{i}", "other", {"n": i}),
                ],
            )
    async with engine.connect() as conn:
        data = await log.export_bundle(conn, "HD-4711", include_plaintext=True)
    await engine.dispose()
    return data, log.signer.verifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, verifier = asyncio.run(build(Path(tmp), args.records))
    times, base = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        report = verify_bundle(data, verifier)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                zf.read(info)
        base.append(time.perf_counter() - t0)
    assert report.ok, report.problem
    med, med_base = statistics.median(times) * 1e3, statistics.median(base) * 1e3
    print(f"bundle of {report.records} records, {len(data):,} bytes, {args.runs} runs")
    p99 = sorted(times)[int(0.99 * len(times))] * 1e3
    print(f"  verify_bundle  median {med:.2f} ms  p99 {p99:.2f} ms   target <= 5 ms")
    print(f"  unzip only     median {med_base:.2f} ms   ratio {med / med_base:.1f}x")


if __name__ == "__main__":
    main()
