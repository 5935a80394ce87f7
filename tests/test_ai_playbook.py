"""The AI incident playbook in the room, end to end over signed HTTP: classification, the failure
mode's containment and diagnostic, severity levels from the playbook, and if/then rules that fire
when (and only when) their trigger holds and are called out once when not met in time.

The bot runs this repository's playbook.yaml with the rules' deadlines shortened to seconds and a
1 s tick; everything else (taxonomy, texts, triggers) is what ships.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, bot_with_playbook, clean_slack, eventually

ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"
GENERAL = "C0GENERAL"
DEADLINE = 3  # seconds: every rule's `within` in this bot's playbook
CLOCK = 8  # seconds: every notification clock's length here, each reminded 5 s before its deadline


def fast_playbook() -> str:
    policy = yaml.safe_load((REPO_ROOT / "playbook.yaml").read_text())
    policy["updates"]["cadence"] = {level: "off" for level in ("sev1", "sev2", "sev3", "sev4")}
    for rule in policy["rules"]:
        if "require" in rule:
            rule["require"]["within"] = f"{DEADLINE}s"
    for clock in policy["notification"]["clocks"]:
        clock["within"], clock["remind_before"] = f"{CLOCK}s", ["5s"]
    return yaml.safe_dump(policy, sort_keys=False)


SHIPPED = yaml.safe_load((REPO_ROOT / "playbook.yaml").read_text())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def playbook_env(request, tmp_path_factory, standin):
    with bot_with_playbook(request, tmp_path_factory, standin, "playbook-bot", fast_playbook(),
                           WARROOM_TICK="1s") as (database, bot, _, _tmp):
        yield database, bot


@pytest.fixture
def slack(playbook_env, standin):
    database, bot = playbook_env
    with clean_slack(bot, database, standin) as simulator:
        yield simulator


def declare(slack, standin, database, text: str) -> str:
    result = slack.command(ALICE, GENERAL, f"declare {text}")
    assert result.status == 200, result.body
    number = database.scalar("SELECT max(number) FROM incident")
    channel = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = :n", n=number))
    eventually(lambda: [c for c in standin.calls("conversations.setTopic") if c["args"]["channel"] == channel])
    return channel


def assert_refused(slack, database, room: str, text: str, says: str, *tables: str) -> None:
    """The command is refused with a message containing `says`, and nothing is written."""
    counted = ("timeline_entry", *tables)
    before = {table: database.scalar(f"SELECT count(*) FROM {table}") for table in counted}
    body = slack.command(BOB, room, text).body
    assert says in body, body
    assert {table: database.scalar(f"SELECT count(*) FROM {table}") for table in counted} == before


def texts(standin, channel) -> list[str]:
    return [message["text"] for message in standin.messages(channel)]


def call_outs(standin, channel) -> list[dict]:
    return [m for m in standin.messages(channel)
            if (m.get("metadata") or {}).get("event_type") == "warroom_rule_missed"]


def test_classifying_posts_the_playbooks_containment_and_question(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev3 Refund bot invents a 90-day policy")
    result = slack.command(BOB, room, "classify policy hallucination")
    assert result.status == 200 and result.body == ""
    guidance = SHIPPED["taxonomy"]["failure_modes"]["hallucination"]
    posted = eventually(lambda: [t for t in texts(standin, room) if "Classified *policy / hallucination*" in t])[0]
    assert guidance["containment"] in posted and guidance["diagnostic"] in posted
    row = database.rows("SELECT driver, failure_mode FROM incident")[0]
    assert dict(row) == {"driver": "policy", "failure_mode": "hallucination"}
    # Reclassifying is a change of its own, with the old value kept.
    slack.command(BOB, room, "classify model prompt-injection")  # an alias the playbook maps to misuse
    eventually(lambda: [t for t in texts(standin, room) if "*model / misuse*" in t and "was policy / hallucination" in t])
    entries = database.rows("SELECT old_value, new_value FROM timeline_entry WHERE kind = 'classified' ORDER BY id")
    assert [(e["old_value"], e["new_value"]) for e in entries] == [
        (None, "policy/hallucination"), ("policy/hallucination", "model/misuse")]
    card = eventually(lambda: [c for c in standin.calls("chat.update") if "model / misuse" in str(c["args"])])
    assert card


@pytest.mark.parametrize("text, says", [
    ("classify", "Give a driver"),
    ("classify model", "Give a driver"),
    ("classify weather drift", "`weather` is not a driver"),
    ("classify data sadness", "`sadness` is not a failure mode"),
    ("classify data leakage extra", "Give a driver"),
    ("flag nonsense", "`nonsense` is not a flag in the playbook"),
    ("flag affects-people maybe", "Name one flag"),
])
def test_bad_classifications_are_refused_and_write_nothing(slack, standin, playbook_env, text, says):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev3 Drift in the ranking model")
    assert_refused(slack, database, room, text, says)
    assert "Usage" in slack.command(BOB, room, text).body
    assert database.scalar("SELECT failure_mode FROM incident") is None


def test_leakage_requires_privacy_in_time_and_a_miss_is_called_out_once(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Support bot shows another customer's invoices")
    slack.command(ALICE, room, "role ic <@U0BOB|bob>")
    slack.command(BOB, room, "classify data leakage")
    fired = eventually(lambda: [t for t in texts(standin, room) if "Playbook rule: leakage needs privacy" in t])[0]
    assert "Freeze prompt and config changes and preserve logs" in fired and "*Privacy*" in fired
    # Nobody takes privacy: once the deadline passes the commander is told, once, and it is logged.
    missed = eventually(lambda: call_outs(standin, room), timeout=DEADLINE + 5)
    assert "<@U0BOB>" in missed[0]["text"] and "leakage needs privacy" in missed[0]["text"]
    time.sleep(3)  # three more ticks
    assert len(call_outs(standin, room)) == 1
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'rule' AND new_value = 'missed'") == 1


def test_a_requirement_met_in_time_is_not_called_out(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Retrieval returns other tenants' tickets")
    slack.command(BOB, room, "classify data data-leakage")
    eventually(lambda: [t for t in texts(standin, room) if "leakage needs privacy" in t])
    slack.command(BOB, room, "role privacy <@U0DAVE|dave>")
    assert database.scalar("SELECT met_at FROM rule_requirement WHERE rule = 'leakage needs privacy'") is not None
    time.sleep(DEADLINE + 2)
    assert call_outs(standin, room) == []


def test_sev1_needs_a_command_team_from_the_declaration(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev1 Loan model denies every applicant over 60")
    posted = eventually(lambda: [t for t in texts(standin, room) if "sev1 needs a full command team" in t])[0]
    assert "*Incident commander*" in posted and "*Comms lead*" in posted and "*Tech lead*" in posted
    slack.command(ALICE, room, "role ic <@U0BOB|bob>")
    slack.command(BOB, room, "role comms <@U0CAROL|carol>")
    # Tech lead still open at the deadline: the call-out names only what is missing.
    missed = eventually(lambda: call_outs(standin, room), timeout=DEADLINE + 5)[0]["text"]
    assert "*Tech lead*" in missed and "*Comms lead*" not in missed


def test_the_bias_rule_needs_both_the_failure_mode_and_the_flag(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Credit model approves fewer applicants in one region")
    slack.command(BOB, room, "classify data bias")
    eventually(lambda: [t for t in texts(standin, room) if "Classified *data / bias*" in t])
    assert not [t for t in texts(standin, room) if "legal" in t.lower()]
    slack.command(BOB, room, "flag affects-people")
    posted = eventually(lambda: [t for t in texts(standin, room) if "biased decisions about people need legal" in t])
    assert "*Legal*" in posted[0]
    rules = [r["rule"] for r in database.rows("SELECT rule FROM rule_requirement ORDER BY id")]
    assert rules == ["biased decisions about people need legal"]  # a sev2 fires no sev1 rule
    slack.command(BOB, room, "role legal <@U0DAVE|dave>")
    time.sleep(DEADLINE + 2)
    assert call_outs(standin, room) == []


def test_sev_alone_shows_the_playbooks_severity_levels(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev3 Refusals up after model upgrade")
    shown = slack.command(BOB, room, "sev").body
    for level, meaning in SHIPPED["severity"].items():
        assert f"*{level.upper()}*: {meaning.replace('&', '&amp;')}" in shown
    assert database.scalar("SELECT severity FROM incident") == 3


def test_the_declare_form_can_classify_and_the_room_gets_the_guidance(slack, standin, playbook_env):
    database, _ = playbook_env
    slack.command(BOB, GENERAL, "declare")
    view = eventually(lambda: standin.views())[0]
    blocks = {block["block_id"]: block for block in view["view"]["blocks"]}
    assert [o["value"] for o in blocks["failure_mode"]["element"]["options"]] == list(
        SHIPPED["taxonomy"]["failure_modes"])
    half = slack.submit_view(BOB, view["id"], {"title": "Agent emails customers on injected instructions",
                                               "severity": "2", "failure_mode": "misuse"})
    assert "driver" in half.body["errors"] and database.scalar("SELECT count(*) FROM incident") == 0
    slack.submit_view(BOB, view["id"], {"title": "Agent emails customers on injected instructions",
                                        "severity": "2", "driver": "platform", "failure_mode": "misuse"})
    room = eventually(lambda: database.scalar("SELECT channel_id FROM incident"))
    guidance = SHIPPED["taxonomy"]["failure_modes"]["misuse"]
    eventually(lambda: [t for t in texts(standin, room) if guidance["containment"] in t])
    assert dict(database.rows("SELECT driver, failure_mode FROM incident")[0]) == {
        "driver": "platform", "failure_mode": "misuse"}


EVIDENCE = {"model": "gpt-4o-2024-08-06", "prompt": "refund-answers v14", "retrieval": "policies-index 2026-11-20",
            "safety": "grounding threshold 0.7", "window": "2026-11-23 09:10 to 11:40 UTC",
            "trace": "ticket #4411 → trace 5531"}


def test_evidence_and_verified_containment_gate_resolving_a_serious_incident(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Support bot quoting a refund policy we don't have")
    checklist = slack.command(BOB, room, "evidence").body
    assert "(0 of 6 recorded)" in checklist and "`/incident evidence model &lt;value or link&gt;`" in checklist

    slack.command(BOB, room, f"evidence model {EVIDENCE['model']}")
    slack.command(BOB, room, f"evidence trace {EVIDENCE['trace']}")
    assert "(2 of 6 recorded)" in slack.command(BOB, room, "evidence").body
    eventually(lambda: [t for t in texts(standin, room) if "*Evidence* (Model and version) recorded" in t])

    refused = slack.command(BOB, room, "status resolved all good now").body
    for item in ("Prompt template version", "Retrieval sources / index version", "Safety settings", "Time window",
                 "containment: none logged"):
        assert item in refused
    assert "Model and version" not in refused and "force: &lt;why&gt;" in refused
    assert database.scalar("SELECT status FROM incident") == "investigating"
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'status'") == 0

    slack.command(BOB, room, "contain Disable the refund tool reversible verify: no refund answers in 30 minutes")
    posted = eventually(lambda: [t for t in texts(standin, room) if "Containment *C1*" in t])[0]
    assert "(reversible)" in posted and "Shows it worked: no refund answers in 30 minutes" in posted
    for item in ("prompt", "retrieval", "safety", "window"):
        slack.command(BOB, room, f"evidence {item} {EVIDENCE[item]}")
    refused = slack.command(BOB, room, "status resolved").body
    assert "C1 not verified" in refused and "evidence:" not in refused

    slack.command(BOB, room, "contain verified 1 zero refund answers since 11:40")
    assert "[verified] Disable the refund tool" in slack.command(BOB, room, "contain").body
    assert slack.command(BOB, room, "status resolved rollback held for an hour").body == ""
    assert database.scalar("SELECT status FROM incident") == "resolved"
    stored = {r["item"]: r["value"] for r in database.rows("SELECT item, value FROM evidence_record")}
    assert stored == EVIDENCE


def test_a_forced_resolve_keeps_its_reason_and_what_was_missing(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev1 Agent emailed customers on injected instructions")
    assert "reason for forcing it is missing" in slack.command(BOB, room, "status resolved force:").body
    assert slack.command(BOB, room, "status resolved force: false alarm, the emails were a test tenant").body == ""
    override = database.rows("SELECT text FROM timeline_entry WHERE kind = 'override'")[0]["text"]
    assert override.startswith("Resolved without: evidence: Model and version; ")
    assert override.endswith("Reason: false alarm, the emails were a test tenant")


def test_minor_incidents_resolve_without_the_gate(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev3 Summaries slightly longer after upgrade")
    assert slack.command(BOB, room, "status resolved").body == ""


@pytest.mark.parametrize("text, says", [
    ("evidence weights v3", "`weights` is not an evidence item"),
    ("evidence model", "The value is missing"),
    ("contain verified 9 it worked", "has no containment action C9"),
    ("contain verified x", "is not a containment number"),
    ("contain verified 1", "The evidence that it worked is missing"),
    ("contain reversible", "The containment action is missing"),
    ("contain Disable tool verify:", "The signal that it worked is missing"),
])
def test_bad_evidence_and_containment_are_refused_and_write_nothing(slack, standin, playbook_env, text, says):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Retrieval leak")
    assert_refused(slack, database, room, text, says, "evidence_record", "containment")


def aiid_texts(count: int) -> list[str]:
    """Real incident descriptions from the AI Incident Database (CC BY-SA 4.0), as typed text."""
    import csv

    for path in (REPO_ROOT.parent / "shared" / "data" / "aiid" / "incidents.csv",
                 Path("/work/shared/data/aiid/incidents.csv")):
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            return [row["description"][:1500] for row in rows[::max(1, len(rows) // count)]][:count]
    pytest.skip("the AI Incident Database snapshot is not at ../shared/data/aiid")


def test_secrets_and_personal_data_are_stored_and_shown_redacted(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev3 Bot mailed jane.doe@example.com's invoice to another tenant")
    title = database.scalar("SELECT title FROM incident")
    assert "jane.doe" not in title and "[redacted email " in title
    assert "jane" not in standin.channel(room)["name"]

    slack.command(BOB, room, "note Customer rang from +44 20 7946 0958 about card 4111 1111 1111 1111")
    slack.command(BOB, room, "decision Contact JANE.DOE@example.com first; key sk-proj-AbCdEf0123456789AbCdEf0123456789 "
                             "to be rotated")
    slack.command(BOB, room, "evidence trace replayed with token ghp_0123456789abcdefABCDEF0123456789abcd")
    eventually(lambda: len([t for t in texts(standin, room) if ":lock: _Redacted" in t]) == 3)

    stored = " ".join(r["text"] for r in database.rows("SELECT text FROM timeline_entry"))
    stored += database.scalar("SELECT value FROM evidence_record")
    posted = " ".join(texts(standin, room) + texts(standin, "C0INCIDENTS"))
    for secret in ("jane.doe", "JANE.DOE", "7946 0958", "4111 1111", "sk-proj-AbCd", "ghp_0123"):
        assert secret not in stored and secret not in posted
    for kind in ("email", "phone_number", "card_number", "api_key", "token"):
        assert f"[redacted {kind} " in stored
    # The same address, typed twice in another case, is recognised: one hash, seen twice, same placeholder.
    seen = database.rows("SELECT kind, times_seen FROM redacted_value WHERE kind = 'email'")
    assert [dict(r) for r in seen] == [{"kind": "email", "times_seen": 2}]  # in the title, in the decision
    placeholders = {word for word in stored.split("[redacted email ")[1:]}
    assert len({p[:6] for p in placeholders}) == 1
    assert database.scalar("SELECT count(*) FROM redacted_value") == 5


def test_ordinary_incident_text_is_left_alone(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev3 Real incident descriptions as notes")
    notes = aiid_texts(12)
    for note in notes:
        assert slack.command(BOB, room, f"note {note.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}"
                             ).body == ""
    stored = [r["text"] for r in database.rows("SELECT text FROM timeline_entry WHERE kind = 'note' ORDER BY id")]
    assert stored == [note.strip() for note in notes]
    assert database.scalar("SELECT count(*) FROM redacted_value") == 0


def test_the_impact_checklist_keeps_its_answers(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Loan model rejects applicants by postcode")
    shown = slack.command(BOB, room, "impact").body
    assert "(0 of 5 answered)" in shown and "`/incident impact harmed &lt;answer&gt;`  ← next" in shown
    slack.command(BOB, room, "impact harmed Applicants in three postcodes were refused loans")
    slack.command(BOB, room, "impact how_many About 1,200 applications since 2026-11-20")
    shown = slack.command(BOB, room, "impact").body
    assert "(2 of 5 answered)" in shown and "About 1,200 applications" in shown
    assert "`/incident impact data_types &lt;answer&gt;`  ← next" in shown
    answers = {r["question"]: r["answer"] for r in database.rows("SELECT question, answer FROM assessment_answer")}
    assert answers == {"harmed": "Applicants in three postcodes were refused loans",
                       "how_many": "About 1,200 applications since 2026-11-20"}
    assert "`colour` is not an impact question" in slack.command(BOB, room, "impact colour blue").body
    assert "The answer is missing" in slack.command(BOB, room, "impact harmed").body


def clock_reminders(standin, channel) -> list[dict]:
    return [m for m in standin.messages(channel)
            if (m.get("metadata") or {}).get("event_type") == "warroom_notification_clock"]


def test_notification_answers_start_a_clock_that_reminds_until_decided(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Retrieval shows one customer another's orders")
    slack.command(BOB, room, "classify data leakage")
    eventually(lambda: [t for t in texts(standin, room) if "Start the notification assessment now" in t])
    slack.command(ALICE, room, "role privacy <@U0DAVE|dave>")
    shown = slack.command(DAVE, room, "notify").body
    assert "Is personal data involved? *not answered*" in shown and "No notification clock runs" in shown

    slack.command(DAVE, room, "notify personal_data yes")  # one of the two answers the DPA clock needs
    assert "No notification clock runs" in slack.command(DAVE, room, "notify").body
    slack.command(DAVE, room, "notify other_customers yes")  # the customer clock: within 8s, reminded 5s before
    started = eventually(lambda: [t for t in texts(standin, room) if "Clock started: *Affected customers" in t])
    assert "decide by" in started[0]
    assert "Affected customers (contractual breach notice): decide by" in slack.command(DAVE, room, "notify").body

    # Reminded before the deadline and at it, in the room, naming the privacy lead; once each.
    reminders = eventually(lambda: len(clock_reminders(standin, room)) >= 2 and clock_reminders(standin, room),
                           timeout=CLOCK + 5)
    assert all("<@U0DAVE>" in m["text"] and "Affected customers" in m["text"] for m in reminders)
    assert "*now*" in reminders[-1]["text"]
    time.sleep(2)
    assert len(clock_reminders(standin, room)) == 2
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'notification' "
                           "AND new_value = 'reminded'") == 2


def test_a_decision_or_a_changed_answer_stops_the_clock(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Support transcripts visible across tenants")
    slack.command(DAVE, room, "notify other_customers yes")
    eventually(lambda: [t for t in texts(standin, room) if "Clock started" in t])
    slack.command(DAVE, room, "notify other_customers no")
    eventually(lambda: [t for t in texts(standin, room) if "Clock stopped: Affected customers" in t])
    slack.command(DAVE, room, "notify other_customers yes")  # back on: a fresh start from detection
    slack.command(DAVE, room, "notify decide not only our own test tenant was exposed; legal agrees")
    decided = eventually(lambda: [t for t in texts(standin, room) if "*Notification decision*" in t])[0]
    assert "Do not notify: only our own test tenant was exposed; legal agrees" in decided
    time.sleep(CLOCK + 2)
    assert clock_reminders(standin, room) == []
    assert "*Decision*" in slack.command(DAVE, room, "notify").body
    assert "already recorded" in slack.command(DAVE, room, "notify decide notify the DPA").body


@pytest.mark.parametrize("text, says", [
    ("notify personal_data maybe", "`maybe` is not an answer"),
    ("notify personal_data", "Give the answer"),
    ("notify breach yes", "`breach` is not a notification question"),
    ("notify decide maybe", "Say `decide notify"),
    ("notify decide not", "reason not to notify is missing"),
])
def test_bad_notification_input_is_refused_and_writes_nothing(slack, standin, playbook_env, text, says):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Leak")
    assert_refused(slack, database, room, text, says, "assessment_answer", "notification_deadline")
    assert database.scalar("SELECT notification_decided_at FROM incident") is None


def test_updates_for_an_audience_and_the_held_back_customer_statement(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Retrieval may show other tenants' invoices")
    claim = "We found the cause and rolled it back. No customer data was accessed."
    assert_refused(slack, database, room, f"update customers: {claim}",
                   "Held back: this customers update says \"no customer data was accessed\"", "evidence_record")
    refused = slack.command(CAROL, room, f"update customers: {claim}").body
    for label in ("Retrieval sources / index version", "One reproducible trace or a customer artifact", "Time window"):
        assert label in refused
    assert database.scalar("SELECT last_update_at FROM incident") is None  # the cadence clock did not restart

    # Internal audiences may say it: it is a belief to check, not a promise to customers.
    assert slack.command(CAROL, room, f"update executives: {claim}").body == ""
    eventually(lambda: [t for t in texts(standin, room) if "update for Executives*" in t])
    for item in ("retrieval", "trace", "window"):
        slack.command(DAVE, room, f"evidence {item} {EVIDENCE[item]}")
    assert slack.command(CAROL, room, f"update customers: {claim}").body == ""
    eventually(lambda: [t for t in texts(standin, room) if "update for Customers*" in t and claim in t])
    # A prefix that names no audience is just the start of an ordinary update.
    slack.command(CAROL, room, "update Status: watching the rollback")
    audiences = [r["new_value"] for r in database.rows("SELECT new_value FROM timeline_entry WHERE kind = 'update' "
                                                       "ORDER BY id")]
    assert audiences == ["executives", "customers", None]
    assert database.scalar("SELECT text FROM timeline_entry WHERE kind = 'update' ORDER BY id DESC LIMIT 1") == (
        "Status: watching the rollback")


def test_the_audience_form_is_drafted_with_its_guidance_and_holds_back_too(slack, standin, playbook_env):
    database, _ = playbook_env
    room = declare(slack, standin, database, "sev2 Agent leaked a support transcript")
    slack.command(CAROL, room, "update customers:")
    view = eventually(lambda: standin.views())[0]
    assert view["view"]["title"]["text"] == "Update: Customers"
    assert view["view"]["blocks"][0]["hint"]["text"].startswith("Plain language")
    draft = view["view"]["blocks"][0]["element"]["initial_value"]
    assert draft.startswith("We are investigating a problem with Agent leaked a support transcript.")
    assert "INC-" not in draft and "SEV" not in draft  # nothing internal in a customer draft
    submitted = slack.submit_view(CAROL, view["id"], {"update": "Fixed. No personal data was exposed."})
    assert "Held back" in submitted.body["errors"]["update"]
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'update'") == 0
