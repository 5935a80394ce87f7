"""The decision log and the timeline: `/incident decision`, `note` and `timeline`."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot import after_ack, incidents, slack_io
from bot.after_ack import RoomPostDue
from bot.db import utcnow
from bot.render import render
from commands.messages import ROOM_GONE_ERRORS, post_reminder
from commands.parsing import parse_entry, parse_no_arguments
from commands.router import Joinable, Reply, Router, SlashRequest
from commands.war_room import post_parts

log = logging.getLogger(__name__)

TIMELINE_SHOWN = 20


def register(router: Router, app: App) -> None:
    runtime = router.runtime
    recorders = {
        "decision": lambda session, channel_id, wanted, user_id: incidents.record_decision(
            session, channel_id, wanted.text, user_id, wanted.owner_id),
        "note": lambda session, channel_id, wanted, user_id: incidents.record_note(
            session, channel_id, wanted.text, user_id),
    }

    def make_entry_handler(subcommand: str):
        def log_entry(request: SlashRequest) -> Reply:
            wanted = parse_entry(subcommand, request.args)
            with runtime.transaction() as session:
                entry = recorders[subcommand](session, request.channel_id, wanted, request.user_id)
            # Entries queued back to back in the room (typed while Slack was busy with its last
            # post) are posted together, as one message.
            channel_id = request.channel_id
            return Reply(joinable=Joinable(kind=("timeline entries", channel_id), item=entry,
                                           do=lambda client, entries: post_entries(client, channel_id, entries),
                                           still_ours=turn_came_in_time),
                         then_failure=f"The {subcommand} is in the timeline, but")
        return log_entry

    def turn_came_in_time(entry: incidents.TimelineItem) -> bool:
        """Whether this process still posts the entry. One whose turn came late (the room's earlier
        posts held up by a slow or rate-limiting Slack) is left to the ticker, which takes over an
        entry still unposted `repost_after` after it was recorded: a post started now could still be
        on its way then, found by neither and posted twice. The takeover looks for it in the room and
        posts it once, late. A post started before half that time has the other half to get through."""
        waited = utcnow() - entry.occurred_at  # a note's or decision's time is when it was recorded
        if waited <= runtime.settings.repost_after / 2:
            return True
        log.warning("left the room post of timeline entry %s to the takeover: its turn came %.0f s after "
                    "it was recorded", entry.id, waited.total_seconds())
        return False

    def post_entries(client, channel_id: str, entries: list[incidents.TimelineItem]) -> None:
        """Post the entries in the room as one message tagged with their keys, and let the ticker mark
        them posted. A post Slack refused is marked too: the people are told (run_joined_after_ack) and
        it is not posted behind their backs later; only a process that died before either leaves it to
        another (bot.after_ack)."""
        ids = [entry.id for entry in entries]
        try:
            post_parts(client, channel_id, [render("timeline_entry_logged.slack.j2", entry=entry) for entry in entries],
                       metadata=entry_metadata(*ids))
        finally:
            runtime.posted_entries.add(*ids)

    def timeline(request: SlashRequest) -> Reply:
        parse_no_arguments("timeline", request.args)
        with runtime.transaction() as session:
            incident = incidents.incident_in_channel(session, request.channel_id)
            entries = incidents.recent_timeline(session, incident.id, limit=TIMELINE_SHOWN + 1)
        truncated = len(entries) > TIMELINE_SHOWN
        return Reply(text=render("timeline.slack.j2", incident=incident,
                                 entries=entries[-TIMELINE_SHOWN:], truncated=truncated))

    for subcommand in recorders:
        router.add(subcommand, make_entry_handler(subcommand))
    router.add("timeline", timeline)


def entry_metadata(*entry_ids: int) -> dict:
    """The metadata of a message posting these entries, by which a takeover finds any of them."""
    return slack_io.keyed_metadata(after_ack.ENTRY_EVENT, *map(after_ack.entry_key, entry_ids))


def deliver_room_post(client):
    """The ticker's delivery of a note or decision a dead process may not have posted: looked up in
    the room by its key first (it may have), else posted, saying it comes late."""

    def deliver(due: RoomPostDue) -> str:
        text = render("timeline_entry_logged.slack.j2", entry=due.entry, late=True)
        return post_reminder(client, due.channel_id, text, event_type=after_ack.ENTRY_EVENT, due=due,
                             permanent_errors=ROOM_GONE_ERRORS)

    return deliver
