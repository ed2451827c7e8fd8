"""Supervisor reports (include at the root, no prefix); auditors and admins read them all,
supervisors those of their device groups (``member_of``).

- ``GET /ui/reports?since=YYYY-MM-DD&until=YYYY-MM-DD``: every report as a chart (Chart.js
  from node_modules) with the same numbers in a table beside it
- ``GET /ui/reports/{name}.csv``: one report's numbers as CSV, same range parameters

Reports are aggregates of session metadata (no audit content), so reading one is not an
audit event; the numbers come from ``reports_service``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from broker.auth.principal import Principal
from broker.db.session import DbSession
from broker.errors import ValidationFailed
from broker.ui import reports_service as svc
from broker.ui.auditor_web import audit_user, can_audit, can_oversee, page, script

router = APIRouter(include_in_schema=False)
Day = Annotated[str, Query(max_length=10)]


@router.get("/ui/reports", response_model=None)
async def reports_page(
    request: Request,
    who: Annotated[Principal, audit_user(can_oversee)],
    db: DbSession,
    since: Day = "",
    until: Day = "",
) -> Response:
    context = {"since": since, "until": until, "can_audit": can_audit(who)}
    try:
        rng = svc.DateRange.parse(since, until)
    except ValidationFailed as exc:
        return page(request, "reports/index.html", 422, error=exc.detail, **context)
    datasets = await svc.all_datasets(db, rng, member_of(who))
    by_name = {d.name: d for d in datasets}
    return page(
        request,
        "reports/index.html",
        rng=rng,
        datasets=datasets,
        charts=[d.chart() for d in datasets],
        average=svc.average_rating(by_name["satisfaction"]),
        query=f"since={rng.first.isoformat()}&until={rng.last.isoformat()}",
        **context,
    )


@router.get("/ui/reports/{name}.csv", response_model=None)
async def report_csv(
    request: Request,
    name: str,
    who: Annotated[Principal, audit_user(can_oversee)],
    db: DbSession,
    since: Day = "",
    until: Day = "",
) -> Response:
    rng = svc.DateRange.parse(since, until)
    found = await svc.dataset(db, name, rng, member_of(who))
    filename = f"{found.name}-{rng.first.isoformat()}-{rng.last.isoformat()}.csv"
    return Response(
        found.csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def member_of(principal: Principal) -> str | None:
    """Whose device groups narrow the reports: a supervisor's own; nobody's for the rest."""
    if principal.role == "supervisor":
        return principal.user_id or ""
    return None


@router.get("/static/reports.js")
async def reports_js() -> FileResponse:
    return script("reports.js")
