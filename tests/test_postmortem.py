"""From war room to postmortem, end to end: a realistic incident built over signed HTTP, exported
to Markdown, JSON and CSV through Slack's upload flow and the command line, the postmortem draft
with its computed durations, and corrective actions with their owners' reminders.

The bot here runs a playbook with update reminders off and action reminders at 00:00 UTC, one
day early, ticking every second, so an action due today or tomorrow is reminded at once.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
import yaml
from sqlalchemy import text as sql

from tests.conftest import REPO_ROOT, bot_environment, bot_with_playbook, clean_slack, eventually

ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"
GENERAL = "C0GENERAL"
TITLE = "Support bot quoting a refund policy we don't have — Zoë's 東京 tenant"
def playbook() -> str:
    """The shipped playbook, with update reminders off and action reminders due at once."""
    policy = yaml.safe_load((REPO_ROOT / "playbook.yaml").read_text())
    policy["updates"]["cadence"] = {level: "off" for level in ("sev1", "sev2", "sev3", "sev4")}
    policy["actions"] = {"remind_before": "1d", "remind_at": "00:00"}
    return yaml.safe_dump(policy, sort_keys=False)

SCHEMA = json.loads((REPO_ROOT / "docs" / "export-schema-v1.json").read_text())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def record_env(request, tmp_path_factory, standin):
    with bot_with_playbook(request, tmp_path_factory, standin, "postmortem-bot", playbook(),
                           WARROOM_TICK="1s") as (database, bot, _, tmp):
        yield database, bot, tmp


@pytest.fixture
def slack(record_env, standin):
    database, bot, _ = record_env
    with clean_slack(bot, database, standin) as simulator:
        yield simulator


def ok(result) -> str:
    assert result.status == 200, result.body
    text = result.body if isinstance(result.body, str) else (result.body or {}).get("text", "")
    assert not text.startswith((":warning:", ":x:", "Could not record")) and "Usage" not in text, text
    return text


def as_utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def span(seconds: float) -> str:
    """The postmortem's duration format, written out independently: 1h 20m 00s, 4m 02s, 12s."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def shared_file(standin, channel, name):
    return eventually(lambda: next((f for f in standin.files(channel) if f["name"] == name), None), timeout=10)


def build_incident(slack, standin, database) -> tuple[str, dict]:
    """A realistic SEV2-then-SEV1 incident: roles, decisions, a pin, changes, an update, marks, actions."""
    ok(slack.command(ALICE, GENERAL, f"declare sev2 {TITLE}"))
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"))
    eventually(lambda: standin.calls("conversations.setTopic"))
    declared_at = as_utc(database.scalar("SELECT declared_at FROM incident"))
    # The scribe sets what the bot cannot know: impact began 1h30m before the declaration (typed with
    # a +05:30 offset) and it was noticed 10 minutes before the declaration.
    impact = (declared_at - timedelta(hours=1, minutes=30)).replace(microsecond=0)
    detected = (declared_at - timedelta(minutes=10)).replace(microsecond=0)
    india = timezone(timedelta(hours=5, minutes=30))
    ok(slack.command(DAVE, room, f"mark impact-start {impact.astimezone(india).isoformat()}"))
    ok(slack.command(DAVE, room, f"mark detected {detected:%Y-%m-%d %H:%M:%S}"))
    ok(slack.command(ALICE, room, f"role ic <@{BOB}|bob>"))
    ok(slack.command(BOB, room, f"role comms <@{CAROL}|carol>"))
    ok(slack.command(BOB, room, f"role scribe <@{DAVE}|dave>"))
    ok(slack.command(BOB, room, "decision Roll back prompt template v14 to v13 — v14 dropped the policy index "
                                "from retrieval | confirmed by trace"))
    ok(slack.command(DAVE, room, "note Résumé: 12 tickets quote a 90-day refund; 東京 tenant most affected"))
    pinned_ts = slack.post_message(CAROL, room, "Customer ticket #4411: the bot promised a refund we don't offer")
    slack.react(CAROL, room, pinned_ts)
    eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'pinned'") == 1)
    ok(slack.command(BOB, room, "sev 1 other customers' orders appear in answers"))
    ok(slack.command(BOB, room, "classify data leakage"))
    ok(slack.command(DAVE, room, "impact harmed Customers quoted a refund we don't offer"))
    ok(slack.command(DAVE, room, "notify personal_data yes"))
    ok(slack.command(BOB, room, "status identified v14 retrieval filter"))
    ok(slack.command(BOB, room, "decision Disable the refund tool until evals pass; reversible, owner tech"))
    ok(slack.command(BOB, room, "contain Roll back prompt template to v13 reversible verify: no refund quotes "
                                "outside the policy in 30 minutes"))
    ok(slack.command(BOB, room, "status contained rollback to v13 live"))
    ok(slack.command(CAROL, room, "update Rolled back; answers quote the real policy again. Next update 15:00."))
    ok(slack.command(BOB, room, "status monitoring watching refund answers for an hour"))
    for item, value in (("model", "gpt-4o-2024-08-06"), ("prompt", "refund-answers v14 → v13"),
                        ("retrieval", "policies-index 2026-11-20"), ("safety", "grounding threshold 0.7"),
                        ("window", "2026-11-23 09:10 to 11:40 UTC"), ("trace", "ticket #4411, trace 5531")):
        ok(slack.command(DAVE, room, f"evidence {item} {value}"))
    ok(slack.command(BOB, room, "contain verified 1 zero policy-violating refund answers since 11:40"))
    ok(slack.command(BOB, room, "status resolved no bad answers for 60 minutes"))
    due = (datetime.now(timezone.utc) + timedelta(days=14)).date()
    ok(slack.command(BOB, room, f"action <@{DAVE}|dave> {due.isoformat()} Add a refund-policy eval to the "
                                "release gate verify: the eval fails on v14 and passes on v13"))
    ok(slack.command(BOB, room, f"action <@{CAROL}|carol> {due.isoformat()} Write the support macro"))
    ok(slack.command(DAVE, room, "action done 1 merged in PR 812"))
    ok(slack.command(BOB, room, "action verified 1 eval run 5531 fails v14, passes v13"))
    standin.wait_until_quiet()
    return room, {"declared_at": declared_at, "impact": impact, "detected": detected}


