"""Operating the bot: JSON logs with request and incident ids, `GET /metrics`, secrets kept out of
both, old Slack delivery ids pruned, and servers bound to 127.0.0.1.

End to end against a real `warroom serve` per backend (this module's own process, Slack stand-in and
distinctive secrets, so the counts and the log file are this module's alone). Counters are compared
before and after each step, so the tests hold in any order.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot import observability
from bot.db import utcnow
from bot.scheduler import prune_processed_events
from bot.slack_standin.server import SlackStandIn
from bot.slack_standin.simulator import FORM, SlackSimulator
from tests.conftest import (BACKENDS, REPO_ROOT, BotProcess, bot_environment, eventually, free_port,
                            fresh_database)

ALICE, BOB = "U0ALICE", "U0BOB"
GENERAL = "C0GENERAL"
# Distinctive values, so finding one anywhere can only mean it leaked.
SIGNING_SECRET = "obs-signing-S3cret-5f1e9a77"
BOT_TOKEN = "xoxb-0bs-7731-d1stinctive"
APP_TOKEN = "xapp-1-0bs-9921-d1stinctive"
REDACTION_KEY = "obs-redaction-K3y-3c7d0b12"
DB_PASSWORD = "obs-Db-pa55-8e21f0"  # PostgreSQL only (the test server trusts local connections)
FAST_PLAYBOOK = """\
version: 1
updates:
  cadence: {sev1: 3s, sev2: off, sev3: off, sev4: off}
  escalation_grace: 1h
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def observed(request, tmp_path_factory):
    """This module's stand-in, database and bot. Before the bot starts, the database holds a
    delivery id from two days ago and one from 30 minutes ago: start-up pruning must take the first."""
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} not in WARROOM_TEST_BACKENDS")
    tmp = tmp_path_factory.mktemp(f"observed-{request.param}")
    playbook = tmp / "playbook.yaml"
    playbook.write_text(FAST_PLAYBOOK)
    with SlackStandIn(bot_token=BOT_TOKEN) as standin, fresh_database(request.param, tmp) as database:
        now = utcnow()
        with database.engine.begin() as connection:
            for key, age in (("Ev0LD", timedelta(days=2)), ("Ev0RECENT", timedelta(minutes=30))):
                connection.execute(text("INSERT INTO processed_event (event_id, received_at) VALUES (:k, :t)"),
                                   {"k": key, "t": now - age})
        url = database.url
        if database.backend == "postgresql":
            url = make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
        env = bot_environment(url, standin, WARROOM_PLAYBOOK=str(playbook), WARROOM_TICK="1s")
        env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_APP_TOKEN=APP_TOKEN,
                   WARROOM_REDACTION_KEY=REDACTION_KEY)
        bot = BotProcess(env, free_port(), tmp / f"bot-{database.backend}.log")
        try:
            bot.wait_healthy()
            eventually(lambda: any("pruned" in line.get("message", "") for line in log_lines(bot)), timeout=10)
            kept = [row["event_id"] for row in database.rows("SELECT event_id FROM processed_event")]
            yield Observed(database, bot, standin, env, kept)
        finally:
            bot.stop()


class Observed:
    def __init__(self, database, bot, standin, env, kept_at_start):
        self.database, self.bot, self.standin, self.env = database, bot, standin, env
        self.kept_at_start = kept_at_start


@pytest.fixture
def slack(observed):
    database, bot, standin = observed.database, observed.bot, observed.standin
    database.empty()
    standin.reset()
    yield SlackSimulator(standin, f"{bot.url}/slack/events", SIGNING_SECRET)
    standin.wait_until_quiet()


def log_lines(bot: BotProcess) -> list[dict]:
    """Every line of the bot's output, parsed (a line that is not JSON fails the test here)."""
    lines = []
    for number, line in enumerate(bot.log_path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} of the bot's log is not JSON: {line!r}") from None
    return lines


