"""A small repository base: the SQL of a domain lives in its repository, never in routers."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.base import Base

ModelT = TypeVar("ModelT", bound=Base)


class Repository(Generic[ModelT]):
    model: type[ModelT]

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def get(self, id_: Any) -> ModelT | None:
        return await self.db.get(self.model, id_)

    async def add(self, obj: ModelT) -> ModelT:
        self.db.add(obj)
        await self.db.flush()
        return obj

    async def scalars(self, stmt: Select[ModelT]) -> list[ModelT]:
        return list((await self.db.scalars(stmt)).all())

    def select(self) -> Select[ModelT]:
        return select(self.model)
