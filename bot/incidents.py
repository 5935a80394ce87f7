"""The war room's domain: declare incidents, hand out roles, and keep the timeline.

Plain functions over a SQLAlchemy session; no Slack here. Callers own the transaction.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from bot import cadence, observability, redaction, rules
from bot.db import DIALECT_INSERTS, ROOM_INCIDENTS, DriverStatement, dialect_insert, utcnow
from bot.errors import NotAnIncidentChannel, NothingToChange, UsageError
from bot.models import ROLES, Counter, Incident, ProcessedEvent, RedactedValue, RoleAssignment, TimelineEntry
from bot.playbook import Playbook, format_duration
from bot.rules import FiredRule
from bot.settings import LOCAL_REDACTION_KEY

SEVERITIES = (1, 2, 3, 4)
STATUSES = ("investigating", "identified", "contained", "monitoring", "resolved")
TITLE_MAX_CHARS = 150  # keeps "SEV1 · status · title" inside Slack's 250-character topic
CHANNEL_NAME_MAX = 80  # Slack's limit
SLUG_MAX_CHARS = 30


class TimelineItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    actor_id: str
    text: str
    old_value: str | None
    new_value: str | None
    occurred_at: datetime
    source: str
    source_ref: str | None
    # Kinds of secret or personal data taken out of the text before it was stored (not a column).
    redacted: list[str] = []


class IncidentView(BaseModel):
    """An incident as the room sees it: its state and who holds which role."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    number: int
    reference: str
    title: str
    summary: str
    severity: int
    status: str
    declared_by: str
    declared_at: datetime
    channel_id: str | None
    channel_name: str | None
    card_ts: str | None
    cadence_seconds: int | None
    next_update_due_at: datetime | None
    driver: str | None
    failure_mode: str | None
    flags: str
    is_drill: bool
    roles: dict[str, str]

    @property
    def cadence(self) -> str:
        return format_duration(timedelta(seconds=self.cadence_seconds) if self.cadence_seconds else None)

    @classmethod
    def of(cls, incident: Incident) -> IncidentView:
        return cls.model_validate(
            {
                **{name: getattr(incident, name) for name in cls.model_fields if name != "roles"},
                "roles": {assignment.role: assignment.user_id for assignment in incident.roles},
            }
        )


class Change(BaseModel):
    """A change of role, severity or status, with the incident as it is afterwards."""

    incident: IncidentView
    old_value: str | None
    new_value: str
    entry: TimelineItem
    fired: list[FiredRule] = []  # playbook rules the change set off


def channel_name_for(number: int, title: str, is_drill: bool = False) -> str:
    """`inc-<n>-<slug>` (`drill-<n>-<slug>` for a drill): only what Slack accepts in a channel
    name, cut at a word boundary."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_title.lower().replace("'", ""))
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > SLUG_MAX_CHARS:
            break
        slug = candidate
    if not slug and words:
        slug = words[0][:SLUG_MAX_CHARS]
    prefix = f"{'drill' if is_drill else 'inc'}-{number}"
    name = f"{prefix}-{slug}" if slug else prefix
    return name[:CHANNEL_NAME_MAX]


def _next_incident_number(session: Session) -> int:
    # The row lock taken by UPDATE serialises concurrent declarations across processes, and a
    # rolled-back declaration rolls the counter back too: numbers stay unique and gap-free.
    statement = (
        update(Counter)
        .where(Counter.name == "incident")
        .values(value=Counter.value + 1)
        .returning(Counter.value)
    )
    return session.execute(statement).scalar_one()


def redact(session: Session, incident_id: int, text: str) -> tuple[str, list[str]]:
    """`text` with secrets and personal data replaced by placeholders, and the kinds found.

    Each value found is remembered for the incident as a keyed hash only (redacted_value), so it
    is recognised when it comes up again (same placeholder) and never stored itself.
    """
    result = _redaction_of(session, text)
    _remember_redacted(session, incident_id, result)
    return result.text, result.kinds()


def _redaction_of(session: Session, text: str) -> redaction.Redacted:
    return _redaction_with(session.info, text)


def _redaction_with(info: dict, text: str) -> redaction.Redacted:
    """`text` redacted under the key a session factory's info carries (bot.db.make_session_factory)."""
    return redaction.redact(text, key=info.get("redaction_key") or LOCAL_REDACTION_KEY)


