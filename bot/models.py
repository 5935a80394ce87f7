"""The SQL schema: incidents, their roles, their timeline, and what deliveries were processed."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.db import UTCDateTime, utcnow

# Named constraints: Alembic (and SQLite's batch mode) can only alter what has a name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Role key -> what the room calls the person who holds it, in the order the card lists them.
ROLES = {
    "ic": "Incident commander",
    "scribe": "Scribe",
    "comms": "Comms lead",
    "tech": "Tech lead",
    "legal": "Legal",
    "privacy": "Privacy",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Counter(Base):
    """A named counter advanced with UPDATE … RETURNING, so incident numbers have no gaps."""

    __tablename__ = "counter"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Incident(Base):
    __tablename__ = "incident"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    declared_by: Mapped[str] = mapped_column(String(32))
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Filled in once Slack has created the war room (after the declaration was acknowledged).
    channel_id: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    channel_name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    card_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The update cadence: seconds between stakeholder updates (None: off), whether someone set it
    # by hand (then a severity change leaves it alone), and when the next update and escalation fall due.
    cadence_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cadence_overridden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_update_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_update_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # What the bot cannot know and the scribe sets with `/incident mark`: when users were first
    # hurt, and when we found out (the declaration, unless marked earlier).
    impact_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The AI incident taxonomy (playbook.yaml): primary driver and failure mode, and facts that
    # rules depend on, as a sorted comma-separated list of flag names.
    driver: Mapped[str | None] = mapped_column(String(30), nullable=True)
    failure_mode: Mapped[str | None] = mapped_column(String(30), nullable=True)
    flags: Mapped[str] = mapped_column(String(300), default="", server_default="")
    # The notification decision (notify, or not and why), which stops the notification clocks.
    notification_decision: Mapped[str | None] = mapped_column(Text, nullable=True)
    notification_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A tabletop drill runs in a room like a real incident but is marked everywhere, never announced,
    # and left out of readiness metrics. Its clocks (update cadence, rule deadlines) may run faster
    # than real time: `time_scale` 60 means a 15-minute cadence falls due every 15 seconds.
    # When the team called the postmortem finished (`/incident postmortem done`), for readiness.
    postmortem_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    is_drill: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    time_scale: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1.0"))

    roles: Mapped[list[RoleAssignment]] = relationship(
        back_populates="incident", order_by="RoleAssignment.id"
    )

    @property
    def reference(self) -> str:
        return f"INC-{self.number}"


class RoleAssignment(Base):
    """Who holds a role now; hand-overs update the row and leave their history in the timeline."""

    __tablename__ = "role_assignment"
    __table_args__ = (UniqueConstraint("incident_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str] = mapped_column(String(32))
    assigned_by: Mapped[str] = mapped_column(String(32))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    incident: Mapped[Incident] = relationship(back_populates="roles")


class TimelineEntry(Base):
    """One thing that happened in an incident, in the order and at the time it happened."""

    __tablename__ = "timeline_entry"
    __table_args__ = (
        # A pinned message (or any other delivery Slack may repeat) is recorded once per incident.
        UniqueConstraint("incident_id", "dedupe_key"),
        # The ticker looks for entries whose room post is overdue (bot.after_ack) at every tick:
        # only the few awaiting one are in this index, however long the timelines grow.
        Index("ix_timeline_entry_awaiting_room_post", "recorded_at",
              postgresql_where=text("awaiting_room_post"), sqlite_where=text("awaiting_room_post = 1")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incident.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")
    old_value: Mapped[str | None] = mapped_column(String(80), nullable=True)
    new_value: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # When it happened (a pinned message keeps its own time) and when we wrote it down.
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(20), default="command")
    source_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # Its message in the war room is owed, posted after the ack: true from the commit until the
    # process that posted it (or told the person it could not) says so; see bot.after_ack.
    awaiting_room_post: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ProcessedEvent(Base):
    """Event ids already handled, so Slack's retried deliveries are refused by the database."""

    __tablename__ = "processed_event"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CorrectiveAction(Base):
    """A corrective or preventive action (CAPA): an owner, a due date, and how we will know it works."""

    __tablename__ = "corrective_action"
    __table_args__ = (UniqueConstraint("incident_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    # Numbered within the incident (A1, A2, …) so people can say which one they mean.
    number: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    owner_id: Mapped[str] = mapped_column(String(32))
    due_on: Mapped[date] = mapped_column(Date, index=True)
    verification: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the owner is reminded, fixed from the playbook when the action is recorded.
    remind_before_at: Mapped[datetime] = mapped_column(UTCDateTime)
    remind_due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    done_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verified_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    verified_evidence: Mapped[str] = mapped_column(Text, default="")

    @property
    def state(self) -> str:
        return "verified" if self.verified_at else "done" if self.done_at else "open"


class RuleRequirement(Base):
    """What a playbook rule that fired requires (roles held), and by when."""

    __tablename__ = "rule_requirement"
    __table_args__ = (UniqueConstraint("incident_id", "rule"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(80))
    roles: Mapped[str] = mapped_column(String(120))  # comma-separated role keys
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    met_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def required_roles(self) -> list[str]:
        return [role for role in self.roles.split(",") if role]


class EvidenceRecord(Base):
    """One item of the minimum evidence, as last recorded (earlier values stay in the timeline)."""

    __tablename__ = "evidence_record"
    __table_args__ = (UniqueConstraint("incident_id", "item"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    item: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Containment(Base):
    """A containment action: what was done, whether it can be undone, and what shows it worked."""

    __tablename__ = "containment"
    __table_args__ = (UniqueConstraint("incident_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    reversible: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    success_signal: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verified_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    verified_evidence: Mapped[str] = mapped_column(Text, default="")


class AssessmentAnswer(Base):
    """An answer to a playbook checklist question (impact, notification), as last given."""

    __tablename__ = "assessment_answer"
    __table_args__ = (UniqueConstraint("incident_id", "topic", "question"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(20))  # impact | notification
    question: Mapped[str] = mapped_column(String(40))
    answer: Mapped[str] = mapped_column(Text)
    answered_by: Mapped[str] = mapped_column(String(32))
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NotificationDeadline(Base):
    """One reminder point of a running notification clock: remind at `remind_at`, due at `deadline_at`.

    Rows are written when the answers make a clock apply, and stopped when they no longer do or
    the decision is recorded; the ticker reminds the room at each point still running.
    """

    __tablename__ = "notification_deadline"
    __table_args__ = (UniqueConstraint("incident_id", "clock", "remind_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    clock: Mapped[str] = mapped_column(String(120))
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    remind_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RedactedValue(Base):
    """A keyed hash of a value redacted from what people typed, so the same value is recognised
    when it comes up again, without the value itself ever being stored."""

    __tablename__ = "redacted_value"
    __table_args__ = (UniqueConstraint("incident_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    times_seen: Mapped[int] = mapped_column(Integer, default=1)


class Reminder(Base):
    """One reminder owed (for a due update, or for a corrective action), delivered exactly once.

    The unique (incident, kind, action, due_at) key means any number of tickers can schedule the
    same reminder; the lease columns let exactly one of them deliver it, and let another take
    over if that one dies mid-way.
    """

    __tablename__ = "reminder"
    __table_args__ = (
        UniqueConstraint("incident_id", "kind", "subject", "due_at"),
        # The claim reads undelivered reminders oldest-due first; this keeps it an index scan
        # however long the delivered history grows.
        Index("ix_reminder_undelivered_due_at", "due_at",
              postgresql_where=text("delivered_at IS NULL"), sqlite_where=text("delivered_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    # What the reminder is about within the incident: a corrective action's number, a rule
    # requirement's id; 0 for update reminders (0, not NULL, because NULLs never collide in a unique key).
    subject: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # posted | superseded (an update came first) | failed (Slack refused for good)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    slack_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Drill(Base):
    """A tabletop exercise: the scenario it plays, who runs it, and its scorecard once it ended."""

    __tablename__ = "drill"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"), unique=True)
    scenario: Mapped[str] = mapped_column(String(80))
    family: Mapped[str] = mapped_column(String(40))
    facilitator_id: Mapped[str] = mapped_column(String(32))
    # The scenario as it was when the drill started (JSON): injects and the answer key stay fixed
    # even if the file changes, and every replica delivers the same injects.
    script: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The scorecard as JSON (bot.drills.Scorecard), and its total, for readiness over time.
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scorecard: Mapped[str | None] = mapped_column(Text, nullable=True)

    incident: Mapped[Incident] = relationship()
