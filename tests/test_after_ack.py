"""Slack work owed after an ack survives the process that owed it (bot.after_ack).

A note, a decision or a declaration is acknowledged once it is committed; its message or its war
room comes after the ack. Here the process is killed in between, on SQLite and on PostgreSQL, with
the stand-in holding Slack's side where the test needs it: the next process opens the room or
posts the message, once, and a message the dead process did post is found, not posted again.
"""

from __future__ import annotations

import threading
import time

import pytest

from bot.slack_standin.server import BOT_USER_ID
from bot.slack_standin.simulator import SlackSimulator
from tests.conftest import SIGNING_SECRET, entry_keys_of, eventually, start_bot

ALICE, BOB = "U0ALICE", "U0BOB"
GENERAL = "C0GENERAL"
# The successor takes over what is owed one second after the command (2 minutes by default).
FAST_TAKEOVER = dict(WARROOM_TICK="1s", WARROOM_REPOST_AFTER="1s")


def said(result) -> str:
    return result.body if isinstance(result.body, str) else (result.body or {}).get("text", "")


def posts_of(standin, channel: str, entry_id: int) -> list[dict]:
    return [m for m in standin.messages(channel) if f"entry:{entry_id}" in entry_keys_of(m)]


@pytest.fixture
def database(own_database):
    return own_database


@pytest.fixture
def processes(database, standin, tmp_path):
    """Start `warroom serve` processes on the test's database; all stopped at the end."""
    started = []

    def start(name: str, **env):
        process = start_bot(database, standin, tmp_path, name=name, **env)
        started.append(process)
        return process, SlackSimulator(standin, f"{process.url}/slack/events", SIGNING_SECRET)

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
        process.stop()


def declare_room(slack, database) -> str:
    declared = slack.command(ALICE, GENERAL, "declare sev2 Support bot quoting a refund policy we don't have")
    assert declared.status == 200 and "INC-1" in said(declared), declared.body
    return eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"))


def kill(process) -> None:
    process.process.kill()
    process.process.wait(5)


def typed_then_died_before_posting(database, standin, processes, *commands: str, who: str = BOB,
                                   before: tuple[str, ...] = (), **env) -> str:
    """The war room of INC-1, where `commands` (after `before`) were acknowledged by a process
    killed while Slack failed every post: between retries (0.5 s, then 1 s), having posted nothing."""
    victim, slack = processes("victim", WARROOM_TICK="1s", **env)
    room = declare_room(slack, database)
    for command in before:
        assert slack.command(ALICE, room, command).status == 200
    standin.wait_until_quiet()
    standin.fail_next("chat.postMessage", status=500, times=10_000)
    for command in commands:
        acknowledged = slack.command(who, room, command)
        assert acknowledged.status == 200 and said(acknowledged) == "", acknowledged.body  # committed
    time.sleep(0.2)
    kill(victim)
    standin.clear_faults()
    return room


