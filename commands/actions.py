"""Corrective and preventive actions: `/incident action`, `/incident actions`, and owners' reminders."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot import actions, incidents
from bot.db import utcnow
from bot.render import render
from commands.messages import reminder_delivery
from commands.parsing import ActionRequest, parse_action, parse_no_arguments
from commands.router import Reply, Router, SlashRequest
from commands.war_room import post

ACTION_REMINDER_EVENT = "warroom_action_reminder"
# Slack errors after which retrying an owner's reminder cannot help.
PERMANENT_ERRORS = {"user_not_found", "user_disabled", "cannot_dm_bot", "account_inactive", "invalid_auth"}


# The ticker's delivery step for action reminders: a DM to the owner, posted once.
deliver_action_reminder = reminder_delivery("action_reminder.slack.j2", ACTION_REMINDER_EVENT,
                                            to=lambda due: due.action.owner_id, permanent_errors=PERMANENT_ERRORS)


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def action(request: SlashRequest) -> Reply:
        wanted = parse_action(request.args)
        with runtime.transaction() as session:
            if isinstance(wanted, ActionRequest):
                change = actions.record_action(
                    session, request.channel_id, owner_id=wanted.owner_id, due_on=wanted.due_on, text=wanted.text,
                    verification=wanted.verification, actor_id=request.user_id, playbook=runtime.playbook)
            elif wanted.state == "verification":
                change = actions.set_verification(session, request.channel_id, wanted.number, wanted.text,
                                                  request.user_id)
            elif wanted.state == "done":
                change = actions.mark_action_done(session, request.channel_id, wanted.number, wanted.text,
                                                  request.user_id)
            else:
                change = actions.verify_action(session, request.channel_id, wanted.number, wanted.text,
                                               request.user_id)

        def tell(client: WebClient) -> None:
            if isinstance(wanted, ActionRequest):
                post(client, request.channel_id, render("action_recorded.slack.j2", action=change.action))
                post(client, change.action.owner_id, render("action_assigned.slack.j2", action=change.action),
                     step="telling the owner")
            else:
                post(client, request.channel_id, render("action_state.slack.j2", action=change.action,
                                                        note=wanted.text, changed=wanted.state))

        return Reply(then=tell, then_failure=f"{change.action.label} is recorded, but")

    def list_actions(request: SlashRequest) -> Reply:
        parse_no_arguments("actions", request.args)
        with runtime.transaction() as session:
            incident = incidents.incident_in_channel(session, request.channel_id)
            listed = actions.incident_actions(session, incident.id)
        return Reply(text=render("actions.slack.j2", incident=incident, actions=listed, today=utcnow().date()))

    router.add("action", action)
    router.add("actions", list_actions)
