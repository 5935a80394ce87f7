"""The incident database goes away and comes back, under a running `warroom serve`.

The test runs its own throwaway PostgreSQL cluster from the server binaries on the machine (its
own data folder, socket folder and port), and stops, crashes, hangs and restarts it. Shown:

- while the database is down, every command is answered inside Slack's 3 seconds with the clear
  "Could not record this … try again" text, and /healthz says 503;
- nothing is half written: no entry, incident or incident number comes out of a refused command,
  and a crash in the middle of a burst of declarations leaves only whole, gap-free incidents;
- when the database is back, the same process serves commands again (no restart), and the
  reminder ticker, whose ticks failed during the outage, delivers the reminder that fell due then.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bot.migrate import upgrade_to_head
from bot.slack_standin.simulator import SLACK_ACK_TIMEOUT_SECONDS, SlackSimulator
from commands.router import DATABASE_DOWN, OUTCOME_UNKNOWN
from tests.conftest import SIGNING_SECRET, Database, eventually, free_port, start_bot

ALICE, BOB = "U0ALICE", "U0BOB"
GENERAL = "C0GENERAL"
TICK = 1.0


def said(result) -> str:
    """What the ack showed the person: Bolt answers plain text, or JSON when there are blocks."""
    return result.body if isinstance(result.body, str) else (result.body or {}).get("text", "")


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries installed on the machine (Debian/Ubuntu layout)."""
    candidates = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
                  if (path.parent / "pg_ctl").exists() and path.parent.parent.name.isdigit()]
    return max(candidates, key=lambda path: int(path.parent.name), default=None)


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own: trust auth, listening on 127.0.0.1:`port` only.

    initdb refuses to run as root, so as root every server command runs as the `postgres` user,
    in a temporary folder that user owns (pytest's own tmp folders are private to root).
    """

    def __init__(self, bin_dir: Path, port: int):
        self.bin_dir = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="warroom-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.running = False
        self.run_as = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root)
                pytest.skip("running as root and there is no postgres user to run initdb as")
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction, on a connection of its own."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as connection:
            connection.execute(text(sql))

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            server_log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}\n{server_log}")

    def init(self) -> ThrowawayPostgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast` is an orderly shutdown (sessions ended, transactions rolled back); `immediate`
        kills every server process at once, like a crash (the next start recovers from the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb and pg_ctl) on this machine")
    server = ThrowawayPostgres(bin_dir, free_port())
    try:
        server.init().start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def outage(cluster, standin, tmp_path):
    """A fresh migrated database on the throwaway cluster and a bot (ticking every second) using it.

    Yields (cluster, database, bot process, Slack simulator)."""
    if not cluster.running:  # a test that failed mid-outage leaves it stopped
        cluster.start()
    name = f"warroom_outage_{uuid.uuid4().hex[:8]}"
    cluster.admin(f'CREATE DATABASE "{name}"')
    upgrade_to_head(cluster.url(name))
    database = Database("postgresql", cluster.url(name))
    standin.reset()
    bot = start_bot(database, standin, tmp_path, name="outage", WARROOM_TICK=f"{TICK:.0f}s")
    try:
        yield cluster, database, bot, SlackSimulator(standin, f"{bot.url}/slack/events", SIGNING_SECRET)
    finally:
        bot.stop()
        standin.wait_until_quiet()
        database.engine.dispose()
        if not cluster.running:
            cluster.start()
        cluster.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed_command(slack, user, channel, command_text):
    started = time.monotonic()
    result = slack.command(user, channel, command_text)
    return result, time.monotonic() - started


def health(bot) -> int:
    return requests.get(f"{bot.url}/healthz", timeout=10).status_code


def counts(database) -> dict:
    """Incidents, the entries people's commands wrote, and the incident counter. Entries the ticker
    writes (a reminder sent) are left out: the one owed from the outage may go out as soon as the
    database is back, before or after a count, and is checked on its own."""
    return {"incidents": database.scalar("SELECT count(*) FROM incident"),
            "entries": database.scalar("SELECT count(*) FROM timeline_entry "
                                       "WHERE kind NOT IN ('reminder', 'escalation')"),
            "counter": database.scalar("SELECT value FROM counter WHERE name = 'incident'")}


def reminders(standin, channel) -> list[dict]:
    return [m for m in standin.messages(channel)
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("key", "").startswith("update_due")]


def open_war_room(slack, standin, database) -> str:
    """Declare an incident and wait for its war room; returns the channel id."""
    result = slack.command(ALICE, GENERAL, "declare sev2 Retrieval serving another tenant's documents")
    assert result.status == 200 and "INC-1" in said(result), result.body
    channel = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"))
    eventually(lambda: standin.calls("conversations.setTopic"))
    return channel


def assert_refused_quickly(result, elapsed):
    assert result.status == 200 and not result.timed_out, result.body
    assert said(result) == DATABASE_DOWN
    assert elapsed < SLACK_ACK_TIMEOUT_SECONDS, f"answered after {elapsed:.2f}s"


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
def test_commands_during_an_outage_are_refused_and_the_bot_recovers_without_a_restart(outage, standin, stop_mode):
    """The server is shut down (`fast`) or killed (`immediate`): commands are refused at once with
    the try-again text and write nothing; once it is back the same process records the next command
    and delivers the reminder that fell due during the outage."""
    cluster, database, bot, slack = outage
    channel = open_war_room(slack, standin, database)
    assert slack.command(BOB, channel, "decision before: roll back the retriever to v41").status == 200
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text LIKE 'before:%'") == 1
    # A reminder falls due while the database is down: the ticker cannot claim it then.
    assert slack.command(BOB, channel, "cadence 4s").status == 200
    due = database.scalar("SELECT next_update_due_at FROM incident").timestamp()
    before = counts(database)

    cluster.stop(stop_mode)
    refused = [timed_command(slack, BOB, channel, command) for command in (
        "decision during: disable retrieval for tenant 881",
        "note during: second ticket from the same tenant",
        "declare sev1 during: support bot quoting a refund policy we don't have",
    )]
    for result, elapsed in refused:
        assert_refused_quickly(result, elapsed)
    print(f"\n{stop_mode} stop: refused in " + ", ".join(f"{elapsed:.3f}s" for _, elapsed in refused))
    assert health(bot) == 503
    # Keep the database down past the reminder's due time and a few ticks more, so ticks fail on it.
    time.sleep(max(0.0, due + 3 * TICK - time.time()))
    assert reminders(standin, channel) == []
    assert bot.process.poll() is None

    cluster.start()
    eventually(lambda: health(bot) == 200, timeout=5, interval=0.1)
    assert bot.process.poll() is None  # the same process: recovered without a restart
    after = slack.command(BOB, channel, "decision after: keep retrieval off until the index is rebuilt")
    assert after.status == 200 and said(after) == "", after.body
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text LIKE 'after:%'") == 1

    # Nothing the outage refused was written, in part or in whole.
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text LIKE 'during:%'") == 0
    assert database.scalar("SELECT count(*) FROM incident WHERE title LIKE 'during:%'") == 0
    assert counts(database) == {**before, "entries": before["entries"] + 1}  # only `after` was added
    assert database.scalar("SELECT value FROM counter WHERE name = 'incident'") == 1

    # The ticker survived its failed ticks: the reminder owed from the outage goes out, once.
    [reminder] = eventually(lambda: reminders(standin, channel), timeout=3 * TICK + 2)
    assert "(every 4s)" in reminder["text"]
    [row] = eventually(lambda: database.rows(
        "SELECT late, attempts FROM reminder WHERE kind = 'update_due' AND outcome = 'posted'"))
    assert row["late"] and row["attempts"] == 1


@contextmanager
def hung_server(port: int):
    """Something on the database's port that completes the TCP handshake and then never answers,
    like a PostgreSQL stuck on a full disk or a dead NFS mount."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)  # never accepted: the kernel finishes the handshake and holds the startup packet
    try:
        yield
    finally:
        sock.close()


def test_a_hung_database_is_answered_within_slacks_three_seconds(outage, standin):
    """A database that accepts connections and never answers: the bot gives up connecting in time
    to answer Slack (psycopg would wait 130 s by default), and carries on when it is replaced."""
    cluster, database, bot, slack = outage
    channel = open_war_room(slack, standin, database)
    before = counts(database)

    cluster.stop("fast")
    with hung_server(cluster.port):
        results = [timed_command(slack, BOB, channel, f"note during: hung database {i}") for i in range(2)]
        for result, elapsed in results:
            assert_refused_quickly(result, elapsed)
        print("\nhung database: refused in " + ", ".join(f"{elapsed:.3f}s" for _, elapsed in results))
        started = time.monotonic()
        assert health(bot) == 503
        assert time.monotonic() - started < SLACK_ACK_TIMEOUT_SECONDS
    cluster.start()

    eventually(lambda: health(bot) == 200, timeout=5, interval=0.1)
    assert slack.command(BOB, channel, "note after: the database answers again").status == 200
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text LIKE 'during:%'") == 0
    assert counts(database) == {**before, "entries": before["entries"] + 1}


SENDERS = 4


def answers_until_the_server_is_killed(cluster, bot, send, warm: int) -> list[tuple[str, object]]:
    """`send("crash <worker>-<i>")` back to back on SENDERS threads; once `warm` answers are in, the
    server is killed, and once every thread has been refused it is started again. The (text, answer)
    pairs, each a command acknowledged, refused, or cut off while the server went down."""
    answers: list[tuple[str, object]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def back_to_back(worker: int):
        for i in range(1000):
            if stop.is_set():
                return
            text = f"crash {worker}-{i}"
            result = send(text)
            with lock:
                answers.append((text, result))

    threads = [threading.Thread(target=back_to_back, args=(w,)) for w in range(SENDERS)]
    for thread in threads:
        thread.start()
    eventually(lambda: len(answers) >= warm, timeout=15)
    cluster.stop("immediate")
    eventually(lambda: sum(said(r) == DATABASE_DOWN for _, r in answers) >= SENDERS, timeout=10)
    stop.set()
    for thread in threads:
        thread.join(15)
    cluster.start()
    eventually(lambda: health(bot) == 200, timeout=5, interval=0.1)
    return answers


def test_a_crash_in_the_middle_of_declarations_leaves_only_whole_incidents(outage, standin):
    """Declarations are in flight when the server is killed: each one is either acknowledged and
    wholly there (incident, number, first timeline entry) or refused and not there at all."""
    cluster, database, bot, slack = outage
    answers = answers_until_the_server_is_killed(
        cluster, bot, lambda title: slack.command(ALICE, GENERAL, f"declare sev3 {title}"), warm=8)

    acknowledged = {title for title, r in answers if r.status == 200 and "INC-" in said(r)}
    refused = {title for title, r in answers if said(r) == DATABASE_DOWN}
    # Killed during COMMIT, the server may or may not have kept it, and the person is told so.
    unknown = {title for title, r in answers if said(r) == OUTCOME_UNKNOWN}
    assert acknowledged and refused and acknowledged | refused | unknown == {title for title, _ in answers}
    incidents = database.rows("SELECT id, number, title FROM incident ORDER BY number")
    recorded = {row["title"] for row in incidents}
    assert acknowledged <= recorded
    assert not (refused & recorded), "a declaration answered 'nothing was saved' was saved"
    # Whole and gap-free: numbers 1..n, the counter at n, one `declared` entry per incident.
    assert [row["number"] for row in incidents] == list(range(1, len(incidents) + 1))
    assert database.scalar("SELECT value FROM counter WHERE name = 'incident'") == len(incidents)
    declared = database.rows("SELECT incident_id, count(*) AS n FROM timeline_entry WHERE kind = 'declared' "
                             "GROUP BY incident_id")
    assert {row["incident_id"]: row["n"] for row in declared} == {row["id"]: 1 for row in incidents}
    print(f"\n{len(acknowledged)} declarations acknowledged and recorded, {len(refused)} refused and absent")

    # The same process carries on: the next declaration takes the next number.
    result = slack.command(ALICE, GENERAL, "declare sev3 after the crash")
    assert result.status == 200 and f"INC-{len(incidents) + 1}" in said(result), result.body


def test_a_crash_in_the_middle_of_notes_leaves_each_one_recorded_or_refused(outage, standin):
    """Notes are in flight in a war room the bot knows (each claimed and written in one statement that
    commits itself) when the server is killed: one acknowledged is in the timeline once, one answered
    "nothing was saved" is not, and one cut off mid-statement is answered "may or may not be recorded"."""
    cluster, database, bot, slack = outage
    channel = open_war_room(slack, standin, database)
    assert said(slack.command(BOB, channel, "note the room is known to the bot now")) == ""
    answers = answers_until_the_server_is_killed(
        cluster, bot, lambda text: slack.command(BOB, channel, f"note {text}"), warm=40)

    acknowledged = {text for text, r in answers if r.status == 200 and said(r) == ""}
    refused = {text for text, r in answers if said(r) == DATABASE_DOWN}
    unknown = {text for text, r in answers if said(r) == OUTCOME_UNKNOWN}
    assert acknowledged and refused and acknowledged | refused | unknown == {text for text, _ in answers}
    recorded = [row["text"] for row in database.rows("SELECT text FROM timeline_entry WHERE text LIKE 'crash %'")]
    assert len(recorded) == len(set(recorded)), "a note was written twice"
    assert acknowledged <= set(recorded)
    assert not (refused & set(recorded)), "a note answered 'nothing was saved' was saved"
    print(f"\n{len(acknowledged)} notes acknowledged and recorded, {len(refused)} refused and absent, "
          f"{len(unknown)} told they may or may not be recorded")


def test_a_pooled_connection_the_server_closed_is_replaced_before_a_command_uses_it(database):
    """An idle pooled connection whose server process ended (a restart, an idle-session timeout, an
    administrator's pg_terminate_backend) is noticed at checkout and replaced, so the command that
    would have used it runs; a healthy connection is handed out again as it is (no SELECT 1 first)."""
    if database.backend != "postgresql":
        pytest.skip("SQLite has no server to hang up")
    from bot.db import make_engine

    engine = make_engine(database.url)

    def backend_pid() -> int:
        with engine.connect() as connection:
            return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

    try:
        first = backend_pid()
        assert backend_pid() == first  # the same connection, reused
        with database.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        eventually(lambda: not database.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid",
                                               pid=first))
        replaced = backend_pid()
        assert replaced != first
        assert backend_pid() == replaced
    finally:
        engine.dispose()
