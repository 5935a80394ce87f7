"""The war room end to end: signed Slack requests to the running bot, Slack calls to the stand-in.

Each test runs on SQLite and on PostgreSQL (see conftest.py).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from commands.router import SlashRequest, delivery_key
from tests.conftest import clean_slack, eventually, start_bot

ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"
GENERAL, INCIDENTS = "C0GENERAL", "C0INCIDENTS"
TITLE = "Support bot quoting a refund policy we don't have"
ROOM = "inc-1-support-bot-quoting-a-refund"


def said(result) -> str:
    """What the ack showed the person: Bolt answers plain text, or JSON when there are blocks."""
    return result.body if isinstance(result.body, str) else result.body.get("text", "")


def texts(standin, channel) -> list[str]:
    return [m["text"] for m in standin.messages(channel)]


def replies_to(standin, channel, ts) -> list[dict]:
    return [m for m in standin.messages(channel) if m.get("thread_ts") == ts and m["ts"] != ts]


def all_block_text(message) -> str:
    parts = [message.get("text") or ""]
    for block in message.get("blocks") or []:
        parts.append((block.get("text") or {}).get("text", ""))
    return "\n".join(parts)


def declare(slack, standin, text=f"sev1 {TITLE}", user=ALICE, channel=GENERAL) -> dict:
    result = slack.command(user, channel, f"declare {text}")
    assert result.status == 200, result.body
    room = eventually(lambda: next((c for c in standin.channels() if c["name"].startswith("inc-")
                                    and standin.pins(c["id"])), None))
    eventually(lambda: standin.calls("conversations.setTopic"))
    return room


def count_rows(database) -> dict:
    return {table: database.scalar(f"SELECT count(*) FROM {table}")
            for table in ("incident", "timeline_entry", "role_assignment")}


def test_declare_opens_pins_and_announces_the_war_room(slack, standin, database):
    result = slack.command(ALICE, GENERAL, f"declare sev1 {TITLE}")

    assert result.status == 200
    assert "INC-1" in said(result) and ROOM in said(result)
    # Acknowledged means recorded: the row is there as soon as the ack is.
    assert database.scalar("SELECT title FROM incident WHERE number = 1") == TITLE

    room = eventually(lambda: standin.channel(ROOM))
    eventually(lambda: ALICE in standin.channel(ROOM)["members"])
    card = eventually(lambda: standin.pins(ROOM))[0]
    card_message = standin.message(ROOM, card["ts"])
    card_text = all_block_text(card_message)
    for expected in ("INC-1", TITLE.replace("'", "'"), "SEV1", "investigating", "Incident commander", "open"):
        assert expected in card_text
    eventually(lambda: standin.channel(ROOM)["topic"]["value"])
    assert standin.channel(ROOM)["topic"]["value"].startswith("SEV1 · investigating · INC-1")
    announcement = eventually(lambda: standin.messages(INCIDENTS))[-1]
    assert f"<#{room['id']}>" in announcement["text"] and "INC-1" in announcement["text"]

    row = database.rows("SELECT channel_id, channel_name, card_ts, severity, status FROM incident")[0]
    assert dict(row) == {"channel_id": room["id"], "channel_name": ROOM, "card_ts": card_message["ts"],
                         "severity": 1, "status": "investigating"}
    assert database.scalar("SELECT kind FROM timeline_entry") == "declared"


def test_declare_without_text_opens_a_form_that_declares(slack, standin, database):
    result = slack.command(BOB, GENERAL, "declare")
    assert result.status == 200
    view = eventually(lambda: standin.views())[0]
    assert view["view"]["callback_id"] == "declare_incident"

    submitted = slack.submit_view(BOB, view["id"], {
        "title": "Retrieval leaks another customer's invoices", "severity": "2",
        "summary": "Two tickets so far; both from tenant 881"})
    assert submitted.status == 200 and not submitted.body  # an empty ack closes the form

    room = eventually(lambda: standin.channel("inc-1-retrieval-leaks-another"))
    eventually(lambda: BOB in standin.channel(room["id"])["members"])
    eventually(lambda: standin.pins(room["id"]))
    incident = database.rows("SELECT severity, summary, declared_by FROM incident")[0]
    assert dict(incident) == {"severity": 2, "summary": "Two tickets so far; both from tenant 881",
                              "declared_by": BOB}


def test_second_incident_gets_its_own_number_and_a_free_channel_name(slack, standin, database):
    standin.create_channel("inc-1-model-drift", [DAVE])  # someone took the name by hand
    slack.command(ALICE, GENERAL, "declare sev3 Model drift")
    eventually(lambda: standin.channel("inc-1-model-drift-2"))
    slack.command(ALICE, GENERAL, "declare sev3 Model drift")
    eventually(lambda: standin.channel("inc-2-model-drift"))
    expected = [{"number": 1, "channel_name": "inc-1-model-drift-2"},
                {"number": 2, "channel_name": "inc-2-model-drift"}]
    eventually(lambda: database.rows("SELECT number, channel_name FROM incident ORDER BY number") == expected)


def test_roles_are_handed_out_handed_over_and_listed(slack, standin, database):
    room = declare(slack, standin)
    channel = room["id"]

    assert slack.command(ALICE, channel, "role ic <@U0BOB|bob>").status == 200
    eventually(lambda: BOB in standin.channel(channel)["members"])
    told = eventually(lambda: [t for t in texts(standin, channel) if "is now *Incident commander*" in t])
    assert "<@U0BOB>" in told[0] and "assigned by <@U0ALICE>" in told[0]
    card = eventually(lambda: [c for c in standin.calls("chat.update") if "U0BOB" in str(c["args"])])
    assert card

    slack.command(BOB, channel, "role ic <@U0CAROL|carol>")
    eventually(lambda: [t for t in texts(standin, channel) if "taking over from <@U0BOB>" in t])
    slack.command(BOB, channel, "role scribe <@U0DAVE>")
    eventually(lambda: database.scalar("SELECT count(*) FROM role_assignment") == 2)

    listing = said(slack.command(DAVE, channel, "roles"))
    assert "Incident commander (`ic`): <@U0CAROL>" in listing
    assert "Scribe (`scribe`): <@U0DAVE>" in listing
    assert "Open: comms, tech, legal, privacy" in listing
    history = database.rows("SELECT old_value, new_value, actor_id FROM timeline_entry WHERE kind = 'role' ORDER BY id")
    assert [tuple(r.values()) for r in history] == [
        (None, BOB, ALICE), (BOB, CAROL, BOB), (None, DAVE, BOB)]


def test_decisions_notes_severity_status_and_the_timeline(slack, standin, database):
    channel = declare(slack, standin)["id"]
    steps = [
        "decision Roll back prompt template v14 to v13",
        "note Refund policy text appears in 12 transcripts since 09:10",
        "sev 2 Only the EU support bot is affected",
        "status contained Rolled back; no new bad answers in 15 minutes",
    ]
    for step in steps:
        result = slack.command(ALICE, channel, step)
        assert result.status == 200 and result.body == ""  # the room gets the message, not an echo

    eventually(lambda: len(standin.messages(channel)) >= 6)  # card, sev1 rule, and the four steps
    posted = "\n".join(texts(standin, channel))
    assert "*Decision* by <@U0ALICE>" in posted and "Roll back prompt template v14 to v13" in posted
    assert "Severity changed *SEV1 → SEV2*" in posted and "Status changed *investigating → contained*" in posted
    eventually(lambda: standin.channel(channel)["topic"]["value"].startswith("SEV2 · contained"))

    rows = database.rows("SELECT kind, old_value, new_value, text FROM timeline_entry ORDER BY id")
    assert [(r["kind"], r["old_value"], r["new_value"]) for r in rows] == [
        ("declared", None, "sev1"), ("rule", None, "fired"),  # the playbook's sev1 rule
        ("decision", None, None), ("note", None, None),
        ("severity", "sev1", "sev2"), ("status", "investigating", "contained")]
    assert rows[4]["text"] == "Only the EU support bot is affected"

    timeline = said(slack.command(BOB, channel, "timeline"))
    lines = [line for line in timeline.splitlines() if line.startswith("`")]
    assert len(lines) == 6
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert all(line.startswith(f"`{today} ") and " UTC`" in line for line in lines)
    assert "rule: Rule fired: sev1 needs a full command team" in lines[1]
    assert "decided:* Roll back prompt template v14 to v13" in lines[2]
    assert "changed status investigating → contained" in lines[5]


def test_a_pinned_message_joins_the_timeline_once(slack, standin, database):
    channel = declare(slack, standin)["id"]
    slack.command(ALICE, channel, "role tech <@U0CAROL>")
    eventually(lambda: CAROL in standin.channel(channel)["members"])
    ts = slack.post_message(CAROL, channel, "Trace 7f3a: bot cites \"90-day refund\" from a stale index doc")
    time.sleep(0.05)

    first = slack.react(BOB, channel, ts)
    assert first.status == 200
    entry = eventually(lambda: database.rows("SELECT * FROM timeline_entry WHERE kind = 'pinned'"))
    assert len(entry) == 1
    assert entry[0]["actor_id"] == CAROL and entry[0]["new_value"] == BOB
    assert entry[0]["text"] == "Trace 7f3a: bot cites \"90-day refund\" from a stale index doc"
    occurred = entry[0]["occurred_at"]
    occurred = occurred if isinstance(occurred, datetime) else datetime.fromisoformat(str(occurred))
    assert abs(occurred.replace(tzinfo=timezone.utc).timestamp() - float(ts)) < 0.001
    confirmation = eventually(lambda: replies_to(standin, channel, ts))
    assert "Added to the INC-1 timeline" in confirmation[0]["text"]

    slack.react(BOB, channel, ts, event_id=first.event_id, retry_num=1)  # Slack's retry
    slack.unreact(BOB, channel, ts)
    slack.react(BOB, channel, ts)  # re-added
    slack.react(ALICE, channel, ts)  # a second person pins it too
    time.sleep(0.5)
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'pinned'") == 1
    assert len(replies_to(standin, channel, ts)) == 1


def test_other_reactions_and_other_channels_are_ignored(slack, standin, database):
    channel = declare(slack, standin)["id"]
    ts = slack.post_message(ALICE, channel, "looking")
    assert slack.react(BOB, channel, ts, reaction="eyes").status == 200
    general_ts = slack.post_message(ALICE, GENERAL, "lunch?")
    assert slack.react(BOB, GENERAL, general_ts).status == 200
    time.sleep(0.5)
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'pinned'") == 0


@pytest.mark.parametrize("text, says", [
    ("explode now", "`explode` is not an /incident command"),
    ("declare", None),  # opens a form: covered elsewhere; here only as a control
    ("declare sev1", "The title is missing"),
    ("declare sev7 Model on fire", "`sev7` is not a severity"),
    ("declare sev2 " + "x" * 151, "keep it to 150"),
])
def test_bad_declarations_are_refused_and_write_nothing(slack, standin, database, text, says):
    result = slack.command(ALICE, GENERAL, text)
    assert result.status == 200
    if says is None:
        return
    assert says in said(result) and "Usage:" in said(result) or "help" in said(result)
    assert count_rows(database) == {"incident": 0, "timeline_entry": 0, "role_assignment": 0}
    time.sleep(0.2)
    assert not standin.calls("conversations.create")


@pytest.mark.parametrize("text, says", [
    ("role boss <@U0BOB>", "`boss` is not a role"),
    ("role ic bob", "`bob` is not a mention"),
    ("role ic", "Name one role and one person"),
    ("decision", "The decision is missing"),
    ("note " + "<" * 700, "too long"),
    ("sev 9", "`9` is not a severity"),
    ("status fixed", "`fixed` is not a status"),
    ("timeline please", "takes no arguments"),
    ("sev 1", "already SEV1"),
])
def test_bad_input_in_a_war_room_is_refused_and_writes_nothing(slack, standin, database, text, says):
    channel = declare(slack, standin)["id"]
    before = count_rows(database)
    result = slack.command(ALICE, channel, text.replace("<", "&lt;") if text.startswith("note") else text)
    assert says in said(result)
    assert "Usage:" in said(result) or "already" in said(result)
    assert count_rows(database) == before


def test_war_room_commands_elsewhere_name_the_fix(slack, standin, database):
    for text in ("decision roll back", "role ic <@U0BOB>", "sev 1", "status resolved", "timeline", "roles", "note x"):
        body = said(slack.command(ALICE, GENERAL, text))
        assert "isn't an incident channel" in body and "#inc-" in body
    assert count_rows(database)["timeline_entry"] == 0


def test_typed_text_pings_no_one(slack, standin, database):
    # `@channel` picked in the composer arrives as <!channel>; a typed `<` arrives as &lt;.
    hostile = "<!channel> <!here|here> &lt;@U0BOB&gt; <http://evil.test|click here> <@U0DAVE|dave>"
    channel = declare(slack, standin, text=f"sev2 Leak {hostile}")["id"]
    slack.command(ALICE, channel, f"decision Ignore {hostile}")
    slack.command(ALICE, channel, f"status identified {hostile}")
    slack.command(ALICE, channel, f"evidence trace {hostile}")
    slack.command(ALICE, channel, f"contain {hostile} verify: {hostile}")
    slack.command(ALICE, channel, f"action <@U0CAROL> 2099-01-01 {hostile} verify: {hostile}")
    eventually(lambda: len(standin.messages(channel)) >= 6)
    eventually(lambda: standin.messages(INCIDENTS))

    for where in (channel, INCIDENTS):
        for message in standin.messages(where):
            if message.get("user") in (ALICE, BOB, CAROL, DAVE):
                continue
            # The bot mentions only whom it means to: the actor, and the action's owner it was given.
            assert set(message["mentions"]) <= {"<@U0ALICE>", "<@U0CAROL>", f"<#{channel}>"}, message
    title = database.scalar("SELECT title FROM incident")
    assert title == "Leak <!channel> <!here|here> <@U0BOB> click here (http://evil.test) @dave"


def test_slack_failure_after_the_ack_is_reported_not_swallowed(slack, standin, database):
    standin.fail_next("conversations.create", error="restricted_action")
    result = slack.command(ALICE, GENERAL, f"declare sev1 {TITLE}")
    assert "INC-1" in said(result)
    report = eventually(lambda: [r for r in standin.responses() if "restricted_action" in r["payload"].get("text", "")])
    assert "INC-1 is recorded, but creating the channel failed" in report[0]["payload"]["text"]
    assert report[0]["user"] == ALICE and report[0]["payload"].get("response_type", "ephemeral") == "ephemeral"
    assert database.scalar("SELECT count(*) FROM incident") == 1


def test_rate_limits_are_waited_out(slack, standin, database):
    channel = declare(slack, standin)["id"]
    standin.fail_next("chat.postMessage", status=429, retry_after=1)
    slack.command(ALICE, channel, "decision Keep the feature flag off")
    eventually(lambda: any("Keep the feature flag off" in t for t in texts(standin, channel)), timeout=8)
    statuses = [c["http_status"] for c in standin.calls("chat.postMessage")]
    assert 429 in statuses


def test_forged_stale_and_unsigned_requests_are_refused(slack, standin, database):
    body = "command=%2Fincident&text=declare+sev1+forged&user_id=U0ALICE&channel_id=C0GENERAL"
    assert slack.send_raw(body, "application/x-www-form-urlencoded", signature="v0=" + "0" * 64).status == 401
    stale = str(int(time.time()) - 60 * 10)
    assert slack.send_raw(body, "application/x-www-form-urlencoded", timestamp=stale).status == 401
    assert database.scalar("SELECT count(*) FROM incident") == 0


def test_health_check_reports_the_database(bot):
    import requests

    response = requests.get(f"{bot.url}/healthz", timeout=5)
    assert response.status_code == 200 and response.json() == {"ok": True, "database": "up"}


def test_the_form_refuses_a_blank_title_and_writes_nothing(slack, standin, database):
    slack.command(BOB, GENERAL, "declare")
    view = eventually(lambda: standin.views())[0]
    refused = slack.submit_view(BOB, view["id"], {"title": "   ", "severity": "1"})
    assert refused.body["response_action"] == "errors"
    assert "The title is missing" in refused.body["errors"]["title"]
    assert count_rows(database)["incident"] == 0
    assert not standin.view(view["id"])["closed"]  # the person can correct it in place


def test_a_command_delivered_twice_is_carried_out_once(slack, standin, database):
    channel = declare(slack, standin)["id"]
    first = slack.command(ALICE, channel, "decision Roll back prompt template v14 to v13")
    again = slack.command(ALICE, channel, "decision Roll back prompt template v14 to v13",
                          trigger_id=first.trigger_id)
    assert first.status == again.status == 200
    assert "carried out once" in said(again)
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'decision'") == 1
    # A new invocation (a new trigger) with the same text is a new decision, as the person meant.
    slack.command(ALICE, channel, "decision Roll back prompt template v14 to v13")
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'decision'") == 2


def test_notes_in_a_room_the_bot_knows_are_claimed_and_written_together(slack, standin, database):
    """Once the bot knows a room's incident, a note or decision and the claim of its delivery are
    written together, on their own connection (bot.incidents.log_in_known_room_at_once). A repeat is
    still refused, a note holding a secret still has the value remembered, and a room that has since
    become another incident's still gets the note, in that incident, with nothing claimed before."""
    channel = declare(slack, standin)["id"]

    def claimed_and_written_at(result, text_like: str) -> tuple:
        key = delivery_key(SlashRequest(ALICE, channel, "note", "", trigger_id=result.trigger_id))
        return (database.scalar("SELECT received_at FROM processed_event WHERE event_id = :key", key=key),
                database.scalar("SELECT recorded_at FROM timeline_entry WHERE text LIKE :text", text=text_like))

    # A secret to remember takes the ordinary path (a session's transaction): claimed, then written.
    # The room is known to the bot from then on.
    secret = "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345"
    with_secret = slack.command(ALICE, channel, f"decision Rotate {secret} now")
    assert said(with_secret) == ""
    stored = database.scalar("SELECT text FROM timeline_entry WHERE kind = 'decision'")
    assert stored.startswith("Rotate [redacted api_key ") and secret not in stored
    assert database.scalar("SELECT count(*) FROM redacted_value WHERE kind = 'api_key'") == 1
    claimed, written = claimed_and_written_at(with_secret, "Rotate %")
    assert claimed < written

    first = slack.command(ALICE, channel, "note Retrieval returns tenant 881's invoices to tenant 412")
    again = slack.command(ALICE, channel, "note Retrieval returns tenant 881's invoices to tenant 412",
                          trigger_id=first.trigger_id)
    assert said(first) == "" and "carried out once" in said(again)
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text LIKE 'Retrieval returns%'") == 1
    # Written together, the claim and the entry carry one timestamp.
    claimed, written = claimed_and_written_at(first, "Retrieval returns%")
    assert claimed == written
    # Written past SQLAlchemy (bot.db.DriverStatement), the entry is stored as one written through it:
    # times in the same form (text on SQLite). (Not the owed-post flag: the ticker clears it once posted.)
    through_it, past_it = database.rows(
        "SELECT occurred_at, recorded_at, source FROM timeline_entry"
        " WHERE text LIKE 'Rotate %' OR text LIKE 'Retrieval returns%' ORDER BY id")
    shape = lambda row: [re.sub("[0-9]", "9", str(value)) for value in row.values()]  # noqa: E731
    assert shape(past_it) == shape(through_it), (past_it, through_it)

    # The room becomes another incident's (as after a restore): the bot's memory of it is wrong now.
    declare_second = slack.command(ALICE, GENERAL, "declare sev2 Ranking drift after the data refresh")
    assert declare_second.status == 200
    # Its own room attached first, so the bot's after-ack work does not undo the move below.
    eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 2"))
    second = database.scalar("SELECT id FROM incident WHERE number = 2")
    with database.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE incident SET channel_id = NULL WHERE number = 1")
        connection.exec_driver_sql(f"UPDATE incident SET channel_id = '{channel}' WHERE number = 2")
    moved = slack.command(ALICE, channel, "note Filed against the incident the room belongs to now")
    assert said(moved) == ""
    assert database.scalar("SELECT incident_id FROM timeline_entry WHERE text LIKE 'Filed against%'") == second


