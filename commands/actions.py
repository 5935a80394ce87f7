"""Corrective and preventive actions: `/incident action`, `/incident actions`, and owners' reminders."""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_sdk import WebClient

from bot import actions, incidents, slack_io
from bot.after_ack import ENTRY_EVENT, RoomPostDue
from bot.db import utcnow
from bot.reminders import DeliveryFailed
from bot.render import render
from bot.runtime import Runtime
from commands.messages import ROOM_GONE_ERRORS, post_reminder, reminder_delivery, section_blocks
from commands.parsing import ActionRequest, parse_action, parse_no_arguments
from commands.router import Reply, Router, SlashRequest
from commands.war_room import entry_metadata, owed_room_work, post

log = logging.getLogger(__name__)

ACTION_REMINDER_EVENT = "warroom_action_reminder"
# Slack errors after which retrying an owner's reminder cannot help.
PERMANENT_ERRORS = {"user_not_found", "user_disabled", "cannot_dm_bot", "account_inactive", "invalid_auth"}


def deliver_late_action(client: WebClient, runtime: Runtime, room_posts):
    """The ticker's delivery of a new corrective action's messages a dead process may not have sent:
    the room's and its owner's DM, each looked up by the entry's key first, else sent, saying they
    come late. A later change of the action is a room message like any entry's (`room_posts`)."""

    def deliver(due: RoomPostDue) -> str:
        if due.entry.old_value is not None:  # done, verified, a verification said: not a new action
            return room_posts(due)
        with runtime.transaction() as session:
            action = actions.action_view(session, due.incident_id, due.entry.source_ref or "")
        if action is None:
            return room_posts(due)
        text = render("action_recorded.slack.j2", action=action, entry=due.entry, late=True)
        ts = post_reminder(client, due.channel_id, text, event_type=ENTRY_EVENT, due=due,
                           permanent_errors=ROOM_GONE_ERRORS)
        assigned = render("action_assigned.slack.j2", action=action)
        try:
            slack_io.post_once(client, action.owner_id, text=assigned, blocks=section_blocks([assigned]),
                               event_type=ENTRY_EVENT, key=due.dedupe_key, since=due.due_at, maybe_posted=True)
        except slack_io.SlackCallFailed as exc:
            if exc.error not in PERMANENT_ERRORS:
                raise DeliveryFailed(str(exc)) from exc  # tried again; the room's is found, not reposted
            log.warning("posted %s late but could not tell its owner: %s", action.reference, exc)
        return ts

    return deliver


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
            tagged = entry_metadata(change.entry.id)
            if isinstance(wanted, ActionRequest):
                post(client, request.channel_id, render("action_recorded.slack.j2", action=change.action),
                     metadata=tagged)
                post(client, change.action.owner_id, render("action_assigned.slack.j2", action=change.action),
                     step="telling the owner", metadata=tagged)
            else:
                post(client, request.channel_id, render("action_state.slack.j2", action=change.action,
                                                        note=wanted.text, changed=wanted.state), metadata=tagged)

        return Reply(then=lambda client: owed_room_work(runtime, change.entry, lambda: tell(client)),
                     then_failure=f"{change.action.label} is recorded, but")

    def list_actions(request: SlashRequest) -> Reply:
        parse_no_arguments("actions", request.args)
        with runtime.transaction() as session:
            incident = incidents.incident_in_channel(session, request.channel_id)
            listed = actions.incident_actions(session, incident.id)
        return Reply(text=render("actions.slack.j2", incident=incident, actions=listed, today=utcnow().date()))

    router.add("action", action)
    router.add("actions", list_actions)