@pytest.mark.parametrize("command, kind, posted", [
    ("decision Roll back prompt template v14 to v13", "decision", "Roll back prompt template v14 to v13"),
    ("sev 1 refunds promised to every customer who asks", "severity", "Severity changed *SEV2 → SEV1*"),
])
def test_a_posted_entry_is_marked_posted_and_tagged_with_its_key(database, standin, processes, command, kind, posted):
    _, slack = processes("bot", WARROOM_TICK="1s")
    room = declare_room(slack, database)
    assert slack.command(BOB, room, command).status == 200
    entry_id = database.scalar("SELECT id FROM timeline_entry WHERE kind = :kind", kind=kind)
    [message] = eventually(lambda: posts_of(standin, room, entry_id))
    assert posted in message["text"] and "Posted late" not in message["text"]
    # The process marks what it posted, a batch a second: nothing is left for another to look up.
    eventually(lambda: database.scalar(
        "SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0, timeout=5)


# Every command whose room message a crash would leave owed (bot.after_ack), and the entry it writes.
OWED = [("note seen in 12 transcripts", "note"), ("decision Roll back prompt template v14 to v13", "decision"),
        ("sev 1 refunds promised to every customer who asks", "severity"), ("status identified v14", "status"),
        ("role scribe <@U0CAROL|carol>", "role"), ("cadence 15m", "cadence"), ("snooze 45m", "snooze"),
        ("update Rolled back to v13", "update"), ("evidence model gpt-4o-2024-08-06", "evidence"),
        ("contain Disable the refund tool", "containment"), ("contain verified 1 no refund answers", "containment"),
        ("classify data leakage", "classified"), ("flag affects-people", "flag"),
        ("action <@U0CAROL|carol> 2099-01-31 Add a refund eval", "action"), ("action done 1 merged", "action"),
        ("impact harmed Applicants were refused loans", "impact"), ("notify other_customers yes", "notification"),
        ("notify decide not only our own tenant; legal agrees", "notification"),
        ("mark detected 2026-01-05 09:10", "mark")]


def test_every_owed_message_posted_live_is_tagged_and_marked_posted(database, standin, processes):
    """A command that owes its room a message must tag it with its entry's key (or the takeover,
    not finding it, posts it again) and say it posted it (or the takeover looks for it in the room
    a couple of minutes later): each does both, well before any takeover (an hour away here)."""
    _, slack = processes("bot", WARROOM_TICK="1s")
    room = declare_room(slack, database)
    for command, _ in OWED:
        acknowledged = slack.command(BOB, room, command)
        assert acknowledged.status == 200 and said(acknowledged) == "", (command, acknowledged.body)
    entries = database.rows("SELECT id, kind FROM timeline_entry WHERE awaiting_room_post OR kind IN ("
                            + ", ".join(f"'{kind}'" for _, kind in OWED) + ") ORDER BY id")
    assert [e["kind"] for e in entries] == [kind for _, kind in OWED]
    eventually(lambda: all(posts_of(standin, room, e["id"]) for e in entries), timeout=10)
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    assert [(e["kind"], len(posts_of(standin, room, e["id"]))) for e in entries] == [(e["kind"], 1) for e in entries]


def test_a_note_whose_process_died_before_posting_it_is_posted_once_by_the_next(database, standin, processes):
    room = typed_then_died_before_posting(database, standin, processes,
                                          "note Refund answers seen in 12 transcripts since 09:10")
    [entry] = database.rows("SELECT id, awaiting_room_post FROM timeline_entry WHERE kind = 'note'")
    assert entry["awaiting_room_post"] and posts_of(standin, room, entry["id"]) == []

    successor, _ = processes("successor", **FAST_TAKEOVER)
    [message] = eventually(lambda: posts_of(standin, room, entry["id"]), timeout=10)
    assert "Refund answers seen in 12 transcripts since 09:10" in message["text"]
    assert "Posted late" in message["text"]
    [reminder] = eventually(lambda: database.rows(
        "SELECT claimed_by, outcome, slack_ts FROM reminder WHERE kind = 'room_post' AND outcome IS NOT NULL"))
    assert reminder["outcome"] == "posted" and reminder["slack_ts"] == message["ts"]
    assert f":{successor.process.pid}:" in reminder["claimed_by"]
    assert database.scalar("SELECT awaiting_room_post FROM timeline_entry WHERE id = :id", id=entry["id"]) in (
        False, 0)
    time.sleep(2.5)  # two more ticks: still once
    assert len(posts_of(standin, room, entry["id"])) == 1
    # The timeline has the note once, and nothing about the late post.
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'note'") == 1


def test_a_status_and_a_role_change_whose_process_died_before_posting_them_are_posted_by_the_next(
        database, standin, processes):
    """Like a note, a status or role change owes the room its message: the victim dies before
    posting either, and the successor posts both, late and once, invites the new role holder and
    brings the pinned card and the topic up to date, as the live posts would have."""
    room = typed_then_died_before_posting(database, standin, processes,
                                          "status identified prompt template v14 is the cause",
                                          "role scribe <@U0CAROL|carol>", who=ALICE)
    entries = database.rows("SELECT id, kind, awaiting_room_post FROM timeline_entry "
                            "WHERE kind IN ('status', 'role') ORDER BY id")
    assert [(e["kind"], bool(e["awaiting_room_post"])) for e in entries] == [("status", True), ("role", True)]
    assert not [c for c in standin.calls("chat.update") if "U0CAROL" in str(c["args"])]

    processes("successor", **FAST_TAKEOVER)
    [status] = eventually(lambda: posts_of(standin, room, entries[0]["id"]), timeout=10)
    [role] = eventually(lambda: posts_of(standin, room, entries[1]["id"]), timeout=10)
    assert "Status changed *investigating → identified* by <@U0ALICE>" in status["text"]
    assert "prompt template v14 is the cause" in status["text"] and "Posted late" in status["text"]
    assert "<@U0CAROL> is now *Scribe* (assigned by <@U0ALICE>)" in role["text"] and "Posted late" in role["text"]
    # The invitation, the card and the topic follow each message: wait for them, don't race them.
    eventually(lambda: "U0CAROL" in standin.channel(room)["members"], timeout=5)
    eventually(lambda: [c for c in standin.calls("chat.update")
                        if "U0CAROL" in str(c["args"]) and "identified" in str(c["args"]).lower()], timeout=5)
    eventually(lambda: "identified" in standin.calls("conversations.setTopic")[-1]["args"]["topic"].lower(),
               timeout=5)
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    time.sleep(2.5)  # two more ticks: still once each
    assert [len(posts_of(standin, room, e["id"])) for e in entries] == [1, 1]


def test_a_note_posted_just_before_the_process_died_is_found_not_posted_again(database, standin, processes):
    victim, slack = processes("victim", WARROOM_TICK="1s")
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    # The post reaches Slack, which answers slowly: the victim dies before it hears back, and
    # before it could mark the entry posted.
    standin.delay("chat.postMessage", 1.5)
    noted = slack.command(BOB, room, "decision Disable retrieval from the shared-tenant index")
    assert noted.status == 200 and said(noted) == ""
    time.sleep(0.5)
    kill(victim)
    entry_id = database.scalar("SELECT id FROM timeline_entry WHERE kind = 'decision'")
    [posted] = eventually(lambda: posts_of(standin, room, entry_id), timeout=5)  # Slack finished the post
    standin.delay("chat.postMessage", 0)
    assert database.scalar("SELECT awaiting_room_post FROM timeline_entry WHERE id = :id", id=entry_id) in (True, 1)

    processes("successor", **FAST_TAKEOVER)
    [reminder] = eventually(lambda: database.rows(
        "SELECT outcome, slack_ts FROM reminder WHERE kind = 'room_post' AND outcome IS NOT NULL"), timeout=10)
    assert reminder == {"outcome": "posted", "slack_ts": posted["ts"]}  # found by its key
    assert database.scalar("SELECT awaiting_room_post FROM timeline_entry WHERE id = :id", id=entry_id) in (False, 0)
    assert posts_of(standin, room, entry_id) == [posted]
    assert any(call["args"].get("include_all_metadata") for call in standin.calls("conversations.history"))


def test_a_severity_change_posted_late_brings_the_playbook_rules_it_fired(database, standin, processes):
    """Going to SEV1 fires the playbook's "sev1 needs a full command team": the victim dies before
    telling the room either, and the successor's late message carries both, the roles still
    missing as they are now."""
    room = typed_then_died_before_posting(database, standin, processes,
                                          "sev 1 refunds promised to every customer who asks",
                                          before=("role comms <@U0CAROL|carol>",))
    assert not [m for m in standin.messages(room) if "Playbook rule" in m["text"]]
    entry_id = database.scalar("SELECT id FROM timeline_entry WHERE kind = 'severity'")

    processes("successor", **FAST_TAKEOVER)
    [late] = eventually(lambda: posts_of(standin, room, entry_id), timeout=10)
    assert "Severity changed *SEV2 → SEV1*" in late["text"] and "Posted late" in late["text"]
    assert "*Playbook rule: sev1 needs a full command team.*" in late["text"]
    assert "*Incident commander* (`/incident role ic @person`), *Tech lead*" in late["text"]
    assert "Comms lead" not in late["text"]  # held since before
    assert len([m for m in standin.messages(room) if "Playbook rule" in m["text"]]) == 1


@pytest.mark.parametrize("command, posted", [
    ("cadence 15m", ":repeat: <@U0BOB> set the update cadence to every 15m (was "),
    ("snooze 45m", ":zzz: <@U0BOB> snoozed the update reminder: next one due "),
])
def test_a_cadence_change_whose_process_died_before_posting_it_is_posted_by_the_next(
        database, standin, processes, command, posted):
    room = typed_then_died_before_posting(database, standin, processes, command)
    entry_id = database.scalar("SELECT id FROM timeline_entry WHERE kind IN ('cadence', 'snooze')")

    processes("successor", **FAST_TAKEOVER)
    [late] = eventually(lambda: posts_of(standin, room, entry_id), timeout=10)
    assert posted in late["text"] and "Posted late" in late["text"]
    due = database.scalar("SELECT next_update_due_at FROM incident")
    assert str(due)[:16].replace("T", " ") in late["text"]


@pytest.mark.parametrize("command, before, posted", [
    ("evidence model gpt-4o-2024-08-06", (),
     [":receipt: *Evidence* recorded by <@U0BOB>: Model and version: gpt-4o-2024-08-06"]),
    ("contain Disable the refund tool reversible verify: no refund answers in 30 minutes", (),
     [":shield: *Containment* by <@U0BOB>: C1: Disable the refund tool (reversible)"]),
    ("contain verified 1 zero refund answers since 11:40", ("contain Disable the refund tool",),
     [":white_check_mark: *Containment* C1 verified: zero refund answers since 11:40 (by <@U0BOB>)"]),
    ("classify data leakage", (),
     [":label: Classified *data / leakage* by <@U0BOB>.", "*leakage: contain first:* Disable the retrieval source",
      "*Playbook rule: leakage needs privacy.* Freeze prompt and config changes", "`/incident notify`"]),
    ("flag affects-people", (), [":triangular_flag_on_post: Flagged *affects-people*: "]),
    ("impact harmed Applicants in three postcodes were refused loans", (),
     [":clipboard: *Impact* (<@U0BOB>): Who may be harmed, and how? Applicants in three postcodes were refused"]),
    ("notify other_customers yes", (),
     [":scales: *Notification assessment* (<@U0BOB>): Did one customer's data reach another customer? yes",
      ":alarm_clock: Clock running: *Affected customers (contractual breach notice)*: decide by "]),
    ("mark detected 2026-01-05 09:10", (), [":round_pushpin: *Detected* marked at 2026-01-05T09:10:00Z by <@U0BOB>"]),
])
def test_evidence_containment_and_classification_whose_process_died_before_posting_are_posted_by_the_next(
        database, standin, processes, command, before, posted):
    """What the minimum-evidence and taxonomy commands tell the room is owed like a note: posted late
    and once by the successor, a classification with the playbook's guidance and the rules it fired,
    and the pinned card brought up to date."""
    room = typed_then_died_before_posting(database, standin, processes, command, before=before)
    kind = {"contain": "containment", "classify": "classified", "notify": "notification"}.get(
        command.split()[0], command.split()[0])
    entry_id = database.scalar("SELECT max(id) FROM timeline_entry WHERE kind = :kind", kind=kind)

    processes("successor", **FAST_TAKEOVER)
    [late] = eventually(lambda: posts_of(standin, room, entry_id), timeout=10)
    assert "Posted late" in late["text"]
    for part in posted:
        assert part in late["text"], late["text"]
    if kind == "classified":
        eventually(lambda: [c for c in standin.calls("chat.update") if "data / leakage" in str(c["args"])])
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)


ACTION = "action <@U0CAROL|carol> 2099-01-31 Add a refund-policy eval to the release gate verify: eval fails on v14"


def test_a_corrective_action_whose_process_died_before_posting_it_reaches_the_room_and_its_owner(
        database, standin, processes):
    """A new corrective action owes the room its message and its owner a DM: the successor sends
    both, late and once; a later change of the action (done, verified) is posted late as itself."""
    room = typed_then_died_before_posting(database, standin, processes, ACTION, "action done 1 merged in PR 812")
    recorded, done = [row["id"] for row in database.rows(
        "SELECT id FROM timeline_entry WHERE kind = 'action' ORDER BY id")]

    processes("successor", **FAST_TAKEOVER)
    [in_room] = eventually(lambda: posts_of(standin, room, recorded), timeout=10)
    assert ":hammer_and_wrench: *A1* corrective action by <@U0BOB>: Add a refund-policy eval" in in_room["text"]
    assert "Owner <@U0CAROL> · due 2099-01-31 · verify: eval fails on v14" in in_room["text"]
    assert "Posted late" in in_room["text"]
    [told] = eventually(lambda: [m for m in standin.dm_messages("U0CAROL") if f"entry:{recorded}" in entry_keys_of(m)])
    assert "You own corrective action *A1* from *INC-1*" in told["text"]
    [state] = eventually(lambda: posts_of(standin, room, done), timeout=10)
    assert ":ballot_box_with_check: A1 done: merged in PR 812 (by <@U0BOB>)" in state["text"]
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    time.sleep(2.5)  # two more ticks: still once each
    assert [len(posts_of(standin, room, recorded)), len(posts_of(standin, room, done))] == [1, 1]
    assert len([m for m in standin.dm_messages("U0CAROL") if f"entry:{recorded}" in entry_keys_of(m)]) == 1


STAKEHOLDERS = GENERAL  # the stand-in's seeded channel, the bot in it, doubles as the stakeholder channel
UPDATE = "update Rolled back to prompt template v13; refund answers correct since 10:42"


def update_then_die_before_posting_it(database, standin, processes, stakeholders: str) -> tuple[str, int]:
    """(room, entry id) of a stakeholder update acknowledged by a process killed while Slack failed
    every post, so it posted it nowhere."""
    room = typed_then_died_before_posting(database, standin, processes, UPDATE, WARROOM_UPDATES_CHANNEL=stakeholders)
    [entry] = database.rows("SELECT id, awaiting_room_post FROM timeline_entry WHERE kind = 'update'")
    assert entry["awaiting_room_post"]
    return room, entry["id"]


def test_a_status_update_whose_process_died_before_posting_it_reaches_the_room_and_the_stakeholders(
        database, standin, processes):
    """The update stakeholders read is owed like a note: the victim dies before posting it anywhere,
    and the successor posts it, late and once, in the war room and in the stakeholder channel."""
    room, entry_id = update_then_die_before_posting_it(database, standin, processes, STAKEHOLDERS)

    processes("successor", **FAST_TAKEOVER, WARROOM_UPDATES_CHANNEL=STAKEHOLDERS)
    [in_room] = eventually(lambda: posts_of(standin, room, entry_id), timeout=10)
    [for_stakeholders] = eventually(lambda: posts_of(standin, STAKEHOLDERS, entry_id), timeout=10)
    for message in (in_room, for_stakeholders):
        # Posted late, it shows the incident as it is now, and says so.
        assert "*INC-1 update* (now SEV2, investigating) from <@U0BOB>" in message["text"]
        assert "refund answers correct since 10:42" in message["text"] and "Posted late" in message["text"]
    assert f"<#{room}>" in for_stakeholders["text"]  # the way to the war room
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    time.sleep(2.5)  # two more ticks: still once each
    assert (len(posts_of(standin, room, entry_id)), len(posts_of(standin, STAKEHOLDERS, entry_id))) == (1, 1)


def test_an_update_posted_in_the_room_before_its_process_died_is_only_posted_to_the_stakeholders(
        database, standin, processes):
    """The victim posts the update in the war room and dies while its stakeholder post is with
    Slack (which then fails it): the successor finds the room's message by its key and posts only
    the stakeholders' one."""
    victim, slack = processes("victim", WARROOM_TICK="1s", WARROOM_UPDATES_CHANNEL=STAKEHOLDERS)
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    standin.delay_next("chat.postMessage", 0)  # the room's post goes through
    standin.delay_next("chat.postMessage", 1.5)  # the stakeholders' is held, then fails
    assert slack.command(BOB, room, UPDATE).status == 200
    entry_id = database.scalar("SELECT id FROM timeline_entry WHERE kind = 'update'")
    [in_room] = eventually(lambda: posts_of(standin, room, entry_id))
    eventually(lambda: standin.delays_owed("chat.postMessage") == 0)  # the stakeholders' post is with Slack
    standin.fail_next("chat.postMessage", status=500, times=10_000)
    kill(victim)
    eventually(lambda: [c for c in standin.calls("chat.postMessage")
                        if c["args"].get("channel") == STAKEHOLDERS and not c["ok"]], timeout=5)
    standin.clear_faults()
    assert posts_of(standin, STAKEHOLDERS, entry_id) == []

    processes("successor", **FAST_TAKEOVER, WARROOM_UPDATES_CHANNEL=STAKEHOLDERS)
    [for_stakeholders] = eventually(lambda: posts_of(standin, STAKEHOLDERS, entry_id), timeout=10)
    assert "Posted late" in for_stakeholders["text"] and "Posted late" not in in_room["text"]
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    assert posts_of(standin, room, entry_id) == [in_room]


def test_a_late_update_the_stakeholder_channel_will_not_take_is_told_to_the_war_room(database, standin, processes):
    """The stakeholder channel is private and the bot is not in it: the late update is posted in the
    war room, which is told it did not reach the stakeholders (as the person would have been live), once."""
    outside = standin.create_channel("exec-updates", [ALICE], is_private=True)["id"]
    room, entry_id = update_then_die_before_posting_it(database, standin, processes, outside)

    processes("successor", **FAST_TAKEOVER, WARROOM_UPDATES_CHANNEL=outside)
    [in_room] = eventually(lambda: posts_of(standin, room, entry_id), timeout=10)
    told = eventually(lambda: [m["text"] for m in standin.messages(room) if "could not be posted to" in m["text"]])
    assert told == [f":warning: *INC-1 update* is in the war room, but could not be posted to <#{outside}>: "
                    "Slack said `channel_not_found`. Post it there by hand, and check that the bot is still in that "
                    "channel."]
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    time.sleep(2.5)  # two more ticks: told once
    assert len([m for m in standin.messages(room) if "could not be posted to" in m["text"]]) == 1
    assert standin.messages(outside) == []


def test_an_update_a_public_channel_took_before_its_process_died_is_not_posted_there_twice(
        database, standin, processes):
    """The bot posts updates to a public stakeholder channel it is not in (chat:write.public) and
    cannot read it. The victim dies while its post there is with Slack, which takes it: the successor
    joins the channel to look, finds the update by its key, and does not post it again."""
    outside = standin.create_channel("exec-updates", [ALICE])["id"]
    victim, slack = processes("victim", WARROOM_TICK="1s", WARROOM_UPDATES_CHANNEL=outside)
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    standin.delay_next("chat.postMessage", 0)  # the room's post goes through
    standin.delay_next("chat.postMessage", 1.5)  # the stakeholders' is taken once the victim is gone
    assert slack.command(BOB, room, UPDATE).status == 200
    entry_id = database.scalar("SELECT id FROM timeline_entry WHERE kind = 'update'")
    [in_room] = eventually(lambda: posts_of(standin, room, entry_id))
    eventually(lambda: standin.delays_owed("chat.postMessage") == 0)  # the stakeholders' post is with Slack
    kill(victim)
    [for_stakeholders] = eventually(lambda: posts_of(standin, outside, entry_id), timeout=5)
    assert BOT_USER_ID not in standin.channel(outside)["members"]

    processes("successor", **FAST_TAKEOVER, WARROOM_UPDATES_CHANNEL=outside)
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=10)
    time.sleep(2.5)  # two more ticks: still once each
    assert posts_of(standin, outside, entry_id) == [for_stakeholders]
    assert posts_of(standin, room, entry_id) == [in_room]
    assert [c["ok"] for c in standin.calls("conversations.join") if c["args"].get("channel") == outside] == [True]
    assert BOT_USER_ID in standin.channel(outside)["members"]


