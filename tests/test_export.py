"""Exports and postmortem measures from the services, against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone

import jsonschema
import pytest
from sqlalchemy import update

from bot import actions, export, incidents, postmortem
from bot.errors import UsageError
from bot.models import Incident, TimelineEntry
from bot.playbook import Playbook
from tests.conftest import REPO_ROOT, open_incident

PLAYBOOK = Playbook(evidence={"gate_resolve_at_most_severity": 0})  # these tests measure, they don't gate
ROOM = "C0ROOM1"
SCHEMA = json.loads((REPO_ROOT / "docs" / "export-schema-v1.json").read_text())


@pytest.fixture
def db(database):
    database.empty()
    open_incident(database, PLAYBOOK, title="Bias spike after data refresh", severity=2, channel=ROOM)
    return database


def at(db, minutes: float) -> datetime:
    """The declaration time plus `minutes` (read outside any open transaction: SQLite has one writer)."""
    return _as_utc(db.scalar("SELECT declared_at FROM incident")) + timedelta(minutes=minutes)


def _as_utc(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def place(db, kind: str, new_value: str, minutes: float) -> None:
    """Move the latest entry of this kind and value to `minutes` after the declaration (time passing)."""
    moment = at(db, minutes)
    with db.sessions.begin() as session:
        entry_id = session.query(TimelineEntry.id).filter_by(kind=kind, new_value=new_value).order_by(
            TimelineEntry.id.desc()).first()[0]
        session.execute(update(TimelineEntry).where(TimelineEntry.id == entry_id).values(occurred_at=moment))


def record(db) -> export.IncidentRecord:
    with db.sessions.begin() as session:
        return export.read_record(session, number=1)


def change_status(db, status: str, minutes: float) -> None:
    with db.sessions.begin() as session:
        incidents.change_status(session, ROOM, status, "", "U0BOB", PLAYBOOK)
    place(db, "status", status, minutes)


def test_milestones_count_the_first_containment_and_the_last_resolution(db):
    with db.sessions.begin() as session:
        incidents.assign_role(session, ROOM, "ic", "U0BOB", "U0ALICE")
    place(db, "role", "U0BOB", 2)
    change_status(db, "resolved", 30)  # straight past contained: containment happened then
    change_status(db, "investigating", 45)  # reopened
    change_status(db, "contained", 50)
    change_status(db, "resolved", 90)

    marks = postmortem.milestones(record(db))
    assert marks.detected_at == at(db, 0) and not marks.detected_marked
    assert marks.time_to_acknowledge == timedelta(minutes=2)
    assert marks.time_to_contain == timedelta(minutes=30)
    assert marks.time_to_resolve == timedelta(minutes=90)
    assert marks.time_to_detect is None and marks.impact_duration is None


def test_marks_move_detection_and_start_the_impact_clock(db):
    detected, impact_start, after_declaration = at(db, -20), at(db, -65), at(db, 1)
    with db.sessions.begin() as session:
        incidents.set_mark(session, ROOM, "detected", detected, "U0DAVE")
        incidents.set_mark(session, ROOM, "impact-start", impact_start, "U0DAVE")
    change_status(db, "contained", 10)
    marks = postmortem.milestones(record(db))
    assert marks.time_to_detect == timedelta(minutes=45)
    assert marks.time_to_contain == timedelta(minutes=30)
    assert marks.impact_duration == timedelta(minutes=75)
    assert postmortem.format_span(marks.time_to_detect) == "45m 00s"
    assert postmortem.format_span(timedelta(days=2, hours=3, minutes=4)) == "2d 3h 04m"
    assert postmortem.format_span(timedelta(seconds=7)) == "7s"
    with db.sessions.begin() as session, pytest.raises(UsageError, match="is in the future"):
        incidents.set_mark(session, ROOM, "detected", after_declaration, "U0DAVE")
    ten_minutes_earlier = at(db, -10)
    with db.engine.begin() as connection:  # declared ten minutes ago: a minute after it has passed
        connection.execute(update(Incident).values(declared_at=ten_minutes_earlier))
    with db.sessions.begin() as session, pytest.raises(UsageError, match="can't come after the declaration"):
        incidents.set_mark(session, ROOM, "detected", after_declaration - timedelta(minutes=10), "U0DAVE")


def test_csv_defuses_formulas_and_keeps_text_as_typed(db):
    typed = ["=HYPERLINK(\"http://evil\",\"click\")", "+1 more ticket", "-5% refusals", "@here look",
             "Zoë: 東京 \"quoted\", with a comma\nand a second line"]
    with db.sessions.begin() as session:
        for text in typed:
            incidents.record_note(session, ROOM, text, "U0BOB")
    rows = list(csv.DictReader(io.StringIO(export.render_csv(record(db), {}).lstrip("\ufeff"))))
    notes = [row["text"] for row in rows if row["kind"] == "note"]
    assert notes == ["'" + text for text in typed[:4]] + [typed[4]]


def test_json_export_validates_and_keeps_non_ascii(db):
    due = date.today() + timedelta(days=7)
    with db.sessions.begin() as session:
        incidents.record_decision(session, ROOM, "Revert the data refresh — Ünïcødé ✓", "U0BOB")
        actions.record_action(session, ROOM, owner_id="U0CAROL", due_on=due, text="Add a bias eval",
                              verification="", actor_id="U0BOB", playbook=PLAYBOOK)
    text = export.render_json(record(db), {"U0BOB": "Bob"}, datetime.now(timezone.utc))
    document = json.loads(text)
    jsonschema.validate(document, SCHEMA)
    assert "Ünïcødé ✓" in text  # written as UTF-8, not \\u escapes
    assert document["actions"][0] == {**document["actions"][0], "label": "A1", "state": "open", "verification": "",
                                      "due_on": due.isoformat()}
    # A document that breaks the schema is caught by it (the check can fail).
    document["timeline"][0]["occurred_at"] = "23/11/2026 14:05"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)


def test_markdown_keeps_every_entry_in_one_cell(db):
    with db.sessions.begin() as session:
        incidents.record_note(session, ROOM, "a | b <script>x</script>\nnext line", "U0BOB")
    markdown = export.render_markdown(record(db), {}, datetime.now(timezone.utc))
    row = next(line for line in markdown.splitlines() if "next line" in line)
    assert row.count(" | ") == 3  # time | kind | who | what: the typed pipe is escaped
    assert "a \\| b &lt;script&gt;x&lt;/script&gt;<br>next line" in row


def test_action_numbers_and_reminder_times_come_from_the_incident_and_playbook(db):
    due = date.today() + timedelta(days=5)
    with db.sessions.begin() as session:
        first = actions.record_action(session, ROOM, owner_id="U0BOB", due_on=due, text="one", verification="v",
                                      actor_id="U0ALICE", playbook=PLAYBOOK).action
        second = actions.record_action(session, ROOM, owner_id="U0BOB", due_on=due, text="two", verification="",
                                       actor_id="U0ALICE", playbook=PLAYBOOK).action
    assert (first.label, second.label) == ("A1", "A2") and second.problems == ["no verification"]
    rows = db.rows("SELECT remind_before_at, remind_due_at FROM corrective_action ORDER BY number")
    on_the_day = datetime(due.year, due.month, due.day, 9, 0, tzinfo=timezone.utc)
    assert _as_utc(rows[0]["remind_due_at"]) == on_the_day
    assert _as_utc(rows[0]["remind_before_at"]) == on_the_day - timedelta(days=2)


def test_every_shipped_audience_has_a_draft_that_renders(db):
    from bot import cadence
    from bot.playbook import load_playbook
    from commands.updates import render_draft

    with db.sessions.begin() as session:
        incidents.record_decision(session, ROOM, "Send credit decisions to human review", "U0BOB")
        incident = incidents.incident_in_channel(session, ROOM)
        recent = cadence.draft_lines(session, [incident.id])[incident.id]
    drafts = {audience: render_draft(incident, recent, ["comms"], audience) for audience in load_playbook().audiences}
    assert set(drafts) == {"executives", "support", "engineering", "customers"}
    assert len(set(drafts.values())) == 4  # each audience gets its own
    assert "Send credit decisions to human review" in drafts["engineering"]
    assert "Business impact" in drafts["executives"] and "approved wording" in drafts["support"]
