"""The update cadence: when each incident owes stakeholders an update, and the reminder ledger.

The due time lives on the incident row; reminders owed for it are rows in `reminder`, keyed by
(incident, kind, due time) so any number of tickers can schedule them and exactly one delivers
each (a conditional UPDATE hands out leases). No Slack here: delivery is the caller's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import and_, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from bot.models import ROLES, Incident, Reminder, TimelineEntry
from bot.playbook import Playbook, format_duration

UPDATE_DUE = "update_due"
ESCALATION = "escalation"
MAX_RETRY_BACKOFF = timedelta(seconds=60)


# What a drafted update recalls from the timeline: the latest few of these.
DRAFT_KINDS = ("decision", "note", "pinned", "severity", "status")
DRAFT_LINES = 5


class DraftLine(BaseModel):
    """A timeline entry as the update draft recalls it."""

    occurred_at: datetime
    kind: str
    text: str


class ReminderDue(BaseModel):
    """A claimed reminder, with what the deliverer needs to post it."""

    reminder_id: int
    kind: str
    due_at: datetime
    attempts: int
    late: bool
    incident_id: int
    reference: str
    title: str
    summary: str
    severity: int
    status: str
    channel_id: str
    cadence: str
    remind_user_id: str  # the comms lead, else the incident commander, else the declarer
    commander_id: str | None
    dedupe_key: str
    # For the update draft that goes with a reminder.
    open_roles: list[str]
    recent: list[DraftLine]


class DeliveryFailed(Exception):
    """Slack refused a reminder; `permanent` when retrying cannot help (the channel is gone)."""

    def __init__(self, error: str, permanent: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.permanent = permanent


def interval_of(incident: Incident) -> timedelta | None:
    return timedelta(seconds=incident.cadence_seconds) if incident.cadence_seconds else None


def _set_due(incident: Incident, due: datetime | None, playbook: Playbook) -> None:
    interval = interval_of(incident)
    if due is None or interval is None or incident.status == "resolved":
        incident.next_update_due_at = incident.escalate_at = None
        return
    incident.next_update_due_at = due
    incident.escalate_at = due + playbook.escalation_grace(interval)


def _due_from_last_update(incident: Incident, now: datetime) -> datetime | None:
    """The next due time counted from the last update (or the declaration), never in the past."""
    interval = interval_of(incident)
    if interval is None:
        return None
    return max((incident.last_update_at or incident.declared_at) + interval, now)


def start_clock(incident: Incident, playbook: Playbook) -> None:
    """A newly declared incident owes its first update one interval after declaration."""
    interval = playbook.update_interval(incident.severity)
    incident.cadence_seconds = int(interval.total_seconds()) if interval else None
    _set_due(incident, incident.declared_at + interval if interval else None, playbook)


def retime_after_severity(incident: Incident, playbook: Playbook, now: datetime) -> None:
    """A new severity brings its own cadence, unless someone set one by hand for this incident."""
    if not incident.cadence_overridden:
        interval = playbook.update_interval(incident.severity)
        incident.cadence_seconds = int(interval.total_seconds()) if interval else None
    _set_due(incident, _due_from_last_update(incident, now), playbook)


def retime_after_status(incident: Incident, playbook: Playbook, now: datetime) -> None:
    """Resolving stops the cadence; reopening restarts it from now."""
    _set_due(incident, None if incident.status == "resolved" else _due_from_last_update(incident, now), playbook)


def record_update_sent(incident: Incident, playbook: Playbook, now: datetime) -> None:
    """An update went out: the clock starts again."""
    incident.last_update_at = now
    interval = interval_of(incident)
    _set_due(incident, now + interval if interval else None, playbook)


def override_cadence(incident: Incident, interval: timedelta | None, playbook: Playbook, now: datetime) -> str:
    """Set this incident's cadence by hand (None: off); returns the old cadence as text."""
    old = format_duration(interval_of(incident))
    incident.cadence_seconds = int(interval.total_seconds()) if interval else None
    incident.cadence_overridden = True
    _set_due(incident, _due_from_last_update(incident, now), playbook)
    return old


