"""The decision log and the timeline: `/incident decision`, `note` and `timeline`."""

from __future__ import annotations

from slack_bolt import App

from bot import incidents
from bot.render import render
from commands.parsing import parse_entry, parse_no_arguments
from commands.router import Reply, Router, SlashRequest
from commands.war_room import post

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
            return Reply(
                then=lambda client: post(client, request.channel_id,
                                         render("timeline_entry_logged.slack.j2", entry=entry)),
                then_failure=f"The {subcommand} is in the timeline, but",
            )
        return log_entry

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
