"""What a running bot holds: its settings, policy, database engine and session factory."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
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
        """A note or decision, with the claim of the delivery being handled, written without an ORM
        session where it can be (incidents.log_in_known_room_at_once); None when it was not, and
        nothing was written: the caller writes it in `transaction`, which claims the delivery."""
        key = _delivery.get()
        if not key:
            return None
        with self.engine.connect() as connection:  # no connection: raised as is, nothing was sent
            autocommit = connection.dialect.name == "postgresql"
            if autocommit:
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                entry = log_in_known_room_at_once(connection, self.sessions.kw["info"], key, channel_id, kind,
                                                  actor_id, text, new_value)
            except OperationalError as exc:
                if is_lock_timeout(exc):
                    raise DeliveryInProgress(key) from exc
                if autocommit and connection_lost(exc):
                    raise CommitOutcomeUnknown() from exc
                raise
            except InterfaceError as exc:
                if autocommit:
                    raise CommitOutcomeUnknown() from exc
                raise
            if entry is None:
                connection.rollback()
                return None
            try:
                connection.commit()
            except (OperationalError, InterfaceError) as exc:
                raise CommitOutcomeUnknown() from exc
        _delivery.set(None)  # claimed: later transactions of the delivery are its own work
        return entry

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
