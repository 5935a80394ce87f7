"""The reminder ledger against a real database: claims never overlap, leases expire, updates win."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from bot import incidents, reminders
from bot.reminders import DeliveryFailed
from bot.playbook import Playbook
from tests.conftest import BACKENDS, fresh_database

PLAYBOOK = Playbook()
LATE_AFTER, LEASE = timedelta(seconds=2), timedelta(seconds=10)


@pytest.fixture(scope="module", params=BACKENDS)
def ledger(request, tmp_path_factory):
    """A database no running bot watches: the session's bot (conftest `bot`) ticks on the shared
    one, and its ticker would claim some of the reminders these tests count (it did, in CI)."""
    with fresh_database(request.param, tmp_path_factory.mktemp(f"ledger-{request.param}")) as database:
        yield database


@pytest.fixture
def owed(ledger):
    """40 open incidents whose update fell due a second ago, scheduled on the ledger."""
    database = ledger
    database.empty()
    now = datetime.now(timezone.utc)
    with database.sessions.begin() as session:
        for number in range(40):
            incident = incidents.declare_incident(session, title=f"t{number}", severity=1, summary="",
                                                  declared_by="U0BOB", playbook=PLAYBOOK)
            incidents.attach_war_room(session, incident.id, f"C0ROOM{number}", f"inc-{number}")
        session.execute(text("UPDATE incident SET next_update_due_at = :due, escalate_at = :later"),
                        {"due": now - timedelta(seconds=1), "later": now + timedelta(hours=1)})
    for _ in range(2):  # scheduling twice (two processes) owes each reminder once
        with database.sessions.begin() as session:
            reminders.schedule_due_reminders(session, now)
    return database, now


def claim(database, owner, now, limit=100):
    with database.sessions.begin() as session:
        return reminders.claim_due_reminders(session, owner, now, LATE_AFTER, LEASE, limit=limit)


def test_scheduling_is_idempotent_and_only_what_is_due(owed):
    database, _ = owed
    assert database.scalar("SELECT count(*) FROM reminder") == 40
    assert database.scalar("SELECT count(DISTINCT kind) FROM reminder") == 1  # escalations not yet owed


def test_a_claim_takes_at_most_its_limit_and_concurrent_claims_never_overlap(owed):
    database, now = owed
    assert len(claim(database, "first", now, limit=7)) == 7
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda owner: claim(database, owner, now, limit=10), ["a", "b", "c", "d"]))
    ids = [due.reminder_id for batch in batches for due in batch]
    assert len(ids) == len(set(ids)) == 33  # the 40 minus the first 7, each claimed once
    assert claim(database, "late-comer", now) == []


def test_an_expired_lease_is_taken_over(owed):
    database, now = owed
    first = claim(database, "dead-process", now, limit=1)[0]
    later = now + LEASE + timedelta(seconds=1)
    taken = [due for due in claim(database, "survivor", later) if due.reminder_id == first.reminder_id]
    assert taken and taken[0].attempts == 2  # attempt 2: the deliverer checks Slack before posting


def test_an_update_supersedes_a_scheduled_reminder(owed):
    database, now = owed
    with database.sessions.begin() as session:
        incidents.record_update(session, "C0ROOM0", "all good", "U0BOB", PLAYBOOK)
    claimed = claim(database, "me", now)
    assert "C0ROOM0" not in {due.channel_id for due in claimed} and len(claimed) == 39
    assert database.scalar("SELECT outcome FROM reminder r JOIN incident i ON i.id = r.incident_id "
                           "WHERE i.channel_id = 'C0ROOM0'") == "superseded"


def test_failures_back_off_and_permanent_ones_close_with_a_timeline_entry(owed):
    database, now = owed
    transient, permanent = claim(database, "me", now, limit=2)
    with database.sessions.begin() as session:
        reminders.mark_failed(session, transient, "me", DeliveryFailed("HTTP 500"), now)
        reminders.mark_failed(session, permanent, "me", DeliveryFailed("channel_not_found", permanent=True), now)
    rows = {r["id"]: r for r in database.rows("SELECT id, outcome, last_error, claimed_by FROM reminder")}
    assert rows[transient.reminder_id]["outcome"] is None and rows[transient.reminder_id]["claimed_by"] is None
    assert rows[permanent.reminder_id]["outcome"] == "failed"
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text LIKE '%could not be delivered%'") == 1
    assert transient.reminder_id not in {d.reminder_id for d in claim(database, "me", now)}  # backing off
    assert transient.reminder_id in {d.reminder_id for d in claim(database, "me", now + timedelta(seconds=3))}


def test_a_delivery_is_recorded_once_and_only_by_the_lease_holder(owed):
    database, now = owed
    due = claim(database, "holder", now, limit=1)[0]
    with database.sessions.begin() as session:
        assert reminders.mark_delivered(session, due, "someone-else", "1.0", now) is False
    with database.sessions.begin() as session:
        assert reminders.mark_delivered(session, due, "holder", "1.0", now) is True
    with database.sessions.begin() as session:
        assert reminders.mark_delivered(session, due, "holder", "1.0", now) is False
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'reminder'") == 1
