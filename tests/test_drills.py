"""Tabletop drills end to end over signed HTTP: a scripted drill released by the ticker, marked
everywhere, never announced, scored against a hand-computed scorecard (a good run, and one with a
wrong severity and a missed update).

The test scenario runs on scenario time: at `--speed 120` its 10-minute targets are 5 s of real
time, and the shipped playbook's SEV1 cadence of 15 minutes is 7.5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from bot.slack_standin.server import BOT_USER_ID

from tests.conftest import ANNOUNCE_CHANNEL, REPO_ROOT, bot_with_playbook, clean_slack, eventually

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
GENERAL = "C0GENERAL"
STAKEHOLDERS = "C0GENERAL"  # the seeded channel doubles as the stakeholder channel
TICK = 1.0

SCENARIO = """\
title: "Help-desk assistant quoting another tenant's documents"
family: retrieval-leakage
background: "A search change dropped the tenant filter for some tenants."
simulated: ["tickets", "alerts", "the COO"]
duration: 60m
system:
  model: "vela-chat"
  model_version: "2.1"
  prompt_template: "draft-answer v22"
  retrieval_sources: ["kb-chunks-v5"]
  owners: {search: "Search Platform"}
  dashboards: ["retrieval audit"]
injects:
  - {at: 0m, kind: customer, source: "Zendesk 51877", text: "Your assistant quoted another company's chargeback list."}
  - {at: 10m, kind: alert, source: "retrieval audit", text: "212 chunks served across tenants since 07:42."}
  - {at: 40m, kind: executive, source: "COO", text: "Keep the assistant on: we have a demo at noon."}
  - {at: 50m, kind: regulator, source: "Tenant DPO", text: "Was our customers' personal data exposed?"}
expected:
  severity: 1
  driver: data
  failure_mode: leakage
  containment: ["tenant filter", "disable hybrid"]
  containment_hint: "Disable hybrid search or restore the tenant filter"
  notification: notify
  notification_reason: "personal data reached other tenants: notify the controllers"
  roles: [ic, comms, privacy]
  within: {roles: 20m, severity: 20m, containment: 30m}
  discussion: ["Who decided to keep the demo running?"]
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def drill_env(request, tmp_path_factory, standin):
    scenarios = tmp_path_factory.mktemp("scenarios")
    (scenarios / "tenant-leak.yaml").write_text(SCENARIO)
    (scenarios / "broken.yaml").write_text("title: [unclosed\n")
    with bot_with_playbook(request, tmp_path_factory, standin, "drill-bot", (REPO_ROOT / "playbook.yaml").read_text(),
                           WARROOM_TICK="1s", WARROOM_SCENARIOS=str(scenarios),
                           WARROOM_UPDATES_CHANNEL=STAKEHOLDERS) as (database, bot, _, _tmp):
        yield database, bot


@pytest.fixture
def slack(drill_env, standin):
    database, bot = drill_env
    with clean_slack(bot, database, standin) as simulator:
        yield simulator


def ack(result) -> str:
    assert result.status == 200, result.body
    return result.body if isinstance(result.body, str) else result.body.get("text", "")


def start(slack, standin, database, speed: int) -> str:
    text = ack(slack.command(ALICE, GENERAL, f"drill start tenant-leak --speed {speed}"))
    assert "Starting drill *INC-1*" in text and "#drill-1-help-desk-assistant-quoting" in text
    channel = eventually(lambda: database.scalar("SELECT channel_id FROM incident"))
    eventually(lambda: [m for m in standin.messages(channel) if "Rules of engagement" in m["text"]])
    return channel


def as_utc(value) -> datetime:
    value = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def injects_posted(standin, channel) -> list[dict]:
    return [m for m in standin.messages(channel) if "DRILL inject" in m["text"]]


def run(slack, room: str, *commands: str, who: str = ALICE) -> None:
    for command in commands:
        text = ack(slack.command(who, room, command))
        assert "Could not" not in text and "isn't" not in text and "not an" not in text, (command, text)


def scorecard(database) -> dict:
    card = json.loads(eventually(lambda: database.scalar("SELECT scorecard FROM drill")))
    return {item["key"]: item["points"] for item in card["items"]}


