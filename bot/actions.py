"""Corrective and preventive actions (CAPA): recorded in the room, reminded, done, verified.

An action has an owner, a due date and a way to verify it works; one without a verification is
allowed (people are under stress when they write them) but flagged in the postmortem. No Slack here.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from bot import incidents
from bot.claimed import ClaimedReminder
from bot.db import utcnow
from bot.errors import NothingToChange, UsageError
from bot.incidents import TimelineItem
from bot.models import CorrectiveAction, Incident, Reminder, TimelineEntry
from bot.playbook import Playbook

ACTION_EARLY = "action_early"
ACTION_DUE = "action_due"
ACTION_REMINDER_KINDS = (ACTION_EARLY, ACTION_DUE)
# A due date is refused as past only once it is past everywhere on Earth (UTC-12), so someone
# late in their own day can still write today's date.
EARLIEST_ZONE = timedelta(hours=12)


class ActionView(BaseModel):
    """An action as people see it, with the incident it came from."""

    model_config = ConfigDict(from_attributes=True)

    number: int
    incident_number: int
    incident_title: str
    channel_id: str | None
    text: str
    owner_id: str
    due_on: date
    verification: str
    created_by: str
    created_at: datetime
    done_at: datetime | None
    done_by: str | None
    verified_at: datetime | None
    verified_by: str | None
    verified_evidence: str
    state: str

    @property
    def label(self) -> str:
        return f"A{self.number}"

    @property
    def reference(self) -> str:
        return f"INC-{self.incident_number} {self.label}"

    @property
    def problems(self) -> list[str]:
        """What the postmortem flags about this action."""
        return [] if self.verification else ["no verification"]

    def overdue(self, today: date) -> bool:
        return self.done_at is None and self.due_on < today

    @classmethod
    def of(cls, action: CorrectiveAction, incident: Incident) -> ActionView:
        return cls.model_validate({
            **{name: getattr(action, name) for name in cls.model_fields
               if name not in ("incident_number", "incident_title", "channel_id")},
            "incident_number": incident.number, "incident_title": incident.title, "channel_id": incident.channel_id,
        })


class ActionChange(BaseModel):
    action: ActionView
    entry: TimelineItem


class ActionReminderDue(ClaimedReminder):
    """A claimed reminder to an action's owner, with what the deliverer needs to send it."""

    action: ActionView

    def delivered_entry(self, now: datetime) -> TimelineEntry:
        when = "due today" if self.kind == ACTION_DUE else f"due {self.action.due_on.isoformat()}"
        return TimelineEntry(
            incident_id=self.incident_id, kind="reminder", actor_id="warroom", occurred_at=now, recorded_at=now,
            text=f"{self.action.label} reminder sent to its owner ({when})" + (" (late)" if self.late else ""),
            source="ticker", source_ref=self.action.label, new_value=self.action.owner_id, dedupe_key=self.dedupe_key,
        )

    def failed_entry(self, now: datetime, error: str) -> TimelineEntry:
        return TimelineEntry(
            incident_id=self.incident_id, kind="reminder", actor_id="warroom", occurred_at=now, recorded_at=now,
            text=f"{self.action.label} reminder could not be delivered: Slack said {error}", source="ticker",
            source_ref=self.action.label, dedupe_key=self.dedupe_key,
        )


def _entry(session: Session, incident: Incident, action: CorrectiveAction, actor_id: str, text: str,
           new_state: str, old_state: str | None = None) -> TimelineItem:
    entry = TimelineEntry(incident_id=incident.id, kind="action", actor_id=actor_id, text=text,
                          old_value=old_state, new_value=new_state, source_ref=f"A{action.number}",
                          awaiting_room_post=True)
    session.add(entry)
    session.flush()
    return TimelineItem.model_validate(entry)


def record_action(session: Session, channel_id: str, *, owner_id: str, due_on: date, text: str, verification: str,
                  actor_id: str, playbook: Playbook) -> ActionChange:
    """Add a corrective action to the incident in this channel, numbered A1, A2, … within it."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    if due_on < (utcnow() - EARLIEST_ZONE).date():
        raise UsageError(f"The due date {due_on.isoformat()} is in the past.",
                         f"Give today's date or a later one, like `{utcnow().date().isoformat()}`.")
    number = (session.scalar(select(func.max(CorrectiveAction.number))
                             .where(CorrectiveAction.incident_id == incident.id)) or 0) + 1
    text, _ = incidents.redact(session, incident.id, text)
    verification, _ = incidents.redact(session, incident.id, verification) if verification else ("", [])
    early, on_the_day = playbook.action_reminder_times(due_on)
    action = CorrectiveAction(
        incident_id=incident.id, number=number, text=text, owner_id=owner_id, due_on=due_on,
        verification=verification, created_by=actor_id, created_at=utcnow(),
        remind_before_at=early, remind_due_at=on_the_day, verified_evidence="",
    )
    session.add(action)
    session.flush()
    entry = _entry(session, incident, action, actor_id, f"A{number}: {text}", "open")
    return ActionChange(action=ActionView.of(action, incident), entry=entry)


def action_view(session: Session, incident_id: int, label: str) -> ActionView | None:
    """The action `A<n>` of an incident as it is now, if it has one."""
    incident = session.get_one(Incident, incident_id)
    action = session.scalars(select(CorrectiveAction).where(
        CorrectiveAction.incident_id == incident_id,
        CorrectiveAction.number == int(label.removeprefix("A")))).one_or_none()
    return ActionView.of(action, incident) if action else None


def _action(session: Session, incident: Incident, number: int) -> CorrectiveAction:
    action = session.scalars(select(CorrectiveAction).where(
        CorrectiveAction.incident_id == incident.id, CorrectiveAction.number == number)).one_or_none()
    if action is None:
        raise UsageError(f"{incident.reference} has no action A{number}.",
                         "See the list with `/incident actions`.")
    return action


def mark_action_done(session: Session, channel_id: str, number: int, note: str, actor_id: str) -> ActionChange:
    incident = incidents.lock_incident_in_channel(session, channel_id)
    action = _action(session, incident, number)
    if action.done_at is not None:
        raise NothingToChange(f"A{number} is already {action.state}.")
    action.done_at, action.done_by = utcnow(), actor_id
    entry = _entry(session, incident, action, actor_id, f"A{number} done" + (f": {note}" if note else ""),
                   "done", "open")
    return ActionChange(action=ActionView.of(action, incident), entry=entry)


def set_verification(session: Session, channel_id: str, number: int, how: str, actor_id: str) -> ActionChange:
    """Say how we will know an action works, for one recorded without (or to restate it)."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    action = _action(session, incident, number)
    how, _ = incidents.redact(session, incident.id, how)
    if action.verification == how:
        raise NothingToChange(f"A{number} already says that.")
    action.verification = how
    entry = _entry(session, incident, action, actor_id, f"A{number} will be verified by: {how}", action.state,
                   action.state)
    return ActionChange(action=ActionView.of(action, incident), entry=entry)


