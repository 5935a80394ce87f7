"""`warroom serve --socket`: Socket Mode against the stand-in's websocket, several processes on one
PostgreSQL database.

Slack spreads Socket Mode deliveries across an app's open connections; here two `warroom serve
--socket` processes hold one connection each and share a database with no other coordination.
Every command is acknowledged within Slack's 3 seconds and carried out exactly once, whichever
process gets it, when Slack delivers it again, and when a process dies.
(`serve --socket` without SLACK_APP_TOKEN is refused: tests/test_cli.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import websockets.sync.client
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import text
from websockets.exceptions import InvalidStatus

from commands.router import ALREADY_HANDLED, IN_PROGRESS
from tests.conftest import ANNOUNCE_CHANNEL, BACKENDS, BOT_TOKEN, REPO_ROOT, bot_environment, eventually, fresh_database

ALICE, BOB = "U0ALICE", "U0BOB"
GENERAL = "C0GENERAL"
DECLARATIONS = 20
NOTES = 30
ACK_SECONDS = 3.0

needs_postgresql = pytest.mark.skipif("postgresql" not in BACKENDS, reason="the processes share a PostgreSQL database")
needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc to see a process stop")


class SocketBot:
    """`warroom serve --socket` as a child process: no port; it is up once the stand-in sees its connection."""

    def __init__(self, env: dict, log_path: Path, socket_mode):
        self.log_path = log_path
        self.socket_mode = socket_mode
        self._connected_before = set(socket_mode.connection_ids())
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--socket"],
                                        env=env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.connection: int | None = None

    def wait_connected(self, timeout: float = 30.0) -> int:
        """The id of the connection this process opened (no other may be opening meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"warroom serve --socket exited:\n{self.log_path.read_text()}")
            new = set(self.socket_mode.connection_ids()) - self._connected_before
            if new:
                self.connection = new.pop()
                return self.connection
            time.sleep(0.05)
        raise RuntimeError(f"warroom serve --socket did not connect:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # in case a test left it stopped
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Cluster:
    def __init__(self, database, standin, bots):
        self.database, self.standin, self.bots = database, standin, bots
        self.socket_mode = standin.socket_mode


@pytest.fixture(scope="module")
def cluster(standin, tmp_path_factory):
    """Two `warroom serve --socket` processes on one fresh PostgreSQL database, one connection each."""
    tmp = tmp_path_factory.mktemp("socket-mode")
    standin.reset()
    with fresh_database("postgresql", tmp) as database:
        env = bot_environment(database.url, standin, SLACK_APP_TOKEN=standin.app_token)
        bots = []
        try:
            for name in ("socket-a", "socket-b"):  # one at a time, so each connection is known to be whose
                bot = SocketBot(env, tmp / f"{name}.log", standin.socket_mode)
                bots.append(bot)
                bot.wait_connected()
            yield Cluster(database, standin, bots)
        finally:
            for bot in bots:
                bot.stop()
            standin.wait_until_quiet()


def incident_numbers(database) -> list[int]:
    return [row["number"] for row in database.rows("SELECT number FROM incident ORDER BY number")]


def notes(database, channel_id: str) -> Counter:
    return Counter(row["text"] for row in database.rows(
        "SELECT t.text FROM timeline_entry t JOIN incident i ON i.id = t.incident_id "
        "WHERE t.kind = 'note' AND i.channel_id = :channel", channel=channel_id))


def new_room(cluster, title: str) -> str:
    """Declare an incident over Socket Mode and return its war room's channel id."""
    result = cluster.socket_mode.command(ALICE, GENERAL, f"declare sev3 {title}")
    number = int(re.search(r"INC-(\d+)", result.text).group(1))
    return eventually(lambda: cluster.database.scalar("SELECT channel_id FROM incident WHERE number = :n", n=number),
                      timeout=15)


def stall(process: subprocess.Popen) -> None:
    """SIGSTOP a process and wait until every thread of it has stopped (kill() returns before they have)."""
    os.kill(process.pid, signal.SIGSTOP)
    tasks = Path(f"/proc/{process.pid}/task")

    def all_stopped() -> bool:
        try:
            states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()]
        except FileNotFoundError:  # a thread ended meanwhile
            return False
        return all(state in "tT" for state in states)

    eventually(all_stopped, timeout=5, interval=0.005)


