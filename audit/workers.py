"""Worker processes that run jobs in order, one pipe each: what ``feed_segments`` runs in.

Why not :class:`multiprocessing.pool.Pool`: a CI run hung for its whole 90 minutes at a
multi-process verification test whose verification ends in a problem, i.e. where the pool is
torn down with jobs in flight. It did not recur here in dozens of runs, so the cause is not
proven; but the pool's tear-down coordinates three handler threads and queues whose locks are
shared with the workers, and a job whose worker died is never answered (``imap`` then waits
for ever). Here nothing is shared but one pipe per worker: a worker that dies is an
end-of-file on its pipe, reported at once (:class:`WorkerDied`), and leaving ends every worker
(told to go if idle, SIGTERM if busy, SIGKILL for any still there after
:data:`GRACE_SECONDS`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, cast

POLL_SECONDS = 0.1
"""How often the parent looks at ``stop`` while it waits for a worker."""
GRACE_SECONDS = 2.0
"""How long an ended worker has to exit before it is killed."""

Work = Callable[[Any], Any]


class Stopped(Exception):
    """The caller set ``stop``: the work was abandoned."""


class WorkerDied(RuntimeError):
    """A worker process ended in the middle of a job (killed, out of memory, a crash)."""


def serve(conn: Connection, work: Work) -> None:
    """A worker's loop: answer each job on ``conn`` with ``("ok", work(job))`` or
    ``("error", exception)``, until ``None``, end-of-file or a parent that went away.

    SIGINT is ignored: a Ctrl-C reaches the whole process group, and it is the parent's to
    decide (it ends the workers).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with conn:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            if job is None:
                return
            try:
                reply: tuple[str, Any] = ("ok", work(job))
            except Exception as exc:  # any failure goes back to the parent
                reply = ("error", exc)
            try:
                conn.send(reply)
            except OSError:  # the parent closed its end: nobody wants the answer
                return
            except Exception as exc:  # did not pickle (nothing was written)
                conn.send(("error", RuntimeError(f"the answer did not pickle: {exc}")))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    job: int | None = None  # the index of the job it is doing


def _start(ctx: BaseContext, work: Work) -> _Worker:
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=serve, args=(theirs, work), daemon=True)  # type: ignore[attr-defined]
    try:
        process.start()  # spawn pickles ``work`` and ``theirs`` here
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()  # the worker has its own copy
    return _Worker(process, mine)


class Workers:
    """``count`` spawned (or forked) processes that run ``work``; a context manager."""

    def __init__(self, ctx: BaseContext, count: int, work: Work) -> None:
        if count < 1:
            raise ValueError(f"at least one worker is needed, not {count}")
        self._workers: list[_Worker] = []
        try:
            for _ in range(count):
                self._workers.append(_start(ctx, work))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def map(self, jobs: Sequence[Any], stop: threading.Event | None = None) -> Iterator[Any]:
        """``work(job)`` for every job, in the jobs' order, at most two jobs per worker ahead
        of the one awaited. A job's exception is raised here; so is :class:`Stopped` within
        :data:`POLL_SECONDS` of ``stop`` being set."""
        done: dict[int, Any] = {}
        free = list(self._workers)
        sent = wanted = 0
        ahead = 2 * len(self._workers)
        while wanted < len(jobs):
            if stop is not None and stop.is_set():
                raise Stopped("stopped")
            if wanted in done:
                yield done.pop(wanted)
                wanted += 1
                continue
            while free and sent < min(len(jobs), wanted + ahead):
                self._give(free.pop(), sent, jobs[sent])
                sent += 1
            busy = {w.conn: w for w in self._workers if w.job is not None}
            for conn in wait(list(busy), POLL_SECONDS):
                worker = busy[cast(Connection, conn)]
                index, result = self._take(worker)
                done[index] = result
                free.append(worker)

    def _give(self, worker: _Worker, index: int, job: Any) -> None:
        worker.job = index
        try:
            worker.conn.send(job)
        except OSError:
            raise self._died(worker) from None

    def _take(self, worker: _Worker) -> tuple[int, Any]:
        index = worker.job
        assert index is not None  # only busy workers are waited for
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):  # a reset, if it died before reading the job
            raise self._died(worker) from None
        worker.job = None
        if kind == "error":
            raise value
        return index, value

    def _died(self, worker: _Worker) -> WorkerDied:
        worker.process.join(GRACE_SECONDS)
        return WorkerDied(
            f"a worker process ended during job {worker.job} (exit code {worker.process.exitcode})"
        )

    def close(self) -> None:
        """End every worker: an idle one is told to leave, a busy one is terminated,
        one still there after :data:`GRACE_SECONDS` is killed. Safe to call twice."""
        for w in self._workers:
            if w.job is not None:
                w.process.terminate()
            else:
                # Not just the end-of-file: a forked worker holds copies of the parent's ends.
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            w.conn.close()
        for w in self._workers:
            w.process.join(GRACE_SECONDS)
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join()
        self._workers = []