def test_a_late_update_is_posted_to_a_public_channel_the_bot_may_not_join_to_look_in(database, standin, processes):
    """Slack refuses the join (the app was installed without channels:join): the successor cannot
    see whether the victim's post got there, and posts the update rather than risk it never arriving."""
    outside = standin.create_channel("exec-updates", [ALICE])["id"]
    room, entry_id = update_then_die_before_posting_it(database, standin, processes, outside)
    standin.fail_next("conversations.join", error="missing_scope", times=100)

    processes("successor", **FAST_TAKEOVER, WARROOM_UPDATES_CHANNEL=outside)
    [for_stakeholders] = eventually(lambda: posts_of(standin, outside, entry_id), timeout=10)
    assert "Posted late" in for_stakeholders["text"]
    assert [c["error"] for c in standin.calls("conversations.join")] == ["missing_scope"]
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    assert len(posts_of(standin, room, entry_id)) == 1


def declare_then_die_before_the_room(database, standin, processes) -> None:
    """INC-1 declared and acknowledged by a process killed while Slack fails to create its room."""
    victim, slack = processes("victim", WARROOM_TICK="1s")
    standin.fail_next("conversations.create", status=500, times=10_000)
    declared = slack.command(ALICE, GENERAL, "declare sev1 Retrieval leaks another customer's invoices")
    assert declared.status == 200 and "INC-1" in said(declared), declared.body
    time.sleep(0.2)
    kill(victim)
    standin.clear_faults()
    assert database.scalar("SELECT channel_id FROM incident WHERE number = 1") is None


