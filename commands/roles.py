"""`/incident role` hands a role to someone; `/incident roles` shows who holds what."""

from __future__ import annotations

from slack_bolt import App

from bot import incidents, slack_io
from bot.render import render
from commands.parsing import parse_no_arguments, parse_role
from commands.router import Reply, Router, SlashRequest
from commands.war_room import entry_metadata, owed_room_work, post, refresh_card


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def role(request: SlashRequest) -> Reply:
        wanted = parse_role(request.args)
        with runtime.transaction() as session:
            change = incidents.assign_role(session, request.channel_id, wanted.role, wanted.user_id, request.user_id)

        def tell_the_room(client):
            slack_io.invite(client, request.channel_id, wanted.user_id)
            post(client, request.channel_id,
                 render("role_changed.slack.j2", change=change, role=wanted.role, actor_id=request.user_id),
                 metadata=entry_metadata(change.entry.id))
            refresh_card(client, change.incident)

        return Reply(then=lambda client: owed_room_work(runtime, change.entry, lambda: tell_the_room(client)),
                     then_failure="The role is recorded, but")

    def roles(request: SlashRequest) -> Reply:
        parse_no_arguments("roles", request.args)
        with runtime.transaction() as session:
            incident = incidents.incident_in_channel(session, request.channel_id)
        return Reply(text=render("roles.slack.j2", incident=incident))

    router.add("role", role)
    router.add("roles", roles)
