"""The minimum evidence and the containment log, and the gate they put on resolving.

A serious incident (SEV1/SEV2 by default) cannot be resolved while an evidence item is missing or
a containment action is unverified, unless someone forces it with a reason, which the timeline
keeps. No Slack here.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import incidents  # qualified use only: incidents imports this module too
from bot.db import utcnow
from bot.errors import NothingToChange, UsageError
from bot.models import Containment, EvidenceRecord, Incident
from bot.playbook import Playbook


class EvidenceLine(BaseModel):
    """One line of the checklist: the item, and what was recorded for it, if anything."""

    item: str
    label: str
    hint: str
    value: str | None
    recorded_by: str | None
    recorded_at: datetime | None


class ContainmentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    text: str
    reversible: bool | None
    success_signal: str
    created_by: str
    created_at: datetime
    verified_at: datetime | None
    verified_by: str | None
    verified_evidence: str

    @property
    def label(self) -> str:
        return f"C{self.number}"


class EvidenceChange(BaseModel):
    incident: incidents.IncidentView
    entry: incidents.TimelineItem
    line: EvidenceLine | None = None
    containment: ContainmentView | None = None


class ResolveRefused(UsageError):
    """Resolving was refused: the message lists what is missing."""


def checklist(session: Session, incident_id: int, playbook: Playbook) -> list[EvidenceLine]:
    recorded = {record.item: record for record in session.scalars(
        select(EvidenceRecord).where(EvidenceRecord.incident_id == incident_id))}
    lines = []
    for item, spec in playbook.evidence.items.items():
        record = recorded.get(item)
        lines.append(EvidenceLine(item=item, label=spec.label, hint=spec.hint,
                                  value=record.value if record else None,
                                  recorded_by=record.recorded_by if record else None,
                                  recorded_at=record.recorded_at if record else None))
    return lines


def record_evidence(session: Session, channel_id: str, item: str, value: str, actor_id: str,
                    playbook: Playbook) -> EvidenceChange:
    """Record (or replace) one evidence item; the timeline keeps every value given."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    spec = playbook.evidence.items[item]
    record = session.scalars(select(EvidenceRecord).where(
        EvidenceRecord.incident_id == incident.id, EvidenceRecord.item == item)).one_or_none()
    entry = incidents.add_entry(session, incident, "evidence", actor_id, text=f"{spec.label}: {value}",
                                source_ref=item, new_value="replaced" if record else "recorded",
                                awaiting_room_post=True)
    if record is None:
        record = EvidenceRecord(incident_id=incident.id, item=item)
        session.add(record)
    # The stored value is what the entry stored: redacted if it held a secret or personal data.
    record.value = entry.text.removeprefix(f"{spec.label}: ")
    record.recorded_by, record.recorded_at = actor_id, utcnow()
    session.flush()
    line = EvidenceLine(item=item, label=spec.label, hint=spec.hint, value=record.value,
                        recorded_by=record.recorded_by, recorded_at=record.recorded_at)
    return EvidenceChange(incident=incidents.IncidentView.of(incident), entry=entry, line=line)


def containment_actions(session: Session, incident_id: int) -> list[ContainmentView]:
    return [ContainmentView.model_validate(row) for row in session.scalars(
        select(Containment).where(Containment.incident_id == incident_id).order_by(Containment.number))]


def record_containment(session: Session, channel_id: str, text: str, reversible: bool | None, success_signal: str,
                       actor_id: str) -> EvidenceChange:
    """Log a containment action (C1, C2, …): what was done, whether it can be undone, what shows it worked."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    number = (session.scalar(select(func.max(Containment.number)).where(Containment.incident_id == incident.id))
              or 0) + 1
    entry = incidents.add_entry(session, incident, "containment", actor_id, text=f"C{number}: {text}",
                                new_value="reversible" if reversible else "irreversible" if reversible is False
                                else None, source_ref=f"C{number}", awaiting_room_post=True)
    containment = Containment(incident_id=incident.id, number=number, text=entry.text.removeprefix(f"C{number}: "),
                              reversible=reversible, created_by=actor_id,
                              success_signal=incidents.redact(session, incident.id, success_signal)[0],
                              created_at=utcnow(), verified_evidence="")
    session.add(containment)
    session.flush()
    return EvidenceChange(incident=incidents.IncidentView.of(incident), entry=entry,
                          containment=ContainmentView.model_validate(containment))


def verify_containment(session: Session, channel_id: str, number: int, evidence: str, actor_id: str) -> EvidenceChange:
    incident = incidents.lock_incident_in_channel(session, channel_id)
    containment = session.scalars(select(Containment).where(
        Containment.incident_id == incident.id, Containment.number == number)).one_or_none()
    if containment is None:
        raise UsageError(f"{incident.reference} has no containment action C{number}.",
                         "See them with `/incident contain`.")
    if containment.verified_at is not None:
        raise NothingToChange(f"C{number} is already verified.")
    entry = incidents.add_entry(session, incident, "containment", actor_id, text=f"C{number} verified: {evidence}",
                                new_value="verified", source_ref=f"C{number}", awaiting_room_post=True)
    containment.verified_at, containment.verified_by = utcnow(), actor_id
    containment.verified_evidence = entry.text.removeprefix(f"C{number} verified: ")
    session.flush()
    return EvidenceChange(incident=incidents.IncidentView.of(incident), entry=entry,
                          containment=ContainmentView.model_validate(containment))


def resolve_blockers(session: Session, incident: Incident, playbook: Playbook) -> list[str]:
    """What stands between this incident and resolved under the playbook (empty: nothing)."""
    if incident.severity > playbook.evidence.gate_resolve_at_most_severity:
        return []
    missing = [f"evidence: {line.label} (`/incident evidence {line.item} <value>`)"
               for line in checklist(session, incident.id, playbook) if line.value is None]
    contained = containment_actions(session, incident.id)
    if not contained:
        missing.append("containment: none logged (`/incident contain <action> [reversible|irreversible] "
                       "verify: <what shows it worked>`)")
    missing += [f"containment: {c.label} not verified (`/incident contain verified {c.number} <evidence>`)"
                for c in contained if c.verified_at is None]
    return missing


def held_back(session: Session, incident: Incident, text: str, playbook: Playbook) -> list[tuple[str, list[str]]]:
    """The held statements `text` makes whose evidence is not all recorded: (statement, missing labels)."""
    said = " ".join(text.lower().split())
    recorded = {line.item for line in checklist(session, incident.id, playbook) if line.value is not None}
    found = []
    for held in playbook.held_statements:
        missing = [playbook.evidence.items[item].label for item in held.requires if item not in recorded]
        if " ".join(held.statement.lower().split()) in said and missing:
            found.append((held.statement, missing))
    return found