def _remember_redacted(session: Session, incident_id: int, result: redaction.Redacted) -> None:
    if not result.findings:
        return
    # One statement for all the values found (a pasted log can hold hundreds). A value found
    # twice is one row seen twice: one upsert may not touch a row twice.
    seen: dict[str, tuple[str, int]] = {}
    for finding in result.findings:
        kind, times = seen.get(finding.fingerprint, (finding.kind, 0))
        seen[finding.fingerprint] = (kind, times + 1)
    now = utcnow()
    statement = dialect_insert(session, RedactedValue).values([
        {"incident_id": incident_id, "kind": kind, "fingerprint": fingerprint, "first_seen_at": now,
         "times_seen": times} for fingerprint, (kind, times) in seen.items()])
    session.execute(statement.on_conflict_do_update(
        index_elements=["incident_id", "fingerprint"],
        set_={"times_seen": RedactedValue.times_seen + statement.excluded.times_seen}))


# Written with Core rather than the ORM's unit of work: it is on every command's path, and an
# INSERT … RETURNING is one round trip with a fraction of the interpreter time (benchmarks/ack_latency).
_ENTRY_TABLE = TimelineEntry.__table__
_ENTRY_COLUMNS = _ENTRY_TABLE.c
_ENTRY_RETURNED = [_ENTRY_COLUMNS[name] for name in TimelineItem.model_fields if name in _ENTRY_COLUMNS]
_INSERT_ENTRY = _ENTRY_TABLE.insert().returning(*_ENTRY_RETURNED)


def add_entry(session: Session, incident: Incident | RoomIncident, kind: str, actor_id: str, *, text: str = "",
              **fields) -> TimelineItem:
    """Write one timeline entry for the incident (in the caller's transaction), its text redacted."""
    text, kinds = redact(session, incident.id, text) if text else (text, [])
    session.flush()  # changes the caller made before this entry are written before it
    row = session.execute(_INSERT_ENTRY, {"incident_id": incident.id, "kind": kind, "actor_id": actor_id,
                                          "text": text, **fields}).one()
    return _timeline_item(row, kinds)


def _timeline_item(row, redacted: list[str]) -> TimelineItem:
    item = TimelineItem.model_validate(row)
    item.redacted = redacted
    return item


def declare_incident(
    session: Session, *, title: str, severity: int, summary: str, declared_by: str, playbook: Playbook,
    driver: str | None = None, failure_mode: str | None = None, is_drill: bool = False, time_scale: float = 1.0,
) -> IncidentView:
    """Record a new incident, investigating, with its declaration as the first timeline entry
    (and its classification, when the declare form gave one). Drills are declared by `bot.drills`."""
    incident = Incident(
        is_drill=is_drill,
        time_scale=time_scale,
        number=_next_incident_number(session),
        title=title,
        summary=summary,
        severity=severity,
        status="investigating",
        declared_by=declared_by,
        declared_at=utcnow(),
    )
    cadence.start_clock(incident, playbook)
    session.add(incident)
    session.flush()
    # What people typed is stored redacted; the title also names the channel, so it comes first.
    incident.title, _ = redact(session, incident.id, title)
    incident.summary, _ = redact(session, incident.id, summary) if summary else ("", [])
    title = incident.title
    add_entry(
        session, incident, "declared", declared_by,
        text=title, new_value=f"sev{severity}", occurred_at=incident.declared_at,
    )
    if driver and failure_mode:
        incident.driver, incident.failure_mode = driver, failure_mode
        add_entry(session, incident, "classified", declared_by, new_value=f"{driver}/{failure_mode}",
                  text=f"driver {driver}, failure mode {failure_mode}", occurred_at=incident.declared_at)
    # Rules that hold from the start (sev1 needs a command team) fire now; the war room posts
    # them once it exists (rules.fired_so_far).
    session.refresh(incident, ["roles"])
    rules.fire_rules(session, incident, playbook, incident.declared_at)
    return IncidentView.of(incident)


def attach_war_room(session: Session, incident_id: int, channel_id: str, channel_name: str) -> IncidentView:
    """Remember the channel Slack created for the incident."""
    incident = session.get_one(Incident, incident_id)
    incident.channel_id = channel_id
    incident.channel_name = channel_name
    return IncidentView.of(incident)