def test_concurrent_duplicates_of_one_declaration_declare_once(slack, standin, database):
    from concurrent.futures import ThreadPoolExecutor

    trigger = standin.issue_trigger(ALICE)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: slack.command(ALICE, GENERAL, "declare sev3 Drift in ranking",
                                                        trigger_id=trigger), range(4)))
    assert all(result.status == 200 for result in results)
    assert sum("carried out once" in said(result) for result in results) == 3
    assert database.scalar("SELECT count(*) FROM incident") == 1
    eventually(lambda: standin.channel("inc-1-drift-in-ranking"))


def test_a_command_waiting_on_a_stalled_transaction_is_answered_in_time_and_writes_nothing(slack, standin, database):
    """Another transaction (a replica stalled mid-command) holds the incident's row lock: a change
    waits at most 2 s for it, then is told the incident is busy, within Slack's 3 s."""
    from sqlalchemy import text

    from commands.router import DATABASE_BUSY

    if database.backend != "postgresql":
        pytest.skip("SQLite serialises writers with its busy timeout; lock_timeout is PostgreSQL's")
    channel = declare(slack, standin)["id"]
    with database.engine.connect() as stalled:
        stalled.begin()
        stalled.execute(text("SELECT id FROM incident WHERE channel_id = :c FOR UPDATE"), {"c": channel})
        started = time.monotonic()
        result = slack.command(ALICE, channel, "sev 2 waiting on a lock")
        waited = time.monotonic() - started
        stalled.rollback()
    assert result.status == 200 and result.body == DATABASE_BUSY and waited < 3
    assert database.scalar("SELECT severity FROM incident") == 1
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'severity'") == 0


