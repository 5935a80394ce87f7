"""An incident's record as a file: its timeline (and actions) in Markdown, JSON or CSV.

The JSON follows a versioned schema (docs/export-schema-v1.json); the CSV opens in a spreadsheet
as-is (UTF-8 with a byte-order mark, one header row, times Excel reads as dates, and cells that a
spreadsheet would run as a formula defused); the Markdown is for people. No Slack here: the caller
passes the display names it knows (`people`).

Rows are read with one Core query and formatted without a model object per row, because a long
incident's timeline runs to tens of thousands of entries (see benchmarks/export_speed.py).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import actions
from bot.db import REPO_ROOT
from bot.models import ROLES, Incident, TimelineEntry
from bot.render import markdown_cell
from bot.render import render_markdown as render_markdown_template

FORMATS = ("md", "json", "csv")
SCHEMA_VERSION = 1
SCHEMA_PATH = REPO_ROOT / "docs" / "export-schema-v1.json"
CSV_COLUMNS = ("occurred_at_utc", "kind", "actor_id", "actor_name", "text", "old_value", "new_value",
               "source", "source_ref", "recorded_at_utc", "entry_id")
# A cell starting with one of these is run as a formula by Excel, LibreOffice and Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOT_ACTOR = "warroom"

ENTRY_COLUMNS = (TimelineEntry.id, TimelineEntry.occurred_at, TimelineEntry.recorded_at, TimelineEntry.kind,
                 TimelineEntry.actor_id, TimelineEntry.text, TimelineEntry.old_value, TimelineEntry.new_value,
                 TimelineEntry.source, TimelineEntry.source_ref)


class IncidentRecord(BaseModel):
    """Everything an export or a postmortem is made from, read in one transaction."""

    incident: dict
    timeline: list[tuple]  # rows of ENTRY_COLUMNS, in the order things happened
    actions: list[actions.ActionView]


class RecordError(Exception):
    """An incident reference that is malformed or names no incident."""


class UnknownIncident(RecordError):
    def __init__(self, reference: str) -> None:
        super().__init__(f"there is no incident {reference}")


def parse_reference(text: str) -> int:
    """`INC-42`, `inc-42` or `42` -> 42; RecordError otherwise."""
    cleaned = text.strip().upper().removeprefix("INC-").removeprefix("INC")
    if not cleaned.isdigit():
        raise RecordError(f"{text!r} is not an incident reference; write it like INC-42")
    return int(cleaned)


def read_record(session: Session, *, number: int | None = None, incident_id: int | None = None) -> IncidentRecord:
    """The incident (by number or id), its whole timeline and its actions."""
    statement = select(Incident)
    statement = statement.where(Incident.number == number) if number is not None else statement.where(
        Incident.id == incident_id)
    incident = session.scalars(statement).one_or_none()
    if incident is None:
        raise UnknownIncident(f"INC-{number}" if number is not None else f"id {incident_id}")
    rows = session.execute(select(*ENTRY_COLUMNS).where(TimelineEntry.incident_id == incident.id)
                           .order_by(TimelineEntry.occurred_at, TimelineEntry.id)).all()
    facts = {name: getattr(incident, name) for name in (
        "id", "number", "reference", "title", "summary", "severity", "status", "declared_by", "declared_at",
        "resolved_at", "impact_started_at", "detected_at", "channel_id", "channel_name", "is_drill")}
    facts["roles"] = {assignment.role: assignment.user_id for assignment in incident.roles}
    return IncidentRecord(incident=facts, timeline=[tuple(row) for row in rows],
                          actions=actions.incident_actions(session, incident.id))


def actor_ids(record: IncidentRecord) -> set[str]:
    """Every user id an export names, so the caller can look up their display names."""
    ids = {row[4] for row in record.timeline} | set(record.incident["roles"].values())
    ids |= {record.incident["declared_by"]} | {action.owner_id for action in record.actions}
    return {user_id for user_id in ids if user_id and user_id != BOT_ACTOR}


def iso(moment: datetime | None) -> str | None:
    """An aware time as ISO 8601 in UTC with a Z, to the millisecond."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def spreadsheet_time(moment: datetime | None) -> str:
    """`2026-11-23 14:05:03`: what spreadsheets read as a date and time without asking."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def name_of(user_id: str | None, people: dict[str, str]) -> str:
    if not user_id:
        return ""
    if user_id == BOT_ACTOR:
        return "Warroom"
    return people.get(user_id, "")


# ------------------------------------------------------------------------------------- JSON

def to_json_document(record: IncidentRecord, people: dict[str, str], generated_at: datetime) -> dict:
    facts = record.incident
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": iso(generated_at),
        "incident": {
            "reference": facts["reference"], "number": facts["number"], "title": facts["title"],
            "summary": facts["summary"], "severity": facts["severity"], "status": facts["status"],
            "declared_by": facts["declared_by"], "declared_at": iso(facts["declared_at"]),
            "resolved_at": iso(facts["resolved_at"]), "impact_started_at": iso(facts["impact_started_at"]),
            "detected_at": iso(facts["detected_at"]), "channel_id": facts["channel_id"],
            "channel_name": facts["channel_name"], "roles": facts["roles"], "is_drill": facts["is_drill"],
        },
        "people": {user_id: people[user_id] for user_id in sorted(people)},
        "timeline": [
            {"id": entry_id, "occurred_at": iso(occurred), "recorded_at": iso(recorded), "kind": kind,
             "actor_id": actor, "text": text, "old_value": old, "new_value": new, "source": source,
             "source_ref": ref}
            for entry_id, occurred, recorded, kind, actor, text, old, new, source, ref in record.timeline
        ],
        "actions": [
            {"label": a.label, "text": a.text, "owner_id": a.owner_id, "due_on": a.due_on.isoformat(),
             "verification": a.verification, "state": a.state, "created_by": a.created_by,
             "created_at": iso(a.created_at), "done_at": iso(a.done_at), "done_by": a.done_by,
             "verified_at": iso(a.verified_at), "verified_by": a.verified_by,
             "verified_evidence": a.verified_evidence}
            for a in record.actions
        ],
    }


def render_json(record: IncidentRecord, people: dict[str, str], generated_at: datetime) -> str:
    """The document with one timeline entry (and one action) a line: easy to read and to grep.

    Each piece goes through json's C encoder; `indent=` would switch the whole document to the
    pure-Python one, which is several times slower on a long timeline. Non-ASCII stays as written.
    """
    document = to_json_document(record, people, generated_at)
    fields = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            body = "[\n  " + ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in value) + "\n ]"
        else:
            body = json.dumps(value, ensure_ascii=False)
        fields.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


# -------------------------------------------------------------------------------------- CSV

def spreadsheet_safe(value: str | None) -> str:
    """Text a spreadsheet shows as typed: a leading = + - @ would make it a formula otherwise."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def render_csv(record: IncidentRecord, people: dict[str, str]) -> str:
    out = io.StringIO()
    out.write("\ufeff")  # Excel reads UTF-8 only when the file says so
    writer = csv.writer(out)  # RFC 4180: quoted fields, CRLF line ends
    writer.writerow(CSV_COLUMNS)
    safe = spreadsheet_safe
    writer.writerows(
        (spreadsheet_time(occurred), kind, actor, safe(name_of(actor, people)), safe(text), safe(old), safe(new),
         source, safe(ref), spreadsheet_time(recorded), entry_id)
        for entry_id, occurred, recorded, kind, actor, text, old, new, source, ref in record.timeline
    )
    return out.getvalue()


