"""A small async REST client for the AnyDesk API; every failure becomes ``ProviderError``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from broker.errors import ProviderError
from broker.providers.anydesk.settings import AnyDeskSettings
from broker.providers.anydesk.signing import AnyDeskAuth

Json = dict[str, Any]


class AnyDeskClient:
    def __init__(
        self, settings: AnyDeskSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(
            base_url=settings.api_url,
            auth=AnyDeskAuth(settings.license_id, settings.api_password.get_secret_value()),
            timeout=settings.timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, resource: str, body: Json | None = None) -> Json:
        try:
            response = await self._http.request(method, resource, json=body)
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"AnyDesk API at {self.settings.api_url} failed on {method} "
                f"{resource.partition('?')[0]}: {type(exc).__name__}"
            ) from exc
        if response.status_code == 401:
            raise ProviderError("AnyDesk refused the API credentials (license id / API password)")
        if response.status_code >= 400:
            path = resource.partition("?")[0]
            raise ProviderError(f"AnyDesk API answered {response.status_code} on {method} {path}")
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderError("AnyDesk API answered with something that is not JSON") from exc
        return data if isinstance(data, dict) else {"list": data}

    async def auth(self) -> Json:
        return await self._call("GET", "/auth")

    async def clients(self) -> list[Json]:
        return await self._paged("/clients", {})

    async def sessions(self, cid: str, start: int, end: int) -> list[Json]:
        """Incoming sessions of client ``cid`` between two Unix times, all pages."""
        query = {"cid": cid, "direction": "in", "from": start, "to": end, "sort": "start-time"}
        return await self._paged("/sessions", query)

    async def _paged(self, path: str, query: dict[str, Any]) -> list[Json]:
        found: list[Json] = []
        offset, size = 0, self.settings.page_size
        while True:
            params = urlencode({**query, "offset": offset, "limit": size})
            page = await self._call("GET", f"{path}?{params}")
            items = list(page.get("list") or [])
            found.extend(items)
            total = page.get("count")
            offset += len(items)
            if len(items) < size or (isinstance(total, int) and offset >= total):
                return found

    async def comment(self, sid: str, text: str) -> None:
        await self._call("PATCH", f"/sessions/{sid}", {"comment": text})

    async def close(self, sid: str) -> None:
        await self._call("POST", f"/sessions/{sid}/action", {"action": "close"})
