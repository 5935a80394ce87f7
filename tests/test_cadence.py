"""The update cadence end to end, with second-scale cadences: a bot process whose playbook says
sev1 every 3s, sev2 every 5s, escalation 2s past due, ticking every second."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.conftest import bot_with_playbook, clean_slack, eventually

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
GENERAL = "C0GENERAL"
STAKEHOLDERS = "C0GENERAL"  # the stand-in's seeded channel doubles as the stakeholder channel
TICK = 1.0
FAST_PLAYBOOK = """\
version: 1
updates:
  cadence: {sev1: 3s, sev2: 5s, sev3: off, sev4: off}
  escalation_grace: 2s
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cadence_env(request, tmp_path_factory, standin):
    with bot_with_playbook(request, tmp_path_factory, standin, "cadence-bot", FAST_PLAYBOOK,
                           WARROOM_TICK="1s", WARROOM_UPDATES_CHANNEL=STAKEHOLDERS) as (database, bot, playbook, _):
        yield database, bot, playbook


@pytest.fixture
def room(cadence_env, standin):
    """A clean slate and a helper that declares an incident and returns its channel id."""
    database, bot, _ = cadence_env
    with clean_slack(bot, database, standin) as slack:
        yield slack, database, _declarer(slack, database, standin)


def _declarer(slack, database, standin):
    def declare(severity="sev1", title="Refund bot hallucinating policy", comms=BOB):
        slack.command(ALICE, GENERAL, f"declare {severity} {title}")
        channel = eventually(lambda: database.scalar("SELECT channel_id FROM incident ORDER BY id DESC"))
        eventually(lambda: standin.calls("conversations.setTopic"))
        if comms:
            slack.command(ALICE, channel, f"role comms <@{comms}>")
        return channel
    return declare


def reminders(standin, channel, kind="update_due"):
    return [m for m in standin.messages(channel)
            if (m.get("metadata") or {}).get("event_payload", {}).get("key", "").startswith(kind)]


def as_utc(value) -> datetime:
    value = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def test_the_comms_lead_is_reminded_on_time_in_the_room_and_by_dm(room, standin):
    slack, database, declare = room
    channel = declare()
    due = as_utc(database.scalar("SELECT next_update_due_at FROM incident"))
    declared = as_utc(database.scalar("SELECT declared_at FROM incident"))
    assert due - declared == timedelta(seconds=3)

    [reminder] = eventually(lambda: reminders(standin, channel), timeout=8)
    assert "<@U0BOB>, a stakeholder update on *INC-1* is due (every 3s)" in reminder["text"]
    assert any(b["type"] == "actions" for b in reminder["blocks"])
    draft = reminder["blocks"][1]["text"]["text"]
    assert "*Draft, from the timeline*" in draft and "*What happened:* Refund bot hallucinating policy" in draft
    dm = eventually(lambda: standin.dm_messages(BOB))
    assert "stakeholder update on *INC-1* is due" in dm[0]["text"]

    row = eventually(lambda: database.rows("SELECT * FROM reminder WHERE kind = 'update_due' AND outcome = 'posted'"))[0]
    lateness = (as_utc(row["delivered_at"]) - as_utc(row["due_at"])).total_seconds()
    assert 0 <= lateness <= 2 * TICK and row["outcome"] == "posted" and not row["late"]
    entry = database.rows("SELECT actor_id, new_value FROM timeline_entry WHERE kind = 'reminder'")
    assert [dict(e) for e in entry] == [{"actor_id": "warroom", "new_value": BOB}]


def test_an_update_resets_the_clock_and_reaches_stakeholders(room, standin):
    slack, database, declare = room
    channel = declare()
    time.sleep(1.5)
    result = slack.command(BOB, channel, "update Rolled back prompt v14; refunds answered correctly since 10:02")
    assert result.status == 200
    posted_at = time.time()
    eventually(lambda: any("Rolled back prompt v14" in m["text"] for m in standin.messages(channel)))
    stakeholder = eventually(lambda: [m for m in standin.messages(STAKEHOLDERS) if "INC-1 update" in m["text"]])
    assert f"<#{channel}>" in stakeholder[0]["text"]

    due = as_utc(database.scalar("SELECT next_update_due_at FROM incident")).timestamp()
    assert abs(due - (posted_at + 3)) < 1.0
    # The update came before the first due time: no reminder for it, the next one 3s after the update.
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=8)
    assert float(reminder["ts"]) >= posted_at + 2.5
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'update'") == 1


def test_an_overdue_update_is_escalated_to_the_commander(room, standin):
    slack, database, declare = room
    channel = declare()
    slack.command(ALICE, channel, "role ic <@U0CAROL>")
    [escalation] = eventually(lambda: reminders(standin, channel, "escalation"), timeout=10)
    assert escalation["text"].startswith(":rotating_light: <@U0CAROL>: the *INC-1* stakeholder update is overdue")
    assert "<@U0BOB> was reminded" in escalation["text"]
    eventually(lambda: [r["kind"] for r in database.rows(
        "SELECT kind FROM timeline_entry WHERE actor_id = 'warroom' ORDER BY id")] == ["reminder", "escalation"])
    time.sleep(2.5)  # nothing is posted twice while the update stays overdue
    assert len(reminders(standin, channel)) == 1 and len(reminders(standin, channel, "escalation")) == 1


