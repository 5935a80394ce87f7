"""Slack-side work on an incident's channel: open it, keep its card and topic current, post to it."""

from __future__ import annotations

from slack_sdk import WebClient

from bot import incidents, rules, slack_io
from bot.after_ack import RoomOpenDue
from bot.incidents import IncidentView
from bot.reminders import DeliveryFailed
from bot.render import render
from bot.rules import FiredRule
from bot.runtime import Runtime
from commands.messages import card_blocks, card_fallback_text, section_blocks

TOPIC_MAX_CHARS = 250  # Slack's limit for a channel topic


def topic_for(incident: IncidentView) -> str:
    return render("topic.slack.j2", incident=incident)[:TOPIC_MAX_CHARS]


def post(client: WebClient, channel_id: str, text: str, step: str = "posting to the war room", *,
         metadata: dict | None = None) -> str:
    """Post rendered mrkdwn as a section; returns the message ts. `metadata` (Slack's message
    metadata) tags the message so a later delivery can find it (slack_io.post_once)."""
    return post_parts(client, channel_id, [text], step, metadata=metadata)


def post_parts(client: WebClient, channel_id: str, parts: list[str], step: str = "posting to the war room", *,
               metadata: dict | None = None) -> str:
    """Post rendered mrkdwn parts as one message, each in sections of its own; the message ts."""
    extra = {"metadata": metadata} if metadata else {}
    response = slack_io.call(step, client.chat_postMessage, channel=channel_id, text="\n".join(parts),
                             blocks=section_blocks(parts), unfurl_links=False, **extra)
    return response["ts"]


def open_war_room(client: WebClient, runtime: Runtime, incident: IncidentView) -> IncidentView:
    """Create the channel, bring the declarer in, pin the card, set the topic, announce it.

    Each step that succeeded is remembered, so a failure part-way leaves a usable record.
    """
    channel_id, channel_name = slack_io.create_channel(
        client, incidents.channel_name_for(incident.number, incident.title, incident.is_drill)
    )
    with runtime.transaction() as session:
        incident = incidents.attach_war_room(session, incident.id, channel_id, channel_name)
    slack_io.invite(client, channel_id, incident.declared_by)
    card = slack_io.call("posting the incident card", client.chat_postMessage, channel=channel_id,
                         text=card_fallback_text(incident), blocks=card_blocks(incident))
    with runtime.transaction() as session:
        incidents.record_card(session, incident.id, card["ts"])
    slack_io.pin(client, channel_id, card["ts"])
    slack_io.call("setting the topic", client.conversations_setTopic, channel=channel_id,
                  topic=topic_for(incident))
    with runtime.transaction() as session:
        fired = rules.fired_so_far(session, incident.id, runtime.playbook)
    if incident.failure_mode:  # classified in the declare form
        post(client, channel_id, render("guidance.slack.j2", failure_mode=incident.failure_mode,
                                        guidance=runtime.playbook.taxonomy.failure_modes.get(incident.failure_mode)))
    announce_rules(client, channel_id, fired)
    announce_channel = runtime.settings.warroom_announce_channel
    if announce_channel and not incident.is_drill:  # a drill is never announced as an incident
        post(client, announce_channel, render("announcement.slack.j2", incident=incident),
             step="announcing the incident")
    return incident


# Slack's answers to opening a room that retrying cannot change: the bot may not create channels.
ROOM_REFUSED_ERRORS = {"missing_scope", "not_allowed_token_type", "restricted_action", "invalid_auth",
                       "account_inactive", "token_revoked", "not_authed"}


def deliver_room(client: WebClient, runtime: Runtime):
    """The ticker's delivery of a war room the process that acknowledged the declaration never
    opened (it died first, or Slack refused then): open it now. Several messages, none the reminder's
    own, so no ts is kept for it (the card's is on the incident)."""

    def deliver(due: RoomOpenDue) -> str:
        try:
            open_war_room(client, runtime, due.incident)
            return ""
        except slack_io.SlackCallFailed as exc:
            raise DeliveryFailed(str(exc), permanent=exc.error in ROOM_REFUSED_ERRORS) from exc

    return deliver


def announce_rules(client: WebClient, channel_id: str, fired: list[FiredRule]) -> None:
    """Tell the room what the playbook rules that just fired say and require."""
    if fired:
        post(client, channel_id, render("rules_fired.slack.j2", fired=fired), step="posting the playbook rules")


def refresh_card(client: WebClient, incident: IncidentView, *, topic_changed: bool = False) -> None:
    """Bring the pinned card (and the topic, when severity or status moved) up to date."""
    if incident.channel_id is None:
        return
    if incident.card_ts:
        slack_io.call("updating the incident card", client.chat_update, channel=incident.channel_id,
                      ts=incident.card_ts, text=card_fallback_text(incident), blocks=card_blocks(incident))
    if topic_changed:
        slack_io.call("setting the topic", client.conversations_setTopic, channel=incident.channel_id,
                      topic=topic_for(incident))