def test_a_declared_incident_whose_process_died_before_opening_its_room_gets_it(database, standin, processes):
    declare_then_die_before_the_room(database, standin, processes)

    successor, _ = processes("successor", **FAST_TAKEOVER)
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"), timeout=10)
    card = eventually(lambda: database.scalar("SELECT card_ts FROM incident WHERE number = 1"))
    eventually(lambda: standin.calls("conversations.setTopic"))
    assert [c["args"]["timestamp"] for c in standin.calls("pins.add")] == [card]
    assert len([c for c in standin.calls("conversations.create") if c["ok"]]) == 1
    assert ALICE in standin.channel(room)["members"]
    [entry] = eventually(lambda: database.rows(
        "SELECT text, source FROM timeline_entry WHERE kind = 'room'"))
    assert entry == {"text": "War room opened late: the bot stopped before opening it", "source": "ticker"}
    # The room works: a note in it lands on INC-1.
    slack = SlackSimulator(standin, f"{successor.url}/slack/events", SIGNING_SECRET)
    assert slack.command(BOB, room, "note Invoices endpoint disabled").status == 200
    time.sleep(2.5)
    assert len([c for c in standin.calls("conversations.create") if c["ok"]]) == 1


@pytest.mark.parametrize("listing", ["answered", "refused"])
def test_a_room_slack_created_just_before_its_process_died_is_taken_not_opened_again_as_dash_2(
        database, standin, processes, listing):
    """The victim dies between Slack creating the room and recording it (here: its create fails,
    and the channel it would have made is made for it): the successor finds that channel, created by
    the bot and no incident's, and opens the war room in it instead of in `…-2` beside an empty one.
    If Slack will not list channels, the room is still opened, under `-2`."""
    standin.create_channel("general-chatter", [ALICE])  # someone else's channels are passed over
    declare_then_die_before_the_room(database, standin, processes)
    left = standin.create_channel("inc-1-retrieval-leaks-another", [BOT_USER_ID])

    if listing == "refused":
        standin.fail_next("conversations.list", error="missing_scope", times=10_000)

    processes("successor", **FAST_TAKEOVER)
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"), timeout=10)
    card = eventually(lambda: database.scalar("SELECT card_ts FROM incident WHERE number = 1"))
    # The card is recorded just before it is pinned: wait for the pin, don't race it.
    eventually(lambda: standin.calls("pins.add"))
    assert [c["args"]["timestamp"] for c in standin.calls("pins.add")] == [card]
    assert ALICE in standin.channel(room)["members"]
    rooms = [c["name"] for c in standin.channels() if c["name"].startswith("inc-")]
    if listing == "answered":
        assert (room, database.scalar("SELECT channel_name FROM incident")) == (left["id"], left["name"])
        assert [c for c in standin.calls("conversations.create") if c["ok"]] == [] and rooms == [left["name"]]
    else:
        assert database.scalar("SELECT channel_name FROM incident") == left["name"] + "-2"
        assert rooms == [left["name"], left["name"] + "-2"]


