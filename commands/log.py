"""The decision log and the timeline: `/incident decision`, `note` and `timeline`."""

from __future__ import annotations

import logging
from functools import partial

from slack_bolt import App

from bot import incidents
from bot.render import render
from commands.parsing import parse_entry, parse_no_arguments
from commands.router import Joinable, Reply, Router, SlashRequest
from commands.war_room import entry_metadata, post_parts, turn_came_in_time

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
            # A decision's owner is its new_value (incidents.record_decision); a note never has one.
            entry = runtime.log_in_room_at_once(request.channel_id, subcommand, request.user_id, wanted.text,
                                                wanted.owner_id)
            if entry is None:
                with runtime.transaction() as session:
                    entry = recorders[subcommand](session, request.channel_id, wanted, request.user_id)
            # Entries queued back to back in the room (typed while Slack was busy with its last
            # post) are posted together, as one message.
            channel_id = request.channel_id
            return Reply(joinable=Joinable(kind=("timeline entries", channel_id), item=entry,
                                           do=lambda client, entries: post_entries(client, channel_id, entries),
                                           still_ours=partial(turn_came_in_time, runtime)),
                         then_failure=f"The {subcommand} is in the timeline, but")
        return log_entry

    def post_entries(client, channel_id: str, entries: list[incidents.TimelineItem]) -> None:
        """Post the entries in the room as one message tagged with their keys, and let the ticker mark
        them posted, as `owed_room_work` does for one (a refused post too: the people are told)."""
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

