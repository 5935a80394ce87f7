"""Tabletop drills: a scenario played in a real war room, fed by timed injects, scored at the end.

A drill is an incident with `is_drill` set and a `drill` row holding the scenario as it was when
the drill started. Its injects are reminders on the ledger (`bot.reminders`), so the same ticker
that keeps the update cadence releases them, once, whichever process is up. The scorecard is
computed from what the room recorded, against the scenario's answer key; judgement (severity,
classification, containment, notification) outweighs speed. No Slack here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot import cadence, incidents
from bot.claimed import ClaimedReminder
from bot.db import dialect_insert, utcnow
from bot.errors import NothingToChange, WarroomError
from bot.evidence import checklist
from bot.incidents import IncidentView
from bot.models import Containment, Drill, Incident, Reminder, TimelineEntry
from bot.playbook import Playbook, format_duration
from bot.scenarios import Scenario

INJECT = "drill_inject"
# A drill opens at SEV4, as a first alert does before anyone knows the impact: setting the
# severity is the room's first judgement, and the scorecard times it.
START_SEVERITY = 4
MAX_SPEED = 600.0
# How long an inject that fell due before its war room was opened waits for the room; a room that
# is not open by then failed to open, and the inject is closed unposted.
ROOM_AWAITED = timedelta(minutes=2)
# How long `/incident drill next` holds an inject it released while it posts it.
RELEASE_LEASE = timedelta(seconds=60)


class NotADrill(WarroomError):
    """A drill command was used outside a drill's room."""


class DrillStarted(BaseModel):
    incident: IncidentView
    drill_id: int
    scenario: Scenario
    speed: float


class InjectDue(ClaimedReminder):
    """A claimed inject (or the time-up call at the scenario's end), ready to post in the room."""

    channel_id: str
    number: int  # 1-based; total + 1 is the time-up call
    total: int
    inject_kind: str
    source: str
    text: str
    scenario_time: str  # the inject's offset in scenario time, e.g. "12m"

    @property
    def time_up(self) -> bool:
        return self.number > self.total

    def delivered_entry(self, now: datetime) -> TimelineEntry:
        text = ("Drill time is up" if self.time_up
                else f"Inject {self.number}/{self.total} ({self.inject_kind}, {self.source}): {self.text}")
        return TimelineEntry(incident_id=self.incident_id, kind="inject", actor_id="warroom", text=text,
                             occurred_at=now, recorded_at=now, source="drill", source_ref=str(self.number),
                             dedupe_key=self.dedupe_key)

    def failed_entry(self, now: datetime, error: str) -> TimelineEntry:
        return TimelineEntry(incident_id=self.incident_id, kind="inject", actor_id="warroom", occurred_at=now,
                             recorded_at=now, source="drill", dedupe_key=self.dedupe_key,
                             text=f"Inject {self.number} could not be posted: Slack said {error}")


# ------------------------------------------------------------------------------ starting a drill

def start_drill(session: Session, scenario: Scenario, facilitator_id: str, playbook: Playbook,
                speed: float = 1.0) -> DrillStarted:
    """Declare the drill incident and put every inject on the ledger at its (scaled) time."""
    if not 1 <= speed <= MAX_SPEED:
        raise WarroomError(f"A drill runs at 1 to {MAX_SPEED:g} times real time, not {speed:g}.",
                           "Leave the speed out for real time, or e.g. `--speed 60` to play an hour in a minute.")
    incident = incidents.declare_incident(
        session, title=scenario.title, severity=START_SEVERITY, declared_by=facilitator_id, playbook=playbook,
        summary=f"Tabletop drill '{scenario.name}': simulated, not a real incident.", is_drill=True,
        time_scale=speed)
    started = incident.declared_at
    drill = Drill(incident_id=incident.id, scenario=scenario.name, family=scenario.family,
                  facilitator_id=facilitator_id, script=scenario.model_dump_json(), started_at=started)
    session.add(drill)
    offsets = [inject.at for inject in scenario.injects] + [scenario.duration]
    for number, offset in enumerate(offsets, 1):
        session.execute(dialect_insert(session, Reminder).values(
            incident_id=incident.id, kind=INJECT, subject=number, due_at=started + offset / speed,
            created_at=started, attempts=0, late=False).on_conflict_do_nothing())
    session.add(TimelineEntry(incident_id=incident.id, kind="drill", actor_id=facilitator_id, occurred_at=started,
                              recorded_at=started, source="drill", source_ref=scenario.name, new_value="started",
                              text=f"Drill started: {scenario.name} ({scenario.family})"
                                   + (f" at {speed:g}x speed" if speed != 1 else "")))
    session.flush()
    return DrillStarted(incident=incident, drill_id=drill.id, scenario=scenario, speed=speed)