def test_a_room_slack_refuses_for_good_is_given_up_and_said_in_the_timeline(database, standin, processes):
    victim, slack = processes("victim", WARROOM_TICK="1s")
    standin.fail_next("conversations.create", error="restricted_action", times=10_000)
    declared = slack.command(ALICE, GENERAL, "declare sev3 Eval scores dropping after the prompt change")
    assert declared.status == 200
    # The person who declared is told at once; the process is alive, so no one else takes over yet.
    told = eventually(lambda: standin.responses())
    assert "restricted_action" in told[-1]["payload"]["text"]
    kill(victim)
    processes("successor", **FAST_TAKEOVER)
    [entry] = eventually(lambda: database.rows("SELECT text FROM timeline_entry WHERE kind = 'room'"), timeout=10)
    assert entry["text"] == "War room could not be opened: Slack said creating the channel failed: restricted_action"
    assert database.scalar("SELECT outcome FROM reminder WHERE kind = 'room_open'") == "failed"
    creates = len(standin.calls("conversations.create"))
    time.sleep(2.5)
    assert len(standin.calls("conversations.create")) == creates  # given up, not retried every tick


def test_acks_do_not_wait_for_slack_to_answer_the_posts(database, standin, processes):
    """The after-ack posts run on threads of their own: with Slack taking 2 s to answer each post,
    ten notes typed one after another are all acknowledged before the first post is answered (on
    Bolt's five listener threads the sixth ack would wait for a post), and every post still lands."""
    _, slack = processes("bot")
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    standin.delay("chat.postMessage", 2.0)
    for n in range(10):
        noted = slack.command(BOB, room, f"note step {n}")
        assert noted.status == 200 and said(noted) == "", noted.body
    assert entry_keys_in(standin, room) == []  # no post answered yet
    standin.delay("chat.postMessage", 0)
    ids = [row["id"] for row in database.rows("SELECT id FROM timeline_entry WHERE kind = 'note' ORDER BY id")]
    eventually(lambda: len(entry_keys_in(standin, room)) == 10, timeout=15)
    # The first post on its own, the nine typed while Slack held it joined in one message.
    assert entry_keys_in(standin, room) == [f"entry:{entry_id}" for entry_id in ids]


