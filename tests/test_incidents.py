"""The domain services against a real database (SQLite and PostgreSQL), no Slack involved."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timezone

import pytest
from sqlalchemy import text

from bot import incidents
from bot.errors import NotAnIncidentChannel, NothingToChange
from bot.migrate import upgrade_to_head
from bot.playbook import Playbook
from tests.conftest import open_incident

PLAYBOOK = Playbook()


@pytest.fixture
def db(database):
    database.empty()
    return database


def declare(db, title="Support bot quoting a refund policy we don't have", severity=1, channel="C0ROOM1"):
    return open_incident(db, PLAYBOOK, title=title, severity=severity, channel=channel)


def test_channel_names_are_what_slack_accepts():
    assert incidents.channel_name_for(42, "Support bot quoting a refund policy we don't have") == \
        "inc-42-support-bot-quoting-a-refund"
    assert incidents.channel_name_for(7, "Crédit scoring: bias spike after refresh!") == \
        "inc-7-credit-scoring-bias-spike"
    assert incidents.channel_name_for(3, "模型泄露") == "inc-3"
    assert incidents.channel_name_for(5, "x" * 200) == "inc-5-" + "x" * 30
    assert incidents.channel_name_for(10**70, "title") .__len__() <= 80


def test_incident_numbers_are_unique_and_gap_free_under_concurrency(db):
    def declare_one(i):
        with db.sessions.begin() as session:
            return incidents.declare_incident(session, title=f"t{i}", severity=3, summary="", declared_by="U0BOB",
                                              playbook=PLAYBOOK).number

    with ThreadPoolExecutor(8) as pool:
        numbers = sorted(pool.map(declare_one, range(40)))
    assert numbers == list(range(1, 41))


def test_declaration_starts_the_timeline(db):
    incident = declare(db)
    assert incident.reference == "INC-1" and incident.status == "investigating" and incident.severity == 1
    with db.sessions() as session:
        [entry] = incidents.recent_timeline(session, incident.id)
    assert entry.kind == "declared" and entry.actor_id == "U0ALICE" and entry.new_value == "sev1"
    assert entry.occurred_at.tzinfo is not None and entry.occurred_at.utcoffset().total_seconds() == 0


def test_role_handover_keeps_history(db):
    declare(db)
    with db.sessions.begin() as session:
        first = incidents.assign_role(session, "C0ROOM1", "ic", "U0BOB", "U0ALICE")
    with db.sessions.begin() as session:
        second = incidents.assign_role(session, "C0ROOM1", "ic", "U0CAROL", "U0BOB")
    assert first.old_value is None and second.old_value == "U0BOB"
    assert second.incident.roles == {"ic": "U0CAROL"}
    with db.sessions.begin() as session, pytest.raises(NothingToChange):
        incidents.assign_role(session, "C0ROOM1", "ic", "U0CAROL", "U0BOB")
    rows = db.rows("SELECT old_value, new_value FROM timeline_entry WHERE kind = 'role' ORDER BY id")
    assert [(r["old_value"], r["new_value"]) for r in rows] == [(None, "U0BOB"), ("U0BOB", "U0CAROL")]


def test_severity_and_status_record_old_and_new(db):
    incident = declare(db, severity=2)
    with db.sessions.begin() as session:
        sev = incidents.change_severity(session, "C0ROOM1", 1, "refunds promised to 300 users", "U0BOB", PLAYBOOK)
        status = incidents.change_status(session, "C0ROOM1", "resolved", "", "U0BOB", PLAYBOOK,
                                         force_reason="a unit test: nothing to contain")
    assert (sev.old_value, sev.new_value) == ("sev2", "sev1")
    assert (status.old_value, status.new_value) == ("investigating", "resolved")
    with db.sessions.begin() as session, pytest.raises(NothingToChange):
        incidents.change_severity(session, "C0ROOM1", 1, "", "U0BOB", PLAYBOOK)
    assert db.scalar("SELECT resolved_at FROM incident WHERE id = :id", id=incident.id) is not None


def test_commands_outside_a_war_room_are_refused(db):
    declare(db)
    with db.sessions.begin() as session, pytest.raises(NotAnIncidentChannel):
        incidents.record_decision(session, "C0GENERAL", "roll back", "U0ALICE")
    assert db.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'decision'") == 0


def test_a_pinned_message_keeps_its_own_time_and_is_recorded_once(db):
    incident = declare(db)
    kwargs = dict(message_ts="1732380000.000100", author_id="U0CAROL", text="refund bot said 90 days",
                  pinned_by="U0BOB", permalink=None)
    with db.sessions.begin() as session:
        entry = incidents.record_pinned_message(session, "C0ROOM1", **kwargs)
    with db.sessions.begin() as session:
        again = incidents.record_pinned_message(session, "C0ROOM1", **kwargs)
    assert again is None
    assert entry.occurred_at == entry.occurred_at.astimezone(timezone.utc)
    assert entry.occurred_at.isoformat() == "2024-11-23T16:40:00.000100+00:00"
    with db.sessions() as session:
        kinds = [e.kind for e in incidents.recent_timeline(session, incident.id)]
    # The message was written before the incident was declared, so it sorts first.
    assert kinds == ["pinned", "declared"]


def test_an_event_is_claimed_once(db):
    with db.sessions.begin() as session:
        assert incidents.claim_event(session, "Ev01") is True
    with db.sessions.begin() as session:
        assert incidents.claim_event(session, "Ev01") is False


def test_a_connection_lost_during_commit_is_reported_as_an_unknown_outcome(tmp_path):
    """Up to COMMIT a failure means nothing was saved; during COMMIT the server may have kept the
    work, so the caller hears CommitOutcomeUnknown instead of "nothing was saved"."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    from bot.runtime import CommitOutcomeUnknown, Runtime
    from bot.settings import Settings

    database_url = f"sqlite:///{tmp_path / 'commit.db'}"
    upgrade_to_head(database_url)
    runtime = Runtime.from_settings(Settings(database_url=database_url))

    def lose_the_connection(session):
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    event.listen(runtime.sessions, "before_commit", lose_the_connection)
    with pytest.raises(CommitOutcomeUnknown):
        with runtime.transaction() as session:
            incidents.declare_incident(session, title="Lost at commit", severity=3, summary="",
                                       declared_by="U0ALICE", playbook=runtime.playbook)
    event.remove(runtime.sessions, "before_commit", lose_the_connection)
    with pytest.raises(OperationalError):  # before COMMIT: an ordinary failure, rolled back
        with runtime.transaction() as session:
            session.execute(text("SELECT * FROM no_such_table"))
    runtime.engine.dispose()