def work_the_incident(slack, room: str, severity: int) -> None:
    """What both runs do the same: roles, classification, containment, evidence, decisions, notification."""
    run(slack, room, f"role ic <@{ALICE}>", f"role comms <@{BOB}>", f"role privacy <@{CAROL}>",
        f"sev {severity} tenant data in answers", "classify data leakage",
        "contain Disable hybrid search for early-access tenants reversible verify: audit shows 0 cross-tenant chunks",
        "evidence model vela-chat-2.1", "evidence prompt draft-answer v22", "evidence retrieval kb-chunks-v5",
        f"decision Keep the assistant off during the demo: data exposure outweighs it owner: <@{BOB}>",
        "decision Preserve search-gateway logs for 90 days",
        "notify decide notify affected tenants as controllers, by their DPO contacts")


def readiness_report(database, folder) -> str:
    env = {**os.environ, "DATABASE_URL": database.url}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "readiness", "--output", str(folder)], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return (folder / "readiness.md").read_text(encoding="utf-8")


def test_a_good_run_is_released_on_time_marked_everywhere_and_scores_as_computed(slack, standin, drill_env,
                                                                                tmp_path):
    database, _ = drill_env
    room = start(slack, standin, database, speed=120)

    # Marked: channel name, card, topic; never announced; the facilitator alone has the answer key.
    assert database.scalar("SELECT channel_name FROM incident").startswith("drill-1-")
    card = standin.message(room, database.scalar("SELECT card_ts FROM incident"))
    assert "DRILL" in card["blocks"][0]["text"]["text"]
    assert standin.calls("conversations.setTopic")[-1]["args"]["topic"].startswith("DRILL · SEV4")
    answer_key = eventually(lambda: standin.dm_messages(ALICE))
    assert "answer key" in answer_key[0]["text"] and "SEV1" in answer_key[0]["text"]

    # The first inject is due at the start: the ticker posts it within a tick or two.
    posted = eventually(lambda: injects_posted(standin, room), timeout=4)
    [first] = posted
    assert "inject 1/4" in first["text"] and "chargeback list" in first["text"]

    work_the_incident(slack, room, severity=1)
    run(slack, room, "update Assistant paused for early-access tenants; tenant filter fix in review")
    # The second inject (10m of scenario time = 5 s) comes from the ticker, on time.
    second = eventually(lambda: database.rows(
        "SELECT due_at, delivered_at, late FROM reminder WHERE kind = 'drill_inject' AND subject = 2 "
        "AND delivered_at IS NOT NULL"), timeout=10)[0]
    assert 0 <= (as_utc(second["delivered_at"]) - as_utc(second["due_at"])).total_seconds() <= 2 * TICK + 0.5
    assert not second["late"]
    # `drill next` releases the third (due at 40m = 20 s) at once.
    run(slack, room, "drill next")
    eventually(lambda: len(injects_posted(standin, room)) == 3)
    assert "Keep the assistant on" in injects_posted(standin, room)[2]["text"]
    run(slack, room, "drill end")

    assert scorecard(database) == {
        "severity": 20, "classification": 15, "containment": 15, "notification": 10,  # every judgement right
        "roles": 10, "assessed_in_time": 5, "contained_in_time": 5,
        "cadence": 10,  # one update, posted before it fell due: no reminder
        "evidence": 2,  # 3 of 6 items: 5 * 3 // 6
        "decision_log": 2,  # 2 decisions, 1 with an owner: 5 * 1 // 2
    }
    assert database.scalar("SELECT score FROM drill") == 94
    posted = eventually(lambda: [m for m in standin.messages(room) if "DRILL scorecard" in m["text"]])
    assert "*94 / 100*" in posted[0]["text"] and "Hotwash" in posted[0]["text"]
    assert database.scalar("SELECT status FROM incident") == "resolved"
    # The fourth inject was not released: the drill ended first, and it stays unposted.
    assert database.scalar("SELECT outcome FROM reminder WHERE kind = 'drill_inject' AND subject = 4") == "superseded"
    # The hotwash turns a finding into a corrective action, the same way as after a real incident.
    run(slack, room, f"action <@{BOB}> 2099-01-31 Test that every search leg filters by tenant "
                     "verify: CI fails when the filter is removed")
    assert database.rows("SELECT owner_id, verification FROM corrective_action") == [
        {"owner_id": BOB, "verification": "CI fails when the filter is removed"}]

    # Left out of the readiness metrics for real incidents; its score counts under drills.
    report = readiness_report(database, tmp_path)
    assert "Real incidents only: 0 declared in the period" in report
    assert "| retrieval-leakage | 1 | 94% |" in report

    # Never announced, no stakeholder update; every message in the room is marked as a drill.
    assert standin.messages(ANNOUNCE_CHANNEL) == [] and standin.messages(STAKEHOLDERS) == []
    for message in standin.messages(room):
        marked = message["text"].startswith((":construction:", "DRILL", "[DRILL]"))
        assert marked or message.get("user") != BOT_USER_ID, message["text"]


