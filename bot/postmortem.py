"""The postmortem draft: what happened, measured from the timeline, with the thinking left to people.

Durations are computed, not typed: time to detect (impact start to detection), and time to
acknowledge (first role taken), to contain (status first reached contained or beyond) and to
resolve, all three from detection. Detection is the `detected` mark, or the declaration if no one
marked it earlier. No Slack here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import assessment, evidence
from bot.db import utcnow
from bot.export import IncidentRecord, describe, who
from bot.models import Incident, RuleRequirement
from bot.playbook import Playbook
from bot.render import render_markdown

# A status at or past containment: the first move into any of these is when the incident was contained.
CONTAINED_OR_LATER = ("contained", "monitoring", "resolved")
RESPONSE_KINDS = ("decision", "note", "pinned", "severity", "status", "update", "action", "role")
CAUSAL_CHAIN = ("Input", "Prompt", "Retrieval / tools", "Model", "Post-processing", "Decision", "User impact")
CONTRIBUTING_FACTORS = ("Data", "Model", "Prompt / guardrails", "Infrastructure", "Process")


class Milestones(BaseModel):
    """When the response reached each point, and how long each took."""

    impact_started_at: datetime | None
    detected_at: datetime
    detected_marked: bool
    declared_at: datetime
    acknowledged_at: datetime | None
    contained_at: datetime | None
    monitoring_at: datetime | None
    resolved_at: datetime | None

    def _since(self, start: datetime | None, end: datetime | None) -> timedelta | None:
        return end - start if start and end else None

    @property
    def time_to_detect(self) -> timedelta | None:
        return self._since(self.impact_started_at, self.detected_at)

    @property
    def time_to_acknowledge(self) -> timedelta | None:
        return self._since(self.detected_at, self.acknowledged_at)

    @property
    def time_to_contain(self) -> timedelta | None:
        return self._since(self.detected_at, self.contained_at)

    @property
    def time_to_resolve(self) -> timedelta | None:
        return self._since(self.detected_at, self.resolved_at)

    @property
    def impact_duration(self) -> timedelta | None:
        return self._since(self.impact_started_at, self.contained_at or self.resolved_at)


class PlaybookFacts(BaseModel):
    """What the AI playbook recorded for an incident, for the postmortem."""

    driver: str | None
    failure_mode: str | None
    flags: list[str]
    rules: list[tuple[str, str]]  # (rule, "met" | "missed" | "fired")
    evidence: list[evidence.EvidenceLine]
    containment: list[evidence.ContainmentView]
    impact: assessment.AssessmentView
    notification: assessment.AssessmentView


def read_playbook_facts(session: Session, incident_id: int, playbook: Playbook) -> PlaybookFacts:
    incident = session.get_one(Incident, incident_id)
    rules = []
    for requirement in session.scalars(select(RuleRequirement).where(RuleRequirement.incident_id == incident_id)
                                       .order_by(RuleRequirement.id)):
        if not requirement.roles:
            state = "fired"
        elif requirement.met_at:
            state = "met" if requirement.met_at <= requirement.due_at else "met late"
        else:
            state = "missed" if requirement.due_at <= utcnow() else "open"
        rules.append((requirement.rule, state))
    return PlaybookFacts(
        driver=incident.driver, failure_mode=incident.failure_mode,
        flags=[flag for flag in incident.flags.split(",") if flag], rules=rules,
        evidence=evidence.checklist(session, incident_id, playbook),
        containment=evidence.containment_actions(session, incident_id),
        impact=assessment.view(session, incident, assessment.IMPACT, playbook),
        notification=assessment.view(session, incident, assessment.NOTIFICATION, playbook),
    )


def milestones(record: IncidentRecord) -> Milestones:
    facts = record.incident
    acknowledged = contained = monitoring = resolved = None
    for _id, occurred, _recorded, kind, _actor, _text, old, new, _source, _ref in record.timeline:
        if kind == "role" and acknowledged is None:
            acknowledged = occurred
        if kind == "status":
            if new in CONTAINED_OR_LATER and old not in CONTAINED_OR_LATER and contained is None:
                contained = occurred
            if new in ("monitoring", "resolved") and monitoring is None:
                monitoring = occurred
            # The last move to resolved counts: a reopened incident was not resolved the first time.
            resolved = occurred if new == "resolved" else None
    return Milestones(
        impact_started_at=facts["impact_started_at"], detected_at=facts["detected_at"] or facts["declared_at"],
        detected_marked=facts["detected_at"] is not None, declared_at=facts["declared_at"],
        acknowledged_at=acknowledged, contained_at=contained, monitoring_at=monitoring, resolved_at=resolved,
    )


def format_span(span: timedelta | None) -> str:
    """`1h 05m 30s`, `4m 02s`, `12s`; `—` when unknown."""
    if span is None:
        return "—"
    seconds = int(span.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{sign}{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m {seconds:02d}s"
    if minutes:
        return f"{sign}{minutes}m {seconds:02d}s"
    return f"{sign}{seconds}s"


def _phase(occurred: datetime, marks: Milestones) -> str:
    """Which part of the response an entry belongs to: up to containment (the move to contained
    included), until the fix is being watched, or after."""
    if marks.contained_at is None or occurred <= marks.contained_at:
        return "containment"
    if marks.monitoring_at is None or occurred < marks.monitoring_at:
        return "eradication"
    return "recovery"


def render_postmortem(record: IncidentRecord, people: dict[str, str], generated_at: datetime,
                      facts: PlaybookFacts | None = None) -> str:
    """The Markdown draft from templates/postmortem.md.j2 (with what the playbook recorded, if given)."""
    marks = milestones(record)
    entries, decisions = [], []
    phases: dict[str, list[dict]] = {"containment": [], "eradication": [], "recovery": []}
    for _id, occurred, _recorded, kind, actor, text, old, new, _source, ref in record.timeline:
        item = {"at": occurred, "kind": kind, "who": who(actor, people),
                "what": describe(kind, text, old, new, ref, people)}
        entries.append(item)
        if kind == "decision":
            decisions.append(item)
        if kind in RESPONSE_KINDS and occurred >= marks.detected_at:
            phases[_phase(occurred, marks)].append(item)
    durations = [
        ("Time to detect", "impact start → detected", format_span(marks.time_to_detect),
         "" if marks.impact_started_at else "set `/incident mark impact-start <UTC time>`"),
        ("Time to acknowledge", "detected → first role taken", format_span(marks.time_to_acknowledge), ""),
        ("Time to contain", "detected → status contained", format_span(marks.time_to_contain), ""),
        ("Time to resolve", "detected → status resolved", format_span(marks.time_to_resolve), ""),
        ("Impact duration", "impact start → contained", format_span(marks.impact_duration), ""),
    ]
    today = generated_at.date()
    return render_markdown(
        "postmortem.md.j2", incident=record.incident, people=people, who=lambda user: who(user, people),
        marks=marks, durations=durations, entries=entries, decisions=decisions, phases=phases,
        actions=record.actions, today=today, causal_chain=CAUSAL_CHAIN, factors=CONTRIBUTING_FACTORS,
        generated_at=generated_at, facts=facts,
        severity_changes=[e for e in entries if e["kind"] == "severity"],
    ) + "\n"
