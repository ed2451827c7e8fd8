"""Supervisor reports over the sessions requested in a date range (UTC days, both inclusive);
a supervisor's reports cover only the sessions of their device groups.

Each report is a small table (``Dataset``: columns and rows) that the page draws as a chart
and offers as CSV. Counts are SQL aggregates (``GROUP BY``); for the two timings SQL selects
the timestamps and the statistics are taken here, because SQLite has neither ``percentile``
nor a portable interval type:

- median: the middle value, or the mean of the two middle values for an even count;
- p90: nearest rank, the ``ceil(0.9 · n)``-th smallest value.

Definitions:
- ``technicians``: sessions credited to their owner, the technician who requested them for
  the ticket (how many ended, how many had an expert invited: ``with_expert``), and apart
  from that each technician's ``expert_assists``: sessions of others they were invited into
  as the expert ("escalation without penalty": asking for help takes nothing from the owner
  and adds no session to the expert; the invitation is the escalation, the join itself is
  the audit event ``session.expert_joined``);
- ``providers``: sessions requested per provider;
- ``consent_time``: seconds from the request to the end user's approval, for sessions that
  asked for consent (unattended sessions are approved by policy and left out);
- ``durations``: seconds from the session becoming active to its end (ended, revoked or
  failed), for sessions that were active and are over;
- ``outcomes``: sessions per current state and their share of all sessions in the range (the
  denial rate is the ``denied`` share, the expiry rate the ``expired`` share);
- ``satisfaction``: the end users' ratings (1-5) and how many sessions got each.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.auth.models import User
from broker.devices.models import Device, GroupMember
from broker.errors import NotFound, ValidationFailed
from broker.sessions.models import RemoteSession, SessionInvitation
from broker.sessions.states import SessionState

DEFAULT_DAYS = 30
MAX_DAYS = 3660

Cell = str | int | float | None


@dataclass(frozen=True)
class DateRange:
    first: date
    last: date  # inclusive

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time.min, UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, UTC)

    @classmethod
    def parse(cls, since: str, until: str, *, today: date | None = None) -> DateRange:
        """The range from form values; empty values mean the last 30 days up to today."""
        today = today or datetime.now(UTC).date()
        try:
            last = date.fromisoformat(until) if until else today
            first = date.fromisoformat(since) if since else last - timedelta(days=DEFAULT_DAYS - 1)
        except ValueError as exc:
            raise ValidationFailed("dates: give them as YYYY-MM-DD") from exc
        if last < first:
            raise ValidationFailed("to: the end of the range is before its start")
        if (last - first).days > MAX_DAYS:
            raise ValidationFailed(f"dates: a report covers at most {MAX_DAYS} days")
        return cls(first, last)


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    chart_column: int  # the column the chart draws against the first column
    unit: str
    chart_from: int = 0  # rows before this are context (a count), not drawn

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()

    def chart(self) -> dict[str, Any]:
        drawn = self.rows[self.chart_from :]
        share = self.unit == "share"  # drawn as percentages, as the table shows them
        return {
            "name": self.name,
            "title": self.title,
            "labels": [_label(row[0]) for row in drawn],
            "values": [
                round(float(row[self.chart_column] or 0) * 100, 1)
                if share
                else row[self.chart_column]
                for row in drawn
            ],
            "unit": "% of sessions" if share else self.unit,
        }

    def headings(self) -> list[str]:
        """The page's column headings (the CSV keeps the machine names)."""
        return [HEADINGS.get(c, c.replace("_", " ").capitalize()) for c in self.columns]

    def shown(self) -> list[list[str]]:
        """The rows as the page shows them: words for names, units on numbers, shares as
        percentages (the CSV keeps the raw numbers)."""
        out = []
        for row in self.rows:
            cells = []
            for column, cell in zip(self.columns, row, strict=True):
                if cell is None:
                    cells.append("—")
                elif column == "rate":
                    cells.append(f"{float(cell) * 100:.1f} %")
                elif column == "value" and self.unit == "seconds" and row[0] != "sessions":
                    cells.append(_duration(float(cell)))
                elif isinstance(cell, str):
                    cells.append(_label(cell))
                else:
                    cells.append(str(cell))
            out.append(cells)
        return out


