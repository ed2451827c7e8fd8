"""``verify-log`` through the command line on 1,000,000 records, 2 worker processes.

The path a third party (or an operator) runs: ``python -m audit verify-log --database-url
... --public-key ... --processes 2`` as its own process, timed from start to exit (Python
start-up, the snapshot, spawning the workers, reading and verifying every row, the report).
Setup (not timed): 1,000,000 sealed records with their checkpoints and tree state in a
SQLite file, as ``bench_audit_verify.py`` builds them. Baseline in the same
run, rounds interleaved: a process that only reads every row of the same file with
``sqlite3`` (the floor of any verifier that reads the database). Each run's CPU time (the
process and its workers, user + system) is printed beside its wall time: on a shared machine
the wall time follows the load, the CPU time much less.

    .venv/bin/python bench/bench_verify_log_cli.py [--records 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_audit_verify import ROWS, seal, write_database  # noqa: E402

READ_ONLY = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1])\n"
    "n = sum(1 for _ in db.execute('SELECT * FROM audit_records ORDER BY position'))\n"
    "print(n)\n"
)


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of ``cmd`` (with its own children), and its last line."""
    t0, c0 = time.perf_counter(), _cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {out.returncode}: {out.stdout}{out.stderr}")
    return elapsed, cpu, out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.db"
        t0 = time.perf_counter()
        signer, checkpoints, frontier = seal(args.records)
        write_database(path, checkpoints, frontier)
        key = Path(tmp) / "log.vkey"
        key.write_text(signer.verifier.encode() + "\n")
        print(f"setup: {len(ROWS):,} records in {time.perf_counter() - t0:.1f} s")
        ours = [
            sys.executable, "-m", "audit", "verify-log",
            "--database-url", f"sqlite+aiosqlite:///{path}",
            "--public-key", str(key), "--processes", str(args.processes),
        ]  # fmt: skip
        base = [sys.executable, "-c", READ_ONLY, str(path)]
        best_ours, best_base = float("inf"), float("inf")
        for r in range(args.rounds):
            print(f"round {r + 1}: load average {loadavg()}", flush=True)
            a, a_cpu, verdict = timed(ours)
            b, b_cpu, count = timed(base)
            best_ours, best_base = min(best_ours, a), min(best_base, b)
            print(
                f"  verify-log --processes {args.processes}: {a:6.2f} s, CPU {a_cpu:5.2f} s"
                f"  ({verdict[:60]})"
            )
            print(
                f"  read every row with sqlite3:  {b:6.2f} s, CPU {b_cpu:5.2f} s  ({count} rows)",
                flush=True,
            )
        print(
            f"\nverify-log CLI, {len(ROWS):,} records, {args.processes} processes: best "
            f"{best_ours:.2f} s (target <= 3 s); reading the rows alone {best_base:.2f} s; "
            f"ratio {best_base / best_ours:.2f}; load average {loadavg()}"
        )


if __name__ == "__main__":
    main()