def test_a_message_full_of_personal_data_is_remembered_in_one_statement(db):
    """A pasted log can hold hundreds of addresses: one upsert for all of them, and a value repeated in
    the message (or seen before) is one row counting every sighting."""
    from sqlalchemy import event

    incident = declare(db)
    addresses = [f"customer{i}@example.com" for i in range(60)]
    typed = "Leaked to: " + ", ".join(addresses) + "; again customer7@example.com and CUSTOMER7@example.com"
    upserts = []

    def count_upserts(_conn, _cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO REDACTED_VALUE"):
            upserts.append(statement)

    event.listen(db.engine, "before_cursor_execute", count_upserts)
    try:
        with db.sessions.begin() as session:
            session.info["redaction_key"] = b"k" * 32
            entry = incidents.record_note(session, incident.channel_id, typed, "U0BOB")
    finally:
        event.remove(db.engine, "before_cursor_execute", count_upserts)
    assert len(upserts) == 1
    assert "customer" not in entry.text and entry.redacted == ["email"]
    counts = sorted(r["times_seen"] for r in db.rows(
        "SELECT times_seen FROM redacted_value WHERE incident_id = :i AND kind = 'email'", i=incident.id))
    assert counts == [1] * 59 + [3]
    # Seen again in a later message: the same row, counted on.
    with db.sessions.begin() as session:
        session.info["redaction_key"] = b"k" * 32
        incidents.record_note(session, incident.channel_id, "customer7@example.com replied", "U0BOB")
    assert db.scalar("SELECT max(times_seen) FROM redacted_value WHERE incident_id = :i", i=incident.id) == 4
    assert db.scalar("SELECT count(*) FROM redacted_value WHERE incident_id = :i", i=incident.id) == 60


def test_a_rooms_incident_is_remembered_and_checked_on_every_note(db):
    """After the first note in a room, a note or decision is one statement: the entry, written only if
    the room still belongs to the incident remembered for it. A room that belongs to another incident
    now (a database emptied and refilled under the running bot, as the tests do) gets the entry on
    that one; a room that belongs to none is refused, nothing written."""
    from sqlalchemy import event

    first = declare(db)
    with db.sessions.begin() as session:
        incidents.record_note(session, first.channel_id, "first note: the room's incident is looked up", "U0BOB")
    statements = []

    def record(_conn, _cursor, statement, *_):
        if not statement.lstrip().upper().startswith("BEGIN"):
            statements.append(" ".join(statement.split()[:3]).upper())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.sessions.begin() as session:
            decision = incidents.record_decision(session, first.channel_id, "Roll back prompt template v14",
                                                 "U0BOB", owner_id="U0CAROL")
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert statements == ["INSERT INTO TIMELINE_ENTRY"]
    assert (decision.kind, decision.text, decision.new_value, decision.source) == \
        ("decision", "Roll back prompt template v14", "U0CAROL", "command")
    assert decision.occurred_at.tzinfo is not None
    assert db.scalar("SELECT incident_id FROM timeline_entry WHERE id = :i", i=decision.id) == first.id

    db.empty()
    declare(db, title="Another incident takes the first id and number", channel="C0OTHER")
    second = declare(db, title="The room's incident now", channel=first.channel_id)
    assert (second.id, second.number) != (first.id, first.number)
    with db.sessions.begin() as session:
        note = incidents.record_note(session, first.channel_id, "lands on the room's incident", "U0BOB")
    assert db.scalar("SELECT incident_id FROM timeline_entry WHERE id = :i", i=note.id) == second.id

    db.empty()
    with pytest.raises(NotAnIncidentChannel):
        with db.sessions.begin() as session:
            incidents.record_note(session, first.channel_id, "no incident here any more", "U0BOB")
    assert db.scalar("SELECT count(*) FROM timeline_entry") == 0


def test_an_entry_written_after_a_change_in_the_same_transaction_sees_it(db):
    """Entries are written with Core (one INSERT … RETURNING): what the ORM holds unwritten is flushed first."""
    incident = declare(db)
    with db.sessions.begin() as session:
        row = incidents.lock_incident_in_channel(session, incident.channel_id)
        row.summary = "refund policy hallucinated"
        entry = incidents.add_entry(session, row, "note", "U0BOB", text="summary set")
        assert session.execute(text("SELECT summary FROM incident WHERE id = :i"),
                               {"i": incident.id}).scalar_one() == "refund policy hallucinated"
    assert entry.kind == "note" and entry.source == "command" and entry.occurred_at.tzinfo is not None
    with db.sessions() as session:
        assert [e.id for e in incidents.recent_timeline(session, incident.id)][-1] == entry.id


def test_a_locked_incident_still_takes_entries_from_other_transactions(db):
    """A command holding its incident (to change it) does not block another transaction adding a
    timeline entry that refers to it: the ticker recording a delivered reminder holds the reminder's
    row while it does, and `drill end` (incident first, then the drill's reminders) deadlocked with it."""
    if db.backend != "postgresql":
        pytest.skip("SQLite locks the whole database for a write; row locks are PostgreSQL's")
    incident = declare(db)
    with db.sessions.begin() as session:
        incidents.lock_incident_in_channel(session, incident.channel_id)  # held until this block ends
        with db.engine.connect() as other:
            other.execute(text("SET lock_timeout = '2s'"))  # waiting on the incident's lock would fail here
            other.execute(text("INSERT INTO timeline_entry (incident_id, kind, actor_id, text, occurred_at, "
                               "recorded_at, source) VALUES (:i, 'reminder', 'warroom', 'update due', "
                               "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'ticker')"), {"i": incident.id})
            other.commit()
    assert db.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'reminder'") == 1