def entry_keys_in(standin, room: str) -> list[str]:
    """The keys of the timeline entries posted in a room, in the room's order."""
    return [key for m in standin.messages(room) for key in entry_keys_of(m)]


def entry_posts(standin, room: str) -> list[str]:
    """The texts of the notes and decisions posted in a room, in the room's order."""
    return [m["text"] for m in standin.messages(room) if entry_keys_of(m)]


def test_notes_typed_back_to_back_reach_the_room_in_the_order_typed(database, standin, processes):
    """Slack slow to answer the first of two posts (1 s): the second waits for it rather than
    overtaking it on another thread, so the room reads as the timeline does."""
    _, slack = processes("bot")
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    standin.delay_next("chat.postMessage", 1.0)
    for text in ("note first: rolled back prompt template v14", "note second: refund answers verified"):
        noted = slack.command(BOB, room, text)
        assert noted.status == 200 and said(noted) == "", noted.body
    posted = eventually(lambda: len(entry_posts(standin, room)) == 2 and entry_posts(standin, room), timeout=10)
    assert ["first" in posted[0], "second" in posted[1]] == [True, True], posted


def test_notes_typed_while_slack_is_busy_with_the_room_are_posted_together_in_order(database, standin, processes):
    """Slack takes 1 s over a room's post while three entries, a status change and a fourth entry
    are typed: the three entries reach the room as one message (Slack takes about one message a
    second a channel), then the status (on its own: not joinable), then the fourth; each tagged
    with its entry and marked posted."""
    _, slack = processes("bot", WARROOM_TICK="1s")
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    before = len(standin.messages(room))
    standin.delay_next("chat.postMessage", 1.0)
    typed = ["note held up: refund answers seen in 12 transcripts", "decision Roll back prompt template v14 to v13",
             "note rollback started by Bob", "note support macros paused", "status identified",
             "note rollback finished at 10:42"]
    for text in typed:
        assert slack.command(BOB, room, text).status == 200
    ids = [row["id"] for row in database.rows(
        "SELECT id FROM timeline_entry WHERE kind IN ('note', 'decision', 'status') ORDER BY id")]
    assert len(ids) == 6
    eventually(lambda: len(entry_keys_in(standin, room)) == 6, timeout=10)
    assert database.scalar("SELECT status FROM incident") == "identified"
    messages = standin.messages(room)[before:]
    assert [entry_keys_of(m) for m in messages] == [[f"entry:{i}"] for i in ids[:1]] + [
        [f"entry:{i}" for i in ids[1:4]]] + [[f"entry:{i}"] for i in ids[4:]], messages
    joined = messages[1]
    assert [block["type"] for block in joined["blocks"]] == ["section"] * 3
    in_order = [joined["text"].index(part) for part in ("Roll back prompt template v14 to v13",
                                                         "rollback started by Bob", "support macros paused")]
    assert in_order == sorted(in_order), joined["text"]
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)