def channels_in_use(session: Session, channel_ids: list[str]) -> set[str]:
    """Which of these channels are an incident's war room."""
    if not channel_ids:
        return set()
    return set(session.scalars(select(Incident.channel_id).where(Incident.channel_id.in_(channel_ids))))


def record_card(session: Session, incident_id: int, card_ts: str) -> None:
    """Remember the pinned card's message so later changes can update it in place."""
    session.get_one(Incident, incident_id).card_ts = card_ts


def _incident_in_channel(session: Session, channel_id: str, *, lock: bool = False) -> Incident:
    statement = select(Incident).where(Incident.channel_id == channel_id)
    if lock:
        # Serialise changes to one incident so concurrent commands see each other's old values. FOR NO
        # KEY UPDATE, not FOR UPDATE: that would also block every insert referring to the incident
        # (its foreign key check takes a key-share lock), and a reminder being recorded as delivered
        # holds its reminder row while it adds a timeline entry: `drill end`, which locks the incident
        # and then the drill's reminders, deadlocked with it on PostgreSQL.
        statement = statement.with_for_update(key_share=True)
    return _found_in_channel(session.scalars(statement).one_or_none())


def _found_in_channel(incident: Incident | None) -> Incident:
    if incident is None:
        raise NotAnIncidentChannel(
            "This isn't an incident channel.",
            "Run this command inside the incident's war room (#inc-…), or declare one with "
            "`/incident declare sev2 <title>`.",
        )
    return incident


def lock_incident_in_channel(session: Session, channel_id: str) -> Incident:
    """The incident whose war room this is, locked until the transaction ends (for changes to it)."""
    return _incident_in_channel(session, channel_id, lock=True)


def incident_in_channel(session: Session, channel_id: str) -> IncidentView:
    """The incident whose war room this channel is, or NotAnIncidentChannel."""
    return IncidentView.of(_incident_in_channel(session, channel_id))


def assign_role(session: Session, channel_id: str, role: str, user_id: str, actor_id: str) -> Change:
    """Give a role to someone, handing it over from its current holder if there is one."""
    incident = _incident_in_channel(session, channel_id, lock=True)
    assignment = session.scalars(
        select(RoleAssignment).where(
            RoleAssignment.incident_id == incident.id, RoleAssignment.role == role
        )
    ).one_or_none()
    previous = assignment.user_id if assignment else None
    if previous == user_id:
        raise NothingToChange(f"That person already holds the {ROLES[role]} role.")
    if assignment is None:
        assignment = RoleAssignment(incident_id=incident.id, role=role)
        session.add(assignment)
    assignment.user_id = user_id
    assignment.assigned_by = actor_id
    assignment.assigned_at = utcnow()
    session.flush()
    session.refresh(incident, ["roles"])
    entry = add_entry(
        session, incident, "role", actor_id,
        text=ROLES[role], old_value=previous, new_value=user_id, source_ref=role, awaiting_room_post=True,
    )
    rules.satisfy_requirements(session, incident, utcnow())
    return Change(incident=IncidentView.of(incident), old_value=previous, new_value=user_id, entry=entry)


class RoomIncident(NamedTuple):
    """The incident a war room belongs to, as much of it as adding a timeline entry needs."""

    id: int
    number: int

    @property
    def reference(self) -> str:
        return f"INC-{self.number}"


# Notes and decisions are the most frequent commands. A room's incident is remembered by the process
# (in the dict a session factory shares among its sessions, bot.db.make_session_factory) and the
# entry is written only if the room still belongs to it: one statement instead of a query and an
# insert (on PostgreSQL a round trip, and a sixth of the command's CPU). The condition makes the
# remembered incident a hint, never a risk: a database restored from a backup, or emptied and
# refilled (the tests do it under a running bot), may put another incident in the same room.
_INCIDENT_TO_LOG_IN = select(Incident.id, Incident.number).where(Incident.channel_id == bindparam("channel_id"))
_INCIDENT_COLUMNS = Incident.__table__.c
_LOGGED_IN_ROOM = ("incident_id", "kind", "actor_id", "text", "new_value", "occurred_at", "recorded_at", "source",
                   "awaiting_room_post")
_ROOM_PARAMS = {name: bindparam(name, type_=_ENTRY_COLUMNS[name].type) for name in _LOGGED_IN_ROOM}
_ROOM_IS_THE_INCIDENTS = exists().where(
    _INCIDENT_COLUMNS.id == _ROOM_PARAMS["incident_id"],
    _INCIDENT_COLUMNS.number == bindparam("number", type_=_INCIDENT_COLUMNS.number.type),
    _INCIDENT_COLUMNS.channel_id == bindparam("channel_id", type_=_INCIDENT_COLUMNS.channel_id.type))