HEADINGS = {"rate": "Share of sessions", "score": "Score (1 to 5)", "value": "Value"}
LABELS = {"median_seconds": "Median", "p90_seconds": "90th percentile", "sessions": "Sessions"}


def _label(value: Cell) -> str:
    text = str(value)
    return LABELS.get(text, text.replace("_", " "))


def _duration(seconds: float) -> str:
    """Seconds in words a reader takes in at once: "45 s", "3 min 5 s", "2 h 10 min"."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _in(rng: DateRange, member_id: str | None = None) -> ColumnElement[bool]:
    """Sessions requested in ``rng``; with ``member_id`` (a supervisor), only those on devices
    of that user's device groups."""
    found = and_(RemoteSession.requested_at >= rng.since, RemoteSession.requested_at < rng.until)
    if member_id is None:
        return found
    groups = select(GroupMember.group_id).where(GroupMember.user_id == member_id)
    return and_(
        found,
        RemoteSession.device_id.in_(select(Device.id).where(Device.group_id.in_(groups))),
    )


async def _technicians(db: AsyncSession, rng: DateRange, member: str | None) -> Dataset:
    """Sessions credited to the technician who owns them (the ticket's owner), resolved
    (ended) among them, with the experts' help counted apart: an expert invited into a
    session is collaboration, neither a failure of the owner nor a session of the expert."""
    count = func.count(RemoteSession.id)
    ended = func.count(RemoteSession.ended_at)
    owned = {
        str(uid): (str(name), int(n), int(done))
        for uid, name, n, done in await db.execute(
            select(User.id, User.display_name, count, ended)
            .join(User, User.id == RemoteSession.technician_id)
            .where(_in(rng, member))
            .group_by(User.id, User.display_name)
        )
    }
    helped_sessions = func.count(func.distinct(SessionInvitation.session_id))
    asked = {
        str(uid): int(n)
        for uid, n in await db.execute(
            select(RemoteSession.technician_id, helped_sessions)
            .join(SessionInvitation, SessionInvitation.session_id == RemoteSession.id)
            .where(_in(rng, member))
            .group_by(RemoteSession.technician_id)
        )
    }
    joined: dict[str, tuple[str, int]] = {
        str(uid): (str(name), int(n))
        for uid, name, n in await db.execute(
            select(User.id, User.display_name, func.count(SessionInvitation.id))
            .join(User, User.id == SessionInvitation.expert_id)
            .join(RemoteSession, RemoteSession.id == SessionInvitation.session_id)
            .where(_in(rng, member))
            .group_by(User.id, User.display_name)
        )
    }
    names = {uid: v[0] for uid, v in owned.items()} | {uid: v[0] for uid, v in joined.items()}
    rows: list[list[Cell]] = [
        [
            names[uid],
            owned.get(uid, ("", 0, 0))[1],
            owned.get(uid, ("", 0, 0))[2],
            asked.get(uid, 0),
            joined.get(uid, ("", 0))[1],
        ]
        for uid in names
    ]
    rows.sort(key=lambda row: (-int(row[1] or 0), str(row[0])))
    return Dataset(
        "technicians",
        "Sessions per technician (owner), expert help apart",
        ["technician", "sessions", "ended", "with_expert", "expert_assists"],
        rows,
        1,
        "sessions",
    )


async def _providers(db: AsyncSession, rng: DateRange, member: str | None) -> Dataset:
    count = func.count(RemoteSession.id)
    rows = await db.execute(
        select(RemoteSession.provider, count)
        .where(_in(rng, member))
        .group_by(RemoteSession.provider)
        .order_by(count.desc(), RemoteSession.provider)
    )
    return Dataset(
        "providers",
        "Sessions per provider",
        ["provider", "sessions"],
        [[str(p), int(n)] for p, n in rows],
        1,
        "sessions",
    )