def test_a_joined_post_slack_refuses_is_told_to_each_person_whose_entry_it_carried(database, standin, processes):
    """Slack refuses a room's next two posts (and takes 1 s over the first): the first note's author
    is told, and so is each of the three people whose notes, typed meanwhile, were joined into the
    second; none of it is posted behind their backs later."""
    _, slack = processes("bot", WARROOM_TICK="1s")
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    standin.delay_next("chat.postMessage", 1.0)
    standin.fail_next("chat.postMessage", error="restricted_action", times=2)
    assert slack.command(ALICE, room, "note first, posted on its own").status == 200
    time.sleep(0.3)  # its post is with Slack
    for person in (ALICE, BOB, "U0CAROL"):
        assert slack.command(person, room, f"note seen by {person}").status == 200
    failure = "The note is in the timeline, but posting to the war room failed: restricted_action"
    told = eventually(lambda: len(told_of(standin, failure)) == 4 and told_of(standin, failure), timeout=10)
    assert sorted(told) == sorted([ALICE, ALICE, BOB, "U0CAROL"])
    joined = standin.calls("chat.postMessage")[-1]["args"]
    assert joined["text"].count("seen by") == 3 and entry_keys_in(standin, room) == []
    # Refused, not owed: nothing is posted behind their backs later.
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0,
               timeout=5)
    time.sleep(1.5)
    assert entry_keys_in(standin, room) == []


def told_of(standin, failure: str) -> list[str]:
    """Who was told `failure` (on their command's response_url)."""
    return [r["user"] for r in standin.responses() if failure in r["payload"].get("text", "")]


def test_a_slow_post_in_one_room_does_not_hold_another_rooms(database, standin, processes):
    """Posts keep their order within a room only: Slack taking 3 s over one room's note does not
    delay a note in another incident's room."""
    _, slack = processes("bot")
    first_room = declare_room(slack, database)
    second = slack.command(ALICE, GENERAL, "declare sev3 Retrieval returns another tenant's invoices")
    assert second.status == 200 and "INC-2" in said(second), second.body
    second_room = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 2"))
    standin.wait_until_quiet()
    standin.delay_next("chat.postMessage", 3.0)
    assert slack.command(BOB, first_room, "note held up by Slack").status == 200
    time.sleep(0.3)  # its post is with Slack, waiting
    assert slack.command(BOB, second_room, "note in the other room").status == 200
    eventually(lambda: entry_posts(standin, second_room), timeout=2)
    assert entry_posts(standin, first_room) == []  # still with Slack
    eventually(lambda: entry_posts(standin, first_room), timeout=10)


def test_declarations_typed_in_one_channel_open_their_rooms_side_by_side(database, standin, processes):
    """Slack taking 3 s to create the first incident's channel does not hold the second's room: a
    declaration's work waits in a queue of its own, not behind the channel it was typed in."""
    _, slack = processes("bot")
    standin.delay_next("conversations.create", 3.0)
    first = slack.command(ALICE, GENERAL, "declare sev2 Support bot quoting a refund policy we don't have")
    assert first.status == 200 and "INC-1" in said(first), first.body
    time.sleep(0.3)  # its channel is being created
    second = slack.command(ALICE, GENERAL, "declare sev3 Retrieval returns another tenant's invoices")
    assert second.status == 200 and "INC-2" in said(second), second.body
    eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 2"), timeout=2)
    assert database.scalar("SELECT channel_id FROM incident WHERE number = 1") is None  # still with Slack
    eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"), timeout=10)