def entries_in_order(database) -> list[dict]:
    return [dict(row) for row in database.rows(
        "SELECT id, kind, actor_id, text, occurred_at FROM timeline_entry ORDER BY occurred_at, id")]


def test_a_realistic_incident_exports_to_markdown_json_and_csv(slack, standin, record_env):
    database, _, tmp = record_env
    room, _ = build_incident(slack, standin, database)
    entries = entries_in_order(database)
    assert len(entries) >= 20

    for fmt in ("md", "json", "csv"):
        assert "Preparing" in ok(slack.command(ALICE, room, f"export {fmt}"))
    md = shared_file(standin, room, "inc-1-timeline.md")
    exported_json = shared_file(standin, room, "inc-1-timeline.json")
    exported_csv = shared_file(standin, room, "inc-1-timeline.csv")
    assert "Timeline of *INC-1*" in md["initial_comment"]

    # JSON: valid against its published schema, every entry in order, text exactly as typed.
    document = json.loads(exported_json["content"].decode("utf-8"))
    jsonschema.validate(document, SCHEMA)
    assert [e["id"] for e in document["timeline"]] == [e["id"] for e in entries]
    assert document["incident"]["title"] == TITLE
    assert document["people"][BOB] and document["incident"]["roles"]["ic"] == BOB
    note = next(e for e in document["timeline"] if e["kind"] == "note")
    assert note["text"] == "Résumé: 12 tickets quote a 90-day refund; 東京 tenant most affected"
    pin = next(e for e in document["timeline"] if e["kind"] == "pinned")
    assert pin["source"] == "reaction" and pin["source_ref"].startswith("http") and pin["actor_id"] == CAROL
    for exported, stored in zip(document["timeline"], entries):
        assert as_utc(exported["occurred_at"].replace("Z", "+00:00")) == as_utc(stored["occurred_at"]).replace(
            microsecond=as_utc(stored["occurred_at"]).microsecond // 1000 * 1000)
    assert [a["state"] for a in document["actions"]] == ["verified", "open"]
    assert {e["kind"] for e in document["timeline"]} >= {
        "declared", "mark", "role", "decision", "note", "pinned", "severity", "status", "update", "action"}

    # CSV: opens as-is (BOM, header, one row per entry, in order), non-ASCII intact.
    raw = exported_csv["content"]
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [int(r["entry_id"]) for r in rows] == [e["id"] for e in entries]
    assert rows[0]["occurred_at_utc"] == as_utc(entries[0]["occurred_at"]).strftime("%Y-%m-%d %H:%M:%S")
    assert any(r["text"] == TITLE for r in rows)
    assert any("東京" in r["text"] for r in rows if r["kind"] == "note")

    # Markdown: every entry's text, in order; the pipe in a decision stays inside its cell.
    text = md["content"].decode("utf-8")
    assert text.startswith("# INC-1: ")
    positions = [text.index(e["text"].replace("|", "\\|")[:40]) for e in entries
                 if e["kind"] in ("decision", "note", "pinned")]
    assert positions == sorted(positions)
    assert "v14 dropped the policy index from retrieval \\| confirmed by trace" in text

    # The command line writes the same JSON from the database (names unknown offline).
    out = tmp / "inc-1.json"
    env = bot_environment(database.url, standin)
    result = subprocess.run([sys.executable, "-m", "bot.cli", "export", "INC-1", "--format", "json",
                             "--output", str(out)], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from_cli = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(from_cli, SCHEMA)
    assert from_cli["timeline"] == document["timeline"] and from_cli["actions"] == document["actions"]
    assert from_cli["people"] == {}


def test_the_postmortem_draft_has_every_entry_in_order_and_the_right_durations(slack, standin, record_env):
    database, _, tmp = record_env
    room, times = build_incident(slack, standin, database)
    entries = entries_in_order(database)

    assert "postmortem draft of INC-1" in ok(slack.command(BOB, room, "postmortem"))
    draft = shared_file(standin, room, "inc-1-postmortem.md")["content"].decode("utf-8")

    def first(kind, new_value=None):
        for row in database.rows("SELECT kind, new_value, occurred_at FROM timeline_entry ORDER BY occurred_at, id"):
            if row["kind"] == kind and (new_value is None or row["new_value"] == new_value):
                return as_utc(row["occurred_at"])
        raise AssertionError(f"no {kind} {new_value}")

    detected = times["detected"]
    expected = {
        "Time to detect": span((detected - times["impact"]).total_seconds()),
        "Time to acknowledge": span((first("role") - detected).total_seconds()),
        "Time to contain": span((first("status", "contained") - detected).total_seconds()),
        "Time to resolve": span((first("status", "resolved") - detected).total_seconds()),
        "Impact duration": span((first("status", "contained") - times["impact"]).total_seconds()),
    }
    assert expected["Time to detect"] == "1h 20m 00s"
    for measure, duration in expected.items():
        assert f"| {measure} |" in draft and f"| {duration} |" in draft.split(f"| {measure} |", 1)[1].split("\n")[0]

    # What the AI playbook recorded: classification, rules, evidence, containment, checklists.
    playbook_part = draft.split("## The AI playbook", 1)[1].split("## Key times", 1)[0]
    assert "| Failure mode | leakage |" in playbook_part and "| Rule: leakage needs privacy | open |" in playbook_part  # due in 30m
    assert "| Model and version | gpt-4o-2024-08-06 |" in playbook_part
    assert "| C1 | Roll back prompt template to v13 | yes |" in playbook_part
    assert "- Is personal data involved? yes" in playbook_part
    assert "- Who may be harmed, and how? Customers quoted a refund we don't offer" in playbook_part
    for heading in ("## Summary", "## The AI playbook", "## Impact", "## Detection", "### Containment", "### Eradication",
                    "### Recovery", "## Decision log", "## What went well", "## What didn't go well",
                    "## Where we got lucky", "### Causal chain", "### Five whys", "### Contributing factors",
                    "## Corrective and preventive actions", "## Timeline"):
        assert heading in draft, heading
    for stage in ("Input", "Prompt", "Retrieval / tools", "Model", "Post-processing", "Decision", "User impact"):
        assert f"| {stage} |" in draft
    for factor in ("Data", "Model", "Prompt / guardrails", "Infrastructure", "Process"):
        assert f"| {factor} |" in draft

    # The timeline section holds every entry, in the order it happened.
    timeline = draft.split("## Timeline", 1)[1]
    assert f"{len(entries)} entries" in timeline
    rows = [line for line in timeline.splitlines() if line.startswith("| 20")]
    assert len(rows) == len(entries)
    assert [row.split(" | ")[1] for row in rows] == [e["kind"] for e in entries]

    # The decision log is its own table; the action without a verification is flagged.
    decisions = draft.split("## Decision log", 1)[1].split("##", 1)[0]
    assert "Roll back prompt template v14 to v13" in decisions and "Disable the refund tool" in decisions
    capa = draft.split("## Corrective and preventive actions", 1)[1].split("## Timeline", 1)[0]
    a1 = next(line for line in capa.splitlines() if line.startswith("| A1 |"))
    a2 = next(line for line in capa.splitlines() if line.startswith("| A2 |"))
    assert "verified: eval run 5531" in a1 and "⚠" not in a1
    assert "**missing**" in a2 and "⚠ no verification" in a2
    assert TITLE in draft  # non-ASCII survives into the draft
    # Containment holds what happened before "contained"; recovery what came after "monitoring".
    containment = draft.split("### Containment", 1)[1].split("### Eradication", 1)[0]
    recovery = draft.split("### Recovery", 1)[1].split("## Decision log", 1)[0]
    assert "Roll back prompt template" in containment and "Rolled back; answers quote" not in recovery
    assert "no bad answers for 60 minutes" in recovery

    # The command line writes the same draft (ids instead of names: it does not ask Slack).
    result = subprocess.run([sys.executable, "-m", "bot.cli", "postmortem", "INC-1"],
                            env=bot_environment(database.url, standin), cwd=REPO_ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("utf-8").count("\n| 20") == draft.count("\n| 20")


def test_marks_and_actions_refuse_bad_input_and_write_nothing(slack, standin, record_env):
    database, _, _ = record_env
    ok(slack.command(ALICE, GENERAL, "declare sev2 Bias spike after data refresh"))
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident"))
    future = datetime.now(timezone.utc) + timedelta(hours=2)
    before = database.scalar("SELECT count(*) FROM timeline_entry")
    for text, says in (
        (f"mark detected {future:%Y-%m-%d %H:%M}", "in the future"),
        ("mark detected yesterday-ish", "is not a time"),
        ("mark outage 14:00", "is not something to mark"),
        ("action bob 2026-12-01 Fix it", "is not a mention"),
        (f"action <@{BOB}> 12/01/2026 Fix it", "is not a date"),
        (f"action <@{BOB}> 2020-01-01 Fix it", "in the past"),
        (f"action <@{BOB}> 2099-01-01", "The action is missing"),
        (f"action <@{BOB}> 2099-01-01 Fix it verify:", "The verification is missing"),
        ("action done 7", "has no action A7"),
        ("action verified 1", "evidence is missing"),
        ("export pdf", "is not an export format"),
        ("postmortem finished", "is not something `postmortem` does"),
    ):
        result = slack.command(BOB, room, text)
        assert result.status == 200 and says in result.body, (text, result.body)
        assert "`" in result.body.split("\n", 1)[1]  # and what to type instead
    assert database.scalar("SELECT count(*) FROM timeline_entry") == before
    assert database.scalar("SELECT count(*) FROM corrective_action") == 0
    assert database.scalar("SELECT detected_at FROM incident") is None
    # Impact can't start after detection: mark detection, then try an impact start later than it.
    declared_at = as_utc(database.scalar("SELECT declared_at FROM incident"))
    ok(slack.command(BOB, room, f"mark detected {(declared_at - timedelta(minutes=5)):%Y-%m-%d %H:%M:%S}"))
    late_impact = declared_at - timedelta(minutes=1)
    refused = slack.command(BOB, room, f"mark impact-start {late_impact:%Y-%m-%d %H:%M:%S}")
    assert "after it was detected" in refused.body
    assert database.scalar("SELECT impact_started_at FROM incident") is None


def test_a_finished_postmortem_is_marked_once_with_its_link(slack, standin, record_env):
    database, _, _ = record_env
    ok(slack.command(ALICE, GENERAL, "declare sev2 Bias spike after data refresh"))
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident"))
    ok(slack.command(BOB, room, "postmortem done https://wiki.example.com/pm/inc-1"))
    assert database.scalar("SELECT postmortem_completed_at FROM incident") is not None
    [entry] = database.rows("SELECT actor_id, text, new_value FROM timeline_entry WHERE kind = 'postmortem'")
    assert entry == {"actor_id": BOB, "text": "https://wiki.example.com/pm/inc-1", "new_value": "completed"}
    eventually(lambda: [m for m in standin.messages(room) if "Postmortem complete" in m["text"]])
    assert "was marked complete on" in slack.command(BOB, room, "postmortem done").body
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'postmortem'") == 1


def test_owners_are_reminded_early_and_on_the_day_once_and_done_actions_are_not(slack, standin, record_env):
    database, _, _ = record_env
    ok(slack.command(ALICE, GENERAL, "declare sev3 Refusal regression after model upgrade"))
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident"))
    today = datetime.now(timezone.utc).date()
    ok(slack.command(ALICE, room, f"action <@{BOB}> {today.isoformat()} Pin the model version verify: deploy diff"))
    ok(slack.command(ALICE, room, f"action <@{CAROL}> {(today + timedelta(days=1)).isoformat()} Add refusal evals"))
    ok(slack.command(ALICE, room, f"action <@{DAVE}> {(today + timedelta(days=10)).isoformat()} Write the runbook"))
    # The owner hears about the action as soon as it is recorded.
    assert eventually(lambda: [m for m in standin.dm_messages(DAVE) if "You own corrective action *A3*" in m["text"]])

    def reminders_to(user):
        return [m for m in standin.dm_messages(user)
                if (m.get("metadata") or {}).get("event_type") == "warroom_action_reminder"]

    bob = eventually(lambda: reminders_to(BOB), timeout=10)
    carol = eventually(lambda: reminders_to(CAROL), timeout=10)
    assert "is due *today*" in bob[0]["text"] and "A1" in bob[0]["text"]
    assert f"is due on {(today + timedelta(days=1)).isoformat()}" in carol[0]["text"]
    time.sleep(3)  # three more ticks: nothing is sent twice, nothing early for the runbook
    assert len(reminders_to(BOB)) == 1 and len(reminders_to(CAROL)) == 1 and reminders_to(DAVE) == []
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'reminder'") == 2

    # A3 is done before its reminders fall due; when they do (time moved on), none is sent.
    ok(slack.command(DAVE, room, "action done 3"))
    with database.engine.begin() as connection:
        connection.execute(sql("UPDATE corrective_action SET remind_before_at = :t, remind_due_at = :t "
                                "WHERE number = 3"), {"t": datetime.now(timezone.utc) - timedelta(minutes=1)})
    time.sleep(3)
    assert reminders_to(DAVE) == []

    # `warroom actions --overdue` lists what is past due and not done, across incidents.
    with database.engine.begin() as connection:
        connection.execute(sql("UPDATE corrective_action SET due_on = :d WHERE number = 2"),
                           {"d": today - timedelta(days=3)})
    result = subprocess.run([sys.executable, "-m", "bot.cli", "actions", "--overdue"],
                            env=bot_environment(database.url, standin), cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "INC-1 A2" in lines[0] and "OVERDUE 3d" in lines[0] and "(no verification)" in lines[0]

    listing = slack.command(ALICE, room, "actions").body
    assert "*A2* [open, overdue]" in listing and "*A3* [done]" in listing and "verify: _missing_" in listing

    # A verification can be added after the fact; it is a timeline entry of its own.
    ok(slack.command(CAROL, room, "action 2 verify: refusal rate under 2% on the eval set"))
    assert "verify: refusal rate under 2% on the eval set" in slack.command(ALICE, room, "actions").body
    assert database.scalar("SELECT text FROM timeline_entry WHERE kind = 'action' ORDER BY id DESC LIMIT 1") == (
        "A2 will be verified by: refusal rate under 2% on the eval set")


def test_unknown_incidents_are_named_on_the_command_line(record_env, standin):
    database, _, _ = record_env
    database.empty()
    env = bot_environment(database.url, standin)
    for argv in (["export", "INC-404"], ["postmortem", "INC-404"]):
        result = subprocess.run([sys.executable, "-m", "bot.cli", *argv], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 2 and "there is no incident INC-404" in result.stderr
    result = subprocess.run([sys.executable, "-m", "bot.cli", "export", "refund-bot"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "write it like INC-42" in result.stderr
