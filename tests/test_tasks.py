"""The background loop's job list: every job runs each round, and one failing job neither
stops the others nor the next round (broker.tasks)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from broker import tasks


async def test_every_job_runs_on_an_empty_database(app: FastAPI) -> None:
    done = await tasks.run_jobs_once(app)
    assert set(done) == {name for name, _ in tasks.JOBS}
    assert "providers.reconciled" in done
    assert done["sessions.swept"] == 0
    assert done["providers.reconciled"] == 0


async def test_a_failing_job_does_not_stop_the_others(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def broken(_: FastAPI) -> int:
        calls.append("broken")
        raise RuntimeError("provider down")

    async def counting(_: FastAPI) -> int:
        calls.append("counting")
        return 3

    jobs: list[tuple[str, Any]] = [("a.broken", broken), ("b.counting", counting)]
    monkeypatch.setattr(tasks, "JOBS", jobs)
    done = await tasks.run_jobs_once(app)
    assert calls == ["broken", "counting"]
    assert done == {"b.counting": 3}
    # The next round runs the failing job again: nothing is dropped for good.
    await tasks.run_jobs_once(app)
    assert calls.count("broken") == 2
