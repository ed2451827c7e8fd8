"""A hung test names itself: pytest-timeout's thread method, with the test's id printed last.

pytest-timeout (``timeout_method = "thread"``) ends the whole run when one test hangs, and a CI
log often keeps only its tail: the thread stacks, never which test it was. This timer does
the same job through pytest-timeout's own hook, and its last line says which test and which
phase (setup, call, teardown) hung.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from typing import Any

import pytest
from pytest_timeout import dump_stacks

_phase = ["setup"]  # of the test running now (one at a time)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "thread" or not settings.timeout:
        return None  # the signal method raises in the test itself: its report names it
    timer = threading.Timer(settings.timeout, _timed_out, (item, float(settings.timeout)))
    timer.name = f"watchdog {item.nodeid}"
    timer.daemon = True

    def cancel() -> None:
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout reads it
    timer.start()
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid: str) -> None:
    _phase[0] = "setup"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    _phase[0] = "call"
    yield
    _phase[0] = "teardown"


def _timed_out(item: pytest.Item, timeout: float) -> None:
    terminal = item.config.get_terminal_writer()
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # the test's captured output would swallow the report
        capture.suspend_global_capture(item)
    try:
        dump_stacks(terminal)
        _write_tasks(terminal)
    finally:
        terminal.sep("+", f"TIMEOUT after {timeout:.0f} s in {_phase[0]}: {item.nodeid}")
        terminal.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _write_tasks(terminal: Any) -> None:
    """Where each task of the running event loop waits: the thread stack only shows the loop.
    Read from another thread while the loop runs, so best effort."""
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if not loop.is_running():
            continue
        for task in list(asyncio.all_tasks(loop))[:40]:
            where = " -> ".join(_awaits(task.get_coro()))
            terminal.write(f"task {task.get_name()}: {where or task!r}\n")


def _awaits(coro: Any) -> list[str]:
    """The chain of awaits from a task's coroutine down to what it waits on."""
    chain: list[str] = []
    while coro is not None and len(chain) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        frame = frame or getattr(coro, "gi_frame", None)
        if frame is not None:
            name = frame.f_code.co_filename.rsplit("/", 2)[-1]
            chain.append(f"{frame.f_code.co_name} ({name}:{frame.f_lineno})")
        else:  # an async generator's asend/athrow object: its generator is a referent
            inner = [o for o in gc.get_referents(coro) if hasattr(o, "ag_frame")]
            if inner:
                coro = inner[0]
                continue
            chain.append(repr(coro)[:120])
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or (getattr(coro, "gi_yieldfrom", None))
        )
    return chain