def test_snooze_pushes_the_next_reminder_once(room, standin):
    slack, database, declare = room
    channel = declare()
    snoozed_at = time.time()
    assert slack.command(BOB, channel, "snooze 7s").status == 200
    eventually(lambda: any(":zzz:" in m["text"] for m in standin.messages(channel)))
    time.sleep(4.5)
    assert reminders(standin, channel) == []  # the 3s reminder did not come
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=6)
    assert float(reminder["ts"]) >= snoozed_at + 6.5
    assert database.scalar("SELECT kind FROM timeline_entry WHERE kind = 'snooze'") == "snooze"


def test_a_cadence_override_and_off(room, standin):
    slack, database, declare = room
    channel = declare(severity="sev2")  # 5s by policy
    slack.command(BOB, channel, "cadence 2s")
    [first] = eventually(lambda: reminders(standin, channel), timeout=6)
    assert "(every 2s)" in first["text"]
    slack.command(BOB, channel, "cadence off")
    eventually(lambda: any(":no_bell:" in m["text"] for m in standin.messages(channel)))
    count = len(reminders(standin, channel)) + len(reminders(standin, channel, "escalation"))
    time.sleep(4)
    assert len(reminders(standin, channel)) + len(reminders(standin, channel, "escalation")) == count
    assert database.scalar("SELECT next_update_due_at FROM incident") is None
    refused = slack.command(BOB, channel, "cadence soon")
    assert "`soon` is not a duration" in refused.body


def test_a_severity_change_retimes_the_next_update(room, standin):
    slack, database, declare = room
    channel = declare(severity="sev3")  # no cadence at SEV3
    assert database.scalar("SELECT next_update_due_at FROM incident") is None
    slack.command(ALICE, channel, "sev 1 customers quoting the bot on social media")
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=8)
    assert "(every 3s)" in reminder["text"]


def test_resolving_stops_the_cadence(room, standin):
    slack, database, declare = room
    channel = declare()
    slack.command(ALICE, channel, "status resolved force: drill of the cadence, nothing to contain")
    eventually(lambda: database.scalar("SELECT status FROM incident") == "resolved")
    time.sleep(4.5)
    assert reminders(standin, channel) == [] and reminders(standin, channel, "escalation") == []
    assert database.scalar("SELECT next_update_due_at FROM incident") is None
    assert "no update due" in slack.command(BOB, channel, "snooze 5m").body


def test_the_update_form_comes_drafted_and_posts(room, standin):
    slack, database, declare = room
    channel = declare()
    slack.command(ALICE, channel, "decision Disable the refund tool while we investigate")
    slack.command(BOB, channel, "update")
    view = eventually(lambda: [v for v in standin.views() if v["view"]["callback_id"] == "post_update"])[0]
    draft = view["view"]["blocks"][0]["element"]["initial_value"]
    for part in ("*What happened:* Refund bot hallucinating policy", "*Impact:*", "*Current status:* SEV1, investigating",
                 "decision: Disable the refund tool", "*Next steps:*", "open roles: ic, scribe, tech, legal, privacy"):
        assert part in draft
    submitted = slack.submit_view(BOB, view["id"], {"update": draft + "\nNo refunds issued on the bad policy."})
    assert submitted.status == 200
    eventually(lambda: any("No refunds issued" in m["text"] for m in standin.messages(channel)))
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'update'") == 1


def test_the_reminder_button_opens_the_drafted_form(room, standin):
    slack, database, declare = room
    channel = declare()
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=8)
    clicked = slack.click(BOB, channel, reminder["ts"], "open_update_form", channel)
    assert clicked.status == 200
    view = eventually(lambda: [v for v in standin.views() if v["view"]["callback_id"] == "post_update"])[0]
    assert "*What happened:*" in view["view"]["blocks"][0]["element"]["initial_value"]


def test_slack_errors_are_retried_and_the_reminder_is_not_lost(room, standin):
    slack, database, declare = room
    channel = declare()
    standin.wait_until_quiet(quiet_for=0.2)  # the failures below are for the reminder, not the role post
    # Three 500s outlast slack_sdk's own two retries: the ticker keeps the reminder owed, backs
    # off, and the next attempt gets through.
    standin.fail_next("chat.postMessage", status=500, times=3)
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=15)
    row = eventually(lambda: database.rows(
        "SELECT attempts, last_error FROM reminder WHERE kind = 'update_due' AND outcome = 'posted'"))[0]
    assert row["attempts"] >= 2 and row["last_error"]  # the failures are on record
    assert len(reminders(standin, channel)) == 1


def test_a_reminder_that_fell_due_while_down_goes_out_once_marked_late(room, standin):
    slack, database, declare = room
    channel = declare(severity="sev3")  # no cadence: the bot will not schedule one itself
    with database.sessions.begin() as session:
        session.execute(text(
            "UPDATE incident SET cadence_seconds = 3, next_update_due_at = :due, escalate_at = :later"),
            {"due": datetime.now(timezone.utc) - timedelta(minutes=10),
             "later": datetime.now(timezone.utc) + timedelta(hours=1)})
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=6)
    assert "_(Late: it fell due at" in reminder["text"]
    eventually(lambda: database.scalar("SELECT late FROM reminder WHERE outcome = 'posted'") in (True, 1))
    assert database.scalar("SELECT count(*) FROM reminder") == 1