def scenario_of(drill: Drill) -> Scenario:
    return Scenario.model_validate_json(drill.script)


def drill_in_channel(session: Session, channel_id: str, *, lock: bool = False) -> tuple[Incident, Drill]:
    """The drill whose room this is (its incident locked when asked), or NotADrill."""
    statement = select(Incident, Drill).join(Drill, Drill.incident_id == Incident.id).where(
        Incident.channel_id == channel_id)
    if lock:
        statement = statement.with_for_update(of=Incident, key_share=True)  # see incidents._incident_in_channel
    row = session.execute(statement).one_or_none()
    if row is None:
        raise NotADrill("This isn't a drill's room.",
                        "Start one with `/incident drill start <scenario>` (`/incident drill list` shows them), "
                        "then use `drill next` and `drill end` in the room it opens.")
    return row[0], row[1]


# ------------------------------------------------------------------------------ injects

def prepare(session: Session, reminders: list[Reminder], now: datetime, late_after: timedelta) -> list[InjectDue]:
    """What to post for claimed injects; those of an ended drill are closed unposted."""
    if not reminders:
        return []
    rows = session.execute(select(Incident, Drill).join(Drill, Drill.incident_id == Incident.id).where(
        Incident.id.in_({reminder.incident_id for reminder in reminders}))).all()
    by_incident = {incident.id: (incident, scenario_of(drill), drill.ended_at) for incident, drill in rows}
    prepared = []
    for reminder in reminders:
        incident, scenario, ended_at = by_incident[reminder.incident_id]
        if ended_at is None and incident.channel_id is None and now - reminder.due_at < ROOM_AWAITED:
            # The room is still being opened (a fast drill's first inject can fall due before it
            # is): leave the inject for the next tick rather than losing it.
            reminder.claimed_by, reminder.lease_expires_at = None, now
            continue
        if ended_at is not None or incident.channel_id is None:
            reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
            continue
        prepared.append(_inject_due(reminder, incident, scenario, late=now - reminder.due_at > late_after))
    return prepared


def _inject_due(reminder: Reminder, incident: Incident, scenario: Scenario, late: bool) -> InjectDue:
    total = len(scenario.injects)
    number = reminder.subject
    inject = scenario.injects[number - 1] if number <= total else None
    return InjectDue(
        reminder_id=reminder.id, kind=reminder.kind, due_at=reminder.due_at, attempts=reminder.attempts, late=late,
        incident_id=incident.id, reference=incident.reference, channel_id=incident.channel_id,
        dedupe_key=f"{INJECT}:{incident.id}:{number}", number=number, total=total,
        inject_kind=inject.kind if inject else "time-up", source=inject.source if inject else "facilitator",
        text=inject.text if inject else "", scenario_time=format_duration(inject.at if inject else scenario.duration))


def release_next(session: Session, channel_id: str, owner: str, now: datetime) -> InjectDue:
    """Claim the next inject not yet posted so the caller posts it now, ahead of its time."""
    incident, drill = drill_in_channel(session, channel_id, lock=True)
    if drill.ended_at is not None:
        raise NothingToChange(f"The drill in {incident.reference} has ended.")
    scenario = scenario_of(drill)
    total = len(scenario.injects)
    free = (Reminder.lease_expires_at.is_(None)) | (Reminder.lease_expires_at < now)
    reminder = session.scalars(
        select(Reminder).where(Reminder.incident_id == incident.id, Reminder.kind == INJECT,
                               Reminder.subject <= total, Reminder.delivered_at.is_(None), free)
        .order_by(Reminder.subject).limit(1).with_for_update()).one_or_none()
    if reminder is None:
        raise NothingToChange("Every inject of this drill has been released.",
                              "End the drill with `/incident drill end` to see the scorecard.")
    reminder.claimed_by, reminder.lease_expires_at = owner, now + RELEASE_LEASE
    reminder.attempts += 1
    # Due now: a retry of this post looks for an earlier one from now on, as for any reminder.
    reminder.due_at = min(reminder.due_at, now)
    session.flush()
    return _inject_due(reminder, incident, scenario, late=False)


