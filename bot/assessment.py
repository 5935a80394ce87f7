"""The playbook's checklists kept with the incident: the five-minute impact checklist and the
notification assessment, whose answers decide which notification clocks run.

A clock runs from awareness (the incident's detection: the `detected` mark, else the declaration)
and is written as one row per reminder point, so the ticker can remind the room before each
deadline through the reminder ledger until the decision (notify, or not and why) is recorded.
No Slack here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import literal, select, update
from sqlalchemy.orm import Session, selectinload

from bot import incidents
from bot.claimed import ClaimedReminder
from bot.db import dialect_insert, utcnow
from bot.errors import NothingToChange, UsageError
from bot.models import AssessmentAnswer, Incident, NotificationDeadline, Reminder, TimelineEntry
from bot.playbook import NotificationClock, Playbook

IMPACT, NOTIFICATION = "impact", "notification"
NOTIFICATION_DUE = "notify_due"
YES_NO = ("yes", "no", "unknown")


class Answer(BaseModel):
    question: str
    text: str
    answer: str | None
    answered_by: str | None
    answered_at: datetime | None


class Clock(BaseModel):
    name: str
    deadline_at: datetime


class AssessmentView(BaseModel):
    reference: str
    answers: list[Answer]
    clocks: list[Clock] = []  # running notification clocks
    decision: str | None = None
    decided_at: datetime | None = None

    @property
    def unanswered(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.answer is None]


class AnswerChange(BaseModel):
    view: AssessmentView
    entry: incidents.TimelineItem
    started: list[Clock] = []
    stopped: list[str] = []


class ClockDue(ClaimedReminder):
    """A reminder point of a running notification clock, claimed for telling the room."""

    clock: str
    deadline_at: datetime
    channel_id: str
    commander_id: str | None
    privacy_id: str | None

    def delivered_entry(self, now: datetime) -> TimelineEntry:
        left = self.deadline_at - now
        when = "deadline passed" if left <= timedelta(0) else f"{_hours(left)} left"
        return TimelineEntry(incident_id=self.incident_id, kind="notification", actor_id="warroom", occurred_at=now,
                             recorded_at=now, source="ticker", source_ref=self.clock, new_value="reminded",
                             text=f"{self.clock}: decision due {self.deadline_at:%Y-%m-%d %H:%M} UTC ({when})",
                             dedupe_key=self.dedupe_key)

    def failed_entry(self, now: datetime, error: str) -> TimelineEntry:
        return TimelineEntry(incident_id=self.incident_id, kind="notification", actor_id="warroom", occurred_at=now,
                             recorded_at=now, source="ticker", source_ref=self.clock, dedupe_key=self.dedupe_key,
                             text=f"{self.clock}: reminder could not be delivered: Slack said {error}")


def _hours(span: timedelta) -> str:
    hours, rest = divmod(int(span.total_seconds()), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _questions(topic: str, playbook: Playbook) -> dict[str, str]:
    return playbook.impact if topic == IMPACT else playbook.notification.questions


def view_in_channel(session: Session, channel_id: str, topic: str, playbook: Playbook) -> AssessmentView:
    """The checklist of the incident whose war room this is (read only)."""
    incident = session.get_one(Incident, incidents.incident_in_channel(session, channel_id).id)
    return view(session, incident, topic, playbook)


def view(session: Session, incident: Incident, topic: str, playbook: Playbook) -> AssessmentView:
    given = {row.question: row for row in session.scalars(select(AssessmentAnswer).where(
        AssessmentAnswer.incident_id == incident.id, AssessmentAnswer.topic == topic))}
    answers = [Answer(question=key, text=text, answer=given[key].answer if key in given else None,
                      answered_by=given[key].answered_by if key in given else None,
                      answered_at=given[key].answered_at if key in given else None)
               for key, text in _questions(topic, playbook).items()]
    result = AssessmentView(reference=incident.reference, answers=answers)
    if topic == NOTIFICATION:
        result.clocks = running_clocks(session, incident.id)
        result.decision, result.decided_at = incident.notification_decision, incident.notification_decided_at
    return result


def running_clocks(session: Session, incident_id: int) -> list[Clock]:
    rows = session.execute(select(NotificationDeadline.clock, NotificationDeadline.deadline_at).where(
        NotificationDeadline.incident_id == incident_id, NotificationDeadline.stopped_at.is_(None)).distinct()
        .order_by(NotificationDeadline.deadline_at)).all()
    return [Clock(name=name, deadline_at=deadline) for name, deadline in rows]


def record_answer(session: Session, channel_id: str, topic: str, question: str, answer: str, actor_id: str,
                  playbook: Playbook) -> AnswerChange:
    """Keep an answer (the timeline keeps every one given); notification answers re-decide the clocks."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    text = _questions(topic, playbook)[question]
    entry = incidents.add_entry(session, incident, topic, actor_id, text=f"{text} {answer}", source_ref=question,
                                new_value=answer if topic == NOTIFICATION else None, awaiting_room_post=True)
    stored = entry.text.removeprefix(f"{text} ")  # as stored: redacted if it held personal data
    now = utcnow()
    statement = dialect_insert(session, AssessmentAnswer).values(
        incident_id=incident.id, topic=topic, question=question, answer=stored, answered_by=actor_id, answered_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=["incident_id", "topic", "question"],
        set_={"answer": stored, "answered_by": actor_id, "answered_at": now}))
    started, stopped = _retime_clocks(session, incident, playbook, now) if topic == NOTIFICATION else ([], [])
    return AnswerChange(view=view(session, incident, topic, playbook), entry=entry, started=started, stopped=stopped)


