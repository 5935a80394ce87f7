"""Slack work owed after an ack, carried across a crash: a war room never opened, a message never posted.

A command is acknowledged once what it records is committed; the Slack work (opening the war
room, posting a note, a decision or a change in it) comes after the ack. A process killed in
between used to leave the record without its room or its message, and no one was told. Now the database says what
is still owed, and the reminder ledger (bot.reminders) delivers it once, whichever process is alive:

- a declared incident with no war room `repost_after` past its declaration is owed a room;
- a note, a decision, a change (severity, status, role, cadence, classification, flag), a
  stakeholder update, evidence, containment, a corrective action, an assessment answer or a
  postmortem mark is written `awaiting_room_post` (an update owes the stakeholder channel its
  message too, a new action its owner a DM); the process that posted its message (or told the
  person it could not) clears the flag, many entries a statement (`PostedEntries`), so an entry
  still flagged `repost_after` past its time was left by a process that died, or by a live one
  that did not start it before half that time (its room's earlier posts held up by Slack) and left
  it here rather than race the takeover (commands.log). The post carries the entry's key as message
  metadata, so the deliverer finds a message the dead process did post and posts nothing twice.

No Slack here: what is owed, and what to post.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.claimed import ClaimedReminder
from bot.incidents import IncidentView, TimelineItem
from bot.models import Incident, Reminder, TimelineEntry

log = logging.getLogger(__name__)

ROOM_POST = "room_post"
ROOM_OPEN = "room_open"
# The metadata event type of a note's or decision's message in the room (its key: `entry_key`).
ENTRY_EVENT = "warroom_timeline_entry"
# How long after its command a room or room post is left to the process that acknowledged it before
# another delivers it (WARROOM_REPOST_AFTER): longer than a post can take with Slack's retries.
REPOST_AFTER = timedelta(minutes=2)
# Entries cleared a statement at most: an IN list both databases take comfortably.
CLEAR_BATCH = 500


def entry_key(entry_id: int) -> str:
    """The key a timeline entry's room message carries as metadata, by the live post or the late one."""
    return f"entry:{entry_id}"


def owed_reminders(now: datetime, repost_after: timedelta):
    """(incident_id, kind, subject, due_at) selects for rooms and room posts a dead process left owed."""
    cutoff = now - repost_after
    posts = select(TimelineEntry.incident_id, literal(ROOM_POST), TimelineEntry.id, TimelineEntry.recorded_at).where(
        # The bare column, as the partial index's predicate is written, so both databases use the index.
        TimelineEntry.awaiting_room_post, TimelineEntry.recorded_at <= cutoff)
    # A drill's room is opened by `/incident drill start`, which the facilitator can run again.
    rooms = select(Incident.id, literal(ROOM_OPEN), literal(0), Incident.declared_at).where(
        Incident.channel_id.is_(None), Incident.is_drill.is_(False), Incident.declared_at <= cutoff)
    return posts, rooms


class RoomPostDue(ClaimedReminder):
    """A timeline entry whose message in the war room a dead process may not have posted."""

    channel_id: str
    entry: TimelineItem
    incident: IncidentView  # as it is now: the card a change's message goes with shows this

    def delivered_entry(self, now: datetime) -> None:
        return None  # the entry is the record; posting its message adds nothing to the timeline

    def failed_entry(self, now: datetime, error: str) -> None:
        return None  # the room is gone (archived, the bot removed): the entry stays in the timeline

    def settle(self, session: Session) -> None:
        clear_awaiting(session, [self.entry.id])