def test_a_post_whose_turn_comes_late_is_left_to_the_takeover_not_raced(database, standin, processes):
    """Slack takes 1.2 s over a room's first post while four more notes queue behind it, with the
    takeover at 2 s: their turn comes past half that, so the process leaves them to the takeover,
    which posts each once, late. Posting them then (the next post taking Slack 1.8 s) would race the
    takeover (it looks in the room, finds nothing yet, posts) and put them in the room twice."""
    _, slack = processes("bot", WARROOM_TICK="1s", WARROOM_REPOST_AFTER="2s")
    room = declare_room(slack, database)
    standin.wait_until_quiet()
    standin.delay_next("chat.postMessage", 1.2)
    standin.delay_next("chat.postMessage", 1.8)
    for n in range(5):
        assert slack.command(BOB, room, f"note step {n}").status == 200
    ids = [row["id"] for row in database.rows("SELECT id FROM timeline_entry WHERE kind = 'note' ORDER BY id")]
    assert len(ids) == 5
    eventually(lambda: all(posts_of(standin, room, entry_id) for entry_id in ids), timeout=15)
    time.sleep(3)  # past the takeover and a post of Slack's 1.8 s: anything posted twice would be by now
    posts = [posts_of(standin, room, entry_id) for entry_id in ids]
    assert [len(p) for p in posts] == [1] * 5, posts
    assert "Posted late" not in posts[0][0]["text"]
    assert all("Posted late" in p[0]["text"] for p in posts[1:])


def test_after_ack_work_keeps_each_rooms_order_lets_rooms_pass_and_outlives_a_failure():
    from commands.router import AfterAckWork

    work, done, lock, slack_answers = AfterAckWork(threads=4), [], threading.Lock(), threading.Event()

    def job(room: str, n: int):
        def run():
            if (room, n) == ("slow", 0):
                slack_answers.wait(10)
            if (room, n) == ("busy", 3):
                raise RuntimeError("telling the person failed too")  # logged; the room's later work runs
            with lock:
                done.append((room, n))
        return run

    work.submit("slow", job("slow", 0))
    work.submit("slow", job("slow", 1))
    for n in range(50):
        work.submit("busy", job("busy", n))
    eventually(lambda: sum(room == "busy" for room, _ in done) == 49)
    assert [n for room, n in done if room == "busy"] == [n for n in range(50) if n != 3]
    assert [n for room, n in done if room == "slow"] == []  # held behind its first, not by the other room
    slack_answers.set()
    eventually(lambda: [n for room, n in done if room == "slow"] == [0, 1])


def test_joinable_work_queued_back_to_back_is_done_in_one_go_up_to_a_message_worth():
    from commands.router import JOINED_AT_MOST, AfterAckWork

    work, runs, held = AfterAckWork(threads=2), [], threading.Event()
    work.submit("room", lambda: held.wait(10))  # Slack busy with the room's last post
    for n in range(JOINED_AT_MOST + 2):
        work.submit_joinable("room", "notes", n, runs.append)
    work.submit("room", lambda: runs.append("status"))
    work.submit_joinable("room", "notes", "after", runs.append)
    work.submit_joinable("room", "other kind", "x", runs.append)
    held.set()
    eventually(lambda: len(runs) == 5)
    assert runs == [list(range(JOINED_AT_MOST)), [JOINED_AT_MOST, JOINED_AT_MOST + 1], "status", ["after"], ["x"]]


def test_entries_typed_soon_after_the_rooms_last_post_wait_to_go_out_together():
    """A room whose entry post just began waits JOIN_WAIT (here a minute) before posting more, so a
    burst goes out as few messages; it stops waiting once a message-worth is queued, or when other
    work queued behind could not join anyway. A quiet room's entry, another room's, go at once."""
    from commands.router import JOINED_AT_MOST, AfterAckWork

    work, runs = AfterAckWork(threads=2, join_wait=60), []
    work.submit_joinable("room", "notes", 0, runs.append)
    eventually(lambda: runs == [[0]])  # the first in a quiet room: not held
    work.submit_joinable("room", "notes", 1, runs.append)
    work.submit_joinable("room", "notes", 2, runs.append)
    work.submit_joinable("other room", "notes", "x", runs.append)
    eventually(lambda: ["x"] in runs)  # another room is not held by this one's wait
    time.sleep(0.3)
    assert runs == [[0], ["x"]]  # 1 and 2 wait for more to join them
    for n in range(3, JOINED_AT_MOST + 2):
        work.submit_joinable("room", "notes", n, runs.append)
    eventually(lambda: len(runs) == 3)  # a message-worth: posted without waiting out the minute
    assert runs[2] == list(range(1, JOINED_AT_MOST + 1))
    work.submit("room", lambda: runs.append("status"))  # nothing behind it can join the last entry
    eventually(lambda: len(runs) == 5)
    assert runs[3:] == [[JOINED_AT_MOST + 1], "status"]


def test_an_entry_held_to_join_others_is_posted_alone_when_the_wait_is_over():
    from commands.router import AfterAckWork

    work, runs = AfterAckWork(threads=2, join_wait=0.2), []
    work.submit_joinable("room", "notes", 0, runs.append)
    eventually(lambda: runs == [[0]])
    work.submit_joinable("room", "notes", 1, runs.append)
    eventually(lambda: runs == [[0], [1]])