# ------------------------------------------------------------------------------ ending and scoring

class ScoreItem(BaseModel):
    key: str
    label: str
    points: int
    max_points: int
    detail: str
    judgement: bool  # a judgement call (weighted over speed) rather than a process measure


class Scorecard(BaseModel):
    scenario: str
    family: str
    items: list[ScoreItem]
    # Scenario time (real time x speed) from the drill's start, as text; "not reached" if never.
    timings: dict[str, str]

    @property
    def total(self) -> int:
        return sum(item.points for item in self.items)

    @property
    def max_total(self) -> int:
        return sum(item.max_points for item in self.items)


class DrillEnded(BaseModel):
    incident: IncidentView
    scenario: Scenario
    scorecard: Scorecard
    facilitator_id: str


def end_drill(session: Session, channel_id: str, actor_id: str, playbook: Playbook) -> DrillEnded:
    """End the drill: score it, resolve its incident (stopping its clocks), close unreleased injects."""
    incident, drill = drill_in_channel(session, channel_id, lock=True)
    if drill.ended_at is not None:
        raise NothingToChange(f"The drill in {incident.reference} has already ended.",
                              "Its scorecard is in the room; `/incident postmortem` drafts the review.")
    now = utcnow()
    scenario = scenario_of(drill)
    session.execute(update(Reminder).where(Reminder.incident_id == incident.id, Reminder.kind == INJECT,
                                           Reminder.delivered_at.is_(None))
                    .values(delivered_at=now, outcome="superseded", lease_expires_at=None))
    scorecard = score(session, incident, drill, scenario, playbook, now)
    drill.ended_at, drill.ended_by = now, actor_id
    drill.score, drill.max_score, drill.scorecard = scorecard.total, scorecard.max_total, scorecard.model_dump_json()
    incidents.add_entry(session, incident, "drill", actor_id, source="drill", source_ref=scenario.name,
                        new_value="ended", text=f"Drill ended: scored {scorecard.total}/{scorecard.max_total}")
    if incident.status != "resolved":
        old = incident.status
        incident.status, incident.resolved_at = "resolved", now
        cadence.retime_after_status(incident, playbook, now)
        incidents.add_entry(session, incident, "status", actor_id, old_value=old, new_value="resolved",
                            text="drill ended")
    session.refresh(incident, ["roles"])
    return DrillEnded(incident=IncidentView.of(incident), scenario=scenario, scorecard=scorecard,
                      facilitator_id=drill.facilitator_id)


def scorecard_of(drill: Drill) -> Scorecard | None:
    return Scorecard.model_validate_json(drill.scorecard) if drill.scorecard else None


