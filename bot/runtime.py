"""What a running bot holds: its settings, policy, database engine and session factory."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.db import make_engine, make_session_factory
from bot.playbook import Playbook, load_playbook
from bot.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker
    playbook: Playbook

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Everything built at start-up; a bad playbook raises PlaybookError before anything runs."""
        playbook = load_playbook(settings.warroom_playbook or None)
        engine = make_engine(settings.database_url)
        return cls(settings=settings, engine=engine, sessions=make_session_factory(engine, settings.redaction_key),
                   playbook=playbook)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed when the block ends, or rolled back on error."""
        with self.sessions.begin() as session:
            yield session
