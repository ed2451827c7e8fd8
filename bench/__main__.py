"""``python -m bench`` (``make bench``): the benchmarks, headline figures first.

Each is a script of its own that measures its baseline in the same run, interleaves rounds
and prints the load average; this runs them one after another (``python -m bench NAME ...``
runs some; ``--list`` names them). Headlines drive the product as a user does (a ``serve``
process over HTTP, the CLI); the library micro-benchmarks are labelled as such.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (script and arguments, what it measures)
BENCHES: dict[str, tuple[list[str], str]] = {
    "sessions-sqlite": (
        ["bench_sessions_http.py"],
        "headline: POST /api/v1/sessions through `supportbroker serve`, SQLite, 8 clients",
    ),
    "sessions-postgres": (
        ["bench_sessions_http.py", "--postgres"],
        "headline: the same on PostgreSQL, one broker process",
    ),
    "sessions-postgres-2": (
        ["bench_sessions_http.py", "--postgres", "--processes", "2"],
        "headline: the same on PostgreSQL, two broker processes",
    ),
    "auditor-pages": (
        ["bench_auditor_pages.py"],
        "headline: auditor search (every filter) and a ticket's timeline, 1 M events, serve",
    ),
    "verify-log": (
        ["bench_verify_log_cli.py"],
        "headline: `python -m audit verify-log --processes 2` on 1,000,000 records",
    ),
    "forward": (
        ["bench_agent_forward.py", "--mb", "128"],
        "headline: port forward through agent + broker vs OpenSSH (same cipher, default)",
    ),
    "replicas-idle": (
        ["bench_replicas_idle.py"],
        "headline: 10,000 idle agents over 3 replicas behind HAProxy, RSS per link, kill -9",
    ),
    "record-event": (
        ["bench_record_event.py"],
        "micro: record_event, 5 events per transaction, vs the same rows raw",
    ),
    "append": (["bench_audit_append.py"], "micro (library): durable appends, 1,000 per txn"),
    "verify": (["bench_audit_verify.py"], "micro (library): the verifier over 10^6 records"),
    "bundle": (["bench_audit_bundle.py"], "micro (library): offline bundle verification"),
}


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for name, (_, what) in BENCHES.items():
            print(f"{name:20s} {what}")
        return 0
    unknown = [a for a in argv if a not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    failed = []
    for name in argv or list(BENCHES):
        script, what = BENCHES[name]
        print(f"\n=== {name}: {what}", flush=True)
        done = subprocess.run([sys.executable, str(HERE / script[0]), *script[1:]], check=False)
        if done.returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