def in_parallel(function, items, workers: int = 4) -> list:
    """People typing at once: `workers` deliveries in flight at a time."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


# ------------------------------------------------------------------ the stand-in's Socket Mode
def test_apps_connections_open_takes_only_the_app_token_and_each_url_opens_once(standin):
    def error_of(call) -> str:
        with pytest.raises(SlackApiError) as refused:
            call()
        return refused.value.response["error"]

    client = WebClient(base_url=standin.api_url)
    assert error_of(lambda: client.apps_connections_open(app_token=BOT_TOKEN)) == "not_allowed_token_type"
    assert error_of(lambda: client.apps_connections_open(app_token="xapp-1-A0OTHER-1-nope")) == "invalid_auth"
    assert error_of(lambda: WebClient(token=standin.app_token, base_url=standin.api_url).auth_test()) \
        == "not_allowed_token_type"

    url = client.apps_connections_open(app_token=standin.app_token)["url"]
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/link/\?ticket=\w+&app_id=\w+", url)
    with websockets.sync.client.connect(url) as connection:
        hello = json.loads(connection.recv(timeout=5))
        assert hello["type"] == "hello" and hello["connection_info"] == {"app_id": "A0WARROOM"}
        assert hello["num_connections"] >= 1
        with pytest.raises(InvalidStatus):  # the ticket is spent
            websockets.sync.client.connect(url)
    with pytest.raises(InvalidStatus):
        websockets.sync.client.connect(url.split("?")[0] + "?ticket=made-up")


@pytest.mark.parametrize("app_token, error", [(BOT_TOKEN, "not_allowed_token_type"),
                                              ("xapp-1-A0OTHER-1-nope", "invalid_auth")])
def test_serve_socket_stops_when_slack_refuses_the_app_token(standin, tmp_path, app_token, error):
    with fresh_database("sqlite", tmp_path) as database:
        env = bot_environment(database.url, standin, SLACK_APP_TOKEN=app_token)
        result = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--socket"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and error in result.stdout + result.stderr


# --------------------------------------------------------------------- two bots, one database
@needs_postgresql
def test_twenty_declarations_spread_over_two_processes_are_each_declared_once(cluster):
    database, standin, socket_mode = cluster.database, cluster.standin, cluster.socket_mode
    assert socket_mode.connections() == 2
    first = len(socket_mode.deliveries())
    numbered = len(incident_numbers(database))  # 0 unless another test of this module ran first
    expected = list(range(numbered + 1, numbered + DECLARATIONS + 1))
    titles = [f"Socket incident {n}" for n in expected]

    results = in_parallel(lambda title: socket_mode.command(ALICE, GENERAL, f"declare sev3 {title}",
                                                            timeout=ACK_SECONDS), titles, workers=4)

    assert all(result.acked for result in results), [r.ack for r in results]
    sent = socket_mode.deliveries()[first:]
    assert len(sent) == DECLARATIONS and all(d["acked_after"] < ACK_SECONDS and d["acks"] == 1 for d in sent)
    by_connection = Counter(d["connection"] for d in sent)
    assert set(by_connection) == {bot.connection for bot in cluster.bots}, by_connection
    assert sorted(int(re.search(r"INC-(\d+)", result.text).group(1)) for result in results) == expected

    # Acknowledged means recorded, without gaps or doubles in the numbering; one room each comes after the ack.
    assert incident_numbers(database) == list(range(1, expected[-1] + 1))
    new = "SELECT number, title, channel_id, channel_name FROM incident WHERE number > :n ORDER BY number"
    assert sorted(row["title"] for row in database.rows(new, n=numbered)) == sorted(titles)
    eventually(lambda: all(row["channel_id"] for row in database.rows(new, n=numbered)), timeout=30)
    standin.wait_until_quiet()
    rows = database.rows(new, n=numbered)
    assert len({row["channel_id"] for row in rows}) == DECLARATIONS
    for row in rows:
        channel = standin.channel(row["channel_id"])
        assert channel["name"] == row["channel_name"] and channel["name"].startswith(f"inc-{row['number']}-")
    assert len([c for c in standin.channels() if c["name"].startswith("inc-")]) == expected[-1]
    announced = Counter(int(m.group(1)) for message in standin.messages(ANNOUNCE_CHANNEL)
                        if (m := re.search(r"INC-(\d+)\b", message["text"])))
    assert all(announced[number] == 1 for number in expected), announced
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'declared'") == expected[-1]
    print(f"\n{DECLARATIONS} declarations over {dict(by_connection)} connections; slowest ack "
          f"{max(d['acked_after'] for d in sent) * 1000:.0f} ms")


@needs_postgresql
def test_thirty_notes_in_one_room_over_both_connections_are_each_recorded_once(cluster):
    database, standin, socket_mode = cluster.database, cluster.standin, cluster.socket_mode
    room = new_room(cluster, "Notes")
    first = len(socket_mode.deliveries())
    texts = [f"socket-note-{n:02d}" for n in range(1, NOTES + 1)]

    results = in_parallel(lambda text: socket_mode.command(BOB, room, f"note {text}", timeout=ACK_SECONDS), texts)

    assert all(result.acked for result in results), [r.ack for r in results]
    sent = socket_mode.deliveries()[first:]
    assert all(d["acked_after"] < ACK_SECONDS for d in sent)
    assert len({d["connection"] for d in sent}) == 2
    assert notes(database, room) == Counter(texts)
    standin.wait_until_quiet()
    posted = Counter(text for message in standin.messages(room) for text in texts if text in message["text"])
    assert posted == Counter(texts)  # and each is posted in the room once


@needs_postgresql
def test_the_same_command_delivered_again_on_the_other_connection_is_carried_out_once(cluster):
    database, socket_mode = cluster.database, cluster.socket_mode
    room = new_room(cluster, "Redelivery")
    a, b = (bot.connection for bot in cluster.bots)

    first = socket_mode.command(ALICE, room, "note retry-me", connection=a)
    # Slack's redelivery: the same payload (same trigger_id) in a new envelope, on another connection.
    again = socket_mode.deliver("slash_commands", first.payload, connection=b, retry_attempt=1,
                                retry_reason="timeout")

    assert first.acked and first.text == ""  # the room gets the note, not an echo
    assert again is not None and again["text"] == ALREADY_HANDLED
    assert notes(database, room) == Counter({"retry-me": 1})


@needs_postgresql
@needs_proc
def test_an_envelope_acked_late_is_retried_on_the_other_process_and_carried_out_once(cluster):
    database, socket_mode = cluster.database, cluster.socket_mode
    room = new_room(cluster, "Late ack")
    slow, other = cluster.bots
    first = len(socket_mode.deliveries())

    stall(slow.process)  # a stalled replica (before the envelope reaches it): its connection stays open
    try:
        result = socket_mode.command(ALICE, room, "note retry-me-late", connection=slow.connection,
                                     timeout=ACK_SECONDS, retry_on_timeout=True)
    finally:
        os.kill(slow.process.pid, signal.SIGCONT)

    assert result.acked and result.text == ""
    attempts = socket_mode.deliveries()[first:]
    assert [(d["connection"], d["retry_attempt"]) for d in attempts] == [(slow.connection, 0), (other.connection, 1)]
    # Woken up, the stalled process answers the first envelope late: it had been carried out already.
    late = eventually(lambda: socket_mode.deliveries()[first]["ack"], timeout=10)
    assert late == {"text": ALREADY_HANDLED}
    assert notes(database, room) == Counter({"retry-me-late": 1})


@needs_postgresql
def test_a_retry_is_acked_in_time_while_a_stalled_replica_holds_the_commands_claim(cluster):
    """The claim waits at most 2 s for the stalled replica's transaction, then says the command is
    being carried out (and how to tell if it was not): an answer within Slack's 3 s, nothing doubled."""
    from commands.router import SlashRequest, delivery_key

    database, socket_mode = cluster.database, cluster.socket_mode
    room = new_room(cluster, "Stalled claim")
    payload, _ = socket_mode.command_payload(ALICE, room, "note claimed-elsewhere")
    key = delivery_key(SlashRequest(ALICE, room, "note", "claimed-elsewhere", payload["trigger_id"]))

    # A replica took the delivery, claimed it in its transaction, and stalled before committing.
    with database.engine.connect() as stalled:
        claim = stalled.begin()
        stalled.execute(text("INSERT INTO processed_event (event_id, received_at) VALUES (:key, now())"), {"key": key})
        try:
            started = time.monotonic()
            ack = socket_mode.deliver("slash_commands", payload, timeout=ACK_SECONDS)  # Slack's retry
            waited = time.monotonic() - started
        finally:
            claim.rollback()  # the stalled replica's transaction fails after all

    assert ack == {"text": IN_PROGRESS} and waited < ACK_SECONDS
    # The stalled copy failed after all: nothing was recorded, as the answer warned; run again, it is.
    assert notes(database, room) == Counter()
    again = socket_mode.command(ALICE, room, "note claimed-elsewhere", timeout=ACK_SECONDS)
    assert again.acked and again.text == ""
    eventually(lambda: notes(database, room) == Counter({"claimed-elsewhere": 1}))