def test_a_post_that_keeps_failing_or_times_out_is_reported_to_the_person(database, standin, tmp_path):
    """Slack answers 500 to every attempt, or answers too slowly: the client retries, then gives up,
    and the person is told their entry is recorded but did not reach the room. Never dropped silently."""
    bot = start_bot(database, standin, tmp_path, name="slow-slack-bot", SLACK_API_TIMEOUT="0.5")
    try:
        with clean_slack(bot, database, standin) as slack:
            channel = declare(slack, standin)["id"]
            standin.wait_until_quiet()  # the room's opening posts are done
            standin.fail_next("chat.postMessage", status=500, times=3)  # the first try and both retries
            assert slack.command(ALICE, channel, "decision Freeze prompt and config changes").status == 200
            told = eventually(lambda: [r["payload"]["text"] for r in standin.responses()
                                       if "posting to the war room failed" in r["payload"].get("text", "")], timeout=10)
            assert "The decision is in the timeline, but posting to the war room failed: fatal_error" in told[0]
            assert [c["http_status"] for c in standin.calls("chat.postMessage")][-3:] == [500, 500, 500]

            standin.delay("chat.postMessage", 2.0)  # longer than the client's 0.5 s, on every attempt
            assert slack.command(ALICE, channel, "note Slack is slow today").status == 200
            told = eventually(lambda: [r["payload"]["text"] for r in standin.responses()
                                       if "posting to the war room failed" in r["payload"].get("text", "")][1:],
                              timeout=15)
            assert "The note is in the timeline, but posting to the war room failed" in told[0]
            standin.delay("chat.postMessage", 0)
            kinds = database.rows("SELECT kind, text FROM timeline_entry WHERE kind IN ('decision', 'note') ORDER BY id")
            assert [row["kind"] for row in kinds] == ["decision", "note"]
    finally:
        bot.stop()


@pytest.mark.parametrize("error, told", [
    (psycopg.errors.DeadlockDetected, "DATABASE_BUSY"),
    (psycopg.errors.SerializationFailure, "DATABASE_BUSY"),
    (psycopg.errors.LockNotAvailable, "DATABASE_BUSY"),
    (psycopg.errors.AdminShutdown, "DATABASE_DOWN"),
])
def test_what_a_person_is_told_names_a_collision_as_busy_not_as_a_database_down(error, told):
    """PostgreSQL undoing a transaction that collided with another (a deadlock, a serialization
    conflict) is "busy, try again", not "the database is not answering"."""
    from commands import router

    assert router.database_failure(OperationalError("UPDATE reminder …", {}, error())) == getattr(router, told)