def _timing(name: str, title: str, values: list[float]) -> Dataset:
    rows: list[list[Cell]] = [
        ["sessions", len(values)],
        ["median_seconds", _seconds(median(values))],
        ["p90_seconds", _seconds(p90(values))],
    ]
    # The chart draws the two statistics, not the count.
    return Dataset(name, title, ["statistic", "value"], rows, 1, "seconds", chart_from=1)


async def _consent_time(db: AsyncSession, rng: DateRange, member: str | None) -> Dataset:
    rows = await db.execute(
        select(RemoteSession.requested_at, RemoteSession.approved_at).where(
            _in(rng, member),
            RemoteSession.unattended.is_(False),
            RemoteSession.approved_at.is_not(None),
        )
    )
    values = [(approved - asked).total_seconds() for asked, approved in rows if asked and approved]
    return _timing("consent_time", "Time from request to consent", values)


async def _durations(db: AsyncSession, rng: DateRange, member: str | None) -> Dataset:
    end = func.coalesce(RemoteSession.ended_at, RemoteSession.revoked_at, RemoteSession.failed_at)
    rows = await db.execute(
        select(
            RemoteSession.active_at,
            RemoteSession.ended_at,
            RemoteSession.revoked_at,
            RemoteSession.failed_at,
        ).where(_in(rng, member), RemoteSession.active_at.is_not(None), end.is_not(None))
    )
    values = []
    for active, ended, revoked, failed in rows:
        finish = ended or revoked or failed
        if active is not None and finish is not None:
            values.append((finish - active).total_seconds())
    return _timing("durations", "Session durations", values)


async def _outcomes(db: AsyncSession, rng: DateRange, member: str | None) -> Dataset:
    found = {
        str(state): int(n)
        for state, n in await db.execute(
            select(RemoteSession.state, func.count(RemoteSession.id))
            .where(_in(rng, member))
            .group_by(RemoteSession.state)
        )
    }
    total = sum(found.values())
    rows: list[list[Cell]] = [
        [s.value, found.get(s.value, 0), round(found.get(s.value, 0) / total, 4) if total else 0.0]
        for s in SessionState
    ]
    return Dataset(
        "outcomes",
        "Outcomes: denial and expiry rates",
        ["state", "sessions", "rate"],
        rows,
        2,
        "share",
    )


async def _satisfaction(db: AsyncSession, rng: DateRange, member: str | None) -> Dataset:
    found = {
        int(score or 0): int(n)
        for score, n in await db.execute(
            select(RemoteSession.rating, func.count(RemoteSession.id))
            .where(_in(rng, member), RemoteSession.rating.is_not(None))
            .group_by(RemoteSession.rating)
        )
    }
    return Dataset(
        "satisfaction",
        "Satisfaction scores",
        ["score", "sessions"],
        [[score, found.get(score, 0)] for score in range(1, 6)],
        1,
        "sessions",
    )


REPORTS = {
    "technicians": _technicians,
    "providers": _providers,
    "consent_time": _consent_time,
    "durations": _durations,
    "outcomes": _outcomes,
    "satisfaction": _satisfaction,
}


async def dataset(
    db: AsyncSession, name: str, rng: DateRange, member: str | None = None
) -> Dataset:
    """One report; ``member``: a supervisor's id, narrowing it to their device groups."""
    build = REPORTS.get(name)
    if build is None:
        raise NotFound(f"no report {name!r}; there are: {', '.join(REPORTS)}")
    return await build(db, rng, member)


async def all_datasets(
    db: AsyncSession, rng: DateRange, member: str | None = None
) -> list[Dataset]:
    return [await build(db, rng, member) for build in REPORTS.values()]


def average_rating(satisfaction: Dataset) -> float | None:
    rated = sum(int(row[1] or 0) for row in satisfaction.rows)
    if not rated:
        return None
    total = sum(int(row[0] or 0) * int(row[1] or 0) for row in satisfaction.rows)
    return round(total / rated, 2)
