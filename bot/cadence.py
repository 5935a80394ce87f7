"""The update cadence: when each incident owes stakeholders an update, and what its reminders say.

The due time lives on the incident row; the reminders owed for it go through the ledger in
`bot.reminders`. No Slack here: delivery is the caller's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import exists, func, literal, select
from sqlalchemy.orm import Session, selectinload

from bot.claimed import ClaimedReminder
from bot.models import ROLES, Incident, Reminder, TimelineEntry
from bot.playbook import Playbook, format_duration

UPDATE_DUE = "update_due"
ESCALATION = "escalation"


# What a drafted update recalls from the timeline: the latest few of these.
DRAFT_KINDS = ("decision", "note", "pinned", "severity", "status")
DRAFT_LINES = 5


class DraftLine(BaseModel):
    """A timeline entry as the update draft recalls it."""

    occurred_at: datetime
    kind: str
    text: str


class ReminderDue(ClaimedReminder):
    """A claimed update reminder or escalation, with what the deliverer needs to post it."""

    title: str
    summary: str
    severity: int
    status: str
    channel_id: str
    cadence: str
    remind_user_id: str  # the comms lead, else the incident commander, else the declarer
    commander_id: str | None
    is_drill: bool  # the reminder's DM must say so: it is read outside the drill's room
    # For the update draft that goes with a reminder.
    open_roles: list[str]
    recent: list[DraftLine]

    def delivered_entry(self, now: datetime) -> TimelineEntry:
        text = f"update due (every {self.cadence})" if self.kind == UPDATE_DUE else "update overdue"
        return TimelineEntry(
            incident_id=self.incident_id, kind="reminder" if self.kind == UPDATE_DUE else "escalation",
            actor_id="warroom", text=text + (" (late)" if self.late else ""), occurred_at=now, recorded_at=now,
            source="ticker", new_value=self.remind_user_id if self.kind == UPDATE_DUE else (self.commander_id or ""),
            dedupe_key=self.dedupe_key,
        )

    def failed_entry(self, now: datetime, error: str) -> TimelineEntry:
        return TimelineEntry(
            incident_id=self.incident_id, kind="reminder", actor_id="warroom", occurred_at=now, recorded_at=now,
            text=f"Update reminder could not be delivered: Slack said {error}", source="ticker",
            dedupe_key=self.dedupe_key,
        )


def interval_of(incident: Incident) -> timedelta | None:
    return timedelta(seconds=incident.cadence_seconds) if incident.cadence_seconds else None


def playbook_interval(incident: Incident, playbook: Playbook) -> timedelta | None:
    """The playbook's cadence for the incident's severity, on the incident's clock (drills may run fast)."""
    interval = playbook.update_interval(incident.severity)
    return interval / incident.time_scale if interval else None


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
    interval = playbook_interval(incident, playbook)
    incident.cadence_seconds = max(1, int(interval.total_seconds())) if interval else None
    _set_due(incident, incident.declared_at + interval if interval else None, playbook)


def retime_after_severity(incident: Incident, playbook: Playbook, now: datetime) -> None:
    """A new severity brings its own cadence, unless someone set one by hand for this incident."""
    if not incident.cadence_overridden:
        interval = playbook_interval(incident, playbook)
        incident.cadence_seconds = max(1, int(interval.total_seconds())) if interval else None
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


# ------------------------------------------------------------------------- update reminders

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


def owed_reminders(now: datetime):
    """(incident_id, kind, subject, due_at) selects for update reminders and escalations owed now."""
    selects = []
    for kind, due_column in ((UPDATE_DUE, Incident.next_update_due_at), (ESCALATION, Incident.escalate_at)):
        conditions = [due_column.is_not(None), due_column <= now, Incident.channel_id.is_not(None)]
        if kind == ESCALATION:
            # The commander hears of a slipped update only after the comms lead was reminded of it.
            conditions.append(exists().where(
                Reminder.incident_id == Incident.id, Reminder.kind == UPDATE_DUE,
                Reminder.due_at == Incident.next_update_due_at, Reminder.delivered_at.is_not(None),
            ))
        selects.append(select(Incident.id, literal(kind), literal(0), Incident.next_update_due_at).where(*conditions))
    return selects


def prepare(session: Session, reminders: list[Reminder], now: datetime, late_after: timedelta) -> list[ReminderDue]:
    """What to deliver for claimed update reminders and escalations; stale ones are closed."""
    if not reminders:
        return []
    loaded = session.scalars(select(Incident).where(Incident.id.in_({r.incident_id for r in reminders}))
                             .options(selectinload(Incident.roles))).all()
    by_id = {incident.id: incident for incident in loaded}
    recent = draft_lines(session, list(by_id))
    return [due for due in (_prepare_one(reminder, by_id[reminder.incident_id],
                                         recent.get(reminder.incident_id, []), now, late_after)
                            for reminder in reminders) if due]


def _prepare_one(reminder: Reminder, incident: Incident, recent: list[DraftLine], now: datetime,
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
        commander_id=roles.get("ic"), is_drill=incident.is_drill, dedupe_key=reminder_key(reminder),
        open_roles=[role for role in ROLES if role not in roles], recent=recent,
    )


def reminder_key(reminder: Reminder) -> str:
    return f"{reminder.kind}:{reminder.incident_id}:{reminder.due_at.isoformat()}"