def score(session: Session, incident: Incident, drill: Drill, scenario: Scenario, playbook: Playbook,
          now: datetime) -> Scorecard:
    """Score what the room did against the answer key (README: "Scoring a drill" gives the rules)."""
    expected = scenario.expected
    entries = session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident.id)
                              .order_by(TimelineEntry.occurred_at, TimelineEntry.id)).all()
    people = [entry for entry in entries if entry.actor_id != "warroom"]

    def scenario_time(moment: datetime | None) -> timedelta | None:
        return None if moment is None else (moment - drill.started_at) * incident.time_scale

    def first(kind: str, where=lambda entry: True) -> datetime | None:
        return next((entry.occurred_at for entry in people if entry.kind == kind and where(entry)), None)

    # Roles: when the last of the expected roles was first filled.
    role_times = {role: first("role", lambda entry, role=role: entry.source_ref == role) for role in expected.roles}
    roles_filled = None if None in role_times.values() else max(role_times.values(), default=drill.started_at)
    # Severity and scope: the first severity someone set, and the first classification.
    severity_set = first("severity")
    classified = first("classified")
    assessed = max(severity_set, classified) if severity_set and classified else None
    containments = session.scalars(select(Containment).where(Containment.incident_id == incident.id)
                                   .order_by(Containment.number)).all()
    keywords = [keyword.lower() for keyword in expected.containment]
    matching = [c for c in containments if any(keyword in c.text.lower() for keyword in keywords)]
    contained = matching[0].created_at if matching else None

    items = []

    def item(key: str, label: str, points: int, max_points: int, detail: str, judgement: bool = False) -> None:
        items.append(ScoreItem(key=key, label=label, points=points, max_points=max_points, detail=detail,
                               judgement=judgement))

    # Judgement: 60 of 100.
    severity_off = abs(incident.severity - expected.severity)
    # The opening SEV4 is nobody's judgement: a room that never set a severity earns nothing for it
    # (unless the key is the opening severity itself).
    judged = severity_set is not None or expected.severity == START_SEVERITY
    item("severity", "Severity matches the key",
         0 if not judged else 20 if severity_off == 0 else 8 if severity_off == 1 else 0, 20,
         f"SEV{incident.severity}" + ("" if severity_set else " (the opening severity, never set)")
         + f", key SEV{expected.severity}", judgement=True)
    mode_right = incident.failure_mode == expected.failure_mode
    driver_right = incident.driver == expected.driver
    item("classification", "Failure mode and driver match the key", 10 * mode_right + 5 * driver_right, 15,
         (f"{incident.driver}/{incident.failure_mode}" if incident.failure_mode else "not classified")
         + f", key {expected.driver}/{expected.failure_mode}", judgement=True)
    item("containment", "Containment matches the key", 15 if matching else 0, 15,
         (f"#{matching[0].number} matches" if matching
          else f"{len(containments)} logged, none matching" if containments else "none logged")
         + f"; key: {_brief(expected.containment_hint)}", judgement=True)
    decision = incident.notification_decision
    decided = None if decision is None else "notify" if decision.startswith("Notify") else "not"
    item("notification", "Notification decision matches the key", 10 if decided == expected.notification else 0,
         10, f"{decided or 'no decision recorded'}, key {expected.notification}", judgement=True)

    # Process and speed: 40 of 100. Speed earns points only where the judgement was right.
    roles_target = expected.within["roles"]
    roles_time = scenario_time(roles_filled)
    missing = [role for role, moment in role_times.items() if moment is None]
    item("roles", "Roles filled", 10 if roles_time is not None and roles_time <= roles_target
         else 5 if roles_time is not None else 0, 10,
         f"still open: {', '.join(missing)}" if missing
         else f"{', '.join(expected.roles)} filled at {_clock(roles_time)} (target {_clock(roles_target)})")
    assessed_time = scenario_time(assessed)
    in_time = assessed_time is not None and assessed_time <= expected.within["severity"]
    item("assessed_in_time", "Severity and scope set in time, and right",
         5 if in_time and severity_off == 0 and mode_right else 0, 5,
         f"set at {_clock(assessed_time)} (target {_clock(expected.within['severity'])})" if assessed_time is not None
         else "severity or classification never set")
    contained_time = scenario_time(contained)
    item("contained_in_time", "Right containment in time",
         5 if contained_time is not None and contained_time <= expected.within["containment"] else 0, 5,
         f"at {_clock(contained_time)} (target {_clock(expected.within['containment'])})"
         if contained_time is not None else "no matching containment")
    updates = sum(1 for entry in people if entry.kind == "update")
    # Each update reminder the ledger posted is an update that was due and not sent in time.
    missed = session.scalar(select(func.count()).select_from(Reminder).where(
        Reminder.incident_id == incident.id, Reminder.kind == cadence.UPDATE_DUE, Reminder.outcome == "posted"))
    item("cadence", "Update cadence kept", (10 if missed == 0 else 5 if missed == 1 else 0) if updates else 0, 10,
         f"{updates} update(s) posted, {missed} reminder(s) for a missed update")
    lines = checklist(session, incident.id, playbook)
    recorded = sum(1 for line in lines if line.value is not None)
    item("evidence", "Evidence checklist", 5 * recorded // len(lines) if lines else 0, 5,
         f"{recorded} of {len(lines)} items recorded")
    decisions = [entry for entry in people if entry.kind == "decision"]
    owned = sum(1 for entry in decisions if entry.new_value)
    item("decision_log", "Decisions logged, each with an owner", 5 * owned // len(decisions) if decisions else 0, 5,
         f"{len(decisions)} decision(s), {owned} with an owner (`owner: @person`)")

    timings = {"roles filled": _clock(roles_time), "severity and scope set": _clock(assessed_time),
               "first matching containment": _clock(contained_time),
               "drill length": _clock(scenario_time(now))}
    return Scorecard(scenario=scenario.name, family=scenario.family, items=items, timings=timings)


def _brief(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _clock(duration: timedelta | None) -> str:
    """Scenario time as m:ss (or h:mm:ss), or 'not reached'."""
    if duration is None:
        return "not reached"
    seconds = max(0, int(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"

