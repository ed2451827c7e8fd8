"""``audit.workers``: jobs run in worker processes and come back in order; a job's error, a
worker that dies (busy or idle), a stop, a worker that will not start and one that ignores
SIGTERM each end cleanly, leaving no process behind; the worker's own loop is checked here
in this process, where coverage sees it."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from audit import workers
from audit.workers import Stopped, WorkerDied, Workers, serve

FORK = multiprocessing.get_context("fork")


def work(job: Any) -> Any:
    """A number: slept for (hundredths of a second), then doubled; a word: a misbehaviour."""
    if job == "boom":
        raise ValueError("boom")
    if job == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if job == "unpicklable":
        return lambda: None
    if job == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    time.sleep(job / 100)
    return job * 2


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    yield
    assert multiprocessing.active_children() == []


def test_results_come_in_the_jobs_order() -> None:
    jobs = [9, 0, 5, 1, 0, 7, 2, 0, 3]  # later jobs often finish first
    with Workers(FORK, 3, work) as pool:
        assert list(pool.map(jobs)) == [j * 2 for j in jobs]
        assert list(pool.map([4])) == [8]  # the workers stay for another map


def test_a_jobs_error_is_raised_here() -> None:
    with Workers(FORK, 2, work) as pool, pytest.raises(ValueError, match="boom"):
        list(pool.map([1, "boom", 50, 50]))


def test_an_unpicklable_answer_is_an_error() -> None:
    with Workers(FORK, 1, work) as pool, pytest.raises(RuntimeError, match="did not pickle"):
        list(pool.map(["unpicklable"]))


def test_a_worker_killed_in_a_job_is_reported_at_once() -> None:
    # With the old pool this waited for ever: the lost job was never answered.
    with Workers(FORK, 2, work) as pool, pytest.raises(WorkerDied, match=r"job 1 .*exit code -9"):
        list(pool.map([30, "die", 30]))


def test_a_worker_that_died_idle_is_reported() -> None:
    with Workers(FORK, 1, work) as pool:
        for child in multiprocessing.active_children():
            child.kill()
            child.join()
        with pytest.raises(WorkerDied, match="job 0"):
            list(pool.map([1]))


def test_a_stop_is_raised_and_ends_the_workers() -> None:
    stop = threading.Event()
    with Workers(FORK, 2, work) as pool:
        results = pool.map([0, 500, 500], stop)
        assert next(results) == 0
        stop.set()
        with pytest.raises(Stopped):
            next(results)


def test_a_worker_ignoring_sigterm_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "GRACE_SECONDS", 0.2)
    pool = Workers(FORK, 2, work)
    results = pool.map([0, "stubborn"])
    assert next(results) == 0
    time.sleep(0.3)  # the stubborn job has begun ignoring SIGTERM
    pool.close()
    pool.close()  # twice is harmless


def test_a_worker_that_cannot_start_leaves_nothing_behind() -> None:
    spawn = multiprocessing.get_context("spawn")
    with pytest.raises(Exception, match="pickle"):
        Workers(spawn, 2, lambda job: job)  # spawn must pickle the work: a lambda cannot


def test_workers_started_before_one_that_fails_are_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    start = workers._start
    started: list[multiprocessing.process.BaseProcess] = []

    def second_fails(ctx: Any, fn: Any) -> Any:
        if started:
            raise OSError("no more processes")
        worker = start(ctx, fn)
        started.append(worker.process)
        return worker

    monkeypatch.setattr(workers, "_start", second_fails)
    with pytest.raises(OSError, match="no more processes"):
        Workers(FORK, 2, work)
    assert started[0].exitcode is not None  # the first worker was ended, not left running


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Workers(FORK, 0, work)


@pytest.fixture
def sigint_restored() -> Iterator[None]:
    old = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, old)


def in_this_process(jobs: list[Any], close: bool, fn: Callable[[Any], Any] = work) -> list[Any]:
    """Run :func:`serve` here on ``jobs`` (and the parent end closed first, if ``close``)."""
    parent, child = FORK.Pipe()
    for job in jobs:
        parent.send(job)
    if close:
        parent.close()
        serve(child, fn)
        return []
    serve(child, fn)
    answers = []
    with contextlib.suppress(EOFError):  # the worker's end is closed after its last answer
        while True:
            answers.append(parent.recv())
    return answers


@pytest.mark.usefixtures("sigint_restored")
def test_serve_answers_each_job_until_none() -> None:
    answers = in_this_process([2, "boom", "unpicklable", None], close=False)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a Ctrl-C is the parent's
    assert answers[0] == ("ok", 4)
    assert answers[1][0] == "error"
    assert isinstance(answers[1][1], ValueError)
    assert answers[2][0] == "error"
    assert "did not pickle" in str(answers[2][1])
    assert len(answers) == 3  # and it returned at None


@pytest.mark.usefixtures("sigint_restored")
def test_serve_leaves_when_the_parent_has_gone() -> None:
    assert in_this_process([], close=True) == []  # end-of-file before a job
    assert in_this_process([1], close=True) == []  # the answer has nowhere to go