@needs_postgresql
@needs_proc
def test_deliveries_continue_on_the_other_connection_when_a_process_is_killed(cluster):
    database, standin, socket_mode = cluster.database, cluster.standin, cluster.socket_mode
    room = new_room(cluster, "Killed replica")
    victim, survivor = cluster.bots
    first = len(socket_mode.deliveries())
    texts = [f"after-kill-{n:02d}" for n in range(1, 11)]

    # An envelope is on its way to the victim (stalled, so it cannot have been handled) when it dies:
    # its connection closes unacknowledged, and Slack delivers it again on the other one.
    stall(victim.process)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(socket_mode.command, BOB, room, "note in-flight", connection=victim.connection,
                                timeout=ACK_SECONDS, retry_on_timeout=True)
        eventually(lambda: len(socket_mode.deliveries()) > first)
        killed_at = time.monotonic()
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(5)
        assert in_flight.result().acked
    redelivered_after = time.monotonic() - killed_at
    # Straight away, the rest: any that still go to the dead connection are lost and delivered again.
    results = in_parallel(lambda text: socket_mode.command(BOB, room, f"note {text}", timeout=ACK_SECONDS,
                                                           retry_on_timeout=True), texts, workers=3)

    assert all(result.acked and result.text == "" for result in results), [r.ack for r in results]
    attempts = socket_mode.deliveries()[first:]
    assert [(d["connection"], d["retry_attempt"], d["acks"]) for d in attempts[:2]] == [
        (victim.connection, 0, 0), (survivor.connection, 1, 1)]
    assert redelivered_after < ACK_SECONDS  # the closed connection, not the timeout, set off the retry
    eventually(lambda: socket_mode.connection_ids() == [survivor.connection])
    assert {d["acked_on"] for d in attempts if d["acks"]} == {survivor.connection}
    assert notes(database, room) == Counter(texts + ["in-flight"])
    standin.wait_until_quiet()
    posted = Counter(text for message in standin.messages(room) for text in texts if text in message["text"])
    assert posted == Counter(texts)
    retried = sum(1 for d in attempts[2:] if d["retry_attempt"])
    print(f"\nkilled a process with an envelope in flight: delivered again and acked {redelivered_after * 1000:.0f} ms"
          f" after the kill; {len(texts)} more notes acked by the survivor ({retried} after a retry)")


@needs_postgresql
def test_a_refresh_requested_disconnect_is_followed_by_a_new_connection(cluster):
    database, socket_mode = cluster.database, cluster.socket_mode
    room = new_room(cluster, "Refresh")
    before = socket_mode.connection_ids()  # one per running process (the survivor, after the kill)

    assert socket_mode.disconnect_all("refresh_requested", close_after=10) == len(before) >= 1
    # Each process calls apps.connections.open again and opens a new connection.
    eventually(lambda: len(socket_mode.connection_ids()) == len(before), timeout=10)
    after = socket_mode.connection_ids()
    assert not set(after) & set(before)
    # slack_sdk's built-in client reads the new connection only once it has closed the old one, which
    # waits out its 3 s socket timeout (SocketModeClient.connect -> Connection.close); the bot closes
    # it itself, well before Slack's end would.
    eventually(lambda: not socket_mode.draining_ids(), timeout=8)

    result = socket_mode.command(ALICE, room, "note after-refresh")
    assert result.acked and socket_mode.deliveries()[-1]["connection"] in after
    assert notes(database, room) == Counter({"after-refresh": 1})