_ENTRY_IF_ROOM_IS = _ENTRY_TABLE.insert().from_select(
    _LOGGED_IN_ROOM, select(*_ROOM_PARAMS.values()).where(_ROOM_IS_THE_INCIDENTS))
_INSERT_ENTRY_IF_ROOM_IS = _ENTRY_IF_ROOM_IS.returning(*_ENTRY_RETURNED)
ROOM_INCIDENTS_KEPT = 4096


def _room_entry(incident: RoomIncident, channel_id: str, kind: str, actor_id: str, text: str,
                new_value: str | None, now: datetime) -> dict:
    """The parameters of _INSERT_ENTRY_IF_ROOM_IS: an entry by command, its room message owed."""
    return {"incident_id": incident.id, "number": incident.number, "channel_id": channel_id, "kind": kind,
            "actor_id": actor_id, "text": text, "new_value": new_value, "occurred_at": now, "recorded_at": now,
            "source": "command", "awaiting_room_post": True}


def _log_in_room(session: Session, channel_id: str, kind: str, actor_id: str, text: str,
                 new_value: str | None = None) -> TimelineItem:
    """Add a note or decision to the timeline of the incident whose war room this is, its message
    in the room owed (posted after the ack; bot.after_ack)."""
    known = session.info.setdefault(ROOM_INCIDENTS, {})
    incident = known.get(channel_id)
    if incident is not None:
        redacted = _redaction_of(session, text)
        now = utcnow()
        session.flush()  # as add_entry: changes made before this entry are written before it
        row = session.execute(_INSERT_ENTRY_IF_ROOM_IS, _room_entry(incident, channel_id, kind, actor_id,
                                                                    redacted.text, new_value, now)).one_or_none()
        if row is not None:
            _remember_redacted(session, incident.id, redacted)
            # The log line names the incident (bot.observability names it from rows loaded; none was).
            observability.saw_incident(incident.reference)
            return _timeline_item(row, redacted.kinds())
        known.pop(channel_id, None)  # the room is not that incident's any more
    row = session.execute(_INCIDENT_TO_LOG_IN, {"channel_id": channel_id}).one_or_none()
    if row is None:
        _found_in_channel(None)
    if len(known) >= ROOM_INCIDENTS_KEPT:
        known.clear()  # a bound, not a cache policy: thousands of rooms in one process is rare
    incident = known[channel_id] = RoomIncident(*row)
    observability.saw_incident(incident.reference)
    return add_entry(session, incident, kind, actor_id, text=text, new_value=new_value, awaiting_room_post=True)


# A note or decision in a war room the process knows (the most frequent commands) is written with the
# claim of its delivery (claim_event) on the driver's own connection, without an ORM session or
# SQLAlchemy's execution layer (DriverStatement). On PostgreSQL the two are one statement that commits
# itself: one round trip where BEGIN, the claim, the entry and COMMIT are four, half the interpreter
# time. The claim is made only if the room is still the incident's, and the entry only if the claim
# was, so a statement that returns nothing wrote nothing. Only the entry's id comes back: the rest
# of it is what was written.
_CLAIM_IN_ROOM = (
    DIALECT_INSERTS["postgresql"](ProcessedEvent.__table__)
    .from_select(["event_id", "received_at"], select(
        bindparam("event_id", type_=ProcessedEvent.__table__.c.event_id.type), _ROOM_PARAMS["recorded_at"],
    ).where(_ROOM_IS_THE_INCIDENTS))
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(ProcessedEvent.__table__.c.event_id)
    .cte("claim")
)
_CLAIM_AND_LOG_IN_ROOM = DriverStatement(_ENTRY_TABLE.insert().from_select(
    _LOGGED_IN_ROOM, select(*_ROOM_PARAMS.values()).where(exists(select(_CLAIM_IN_ROOM.c.event_id))),
).returning(_ENTRY_COLUMNS["id"]).add_cte(_CLAIM_IN_ROOM))
_ENTRY_ID_IF_ROOM_IS = DriverStatement(_ENTRY_IF_ROOM_IS.returning(_ENTRY_COLUMNS["id"]))


