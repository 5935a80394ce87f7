"""The reminder ledger: every reminder owed (update cadence, corrective actions, rules, notification
clocks, drill injects), delivered once.

Reminders are rows in `reminder`, keyed by (incident, kind, action, due time), so any number of
tickers can schedule them (INSERT … ON CONFLICT DO NOTHING) and exactly one delivers each (a
conditional UPDATE hands out leases; a process that dies mid-way loses its lease to another).
What is owed and what a reminder says belong to `bot.cadence` and `bot.actions`; no Slack here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, exists, literal, or_, select, update
from sqlalchemy.orm import Session

from bot import actions, after_ack, assessment, cadence, drills, rules
from bot.actions import ActionReminderDue
from bot.after_ack import RoomOpenDue, RoomPostDue
from bot.assessment import ClockDue
from bot.cadence import ReminderDue
from bot.db import dialect_insert
from bot.drills import InjectDue
from bot.models import Reminder
from bot.rules import RequirementDue

MAX_RETRY_BACKOFF = timedelta(seconds=60)
KEY = ["incident_id", "kind", "subject", "due_at"]

Due = ReminderDue | ActionReminderDue | RequirementDue | ClockDue | InjectDue | RoomPostDue | RoomOpenDue


class DeliveryFailed(Exception):
    """Slack refused a reminder; `permanent` when retrying cannot help (the channel is gone)."""

    def __init__(self, error: str, permanent: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.permanent = permanent


def schedule_due_reminders(session: Session, now: datetime,
                           repost_after: timedelta = after_ack.REPOST_AFTER) -> None:
    """Write a reminder row for everything that fell due: updates, escalations, action reminders,
    and the Slack work a dead process left owed (`repost_after` past the command, bot.after_ack).

    Idempotent across processes: the unique key turns a second scheduling into nothing, and rows
    already on the ledger are skipped before the insert so a long-overdue update costs no churn.
    """
    for owed in (*cadence.owed_reminders(now), *actions.owed_reminders(now), *rules.owed_reminders(now),
                 *assessment.owed_reminders(now), *after_ack.owed_reminders(now, repost_after)):
        owed = owed.subquery()
        incident_id, kind, subject, due_at = owed.c
        new = select(incident_id, kind, subject, due_at, literal(now), literal(0), literal(False)).where(
            ~exists().where(Reminder.incident_id == incident_id, Reminder.kind == kind,
                            Reminder.subject == subject, Reminder.due_at == due_at))
        statement = dialect_insert(session, Reminder).from_select(
            [*KEY, "created_at", "attempts", "late"], new
        ).on_conflict_do_nothing(index_elements=KEY)
        session.execute(statement)


def claim_due_reminders(session: Session, owner: str, now: datetime, late_after: timedelta, lease: timedelta,
                        limit: int = 100) -> list[Due]:
    """Take a lease on up to `limit` undelivered reminders no one else holds; return them.

    The conditional UPDATE is the claim: on PostgreSQL rows another process has locked are
    skipped, and the WHERE is re-checked after any wait; on SQLite the write lock (BEGIN
    IMMEDIATE) makes claims one at a time. Either way, two processes never hold one reminder.
    """
    # Most reminders are written when they fall due, but drill injects are written ahead.
    claimable = and_(Reminder.delivered_at.is_(None), Reminder.due_at <= now,
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
    claimed = session.scalars(select(Reminder).where(Reminder.id.in_(claimed_ids)).order_by(Reminder.due_at)).all()
    def of_kinds(*kinds: str) -> list[Reminder]:
        return [reminder for reminder in claimed if reminder.kind in kinds]

    return [*cadence.prepare(session, of_kinds(cadence.UPDATE_DUE, cadence.ESCALATION), now, late_after),
            *actions.prepare(session, of_kinds(*actions.ACTION_REMINDER_KINDS), now, late_after),
            *rules.prepare(session, of_kinds(rules.REQUIREMENT_MISSED), now, late_after),
            *assessment.prepare(session, of_kinds(assessment.NOTIFICATION_DUE), now, late_after),
            *drills.prepare(session, of_kinds(drills.INJECT), now, late_after),
            *after_ack.prepare(session, of_kinds(after_ack.ROOM_POST, after_ack.ROOM_OPEN), now, late_after)]


def _still_ours(reminder: Reminder, owner: str) -> bool:
    return reminder.claimed_by == owner and reminder.delivered_at is None


def mark_delivered(session: Session, due: Due, owner: str, slack_ts: str | None, now: datetime) -> bool:
    """Record a delivery and its timeline entry; False if our lease was lost meanwhile."""
    reminder = session.get_one(Reminder, due.reminder_id, with_for_update=True)
    if not _still_ours(reminder, owner):
        return False
    reminder.delivered_at, reminder.outcome, reminder.slack_ts = now, "posted", slack_ts
    reminder.late, reminder.lease_expires_at = due.late, None
    _add_entry(session, due.delivered_entry(now))
    due.settle(session)
    return True


def _add_entry(session: Session, entry) -> None:
    if entry is not None:  # some deliveries add nothing to the timeline (bot.after_ack)
        session.add(entry)


def mark_failed(session: Session, due: Due, owner: str, failure: DeliveryFailed, now: datetime) -> None:
    """Keep a failed delivery on the ledger: retried with backoff, or closed as failed for good."""
    reminder = session.get_one(Reminder, due.reminder_id, with_for_update=True)
    if not _still_ours(reminder, owner):
        return
    reminder.last_error = failure.error[:200]
    if failure.permanent:
        reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "failed", None
        _add_entry(session, due.failed_entry(now, failure.error))
        due.settle(session)
        return
    backoff = min(timedelta(seconds=2 ** min(reminder.attempts, 6)), MAX_RETRY_BACKOFF)
    reminder.claimed_by, reminder.lease_expires_at = None, now + backoff
