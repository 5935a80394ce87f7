"""Test harness: the real bot process over HTTP, the Slack stand-in, and a real database.

Every end-to-end test runs once on SQLite and once on PostgreSQL (set WARROOM_TEST_BACKENDS=sqlite
to run one). Each backend gets its own freshly migrated database and its own `warroom serve`
process; tables are emptied between tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests
from sqlalchemy import create_engine, text

from bot.db import make_engine, make_session_factory
from bot.migrate import upgrade_to_head

REPO_ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-standin"
ANNOUNCE_CHANNEL = "C0INCIDENTS"
POSTGRES_ADMIN_URL = os.environ.get("WARROOM_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b for b in os.environ.get("WARROOM_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
TABLES_CHILD_FIRST = ("reminder", "corrective_action", "rule_requirement", "evidence_record", "containment",
                      "redacted_value", "assessment_answer", "notification_deadline", "timeline_entry",
                      "role_assignment", "processed_event", "incident")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(check, timeout: float = 5.0, interval: float = 0.02):
    """Poll `check` until it returns something truthy (Slack work happens after the ack)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(check, '__name__', check)}")
        time.sleep(interval)


def entry_keys_of(message: dict) -> list[str]:
    """The timeline entries a message in a war room posts (its metadata keys), if it posts any."""
    from bot.after_ack import ENTRY_EVENT
    from bot.slack_io import payload_keys

    metadata = message.get("metadata") or {}
    return payload_keys(metadata.get("event_payload")) if metadata.get("event_type") == ENTRY_EVENT else []


@dataclass
class Database:
    backend: str
    url: str

    def __post_init__(self):
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine)

    def empty(self) -> None:
        with self.engine.begin() as connection:
            for table in TABLES_CHILD_FIRST:
                connection.execute(text(f"DELETE FROM {table}"))
            connection.execute(text("UPDATE counter SET value = 0 WHERE name = 'incident'"))

    def scalar(self, sql: str, **params):
        with self.engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params):
        with self.engine.connect() as connection:
            return connection.execute(text(sql), params).mappings().all()


def open_incident(database: Database, playbook, *, title: str, severity: int, channel: str = "C0ROOM1"):
    """Declare an incident through the services and give it a war room channel (no Slack)."""
    from bot import incidents

    with database.sessions.begin() as session:
        incident = incidents.declare_incident(session, title=title, severity=severity, summary="",
                                              declared_by="U0ALICE", playbook=playbook)
        return incidents.attach_war_room(session, incident.id, channel, f"inc-{incident.number}")


@pytest.fixture(scope="session")
def standin():
    from bot.slack_standin.server import SlackStandIn

    server = SlackStandIn(bot_token=BOT_TOKEN).start()
    yield server
    server.stop()


def _create_database(backend: str, tmp_dir: Path):
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / 'warroom-test.db'}", lambda: None
    name = f"warroom_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[Database]:
    """A new, migrated database on `backend`, dropped afterwards."""
    url, drop = _create_database(backend, tmp_dir)
    upgrade_to_head(url)
    db = Database(backend, url)
    try:
        yield db
    finally:
        db.engine.dispose()
        drop()


@pytest.fixture(scope="session", params=BACKENDS)
def database(request, tmp_path_factory):
    with fresh_database(request.param, tmp_path_factory.mktemp(request.param)) as db:
        yield db


@pytest.fixture(params=BACKENDS)
def own_database(request, tmp_path, standin):
    """A database of the test's own, on each backend, for tests that start (and kill) their own bots;
    Slack's side is reset before and its faults undone after."""
    standin.reset()
    with fresh_database(request.param, tmp_path) as db:
        yield db
    standin.clear_faults()
    standin.wait_until_quiet()


def bot_environment(database_url: str, standin, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "WARROOM_"))}
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=standin.api_url,
        DATABASE_URL=database_url,
        WARROOM_ANNOUNCE_CHANNEL=ANNOUNCE_CHANNEL,
        # Service-level tests write notes no bot posts into the databases the long-lived test bots
        # watch, and the stand-in hands the same channel ids out again after each reset: a bot
        # taking those notes over (bot.after_ack) would post them into another test's channels.
        # Tests of the takeover set their own.
        WARROOM_REPOST_AFTER="1h",
    )
    env.update(extra)
    return env


class BotProcess:
    """`warroom serve` as a child process, the way it runs in production."""

    def __init__(self, env: dict, port: int, log_path: Path, module: str = "bot.cli", *args: str):
        """`python -m <module> serve --port <port>` (or `<module> <args> --port <port>`)."""
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *(args or ("serve",)), "--port", str(port)],
            env=env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"warroom serve exited:\n{self.log_path.read_text()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"warroom serve did not become healthy:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def start_bot(database: Database, standin, log_dir: Path, name: str = "bot", **env) -> BotProcess:
    process = BotProcess(bot_environment(database.url, standin, **env), free_port(),
                         log_dir / f"{name}-{database.backend}.log")
    process.wait_healthy()
    return process


@contextmanager
def bot_with_playbook(request, tmp_path_factory, standin, name: str, playbook_text: str, **env):
    """A fresh database on the backend `request.param` names and a bot running this playbook.

    For module-scoped fixtures parametrised over ["sqlite", "postgresql"]; a backend left out of
    WARROOM_TEST_BACKENDS is skipped. Yields (database, bot process, playbook path, tmp dir).
    """
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} not in WARROOM_TEST_BACKENDS")
    tmp = tmp_path_factory.mktemp(f"{name}-{request.param}")
    playbook = tmp / "playbook.yaml"
    playbook.write_text(playbook_text)
    with fresh_database(request.param, tmp) as database:
        process = start_bot(database, standin, tmp, name=name, WARROOM_PLAYBOOK=str(playbook), **env)
        try:
            yield database, process, playbook, tmp
        finally:
            process.stop()


@pytest.fixture(scope="session")
def bot(database, standin, tmp_path_factory):
    process = start_bot(database, standin, tmp_path_factory.mktemp("logs"))
    yield process
    process.stop()


@contextmanager
def clean_slack(bot: BotProcess, database: Database, standin):
    """A clean workspace and database, and a Slack that delivers to the running bot."""
    from bot.slack_standin.simulator import SlackSimulator

    database.empty()
    standin.reset()
    yield SlackSimulator(standin, f"{bot.url}/slack/events", SIGNING_SECRET)
    standin.wait_until_quiet()  # the bot's after-ack work must not leak into the next test


@pytest.fixture
def slack(bot, database, standin):
    with clean_slack(bot, database, standin) as simulator:
        yield simulator