def log_in_known_room_at_once(cursor, dialect, shared: dict, delivery_key: str, channel_id: str, kind: str,
                              actor_id: str, text: str, new_value: str | None = None) -> TimelineItem | None:
    """Claim the delivery and add the note or decision, if this process knows the room's incident
    (`shared`: the session factory's info, bot.db.make_session_factory) and the text holds nothing to
    remember as redacted (the ordinary path's transaction does that). None when it was not written:
    not known, a repeated delivery, or a room that changed hands, for the ordinary path to sort out.

    `cursor` is the driver's. On PostgreSQL its connection is expected in autocommit: the one
    statement commits itself. On SQLite the claim and the entry are two statements in the
    connection's transaction, which the caller commits if an entry came back and rolls back if not.
    """
    incident = shared[ROOM_INCIDENTS].get(channel_id)
    if incident is None:
        return None
    redacted = _redaction_with(shared, text)
    if redacted.findings:
        return None
    now = utcnow()
    entry = _room_entry(incident, channel_id, kind, actor_id, redacted.text, new_value, now)
    if dialect.name == "postgresql":
        row = _CLAIM_AND_LOG_IN_ROOM.first_row(cursor, dialect, {"event_id": delivery_key, **entry})
    else:  # SQLite has no INSERT in a WITH clause
        claimed = _CLAIM_ON_DRIVER.first_row(cursor, dialect, {"event_id": delivery_key, "received_at": now})
        row = _ENTRY_ID_IF_ROOM_IS.first_row(cursor, dialect, entry) if claimed else None
    if row is None:
        return None
    observability.saw_incident(incident.reference)
    return TimelineItem(id=row[0], kind=kind, actor_id=actor_id, text=redacted.text, old_value=None,
                        new_value=new_value, occurred_at=now, source=entry["source"], source_ref=None)


def record_decision(session: Session, channel_id: str, text: str, actor_id: str,
                    owner_id: str | None = None) -> TimelineItem:
    """Add a decision-log entry (who logged it, when, what, and who owns carrying it out)."""
    return _log_in_room(session, channel_id, "decision", actor_id, text, new_value=owner_id)


def record_note(session: Session, channel_id: str, text: str, actor_id: str) -> TimelineItem:
    """Add a plain note to the incident's timeline."""
    return _log_in_room(session, channel_id, "note", actor_id, text)


def change_severity(
    session: Session, channel_id: str, severity: int, reason: str, actor_id: str, playbook: Playbook
) -> Change:
    incident = _incident_in_channel(session, channel_id, lock=True)
    if incident.severity == severity:
        raise NothingToChange(f"{incident.reference} is already SEV{severity}.")
    old = f"sev{incident.severity}"
    incident.severity = severity
    cadence.retime_after_severity(incident, playbook, utcnow())
    entry = add_entry(session, incident, "severity", actor_id, text=reason, old_value=old, new_value=f"sev{severity}",
                      awaiting_room_post=True)
    # Fired at the change's own time: the rules a change fired are those fired when it happened
    # (rules.fired_so_far), which its message posted late by another process tells the room too.
    fired = rules.fire_rules(session, incident, playbook, entry.occurred_at)
    return Change(incident=IncidentView.of(incident), old_value=old, new_value=f"sev{severity}", entry=entry,
                  fired=fired)


def change_status(
    session: Session, channel_id: str, status: str, note: str, actor_id: str, playbook: Playbook,
    force_reason: str | None = None,
) -> Change:
    """Move the incident to a new status. Resolving a serious incident with evidence missing or
    containment unverified is refused with the list, unless forced with a reason (kept in the timeline)."""
    from bot import evidence  # evidence builds on this module, so it is imported when needed

    incident = _incident_in_channel(session, channel_id, lock=True)
    if incident.status == status:
        raise NothingToChange(f"{incident.reference} is already {status}.")
    blockers = evidence.resolve_blockers(session, incident, playbook) if status == "resolved" else []
    if blockers and not force_reason:
        raise evidence.ResolveRefused(
            f"{incident.reference} is SEV{incident.severity}; the playbook needs these before resolving:\n"
            + "\n".join(f"• {blocker}" for blocker in blockers),
            "Or resolve anyway with `/incident status resolved force: <why>`; the reason goes in the timeline.")
    old = incident.status
    incident.status = status
    incident.resolved_at = utcnow() if status == "resolved" else None
    cadence.retime_after_status(incident, playbook, utcnow())
    entry = add_entry(session, incident, "status", actor_id, text=note, old_value=old, new_value=status,
                      awaiting_room_post=True)
    if blockers:
        add_entry(session, incident, "override", actor_id, source_ref="resolve", new_value="forced",
                  text=f"Resolved without: {'; '.join(b.split(' (`')[0] for b in blockers)}. Reason: {force_reason}")
    return Change(incident=IncidentView.of(incident), old_value=old, new_value=status, entry=entry)


