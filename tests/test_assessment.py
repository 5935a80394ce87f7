"""Notification clocks from the services, against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from bot import assessment
from bot.models import Incident
from bot.playbook import load_playbook
from tests.conftest import open_incident

PLAYBOOK = load_playbook()  # the shipped one: the DPA clock is 72h, reminded 24h and 4h before
ROOM = "C0ROOM1"


@pytest.fixture
def db(database):
    database.empty()
    open_incident(database, PLAYBOOK, title="Retrieval leak", severity=2, channel=ROOM)
    return database


def as_utc(value) -> datetime:
    value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def answer(db, question: str, value: str) -> assessment.AnswerChange:
    with db.sessions.begin() as session:
        return assessment.record_answer(session, ROOM, assessment.NOTIFICATION, question, value, "U0DAVE", PLAYBOOK)


def test_the_dpa_clock_runs_72_hours_from_detection_with_its_reminder_points(db):
    answer(db, "personal_data", "yes")
    change = answer(db, "unauthorised_access", "yes")
    declared = as_utc(db.scalar("SELECT declared_at FROM incident"))
    assert [(c.name, c.deadline_at) for c in change.started] == [
        ("Data-protection authority (GDPR Art. 33)", declared + timedelta(hours=72))]
    points = [as_utc(r["remind_at"]) for r in db.rows("SELECT remind_at FROM notification_deadline ORDER BY remind_at")]
    assert points == [declared + timedelta(hours=h) for h in (48, 68, 72)]


def test_a_clock_started_late_reminds_once_for_what_already_passed(db):
    long_ago = as_utc(db.scalar("SELECT declared_at FROM incident")) - timedelta(hours=70)
    with db.engine.begin() as connection:  # found out 70 hours ago; the assessment is only now done
        connection.execute(update(Incident).values(detected_at=long_ago))
    answer(db, "personal_data", "yes")
    answer(db, "unauthorised_access", "yes")
    points = [as_utc(r["remind_at"]) for r in db.rows("SELECT remind_at FROM notification_deadline ORDER BY remind_at")]
    assert points == [long_ago + timedelta(hours=68), long_ago + timedelta(hours=72)]


def test_unknown_is_not_yes(db):
    answer(db, "other_customers", "unknown")
    assert db.scalar("SELECT count(*) FROM notification_deadline") == 0
