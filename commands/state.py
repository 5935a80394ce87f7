"""Severity and status changes: `/incident sev` and `/incident status`."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot import incidents
from bot.incidents import Change
from bot.render import render
from bot.runtime import Runtime
from commands.parsing import parse_sev, parse_status
from commands.router import Reply, Router, SlashRequest
from commands.war_room import announce_rules, owed_room_post, refresh_card


def _announce(runtime: Runtime, request: SlashRequest, change: Change) -> Reply:
    def rules_and_card(client: WebClient) -> None:
        announce_rules(client, request.channel_id, change.fired)
        refresh_card(client, change.incident, topic_changed=True)

    return owed_room_post(runtime, request.channel_id, change.entry, f"The {change.entry.kind} change is recorded, but",
                          "state_changed.slack.j2", and_then=rules_and_card, change=change)


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def sev(request: SlashRequest) -> Reply:
        if request.args.strip().lower() in ("", "help"):
            return Reply(text=render("severity_matrix.slack.j2", playbook=runtime.playbook))
        wanted = parse_sev(request.args)
        with runtime.transaction() as session:
            change = incidents.change_severity(session, request.channel_id, wanted.severity,
                                               wanted.reason, request.user_id, runtime.playbook)
        return _announce(runtime, request, change)

    def status(request: SlashRequest) -> Reply:
        wanted = parse_status(request.args)
        with runtime.transaction() as session:
            change = incidents.change_status(session, request.channel_id, wanted.status,
                                             wanted.note, request.user_id, runtime.playbook,
                                             force_reason=wanted.force_reason)
        return _announce(runtime, request, change)

    router.add("sev", sev)
    router.add("status", status)
