"""What a running bot holds: its settings, policy, database engine and session factory."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.after_ack import PostedEntries
from bot.db import make_engine, make_session_factory
from bot.incidents import TimelineItem, claim_event, log_in_known_room_at_once
from bot.playbook import Playbook, load_playbook
from bot.settings import Settings


# The Slack delivery being handled on this thread (a slash command's trigger id), set by the
# router. The first transaction of the delivery records it, so a repeated delivery is refused by
# the database in the same transaction as the write it would repeat.
_delivery: ContextVar[str | None] = ContextVar("warroom_delivery", default=None)


class CommitOutcomeUnknown(Exception):
    """The database connection failed while committing: the work may or may not be saved."""


class AlreadyHandled(Exception):
    """This delivery was handled before (same trigger): nothing was done again."""


class DeliveryInProgress(Exception):
    """Another copy of this delivery is being handled in a transaction not yet committed."""


# PostgreSQL's SQLSTATE for a lock waited on longer than lock_timeout (see bot.db.make_engine).
LOCK_NOT_AVAILABLE = "55P03"


def is_lock_timeout(exc: OperationalError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def connection_lost(exc: OperationalError) -> bool:
    """The connection ended under the statement: no answer from the server, or its last words (SQLSTATE
    class 08, connection exception, or 57, operator intervention: a shutdown, a crash, a cancel). For
    a statement that commits itself this leaves open whether it was saved: the server may go between
    committing it and saying so. Any other error is the server refusing the statement: nothing saved."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate[:2] in ("08", "57")


def _as_sqlalchemy_raises_it(exc: Exception, dialect) -> DBAPIError:
    """The driver's error wrapped as SQLAlchemy wraps it (OperationalError and the like, `.orig`)."""
    return DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker
    playbook: Playbook
    # Notes and decisions whose room message this process posted, cleared by its ticker (bot.after_ack).
    posted_entries: PostedEntries = field(default_factory=PostedEntries)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Everything built at start-up; a bad playbook raises PlaybookError before anything runs."""
        playbook = load_playbook(settings.warroom_playbook or None)
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_session_factory(engine, settings.redaction_key),
                   playbook=playbook)

    @contextmanager
    def handling(self, delivery_key: str | None) -> Iterator[None]:
        """Mark the Slack delivery this thread is handling (see `transaction`)."""
        token = _delivery.set(delivery_key)
        try:
            yield
        finally:
            _delivery.reset(token)

    def log_in_room_at_once(self, channel_id: str, kind: str, actor_id: str, text: str,
                            new_value: str | None = None) -> TimelineItem | None:
        """A note or decision, with the claim of the delivery being handled, written on the driver's
        own connection where it can be (incidents.log_in_known_room_at_once); None when it was not, and
        nothing was written: the caller writes it in `transaction`, which claims the delivery.

        Its errors are the driver's, raised as SQLAlchemy raises them (OperationalError and the like,
        the original as `.orig`), so the caller tells people what it tells them for `transaction`'s."""
        key = _delivery.get()
        if not key:
            return None
        dialect = self.engine.dialect
        try:
            pooled = self.engine.raw_connection()  # no connection: nothing was sent
        except dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_raises_it(exc, dialect) from exc
        try:
            entry = self._log_at_once(pooled, key, channel_id, kind, actor_id, text, new_value)
        finally:
            pooled.close()
        if entry is not None:
            _delivery.set(None)  # claimed: later transactions of the delivery are its own work
        return entry

    def _log_at_once(self, pooled, key: str, channel_id: str, kind: str, actor_id: str, text: str,
                     new_value: str | None) -> TimelineItem | None:
        dialect = self.engine.dialect
        autocommit = dialect.name == "postgresql"  # the one statement commits itself
        driver, cursor, committing = pooled.driver_connection, pooled.cursor(), False
        try:
            if autocommit:
                driver.autocommit = True
            else:
                cursor.execute("BEGIN IMMEDIATE")  # as every SQLite transaction of the engine (bot.db)
            entry = log_in_known_room_at_once(cursor, dialect, self.sessions.kw["info"], key, channel_id, kind,
                                              actor_id, text, new_value)
            if not autocommit:
                committing = entry is not None
                cursor.execute("COMMIT" if committing else "ROLLBACK")
            return entry
        except dialect.loaded_dbapi.Error as exc:
            error = _as_sqlalchemy_raises_it(exc, dialect)
            if dialect.is_disconnect(exc, driver, cursor):
                pooled.invalidate(exc)  # not back into the pool
            if committing:
                raise CommitOutcomeUnknown() from error
            if isinstance(error, OperationalError) and is_lock_timeout(error):
                raise DeliveryInProgress(key) from error
            if autocommit and (isinstance(error, InterfaceError)
                               or isinstance(error, OperationalError) and connection_lost(error)):
                raise CommitOutcomeUnknown() from error
            raise error from exc
        finally:
            cursor.close()
            if autocommit and not driver.closed:
                try:
                    driver.autocommit = False  # as the pool's other users expect it
                except dialect.loaded_dbapi.Error:
                    pooled.invalidate()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed when the block ends, or rolled back on error.

        The first transaction of a delivery marked with `handling` records its key; if the key
        is already there the delivery was handled before, and AlreadyHandled is raised.
        """
        with self.sessions() as session:
            session.begin()
            try:
                key = _delivery.get()
                if key:
                    _delivery.set(None)  # once per delivery: later transactions of it are its own work
                    try:
                        claimed = claim_event(session, key)
                    except OperationalError as exc:
                        if is_lock_timeout(exc):
                            raise DeliveryInProgress(key) from exc
                        raise
                    if not claimed:
                        raise AlreadyHandled(key)
                yield session
                # Everything is sent before COMMIT, so a failure up to here means nothing was saved.
                session.flush()
            except BaseException:
                session.rollback()
                raise
            try:
                session.commit()
            except (OperationalError, InterfaceError) as exc:
                # The connection died during COMMIT: the server may have saved the work or not.
                raise CommitOutcomeUnknown() from exc
