"""Engine and session factory, built at start-up from settings (never at import time)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import DateTime, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.types import TypeDecorator

from bot.idle_sockets import hung_up

REPO_ROOT = Path(__file__).resolve().parent.parent
CONNECT_TIMEOUT_SECONDS = 2
LOCK_WAIT_LIMIT_MS = 2000
SQLITE_TURN_WAIT_SECONDS = 10  # how long a thread waits for the SQLite connection (as busy_timeout)


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (the only kind we store)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always aware UTC in Python, on SQLite (which has no time zones) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _configure_sqlite(dbapi_connection, _record) -> None:
    # WAL + NORMAL survives a killed process and keeps readers off the writer's back;
    # busy_timeout turns lock contention between threads/processes into a short wait.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(database_url: str) -> Engine:
    """An engine configured as DESIGN.md asks for SQLite and PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        # One connection per process, handed out in turn: SQLite has one writer at a time anyway,
        # and the pool's queue is fair where SQLite's busy handler sleeps up to 100 ms a retry and
        # lets newcomers overtake (benchmarks/ack_latency.py, 8 clients: p99 589 ms -> 178 ms).
        in_memory = url.database in (None, "", ":memory:")  # one database per connection: SQLAlchemy's own pool
        pool = {} if in_memory else {"pool_size": 1, "max_overflow": 0, "pool_timeout": SQLITE_TURN_WAIT_SECONDS}
        engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _configure_sqlite)
        # pysqlite's own transaction handling defers BEGIN; issue BEGIN IMMEDIATE ourselves so a
        # write transaction takes the lock up front instead of failing mid-way with SQLITE_BUSY.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A database that stops answering must not hold a command past Slack's 3 s: give up on a new
    # connection after 2 s (libpq's minimum) instead of psycopg's default of 130 s. The URL's own
    # ?connect_timeout= wins.
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    # Nor may a lock held by another transaction (a replica stalled mid-command, a copy of the same
    # delivery): no statement waits for one longer than this, set once per connection.
    connect_args["options"] = f"-c lock_timeout={LOCK_WAIT_LIMIT_MS}"
    engine = create_engine(url, pool_size=10, max_overflow=10, connect_args=connect_args)
    # Instead of pool_pre_ping's SELECT 1 (a round trip before every transaction, one in five of a
    # note's): a look at the socket, which costs no round trip.
    event.listen(engine, "checkout", _refuse_a_connection_the_server_closed)
    return engine


def _refuse_a_connection_the_server_closed(dbapi_connection, _record, _proxy) -> None:
    """A pooled PostgreSQL connection is idle: the server has nothing to say on it unless it is
    closing it (a restart or shutdown sends a FATAL message and hangs up; so does an idle-session
    timeout). Anything readable, or a connection psycopg knows is broken, is discarded, and the
    pool hands out another (SQLAlchemy retries a checkout refused with DisconnectionError), so the
    bot carries on after a database restart without being restarted (tests/test_db_outage.py).
    A server that vanished without hanging up (a host lost) fails the command's first statement
    instead, answered "could not record this" (a note written in one statement that commits itself,
    bot.runtime.Runtime.log_in_room_at_once: "may or may not be recorded"), and the pool starts afresh."""
    if dbapi_connection.closed or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("the connection is closed")
    if hung_up(dbapi_connection):
        raise DisconnectionError("the database server closed this connection while it was idle")


# session.info key of the war rooms' incidents, one dict shared by a factory's sessions (bot.incidents).
ROOM_INCIDENTS = "room_incidents"


def make_session_factory(engine: Engine, redaction_key: bytes | None = None) -> sessionmaker:
    """Sessions that keep loaded values after commit, so handlers can render what they wrote.

    Each session carries the deployment's redaction key in `session.info`, so the services that
    write what people typed can redact it without every call passing the key along, and the dict
    of war rooms whose incident was already looked up (bot.incidents), shared by all its sessions.
    """
    return sessionmaker(engine, expire_on_commit=False,
                        info={"redaction_key": redaction_key, ROOM_INCIDENTS: {}})


def database_is_reachable(engine: Engine) -> bool:
    """True when a trivial query succeeds; used by /healthz."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy", reported as such
        return False


# INSERT with ON CONFLICT clauses, by database (the two the bot runs on).
DIALECT_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def dialect_insert(session, model):
    """INSERT for this session's database, with its ON CONFLICT clauses (PostgreSQL or SQLite)."""
    return DIALECT_INSERTS[session.get_bind().dialect.name](model)


class DriverStatement:
    """A Core statement compiled once for each dialect and run on the driver's own cursor, past
    SQLAlchemy's execution layer: for a note or decision, the most frequent commands, that layer (the
    execution context, the result's metadata, checking a connection out as a `Connection`) was about
    two thirds of the write's CPU (bot.runtime.Runtime.log_in_room_at_once). Its parameters go through
    the columns' own bind processors (UTCDateTime, SQLite's datetime text and booleans), as they would
    through SQLAlchemy; its result does not, so it may only return columns whose values need none
    (ids, text). Every parameter must be named in the statement and given at each run."""

    def __init__(self, statement) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple] = {}  # dialect name -> (SQL, parameter converter)

    def _for(self, dialect) -> tuple:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = self.statement.compile(dialect=dialect)
            unnamed = [name for name, bind in statement.binds.items() if not bind.required]
            assert not unnamed, f"parameters with values of their own are not passed on: {unnamed}"
            processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                          for name, bind in statement.binds.items()}
            processors = {name: processor for name, processor in processors.items() if processor is not None}

            def processed(params: dict, name: str):
                processor = processors.get(name)
                return params[name] if processor is None else processor(params[name])

            if statement.positional:
                order = statement.positiontup
                convert = lambda params: [processed(params, name) for name in order]  # noqa: E731
            else:
                names = list(statement.binds)
                convert = lambda params: {name: processed(params, name) for name in names}  # noqa: E731
            compiled = self._compiled[dialect.name] = (str(statement), convert)
        return compiled

    def first_row(self, cursor, dialect, params: dict) -> tuple | None:
        sql, convert = self._for(dialect)
        cursor.execute(sql, convert(params))
        return cursor.fetchone()
