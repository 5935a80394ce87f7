"""The incident's record: `/incident mark`, `export` and `postmortem`.

Export and postmortem files are made after the ack (a long timeline takes a moment) and shared in
the war room through Slack's external upload flow.
"""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot import export, incidents, postmortem, slack_io
from bot.db import utcnow
from bot.render import render
from bot.runtime import Runtime
from commands.parsing import parse_export_format, parse_mark, parse_postmortem_done
from commands.router import Reply, Router, SlashRequest
from commands.war_room import owed_room_post, post

FORMAT_NAMES = {"md": "Markdown", "json": "JSON", "csv": "CSV"}


def share_record(client: WebClient, runtime: Runtime, request: SlashRequest, incident_id: int, what: str,
                 fmt: str = "md") -> None:
    """Render the timeline export or the postmortem draft and upload it to the war room."""
    with runtime.transaction() as session:
        record = export.read_record(session, incident_id=incident_id)
        facts = postmortem.read_playbook_facts(session, incident_id, runtime.playbook) if what == "postmortem" else None
    people = slack_io.display_names(client, export.actor_ids(record))
    now = utcnow()
    if what == "postmortem":
        content = postmortem.render_postmortem(record, people, now, facts)
        title = f"Postmortem draft: {record.incident['reference']}"
    else:
        content = export.render_export(record, fmt, people, now)
        title = f"{record.incident['reference']} timeline ({FORMAT_NAMES[fmt]})"
    slack_io.upload_file(
        client, request.channel_id, filename=export.filename_for(record, fmt, what), content=content.encode(),
        title=title, comment=render("file_shared.slack.j2", what=what, fmt=FORMAT_NAMES[fmt],
                                    reference=record.incident["reference"], user_id=request.user_id),
    )


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def mark(request: SlashRequest) -> Reply:
        wanted = parse_mark(request.args)
        with runtime.transaction() as session:
            change = incidents.set_mark(session, request.channel_id, wanted.mark, wanted.when, request.user_id)
        return owed_room_post(runtime, request.channel_id, change.entry, "The mark is recorded, but",
                              "mark_set.slack.j2", change=change)

    def file_handler(what: str):
        def handler(request: SlashRequest) -> Reply:
            fmt = parse_export_format(request.args) if what == "timeline" else "md"
            if what == "postmortem" and request.args:
                return postmortem_done(request)
            with runtime.transaction() as session:
                incident = incidents.incident_in_channel(session, request.channel_id)
            return Reply(
                text=f"Preparing the {'postmortem draft' if what == 'postmortem' else FORMAT_NAMES[fmt] + ' export'}"
                     f" of {incident.reference}; it will appear in this channel.",
                then=lambda client: share_record(client, runtime, request, incident.id, what, fmt),
                then_failure="Could not share the file:",
            )
        return handler

    def postmortem_done(request: SlashRequest) -> Reply:
        link = parse_postmortem_done(request.args)
        with runtime.transaction() as session:
            entry = incidents.complete_postmortem(session, request.channel_id, link, request.user_id)
        return Reply(then=lambda client: post(client, request.channel_id,
                                              render("postmortem_done.slack.j2", entry=entry)),
                     then_failure="The postmortem is marked complete, but")

    router.add("mark", mark)
    router.add("export", file_handler("timeline"))
    router.add("postmortem", file_handler("postmortem"))
