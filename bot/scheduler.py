"""The reminder ticker: every few seconds, ask the database what is due, claim it, deliver it.

APScheduler only keeps time (an in-memory job store in each process); the database is the record
of what is owed, so any number of processes tick side by side, a restart loses nothing, and a
reminder that fell due while every process was down goes out once on start-up, marked late.

The ticker also forgets handled Slack delivery ids (`processed_event`) once they are older than
`WARROOM_EVENT_RETENTION`, far past the few minutes in which Slack redelivers a failed event.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from bot import observability, reminders
from bot.db import utcnow
from bot.models import ProcessedEvent
from bot.reminders import DeliveryFailed, Due
from bot.runtime import Runtime

log = logging.getLogger(__name__)

MIN_LEASE = timedelta(seconds=10)
Deliver = Callable[[Due], "str | None"]
# Old delivery ids are pruned this often (and at start-up), in batches of this many rows a transaction.
PRUNE_EVERY = timedelta(minutes=10)
PRUNE_BATCH = 1000
# Seconds between marking this process's posted notes and decisions in the database, a batch at a
# time: what a process killed meanwhile leaves is looked up in the room, not posted twice.
POSTED_ENTRIES_CLEARED_EVERY = 1.0


def prune_processed_events(sessions: sessionmaker, received_before: datetime, batch_size: int = PRUNE_BATCH) -> int:
    """Delete handled Slack delivery ids received before `received_before`, a batch a transaction
    (short locks, however many accumulated); how many were deleted."""
    pruned = 0
    while True:
        with sessions.begin() as session:
            oldest = (select(ProcessedEvent.event_id).where(ProcessedEvent.received_at < received_before)
                      .limit(batch_size))
            deleted = session.execute(delete(ProcessedEvent).where(ProcessedEvent.event_id.in_(oldest))
                                      .execution_options(synchronize_session=False)).rowcount
        pruned += deleted
        if deleted < batch_size:
            return pruned


class Ticker:
    """Delivers due reminders from the database; one per process."""

    def __init__(self, runtime: Runtime, deliver: Deliver, tick: timedelta, workers: int = 16) -> None:
        self.runtime = runtime
        self.deliver = deliver
        self.tick = tick
        # Reminders later than two ticks past due are marked late (the target for live processes).
        self.late_after = tick * 2
        # A claim expires after this, so a process that died mid-delivery is taken over quickly;
        # long enough for a delivery that waits out Slack's rate limits.
        self.lease = max(tick * 10, MIN_LEASE)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="deliver")
        # Small batches: a process claims only what its workers can deliver at once, so the other
        # processes claim the rest in parallel instead of waiting behind one big batch.
        self.batch_size = workers * 2
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)

    def start(self) -> Ticker:
        # The first tick runs at once: anything that fell due while we were down goes out now.
        # Later ticks start at a random phase, so replicas started together don't tick in step
        # and between them something is due is picked up sooner than one tick.
        seconds = self.tick.total_seconds()
        phase = timedelta(seconds=random.uniform(0, seconds))
        self.scheduler.add_job(self.scheduled_tick, "interval", seconds=seconds, start_date=utcnow() + phase,
                               coalesce=True, max_instances=1, id="reminders")
        self.scheduler.add_job(self.scheduled_tick, id="first-tick")
        # Pruning runs at start-up and then every PRUNE_EVERY, at a random phase across replicas.
        prune_every = PRUNE_EVERY.total_seconds()
        self.scheduler.add_job(self.prune_once, "interval", seconds=prune_every, id="prune-events",
                               start_date=utcnow() + timedelta(seconds=random.uniform(0, prune_every)),
                               coalesce=True, max_instances=1)
        self.scheduler.add_job(self.prune_once, id="first-prune")
        self.scheduler.add_job(self.clear_posted_entries, "interval", seconds=POSTED_ENTRIES_CLEARED_EVERY,
                               coalesce=True, max_instances=1, id="posted-entries")
        self.scheduler.start()
        return self

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        self.clear_posted_entries()  # a clean stop leaves nothing for another process to look up

    def clear_posted_entries(self) -> int:
        """Tell the database which notes and decisions this process has posted (bot.after_ack)."""
        try:
            return self.runtime.posted_entries.flush(self.runtime.sessions)
        except (OperationalError, InterfaceError) as exc:
            log.warning("incident database unreachable; %d posted entries wait to be marked (%s)",
                        self.runtime.posted_entries.pending(), type(exc.orig).__name__)
            return 0

    def scheduled_tick(self) -> None:
        """A tick from the scheduler: while the database is down, one warning a tick, not a traceback."""
        try:
            self.tick_once()
        except (OperationalError, InterfaceError) as exc:
            log.warning("incident database unreachable; reminders wait for it (%s)", type(exc.orig).__name__)

    def tick_once(self) -> int:
        """Schedule what fell due, then claim and deliver it in batches; returns how many were handled."""
        now = utcnow()
        with self.runtime.transaction() as session:
            reminders.schedule_due_reminders(session, now, self.runtime.settings.repost_after)
        handled = 0
        while True:
            with self.runtime.transaction() as session:
                batch = reminders.claim_due_reminders(session, self.owner, now, self.late_after, self.lease,
                                                     limit=self.batch_size)
            if not batch:
                return handled
            results = self.pool.map(self._deliver_one, batch)
            posted = [(due, ts) for due, ts in zip(batch, results) if ts is not None]
            self._record_deliveries(posted)
            handled += len(batch)

    def prune_once(self) -> int:
        """Forget handled Slack delivery ids older than the retention; how many were deleted."""
        retention = self.runtime.settings.event_retention
        try:
            pruned = prune_processed_events(self.runtime.sessions, utcnow() - retention)
        except Exception:  # noqa: BLE001 - pruning is housekeeping: retried at the next run
            log.exception("pruning processed Slack delivery ids failed")
            return 0
        if pruned:
            observability.EVENTS_PRUNED.inc(pruned)
            log.info("pruned %d processed Slack delivery id(s) older than %s", pruned,
                     self.runtime.settings.warroom_event_retention)
        return pruned

    def _deliver_one(self, due: Due) -> str | None:
        """Post one reminder; its Slack ts ("" if none), or None after recording why it failed."""
        with observability.incident_scope(due.reference):
            try:
                slack_ts = self.deliver(due) or ""
            except DeliveryFailed as failure:
                observability.reminder_failed(due.kind)
                log.warning("reminder %s for %s not delivered (attempt %s): %s",
                            due.kind, due.reference, due.attempts, failure.error)
                self._record_failure(due, failure)
            except Exception as exc:  # noqa: BLE001 - a bug in delivery must leave the reminder owed, not lost
                observability.reminder_failed(due.kind)
                log.exception("reminder %s for %s failed unexpectedly", due.kind, due.reference)
                self._record_failure(due, DeliveryFailed(type(exc).__name__))
            else:
                observability.reminder_sent(due.kind, due.late)
                log.info("reminder %s for %s posted%s", due.kind, due.reference, " (late)" if due.late else "")
                return slack_ts
        return None

    def _record_deliveries(self, posted: list[tuple[Due, str]]) -> None:
        # One transaction per batch: if we die before it commits, the next holder of the lease
        # finds each reminder already in Slack (by its metadata key) and only records it.
        with self.runtime.transaction() as session:
            for due, slack_ts in posted:
                if not reminders.mark_delivered(session, due, self.owner, slack_ts or None, utcnow()):
                    log.warning("lease on reminder %s expired before it was recorded", due.reminder_id)

    def _record_failure(self, due: Due, failure: DeliveryFailed) -> None:
        with self.runtime.transaction() as session:
            reminders.mark_failed(session, due, self.owner, failure, utcnow())