def snooze(incident: Incident, duration: timedelta, playbook: Playbook, now: datetime) -> None:
    """Push the next reminder to `duration` from now, once; the cadence itself is unchanged."""
    _set_due(incident, now + duration, playbook)


# ---------------------------------------------------------------------------------- the ledger

def _insert_ignoring_duplicates(session: Session):
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Reminder)


def schedule_due_reminders(session: Session, now: datetime) -> None:
    """Write a reminder row for every update that fell due and every escalation that is owed.

    Idempotent across processes: the unique key turns a second scheduling into nothing.
    """
    for kind, due_column in ((UPDATE_DUE, Incident.next_update_due_at), (ESCALATION, Incident.escalate_at)):
        already = exists().where(
            Reminder.incident_id == Incident.id, Reminder.kind == kind,
            Reminder.due_at == Incident.next_update_due_at,
        )
        conditions = [due_column.is_not(None), due_column <= now, Incident.channel_id.is_not(None), ~already]
        if kind == ESCALATION:
            # The commander hears of a slipped update only after the comms lead was reminded of it.
            conditions.append(exists().where(
                Reminder.incident_id == Incident.id, Reminder.kind == UPDATE_DUE,
                Reminder.due_at == Incident.next_update_due_at, Reminder.delivered_at.is_not(None),
            ))
        owed = select(Incident.id, literal(kind), Incident.next_update_due_at, literal(now), literal(0),
                      literal(False)).where(*conditions)
        statement = _insert_ignoring_duplicates(session).from_select(
            ["incident_id", "kind", "due_at", "created_at", "attempts", "late"], owed
        ).on_conflict_do_nothing(index_elements=["incident_id", "kind", "due_at"])
        session.execute(statement)


