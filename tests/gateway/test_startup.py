"""The start-up heap is frozen by the app's lifespan, once per process, gateway or not."""

from __future__ import annotations

import gc
from typing import Any

import pytest

import broker.app
from broker.app import create_app


async def test_lifespan_freezes_the_startup_heap_once_without_the_gateway(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.gateway_enabled is False
    gc.unfreeze()  # as if no app had started in this process yet
    monkeypatch.setattr(broker.app, "_heap_frozen", False)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        assert getattr(application.state, "gateway", None) is None
        frozen = gc.get_freeze_count()
        assert frozen > 0
    kept = [[] for _ in range(1000)]  # tracked objects a second freeze would take along
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        # Once per process: nothing new joins (frozen objects freed by refcount leave it).
        assert gc.get_freeze_count() <= frozen
    assert len(kept) == 1000