def test_a_wrong_severity_and_a_missed_update_cost_what_the_key_says(slack, standin, drill_env):
    database, _ = drill_env
    room = start(slack, standin, database, speed=360)  # SEV2's 30-minute cadence is 5 s here
    work_the_incident(slack, room, severity=2)
    # No update: the comms lead is reminded (the drill's DM says it is a drill), then they post one.
    reminder = eventually(lambda: [m for m in standin.messages(room) if "stakeholder update" in m["text"]
                                   and "is due" in m["text"]], timeout=12)[0]
    assert reminder["text"].startswith(":construction: *DRILL* (exercise): :alarm_clock:")
    assert "*DRILL*" in eventually(lambda: standin.dm_messages(BOB))[-1]["text"]
    run(slack, room, "update Assistant paused for early-access tenants")
    run(slack, room, "drill end")

    points = scorecard(database)
    assert points == {
        "severity": 8,  # SEV2 against a key of SEV1: one level off
        "classification": 15, "containment": 15, "notification": 10, "roles": 10,
        "assessed_in_time": 0,  # fast, but the severity was wrong: speed earns nothing then
        "contained_in_time": 5,
        "cadence": 5,  # one update missed (reminded once), then posted
        "evidence": 2, "decision_log": 2,
    }
    # Judgement beats speed: the fast wrong severity earns less than a right one set too late would (20 + 0).
    assert points["severity"] + points["assessed_in_time"] < 20
    assert database.scalar("SELECT score FROM drill") == 72


def test_the_list_shows_scenarios_and_names_a_broken_file(slack, standin, drill_env):
    text = ack(slack.command(ALICE, GENERAL, "drill list"))
    assert "`tenant-leak`" in text and "retrieval-leakage" in text
    assert "`broken.yaml`" in text


@pytest.mark.parametrize("command, says", [
    ("drill start no-such-scenario", "Scenario `no-such-scenario` does not exist"),
    ("drill start broken", "could not be loaded"),
    ("drill start tenant-leak --speed fast", "is not a speed"),
    ("drill start tenant-leak --speed 5000", "1 to 600 times real time"),
    ("drill start", "Name the scenario"),
    ("drill dance", "is not a drill command"),
    ("drill next", "isn't a drill's room"),
    ("drill end", "isn't a drill's room"),
])
def test_bad_drill_commands_are_refused_and_write_nothing(slack, drill_env, command, says):
    database, _ = drill_env
    text = ack(slack.command(ALICE, GENERAL, command))
    assert says in text, text
    assert database.scalar("SELECT count(*) FROM incident") == 0
    assert database.scalar("SELECT count(*) FROM drill") == 0


def test_a_drill_ends_once_and_then_releases_nothing(slack, standin, drill_env):
    database, _ = drill_env
    room = start(slack, standin, database, speed=60)
    run(slack, room, "drill end")
    # A room that did nothing scores nothing: the opening SEV4 earns no severity points.
    assert database.scalar("SELECT score FROM drill") == 0
    entries = database.scalar("SELECT count(*) FROM timeline_entry")
    assert "already ended" in ack(slack.command(BOB, room, "drill end"))
    assert "has ended" in ack(slack.command(BOB, room, "drill next"))
    assert database.scalar("SELECT count(*) FROM timeline_entry") == entries


def test_an_inject_due_before_the_room_is_open_waits_for_it(slack, standin, drill_env):
    database, _ = drill_env
    # Opening the room takes 2.5 s, while the ticker (1 s) finds inject 1 (at 0m) due at once.
    standin.delay("conversations.create", 2.5)
    try:
        room = start(slack, standin, database, speed=60)
    finally:
        standin.delay("conversations.create", 0)
    first = eventually(lambda: [m for m in injects_posted(standin, room) if "inject 1/" in m["text"]])
    assert "another company's chargeback list" in first[0]["text"]
    assert eventually(lambda: database.scalar(
        "SELECT outcome FROM reminder WHERE kind = 'drill_inject' AND subject = 1")) == "posted"
    run(slack, room, "drill end")