def record_update(session: Session, channel_id: str, text: str, actor_id: str, playbook: Playbook,
                  audience: str | None = None) -> Change:
    """A stakeholder update went out: it joins the timeline and restarts the cadence clock.

    An update for an external audience that makes a claim the playbook holds back ("no customer
    data was accessed") is refused until the evidence behind the claim is recorded.
    """
    from bot import evidence  # evidence builds on this module, so it is imported when needed

    incident = _incident_in_channel(session, channel_id, lock=True)
    if audience and playbook.audiences[audience].external:
        held = evidence.held_back(session, incident, text, playbook)
        if held:
            raise UsageError(
                f"Held back: this {playbook.audiences[audience].label.lower()} update says "
                + "; ".join(f"\"{statement}\", which needs evidence not yet recorded: {', '.join(missing)}"
                            for statement, missing in held) + ".",
                "Record the evidence with `/incident evidence <item> <value>` (see `/incident evidence`), "
                "or take the claim out of the update.")
    cadence.record_update_sent(incident, playbook, utcnow())
    entry = add_entry(session, incident, "update", actor_id, text=text, new_value=audience, awaiting_room_post=True)
    return Change(incident=IncidentView.of(incident), old_value=None, new_value="update", entry=entry)


def set_cadence(
    session: Session, channel_id: str, interval: timedelta | None, actor_id: str, playbook: Playbook
) -> Change:
    """Override this incident's update cadence (None turns it off)."""
    incident = _incident_in_channel(session, channel_id, lock=True)
    if incident.status == "resolved":
        raise UsageError(f"{incident.reference} is resolved; it has no update cadence.",
                         "Reopen it with `/incident status investigating` first.")
    old = cadence.override_cadence(incident, interval, playbook, utcnow())
    new = format_duration(interval)
    entry = add_entry(session, incident, "cadence", actor_id, old_value=old, new_value=new, awaiting_room_post=True,
                       text=f"Updates every {new}" if interval else "Update reminders off")
    return Change(incident=IncidentView.of(incident), old_value=old, new_value=new, entry=entry)


def snooze_updates(
    session: Session, channel_id: str, duration: timedelta, actor_id: str, playbook: Playbook
) -> Change:
    """Push the next update reminder to `duration` from now, once."""
    incident = _incident_in_channel(session, channel_id, lock=True)
    if incident.next_update_due_at is None:
        raise UsageError(f"{incident.reference} has no update due to snooze.",
                         "Set a cadence first with `/incident cadence 30m`.")
    old = incident.next_update_due_at
    cadence.snooze(incident, duration, playbook, utcnow())
    entry = add_entry(session, incident, "snooze", actor_id, text=f"Next update reminder in {format_duration(duration)}",
                       old_value=old.isoformat(timespec="seconds"),
                       new_value=incident.next_update_due_at.isoformat(timespec="seconds"), awaiting_room_post=True)
    return Change(incident=IncidentView.of(incident), old_value=old.isoformat(), new_value=entry.new_value, entry=entry)


def complete_postmortem(session: Session, channel_id: str, link: str, actor_id: str) -> TimelineItem:
    """Record that the postmortem is finished (readiness counts how soon after resolving)."""
    incident = _incident_in_channel(session, channel_id, lock=True)
    if incident.postmortem_completed_at is not None:
        raise NothingToChange(f"The postmortem of {incident.reference} was marked complete on "
                              f"{incident.postmortem_completed_at:%Y-%m-%d}.")
    incident.postmortem_completed_at = utcnow()
    return add_entry(session, incident, "postmortem", actor_id, text=link or "Postmortem completed",
                     new_value="completed", occurred_at=incident.postmortem_completed_at)