class RoomOpenDue(ClaimedReminder):
    """A declared incident whose war room the process that acknowledged it never opened."""

    incident: IncidentView

    def delivered_entry(self, now: datetime) -> TimelineEntry:
        return TimelineEntry(incident_id=self.incident_id, kind="room", actor_id="warroom", occurred_at=now,
                             recorded_at=now, source="ticker", dedupe_key=self.dedupe_key,
                             text="War room opened late: the bot stopped before opening it")

    def failed_entry(self, now: datetime, error: str) -> TimelineEntry:
        return TimelineEntry(incident_id=self.incident_id, kind="room", actor_id="warroom", occurred_at=now,
                             recorded_at=now, source="ticker", dedupe_key=self.dedupe_key,
                             text=f"War room could not be opened: Slack said {error}")


def prepare(session: Session, reminders: list[Reminder], now: datetime,
            late_after: timedelta) -> list[RoomPostDue | RoomOpenDue]:
    """What to deliver for claimed room posts and rooms; those done meanwhile are closed unposted."""
    if not reminders:
        return []
    posts = [reminder for reminder in reminders if reminder.kind == ROOM_POST]
    entries = {entry.id: (entry, incident) for entry, incident in session.execute(
        select(TimelineEntry, Incident).join(Incident, Incident.id == TimelineEntry.incident_id)
        .where(TimelineEntry.id.in_([reminder.subject for reminder in posts]))).all()} if posts else {}
    rooms = {reminder.incident_id for reminder in reminders if reminder.kind == ROOM_OPEN}
    incidents = {incident.id: incident for incident in session.scalars(
        select(Incident).where(Incident.id.in_(rooms)))} if rooms else {}
    due = []
    for reminder in reminders:
        common = dict(reminder_id=reminder.id, kind=reminder.kind, due_at=reminder.due_at,
                      # The live process may have posted before it died: always look first.
                      attempts=max(reminder.attempts, 2), late=now - reminder.due_at > late_after)
        if reminder.kind == ROOM_POST:
            entry, incident = entries.get(reminder.subject, (None, None))
            if entry is None or not entry.awaiting_room_post or incident.channel_id is None:
                reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
                continue
            due.append(RoomPostDue(**common, incident_id=incident.id, reference=incident.reference,
                                   dedupe_key=entry_key(entry.id), channel_id=incident.channel_id,
                                   entry=TimelineItem.model_validate(entry), incident=IncidentView.of(incident)))
        else:
            incident = incidents.get(reminder.incident_id)
            if incident is None or incident.channel_id is not None:
                reminder.delivered_at, reminder.outcome, reminder.lease_expires_at = now, "superseded", None
                continue
            due.append(RoomOpenDue(**common, incident_id=incident.id, reference=incident.reference,
                                   dedupe_key=f"{ROOM_OPEN}:{incident.id}", incident=IncidentView.of(incident)))
    return due


def clear_awaiting(session: Session, entry_ids: list[int]) -> None:
    """The room messages of these entries were posted (or the person was told they were not)."""
    for start in range(0, len(entry_ids), CLEAR_BATCH):
        session.execute(update(TimelineEntry).where(TimelineEntry.id.in_(entry_ids[start:start + CLEAR_BATCH]))
                        .values(awaiting_room_post=False).execution_options(synchronize_session=False))


class PostedEntries:
    """Entries whose room message this process has posted, cleared in the database a batch at a time.

    Clearing each entry in its own statement after its post would add a transaction to every
    note, the most frequent command; a batch a second costs nothing a command. The price of the
    batch is bounded: an entry posted but not yet cleared when the process dies is looked up in
    the room by its metadata key before anything is posted again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[int] = []

    def add(self, *entry_ids: int) -> None:
        with self._lock:
            self._ids.extend(entry_ids)

    def pending(self) -> int:
        with self._lock:
            return len(self._ids)

    def flush(self, sessions: sessionmaker) -> int:
        """Clear the flags of the entries posted since the last flush; how many. On a database error
        the entries are kept for the next flush and the error raised."""
        with self._lock:
            ids, self._ids = self._ids, []
        if not ids:
            return 0
        try:
            with sessions.begin() as session:
                clear_awaiting(session, ids)
        except BaseException:
            with self._lock:
                self._ids[:0] = ids
            raise
        return len(ids)