def _applies(clock: NotificationClock, answers: dict[str, str]) -> bool:
    return all(answers.get(question) == "yes" for question in clock.when)


def _retime_clocks(session: Session, incident: Incident, playbook: Playbook,
                   now: datetime) -> tuple[list[Clock], list[str]]:
    """Start the clocks the answers now call for and stop those they no longer do."""
    answers = {row.question: row.answer for row in session.scalars(select(AssessmentAnswer).where(
        AssessmentAnswer.incident_id == incident.id, AssessmentAnswer.topic == NOTIFICATION))}
    running = {clock.name for clock in running_clocks(session, incident.id)}
    awareness = incident.detected_at or incident.declared_at
    started, stopped = [], []
    for clock in playbook.notification.clocks:
        applies = _applies(clock, answers) and incident.notification_decided_at is None
        if applies and clock.name not in running:
            scale = incident.time_scale  # a drill's clocks may run faster than real time
            deadline = awareness + clock.within / scale
            points = sorted({deadline - before / scale for before in clock.remind_before} | {deadline})
            # A clock that starts late reminds once for the points already passed, not once each.
            passed = [point for point in points if point <= now]
            points = passed[-1:] + [point for point in points if point > now]
            for remind_at in points:
                session.execute(dialect_insert(session, NotificationDeadline).values(
                    incident_id=incident.id, clock=clock.name, deadline_at=deadline, remind_at=remind_at,
                    stopped_at=None).on_conflict_do_update(
                    index_elements=["incident_id", "clock", "remind_at"], set_={"stopped_at": None}))
            started.append(Clock(name=clock.name, deadline_at=deadline))
        elif not applies and clock.name in running:
            _stop(session, incident.id, now, clock.name)
            stopped.append(clock.name)
    return started, stopped


def _stop(session: Session, incident_id: int, now: datetime, clock: str | None = None) -> None:
    statement = update(NotificationDeadline).where(NotificationDeadline.incident_id == incident_id,
                                                    NotificationDeadline.stopped_at.is_(None))
    if clock:
        statement = statement.where(NotificationDeadline.clock == clock)
    session.execute(statement.values(stopped_at=now))


def decide(session: Session, channel_id: str, notify: bool, reason: str, actor_id: str,
           playbook: Playbook) -> AnswerChange:
    """Record the notification decision, which stops every notification clock of the incident."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    if incident.notification_decided_at is not None:
        raise NothingToChange(f"The notification decision for {incident.reference} is already recorded: "
                              f"{incident.notification_decision}")
    entry = incidents.add_entry(session, incident, "notification", actor_id, source_ref="decision",
                                new_value="notify" if notify else "no notification",
                                text=("Notify: " if notify else "Do not notify: ") + reason, awaiting_room_post=True)
    incident.notification_decision, incident.notification_decided_at = entry.text, utcnow()
    _stop(session, incident.id, incident.notification_decided_at)
    return AnswerChange(view=view(session, incident, NOTIFICATION, playbook), entry=entry)


def owed_reminders(now: datetime):
    """(incident_id, kind, subject, due_at) rows for notification reminder points that came."""
    return (select(NotificationDeadline.incident_id, literal(NOTIFICATION_DUE), NotificationDeadline.id,
                   NotificationDeadline.remind_at)
            .join(Incident, Incident.id == NotificationDeadline.incident_id)
            .where(NotificationDeadline.stopped_at.is_(None), NotificationDeadline.remind_at <= now,
                   Incident.notification_decided_at.is_(None), Incident.channel_id.is_not(None)),)


def prepare(session: Session, reminders: list[Reminder], now: datetime, late_after: timedelta) -> list[ClockDue]:
    if not reminders:
        return []
    points = {row.id: row for row in session.scalars(select(NotificationDeadline).where(
        NotificationDeadline.id.in_({reminder.subject for reminder in reminders})))}
    by_id = {i.id: i for i in session.scalars(select(Incident).where(
        Incident.id.in_({reminder.incident_id for reminder in reminders})).options(selectinload(Incident.roles)))}
    due = []
    for reminder in reminders:
        point, incident = points.get(reminder.subject), by_id.get(reminder.incident_id)
        if point is None or point.stopped_at is not None or incident.notification_decided_at is not None:
            reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
            continue
        roles = {assignment.role: assignment.user_id for assignment in incident.roles}
        due.append(ClockDue(
            reminder_id=reminder.id, kind=reminder.kind, due_at=reminder.due_at, attempts=reminder.attempts,
            late=now - reminder.due_at > late_after, incident_id=incident.id, reference=incident.reference,
            dedupe_key=f"{reminder.kind}:{incident.id}:{point.id}", clock=point.clock,
            deadline_at=point.deadline_at, channel_id=incident.channel_id, commander_id=roles.get("ic"),
            privacy_id=roles.get("privacy"),
        ))
    return due


def check_question(topic: str, question: str, playbook: Playbook) -> None:
    if question not in _questions(topic, playbook):
        raise UsageError(f"`{question}` is not a {topic} question.",
                         f"Questions: {', '.join(_questions(topic, playbook))}.")