# Built once: every command and event claims its delivery (see add_entry for why Core).
_CLAIM_EVENT = {
    name: insert(ProcessedEvent.__table__).on_conflict_do_nothing(index_elements=["event_id"])
    .returning(ProcessedEvent.__table__.c.event_id)
    for name, insert in DIALECT_INSERTS.items()
}
_CLAIM_ON_DRIVER = DriverStatement(_CLAIM_EVENT["sqlite"])  # log_in_known_room_at_once, on SQLite


def claim_event(session: Session, key: str) -> bool:
    """Record that a Slack delivery (an event id, a command's trigger) is being handled; False if
    it already was.

    Written in the caller's transaction, so a delivery whose handling failed leaves no mark and
    Slack's retry gets another chance. INSERT … ON CONFLICT DO NOTHING: of two identical
    deliveries handled at once, the database lets exactly one through.
    """
    statement = _CLAIM_EVENT[session.get_bind().dialect.name]
    return session.execute(statement, {"event_id": key, "received_at": utcnow()}).scalar_one_or_none() is not None


def pinned_message_key(channel_id: str, message_ts: str) -> str:
    return f"pin:{channel_id}:{message_ts}"


def is_pinned(session: Session, incident_id: int, channel_id: str, message_ts: str) -> bool:
    key = pinned_message_key(channel_id, message_ts)
    return bool(session.scalar(select(exists().where(
        TimelineEntry.incident_id == incident_id, TimelineEntry.dedupe_key == key
    ))))


def record_pinned_message(
    session: Session,
    channel_id: str,
    *,
    message_ts: str,
    author_id: str,
    text: str,
    pinned_by: str,
    permalink: str | None,
) -> TimelineItem | None:
    """Add a Slack message to the timeline at its own time and author; None if already there."""
    incident = _incident_in_channel(session, channel_id)
    if is_pinned(session, incident.id, channel_id, message_ts):
        return None
    return add_entry(
        session, incident, "pinned", author_id,
        text=text,
        occurred_at=datetime.fromtimestamp(float(message_ts), tz=utcnow().tzinfo),
        source="reaction",
        source_ref=permalink,
        new_value=pinned_by,
        dedupe_key=pinned_message_key(channel_id, message_ts),
    )


def recent_timeline(session: Session, incident_id: int, limit: int = 20) -> list[TimelineItem]:
    """The latest entries, oldest first, ordered by when they happened."""
    rows = session.scalars(
        select(TimelineEntry)
        .where(TimelineEntry.incident_id == incident_id)
        .order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc())
        .limit(limit)
    ).all()
    return [TimelineItem.model_validate(row) for row in reversed(rows)]


MARKS = {"impact-start": "impact_started_at", "detected": "detected_at"}
MARK_NAMES = {"impact-start": "Impact started", "detected": "Detected"}


def set_mark(session: Session, channel_id: str, mark: str, when: datetime, actor_id: str) -> Change:
    """Record when impact started or when we found out, which the bot cannot know by itself.

    The times must make sense together: impact starts no later than detection, and detection
    comes no later than the declaration (declaring is finding out, at the latest) or now.
    """
    incident = _incident_in_channel(session, channel_id, lock=True)
    if when > utcnow():
        raise UsageError(f"{when:%Y-%m-%d %H:%M:%S} UTC is in the future.",
                         "Give a time that has passed, in UTC, like `2026-11-23 14:05`.")
    detected = when if mark == "detected" else (incident.detected_at or incident.declared_at)
    impact = when if mark == "impact-start" else incident.impact_started_at
    if mark == "detected" and when > incident.declared_at:
        raise UsageError(f"Detection can't come after the declaration ({incident.declared_at:%Y-%m-%d %H:%M:%S} UTC).",
                         "Give the time the problem was first noticed, at or before the declaration.")
    if impact is not None and impact > detected:
        raise UsageError(f"Impact can't start after it was detected ({detected:%Y-%m-%d %H:%M:%S} UTC).",
                         "Check both times; mark `detected` earlier first if that is what happened.")
    column = MARKS[mark]
    old = getattr(incident, column)
    setattr(incident, column, when)
    stamp = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    entry = add_entry(session, incident, "mark", actor_id, text=MARK_NAMES[mark], source_ref=mark,
                       old_value=old.isoformat(timespec="seconds").replace("+00:00", "Z") if old else None,
                       new_value=stamp, awaiting_room_post=True)
    return Change(incident=IncidentView.of(incident), old_value=entry.old_value, new_value=stamp, entry=entry)