# --------------------------------------------------------------------------------- Markdown

def who(user_id: str | None, people: dict[str, str]) -> str:
    """A person as the Markdown shows them: their name if known, with their id."""
    if not user_id:
        return ""
    name = name_of(user_id, people)
    return f"{name} ({user_id})" if name and user_id != BOT_ACTOR else (name or user_id)


def describe(kind: str, text: str, old: str | None, new: str | None, source_ref: str | None,
             people: dict[str, str]) -> str:
    """One timeline entry in words, for the Markdown export and the postmortem."""
    if kind == "role":
        handover = f", taking over from {who(old, people)}" if old else ""
        return f"{who(new, people)} is {text}{handover}"
    if kind in ("severity", "status", "cadence"):
        change = f"{old or '—'} → {new or '—'}"
        return f"{change}: {text}" if text else change
    if kind == "declared":
        return f"Declared {(new or '').upper()}: {text}"
    if kind == "pinned":
        return f"{text} (pinned by {who(new, people)}; {source_ref})" if source_ref else f"{text} (pinned)"
    if kind == "mark":
        return f"{text}: {new}"
    return text


def timeline_rows_for_markdown(record: IncidentRecord, people: dict[str, str]) -> list[dict]:
    return [
        {"day": occurred.astimezone(timezone.utc).strftime("%Y-%m-%d"),
         "time": occurred.astimezone(timezone.utc).strftime("%H:%M:%S"),
         "kind": kind, "who": markdown_cell(who(actor, people)),
         "what": markdown_cell(describe(kind, text, old, new, ref, people))}
        for _id, occurred, _recorded, kind, actor, text, old, new, _source, ref in record.timeline
    ]


def render_markdown(record: IncidentRecord, people: dict[str, str], generated_at: datetime) -> str:
    return render_markdown_template("timeline_export.md.j2", incident=record.incident, actions=record.actions,
                           rows=timeline_rows_for_markdown(record, people), people=people,
                           generated_at=generated_at, ROLES=ROLES) + "\n"


def render_export(record: IncidentRecord, fmt: str, people: dict[str, str], generated_at: datetime) -> str:
    if fmt == "json":
        return render_json(record, people, generated_at)
    if fmt == "csv":
        return render_csv(record, people)
    return render_markdown(record, people, generated_at)


def filename_for(record: IncidentRecord, fmt: str, what: str = "timeline") -> str:
    return f"{record.incident['reference'].lower()}-{what}.{fmt}"