def claim_due_reminders(session: Session, owner: str, now: datetime, late_after: timedelta, lease: timedelta,
                        limit: int = 100) -> list[ReminderDue]:
    """Take a lease on up to `limit` undelivered reminders no one else holds; return them.

    The conditional UPDATE is the claim: on PostgreSQL rows another process has locked are
    skipped, and the WHERE is re-checked after any wait; on SQLite the write lock (BEGIN
    IMMEDIATE) makes claims one at a time. Either way, two processes never hold one reminder.
    """
    claimable = and_(Reminder.delivered_at.is_(None),
                     or_(Reminder.lease_expires_at.is_(None), Reminder.lease_expires_at < now))
    candidates = select(Reminder.id).where(claimable).order_by(Reminder.due_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # A CTE, not `id IN (subquery)`: PostgreSQL may re-run an IN subquery for each row it updates,
    # and with SKIP LOCKED every re-run finds fresh rows, so the LIMIT would not hold.
    picked = candidates.cte("picked")
    claimed_ids = session.scalars(
        update(Reminder)
        .where(Reminder.id == picked.c.id, claimable)
        .values(claimed_by=owner, lease_expires_at=now + lease, attempts=Reminder.attempts + 1)
        .returning(Reminder.id)
    ).all()
    if not claimed_ids:
        return []
    # One round trip for the claimed reminders, their incidents and roles (not three per reminder).
    rows = session.execute(
        select(Reminder, Incident).join(Incident, Incident.id == Reminder.incident_id)
        .where(Reminder.id.in_(claimed_ids)).options(selectinload(Incident.roles))
    ).all()
    recent = draft_lines(session, [incident.id for _, incident in rows])
    return [due for due in (_prepare(reminder, incident, recent.get(incident.id, []), now, late_after)
                            for reminder, incident in rows) if due]


def draft_lines(session: Session, incident_ids: list[int]) -> dict[int, list[DraftLine]]:
    """The latest DRAFT_LINES draft-worthy entries of each incident, oldest first, in one query."""
    rank = func.row_number().over(partition_by=TimelineEntry.incident_id,
                                  order_by=(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc()))
    ranked = select(TimelineEntry.incident_id, TimelineEntry.kind, TimelineEntry.text, TimelineEntry.occurred_at,
                    TimelineEntry.id, rank.label("rank")).where(
        TimelineEntry.incident_id.in_(incident_ids), TimelineEntry.kind.in_(DRAFT_KINDS)).subquery()
    rows = session.execute(select(ranked).where(ranked.c.rank <= DRAFT_LINES)
                           .order_by(ranked.c.incident_id, ranked.c.occurred_at, ranked.c.id)).all()
    lines: dict[int, list[DraftLine]] = {}
    for row in rows:
        lines.setdefault(row.incident_id, []).append(
            DraftLine(occurred_at=row.occurred_at, kind=row.kind, text=row.text))
    return lines


def _prepare(reminder: Reminder, incident: Incident, recent: list[DraftLine], now: datetime,
             late_after: timedelta) -> ReminderDue | None:
    """What to deliver for a claimed reminder, or None when it no longer applies (and say so)."""
    if incident.next_update_due_at != reminder.due_at or incident.status == "resolved":
        # An update, a snooze or a resolution moved the clock after this was scheduled.
        reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
        return None
    roles = {assignment.role: assignment.user_id for assignment in incident.roles}
    return ReminderDue(
        reminder_id=reminder.id, kind=reminder.kind, due_at=reminder.due_at, attempts=reminder.attempts,
        late=now - reminder.due_at > late_after, incident_id=incident.id, reference=incident.reference,
        title=incident.title, summary=incident.summary, severity=incident.severity, status=incident.status,
        channel_id=incident.channel_id,
        cadence=format_duration(interval_of(incident)),
        remind_user_id=roles.get("comms") or roles.get("ic") or incident.declared_by,
        commander_id=roles.get("ic"), dedupe_key=reminder_key(reminder),
        open_roles=[role for role in ROLES if role not in roles], recent=recent,
    )


def reminder_key(reminder: Reminder) -> str:
    return f"{reminder.kind}:{reminder.incident_id}:{reminder.due_at.isoformat()}"


def _still_ours(reminder: Reminder, owner: str) -> bool:
    return reminder.claimed_by == owner and reminder.delivered_at is None


def mark_delivered(session: Session, due: ReminderDue, owner: str, slack_ts: str | None, now: datetime) -> bool:
    """Record a delivery and its timeline entry; False if our lease was lost meanwhile."""
    reminder = session.get_one(Reminder, due.reminder_id, with_for_update=True)
    if not _still_ours(reminder, owner):
        return False
    reminder.delivered_at, reminder.outcome, reminder.slack_ts = now, "posted", slack_ts
    reminder.late, reminder.lease_expires_at = due.late, None
    text = f"update due (every {due.cadence})" if due.kind == UPDATE_DUE else "update overdue"
    session.add(TimelineEntry(
        incident_id=due.incident_id, kind="reminder" if due.kind == UPDATE_DUE else "escalation",
        actor_id="warroom", text=text + (" (late)" if due.late else ""), occurred_at=now, recorded_at=now,
        source="ticker", new_value=due.remind_user_id if due.kind == UPDATE_DUE else (due.commander_id or ""),
        dedupe_key=due.dedupe_key,
    ))
    return True


def mark_failed(session: Session, due: ReminderDue, owner: str, failure: DeliveryFailed, now: datetime) -> None:
    """Keep a failed delivery on the ledger: retried with backoff, or closed as failed for good."""
    reminder = session.get_one(Reminder, due.reminder_id, with_for_update=True)
    if not _still_ours(reminder, owner):
        return
    reminder.last_error = failure.error[:200]
    if failure.permanent:
        reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "failed", None
        session.add(TimelineEntry(
            incident_id=due.incident_id, kind="reminder", actor_id="warroom", occurred_at=now, recorded_at=now,
            text=f"Update reminder could not be delivered: Slack said {failure.error}", source="ticker",
            dedupe_key=due.dedupe_key,
        ))
        return
    backoff = min(timedelta(seconds=2 ** min(reminder.attempts, 6)), MAX_RETRY_BACKOFF)
    reminder.claimed_by, reminder.lease_expires_at = None, now + backoff