def scrape(bot: BotProcess) -> dict[tuple, float]:
    response = requests.get(f"{bot.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    """A sample's value, summed over the labels not given (0 if there is none)."""
    return sum(v for (sample_name, *pairs), v in samples.items()
               if sample_name == name and all((k, labels[k]) in pairs for k in labels))


@contextmanager
def counting(bot: BotProcess):
    """Yields a function giving how much a sample has grown since the block started (scraped anew)."""
    before = scrape(bot)
    yield lambda name, **labels: value(scrape(bot), name, **labels) - value(before, name, **labels)


def said(result) -> str:
    """What the ack showed the person: Bolt answers plain text, or JSON when there are blocks."""
    return result.body if isinstance(result.body, str) else result.body.get("text", "")


def declare_room(slack, observed, text="sev3 Retrieval drift in ranking") -> str:
    result = slack.command(ALICE, GENERAL, f"declare {text}")
    assert result.status == 200, result.body
    channel = eventually(lambda: observed.database.scalar("SELECT channel_id FROM incident WHERE number = 1"))
    eventually(lambda: observed.standin.calls("conversations.setTopic"))
    return channel


def test_commands_are_counted_by_subcommand_and_outcome_with_their_ack_latency(observed, slack):
    bot = observed.bot
    with counting(bot) as grew:
        channel = declare_room(slack, observed)
        assert slack.command(ALICE, channel, "status banana").status == 200  # refused: not a status
        assert slack.command(ALICE, channel, "frobnicate now").status == 200  # not a subcommand at all
        first = slack.command(ALICE, channel, "note Ranking model v7 rolled out at 09:40")
        again = slack.command(ALICE, channel, "note Ranking model v7 rolled out at 09:40", trigger_id=first.trigger_id)
        assert "carried out once" in said(again)
        assert slack.command(BOB, channel, "help").status == 200
        observed.standin.wait_until_quiet()

        assert grew("warroom_commands_total", command="declare", outcome="ok") == 1
        assert grew("warroom_commands_total", command="status", outcome="refused") == 1
        assert grew("warroom_commands_total", command="unknown", outcome="refused") == 1
        assert grew("warroom_commands_total", command="note", outcome="ok") == 1
        assert grew("warroom_commands_total", command="note", outcome="already_handled") == 1
        assert grew("warroom_commands_total", command="help", outcome="ok") == 1
        assert grew("warroom_commands_total") == 6
        assert grew("warroom_ack_seconds_count") == 6
        assert grew("warroom_ack_seconds_count", command="note", outcome="already_handled") == 1
        assert 0 < grew("warroom_ack_seconds_sum") < 6 * 3
        # Nothing a person typed becomes a label.
        assert not [key for key in scrape(bot) if ("command", "frobnicate") in key]


def test_log_lines_are_json_and_name_their_request_and_incident(observed, slack):
    bot = observed.bot
    channel = declare_room(slack, observed)
    slack.command(ALICE, channel, "status banana")
    slack.command(ALICE, channel, "note Checked the retriever's index build log")
    observed.standin.wait_until_quiet()

    lines = log_lines(bot)  # every line parses
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert all(line["time"].endswith("+00:00") for line in lines)

    def about(prefix):
        return [line for line in lines if line["message"].startswith(prefix)]

    for prefix in ("/incident declare: ok", "/incident status: refused", "/incident note: ok"):
        line = about(prefix)[-1]
        assert line["incident"] == "INC-1", line
        assert len(line["request_id"]) == 32, line
    request_ids = [about(prefix)[-1]["request_id"] for prefix in ("/incident declare", "/incident status",
                                                                   "/incident note")]
    assert len(set(request_ids)) == 3  # one per request
    # Nothing typed reaches the log.
    assert not [line for line in lines if "banana" in json.dumps(line) or "index build" in json.dumps(line)]


def test_a_delivered_reminder_is_counted(observed, slack):
    bot = observed.bot
    with counting(bot) as grew:
        channel = declare_room(slack, observed, "sev1 Support bot quoting a refund policy we don't have")
        slack.command(ALICE, channel, f"role comms <@{BOB}>")
        eventually(lambda: grew("warroom_reminders_sent_total", kind="update_due") >= 1, timeout=10)
        assert grew("warroom_reminders_sent_total", kind="update_due") == 1
        assert grew("warroom_reminders_late_total") == 0
        assert grew("warroom_reminder_failures_total") == 0
    line = [line for line in log_lines(bot) if line["message"].startswith("reminder update_due for INC-1 posted")]
    assert line and line[-1]["incident"] == "INC-1" and "request_id" not in line[-1]


def test_slack_api_errors_are_counted_by_method_and_error_retried_or_not(observed, slack):
    bot, standin = observed.bot, observed.standin
    with counting(bot) as grew:
        standin.fail_next("chat.postMessage", status=500)  # the card: retried by the client, then posted
        channel = declare_room(slack, observed)
        eventually(lambda: standin.pins(channel))
        standin.wait_until_quiet()
        standin.fail_next("chat.postMessage", status=429, retry_after=1)  # waited out, then posted
        slack.command(ALICE, channel, "note Rate limited once")
        eventually(lambda: any("Rate limited once" in m["text"] for m in standin.messages(channel)))
        standin.wait_until_quiet()
        standin.fail_next("chat.postMessage", error="is_archived")  # Slack's refusal: not retried
        slack.command(ALICE, channel, "note Refused once")
        eventually(lambda: standin.responses())
        standin.wait_until_quiet()

        assert grew("warroom_slack_api_errors_total", method="chat.postMessage", error="http_500") == 1
        assert grew("warroom_slack_api_errors_total", method="chat.postMessage", error="ratelimited") == 1
        assert grew("warroom_slack_api_errors_total", method="chat.postMessage", error="is_archived") == 1


def test_pin_events_are_counted(observed, slack):
    bot, standin = observed.bot, observed.standin
    channel = declare_room(slack, observed)
    ts = slack.post_message(ALICE, channel, "Trace 7f3a: the retriever returned a stale doc")
    with counting(bot) as grew:
        first = slack.react(BOB, channel, ts)
        eventually(lambda: observed.database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'pinned'"))
        slack.react(BOB, channel, ts, event_id=first.event_id, retry_num=1)  # Slack's retry
        slack.unreact(BOB, channel, ts)  # no listener for it
        standin.wait_until_quiet()
        eventually(lambda: grew("warroom_events_total") == 3)
        assert grew("warroom_events_total", type="reaction_added", outcome="ok") == 2
        assert grew("warroom_events_total", type="reaction_removed", outcome="ignored") == 1


def test_old_delivery_ids_are_pruned_and_recent_ones_still_refuse_a_repeat(observed, slack):
    # At start-up, the ticker pruned the id from two days ago and kept the one from 30 minutes ago.
    assert observed.kept_at_start == ["Ev0RECENT"]
    samples = scrape(observed.bot)
    assert value(samples, "warroom_processed_events_pruned_total") == 1
    pruned = [line for line in log_lines(observed.bot) if line["message"].startswith("pruned")]
    assert pruned[0]["message"] == "pruned 1 processed Slack delivery id(s) older than 24h"
    # Ids recorded since are still there to refuse a repeated delivery.
    channel = declare_room(slack, observed)
    first = slack.command(ALICE, channel, "decision Roll back ranking model v7")
    again = slack.command(ALICE, channel, "decision Roll back ranking model v7", trigger_id=first.trigger_id)
    assert "carried out once" in said(again)
    assert observed.database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'decision'") == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_pruning_deletes_only_ids_older_than_the_cutoff_in_batches(backend, tmp_path):
    if backend not in BACKENDS:
        pytest.skip(f"{backend} not in WARROOM_TEST_BACKENDS")
    with fresh_database(backend, tmp_path) as database:
        now = utcnow()
        ages = {**{f"old{i}": timedelta(hours=25 + i) for i in range(5)},
                "recent": timedelta(hours=2), "just-inside": timedelta(hours=24) - timedelta(seconds=5)}
        with database.engine.begin() as connection:
            for key, age in ages.items():
                connection.execute(text("INSERT INTO processed_event (event_id, received_at) VALUES (:k, :t)"),
                                   {"k": key, "t": now - age})
        assert prune_processed_events(database.sessions, now - timedelta(hours=24), batch_size=2) == 5
        left = sorted(row["event_id"] for row in database.rows("SELECT event_id FROM processed_event"))
        assert left == ["just-inside", "recent"]
        assert prune_processed_events(database.sessions, now - timedelta(hours=24)) == 0


def test_no_secret_reaches_the_log_the_metrics_or_an_export(observed, slack):
    bot, standin, database = observed.bot, observed.standin, observed.database
    channel = declare_room(slack, observed)
    # Someone pastes the bot token into the room: stored redacted, so never exported.
    slack.command(ALICE, channel, f"note the bot token was {BOT_TOKEN}, rotating it")
    standin.wait_until_quiet()
    # A Slack failure after the ack, told to the person and logged.
    standin.fail_next("chat.postMessage", error="invalid_auth")
    slack.command(ALICE, channel, "note Slack refuses this one")
    eventually(lambda: standin.responses())
    # A request with a forged signature.
    forged = slack.send_raw("command=%2Fincident&text=help", FORM, signature="v0=" + "0" * 64)
    assert forged.status == 401
    # A database error, logged with its traceback: the table of delivery ids is gone for a moment.
    with database.engine.begin() as connection:
        connection.execute(text("ALTER TABLE processed_event RENAME TO processed_event_hidden"))
    try:
        with counting(bot) as grew:
            result = slack.command(ALICE, channel, "note while the table is away")
            assert "Could not record this" in said(result)
            assert grew("warroom_commands_total", command="note",
                        outcome="database_down" if database.backend == "sqlite" else "internal_error") == 1
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("ALTER TABLE processed_event_hidden RENAME TO processed_event"))
    standin.wait_until_quiet()

    export = subprocess.run([sys.executable, "-m", "bot.cli", "export", "INC-1", "--format", "json"],
                            env=observed.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert "rotating it" in export.stdout and "[redacted token" in export.stdout

    log_text = bot.log_path.read_text(encoding="utf-8")
    lines = log_lines(bot)
    assert [line for line in lines if line.get("exc") and "processed_event" in line["exc"]], "no database error logged"
    assert [line for line in lines if "invalid_auth" in line["message"]], "no Slack failure logged"
    metrics = requests.get(f"{bot.url}/metrics", timeout=5).text
    secrets = [SIGNING_SECRET, BOT_TOKEN, APP_TOKEN, REDACTION_KEY, DB_PASSWORD]
    for where, content in (("log", log_text), ("metrics", metrics), ("export", export.stdout + export.stderr)):
        for secret in secrets:
            assert secret not in content, f"{secret} is in the {where}"


def test_the_redaction_filter_takes_secrets_out_of_messages_and_tracebacks():
    stream = io.StringIO()
    previous = logging.getLogger().handlers[:], logging.getLogger().level, sys.excepthook, threading.excepthook
    try:
        observability.configure_logging("json", ["pa55:w/rd-1", "s3cret-signing", None, "ab"], stream=stream)
        logger = logging.getLogger("warroom.test")
        logger.warning("connecting with %s to %s", "s3cret-signing", "postgresql://u:pa55%3Aw%2Frd-1@db/x")
        try:
            raise RuntimeError(f"token {BOT_TOKEN} refused")
        except RuntimeError:
            logger.exception("failed")
        with observability.request_scope("lb-req-1"):
            logger.info("inside a request")
    finally:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in previous[0]:
            root.addHandler(handler)
        root.setLevel(previous[1])
        sys.excepthook, threading.excepthook = previous[2], previous[3]
        logging.captureWarnings(False)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "connecting with [secret] to postgresql://u:[secret]@db/x"
    assert second["message"] == "failed" and "token [secret] refused" in second["exc"]
    assert BOT_TOKEN not in stream.getvalue()
    assert third["request_id"] == "lb-req-1" and "incident" not in third


def _listening_addresses(port: int) -> set[str]:
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_the_bot_and_the_stand_in_listen_on_loopback_only(observed):
    # `warroom serve` without --host or WARROOM_HOST, as the fixture starts it.
    assert _listening_addresses(observed.bot.port) == {"0100007F"}  # 127.0.0.1, and no IPv6 wildcard
    port = int(observed.standin.base_url.rsplit(":", 1)[1])
    assert observed.standin.base_url.startswith("http://127.0.0.1:")
    assert _listening_addresses(port) == {"0100007F"}
    listening = [line for line in log_lines(observed.bot) if line["message"].startswith("warroom listening on")]
    assert listening[0]["message"] == f"warroom listening on http://127.0.0.1:{observed.bot.port}/slack/events"


@pytest.mark.parametrize("change, says", [
    ({"WARROOM_EVENT_RETENTION": "30m"}, "WARROOM_EVENT_RETENTION"),
    ({"WARROOM_LOG_FORMAT": "xml"}, "WARROOM_LOG_FORMAT"),
])
def test_a_too_short_retention_or_unknown_log_format_stops_start_up(tmp_path, standin, change, says):
    env = {**bot_environment(f"sqlite:///{tmp_path / 'x.db'}", standin), **change}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--port", str(free_port())], env=env,
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warroom: invalid settings") and says in lines[0], lines
    if "RETENTION" in says:
        assert "at least 1h" in lines[0]


def test_metrics_and_health_need_no_slack_signature(observed):
    started = time.monotonic()
    response = requests.get(f"{observed.bot.url}/metrics", timeout=5)
    assert response.status_code == 200 and "warroom_commands_total" in response.text
    assert time.monotonic() - started < 2
    assert requests.post(f"{observed.bot.url}/metrics", timeout=5).status_code != 200
