"""The playbook's if/then rules: which fire for an incident, what they require, and by when.

A rule fires once per incident, the first time its trigger holds (on declaration, classification,
a flag, a severity change). What it requires (roles held) gets a deadline; the ticker calls out a
requirement still unmet at its deadline, once, through the reminder ledger. No Slack here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import literal, select
from sqlalchemy.orm import Session, selectinload

from bot.claimed import ClaimedReminder
from bot.models import ROLES, Incident, Reminder, RuleRequirement, TimelineEntry
from bot.playbook import Playbook, Rule, format_duration

REQUIREMENT_MISSED = "rule_missed"


class FiredRule(BaseModel):
    """A rule that has just fired: what to tell the room."""

    name: str
    post: str
    roles: list[str]
    due_at: datetime | None
    missing: list[str]  # required roles no one holds yet
    start_notification_assessment: bool


class RequirementDue(ClaimedReminder):
    """A rule requirement whose deadline passed unmet, claimed for calling out in the room."""

    rule: str
    channel_id: str
    missing: list[str]
    within: str
    commander_id: str | None

    def delivered_entry(self, now: datetime) -> TimelineEntry:
        titles = ", ".join(ROLES[role] for role in self.missing)
        return TimelineEntry(
            incident_id=self.incident_id, kind="rule", actor_id="warroom", occurred_at=now, recorded_at=now,
            text=f"Rule not met in time ({self.within}): {self.rule}; still open: {titles}", source="ticker",
            source_ref=self.rule, new_value="missed", dedupe_key=self.dedupe_key,
        )

    def failed_entry(self, now: datetime, error: str) -> TimelineEntry:
        return TimelineEntry(
            incident_id=self.incident_id, kind="rule", actor_id="warroom", occurred_at=now, recorded_at=now,
            text=f"Rule {self.rule} was missed, but Slack refused the call-out: {error}", source="ticker",
            source_ref=self.rule, dedupe_key=self.dedupe_key,
        )


def _flags(incident: Incident) -> set[str]:
    return {flag for flag in incident.flags.split(",") if flag}


def _holds(rule: Rule, incident: Incident) -> bool:
    when = rule.when
    return ((when.failure_mode is None or incident.failure_mode == when.failure_mode)
            and (when.severity_at_most is None or incident.severity <= when.severity_at_most)
            and (when.flag is None or when.flag in _flags(incident)))


def fire_rules(session: Session, incident: Incident, playbook: Playbook, now: datetime) -> list[FiredRule]:
    """Fire every rule whose trigger now holds and that has not fired for this incident yet."""
    already = set(session.scalars(select(RuleRequirement.rule).where(RuleRequirement.incident_id == incident.id)))
    held = {assignment.role for assignment in incident.roles}
    fired = []
    for rule in playbook.rules:
        if rule.name in already or not _holds(rule, incident):
            continue
        roles = rule.require.roles if rule.require else []
        # Every fired rule is remembered (so it fires once), whether or not it requires anything.
        requirement = RuleRequirement(
            incident_id=incident.id, rule=rule.name, roles=",".join(roles), fired_at=now,
            due_at=now + rule.require.within / incident.time_scale if rule.require else now,
            met_at=None if any(role not in held for role in roles) else now)
        session.add(requirement)
        session.add(TimelineEntry(incident_id=incident.id, kind="rule", actor_id="warroom", occurred_at=now,
                                  recorded_at=now, source="playbook", source_ref=rule.name, new_value="fired",
                                  text=f"Rule fired: {rule.name}" + (f"; {rule.post}" if rule.post else "")))
        fired.append(_as_fired(requirement, rule, held))
    session.flush()
    return fired


def satisfy_requirements(session: Session, incident: Incident, now: datetime) -> list[str]:
    """Mark met every open requirement whose roles are all held now; the rules' names."""
    held = {assignment.role for assignment in incident.roles}
    met = []
    for requirement in session.scalars(select(RuleRequirement).where(
            RuleRequirement.incident_id == incident.id, RuleRequirement.met_at.is_(None))):
        if all(role in held for role in requirement.required_roles):
            requirement.met_at = now
            met.append(requirement.rule)
    return met


def owed_reminders(now: datetime):
    """(incident_id, kind, subject, due_at) rows for requirements whose deadline passed unmet."""
    return (select(RuleRequirement.incident_id, literal(REQUIREMENT_MISSED), RuleRequirement.id,
                   RuleRequirement.due_at)
            .join(Incident, Incident.id == RuleRequirement.incident_id)
            .where(RuleRequirement.met_at.is_(None), RuleRequirement.due_at <= now,
                   Incident.channel_id.is_not(None), Incident.status != "resolved"),)


def prepare(session: Session, reminders: list[Reminder], now: datetime,
            late_after: timedelta) -> list[RequirementDue]:
    """What to call out for claimed requirement reminders; those met (or resolved) meanwhile are closed."""
    if not reminders:
        return []
    requirements = {r.id: r for r in session.scalars(
        select(RuleRequirement).where(RuleRequirement.id.in_({reminder.subject for reminder in reminders})))}
    incidents = {i.id: i for i in session.scalars(
        select(Incident).where(Incident.id.in_({reminder.incident_id for reminder in reminders}))
        .options(selectinload(Incident.roles)))}
    due = []
    for reminder in reminders:
        requirement, incident = requirements.get(reminder.subject), incidents.get(reminder.incident_id)
        held = {assignment.role for assignment in incident.roles} if incident else set()
        missing = [role for role in (requirement.required_roles if requirement else []) if role not in held]
        if requirement is None or requirement.met_at is not None or not missing or incident.status == "resolved":
            reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
            continue
        due.append(RequirementDue(
            reminder_id=reminder.id, kind=reminder.kind, due_at=reminder.due_at, attempts=reminder.attempts,
            late=now - reminder.due_at > late_after, incident_id=incident.id, reference=incident.reference,
            dedupe_key=f"{reminder.kind}:{incident.id}:{requirement.id}", rule=requirement.rule,
            channel_id=incident.channel_id, missing=missing,
            within=format_duration(requirement.due_at - requirement.fired_at),
            commander_id=next((a.user_id for a in incident.roles if a.role == "ic"), None),
        ))
    return due


def _as_fired(requirement: RuleRequirement, rule: Rule | None, held: set[str]) -> FiredRule:
    """What the room is told of a fired rule (`rule` is None if the playbook no longer has it)."""
    roles = requirement.required_roles
    return FiredRule(name=requirement.rule, post=rule.post if rule else "", roles=roles,
                     due_at=requirement.due_at if roles else None,
                     missing=[role for role in roles if role not in held],
                     start_notification_assessment=bool(rule and rule.start_notification_assessment))


def fired_so_far(session: Session, incident_id: int, playbook: Playbook,
                 fired_at: datetime | None = None) -> list[FiredRule]:
    """The rules that have fired for an incident (for a war room that just opened), or those fired
    at `fired_at` (by the change made then: incidents.change_severity), the roles still missing as
    they are now."""
    incident = session.get_one(Incident, incident_id)
    held = {assignment.role for assignment in incident.roles}
    by_name = {rule.name: rule for rule in playbook.rules}
    query = select(RuleRequirement).where(RuleRequirement.incident_id == incident_id)
    if fired_at is not None:
        query = query.where(RuleRequirement.fired_at == fired_at)
    return [_as_fired(requirement, by_name.get(requirement.rule), held)
            for requirement in session.scalars(query.order_by(RuleRequirement.id))]