def verify_action(session: Session, channel_id: str, number: int, evidence: str, actor_id: str) -> ActionChange:
    """Record how we know the action works; it counts as done from then on if it wasn't already."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    action = _action(session, incident, number)
    if action.verified_at is not None:
        raise NothingToChange(f"A{number} is already verified.")
    old_state, now = action.state, utcnow()
    evidence, _ = incidents.redact(session, incident.id, evidence)
    if action.done_at is None:
        action.done_at, action.done_by = now, actor_id
    action.verified_at, action.verified_by, action.verified_evidence = now, actor_id, evidence
    entry = _entry(session, incident, action, actor_id, f"A{number} verified: {evidence}", "verified", old_state)
    return ActionChange(action=ActionView.of(action, incident), entry=entry)


def incident_actions(session: Session, incident_id: int) -> list[ActionView]:
    incident = session.get_one(Incident, incident_id)
    rows = session.scalars(select(CorrectiveAction).where(CorrectiveAction.incident_id == incident_id)
                           .order_by(CorrectiveAction.number)).all()
    return [ActionView.of(action, incident) for action in rows]


def all_actions(session: Session, *, overdue_on: date | None = None) -> list[ActionView]:
    """Actions across incidents, by due date; only those not done by `overdue_on` if given."""
    statement = (select(CorrectiveAction, Incident).join(Incident, Incident.id == CorrectiveAction.incident_id)
                 .order_by(CorrectiveAction.due_on, Incident.number, CorrectiveAction.number))
    if overdue_on is not None:
        statement = statement.where(CorrectiveAction.done_at.is_(None), CorrectiveAction.due_on < overdue_on)
    return [ActionView.of(action, incident) for action, incident in session.execute(statement)]


# ------------------------------------------------------------------------------ owner reminders

def owed_reminders(now: datetime):
    """(incident_id, kind, subject, due_at) rows for action reminders that fell due.

    Only the latest one that applies: an action recorded after its early reminder time gets
    only the one on the day, and one recorded past its due date gets that one at once.
    """
    still_open = CorrectiveAction.done_at.is_(None)
    early = select(CorrectiveAction.incident_id, literal(ACTION_EARLY), CorrectiveAction.number,
                   CorrectiveAction.remind_before_at).where(
        still_open, CorrectiveAction.remind_before_at <= now, CorrectiveAction.remind_due_at > now)
    on_the_day = select(CorrectiveAction.incident_id, literal(ACTION_DUE), CorrectiveAction.number,
                        CorrectiveAction.remind_due_at).where(still_open, CorrectiveAction.remind_due_at <= now)
    return early, on_the_day


def prepare(session: Session, reminders: list[Reminder], now: datetime,
            late_after: timedelta) -> list[ActionReminderDue]:
    """What to deliver for claimed action reminders; those whose action was done meanwhile are closed."""
    if not reminders:
        return []
    keys = {(reminder.incident_id, reminder.subject) for reminder in reminders}
    rows = session.execute(
        select(CorrectiveAction, Incident).join(Incident, Incident.id == CorrectiveAction.incident_id)
        .where(CorrectiveAction.incident_id.in_({incident_id for incident_id, _ in keys}))
    ).all()
    found = {(action.incident_id, action.number): (action, incident) for action, incident in rows}
    due = []
    for reminder in reminders:
        action, incident = found.get((reminder.incident_id, reminder.subject), (None, None))
        if action is None or action.done_at is not None:
            reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
            continue
        due.append(ActionReminderDue(
            reminder_id=reminder.id, kind=reminder.kind, due_at=reminder.due_at, attempts=reminder.attempts,
            late=now - reminder.due_at > late_after, incident_id=incident.id, reference=incident.reference,
            dedupe_key=f"{reminder.kind}:{incident.id}:A{action.number}:{reminder.due_at.isoformat()}",
            action=ActionView.of(action, incident),
        ))
    return due
