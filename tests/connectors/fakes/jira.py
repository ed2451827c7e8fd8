"""Fake Jira Service Management.

Shapes from https://developer.atlassian.com/cloud/jira/platform/rest/v2/api-group-issues/
(``GET /rest/api/2/issue/{issueIdOrKey}`` → ``{"id", "key", "fields": {"summary", "status":
{"name", "statusCategory": {"key"}}, "assignee": {"displayName"}, "reporter", "priority",
"issuetype"}}``; 404 with ``errorMessages``) and https://developer.atlassian.com/cloud/jira/
service-desk/rest/api-group-request/ (``POST /rest/servicedeskapi/request/{issueIdOrKey}/
comment`` with ``{"body", "public"}`` → 201; ``GET`` of the same path with ``start``,
``limit`` → ``{"values": [{"body", "public"}], "isLastPage"}``). Auth: basic e-mail + API
token.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.connectors.fakes import FakeBase, body_of

EMAIL = "bot@example.test"
API_TOKEN = "jira-api-token"


@dataclass
class FakeJira(FakeBase):
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, key: str, *, summary: str, status: str, category: str) -> None:
        self.issues[key] = {
            "id": str(10000 + len(self.issues)),
            "key": key,
            "fields": {
                "summary": summary,
                "status": {"name": status, "statusCategory": {"key": category}},
                "assignee": {"displayName": "Tom Tech", "accountId": "5b10a"},
                "reporter": {"displayName": "Erika Mustermann"},
                "priority": {"name": "High"},
                "issuetype": {"name": "IT Help"},
            },
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        expected = "Basic " + base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"errorMessages": ["unauthorized"]})
        path = request.url.path
        if request.method == "GET" and path == "/rest/api/2/myself":
            return httpx.Response(200, json={"accountId": "bot"})
        if request.method == "GET" and path.startswith("/rest/api/2/issue/"):
            issue = self.issues.get(path.rsplit("/", 1)[1])
            if issue is None:
                return httpx.Response(
                    404, json={"errorMessages": ["Issue does not exist"], "errors": {}}
                )
            return httpx.Response(200, json=issue)
        prefix = "/rest/servicedeskapi/request/"
        if request.method == "GET" and path.startswith(prefix) and path.endswith("/comment"):
            key = path.removeprefix(prefix).removesuffix("/comment")
            if key not in self.issues:
                return httpx.Response(404, json={"errorMessage": "no request"})
            start = int(request.url.params.get("start", "0"))
            limit = int(request.url.params.get("limit", "50"))
            mine = [n for n in self.notes if n["ticket"] == key]
            page = mine[start : start + limit]
            values = [{"id": str(start + i), "body": n["text"], "public": not n["internal"]}
                      for i, n in enumerate(page)]  # fmt: skip
            last = start + limit >= len(mine)
            return httpx.Response(
                200, json={"start": start, "limit": limit, "isLastPage": last, "values": values}
            )
        if request.method == "POST" and path.startswith(prefix) and path.endswith("/comment"):
            key = path.removeprefix(prefix).removesuffix("/comment")
            body = body_of(request)
            if not isinstance(body, dict) or not isinstance(body.get("public"), bool):
                return httpx.Response(400, json={"errorMessage": "public is required"})
            if key not in self.issues:
                return httpx.Response(404, json={"errorMessage": "no request"})
            self.notes.append({"ticket": key, "text": body["body"], "internal": not body["public"]})
            return httpx.Response(201, json={"id": "1000", "body": body["body"], "public": False})
        return httpx.Response(404, json={"errorMessages": ["no route"]})
