"""Slack-side work on an incident's channel: open it, keep its card and topic current, post to it."""

from __future__ import annotations

import logging
from typing import Callable

from slack_sdk import WebClient

from bot import after_ack, assessment, incidents, rules, slack_io
from bot.after_ack import RoomOpenDue, RoomPostDue
from bot.db import utcnow
from bot.incidents import IncidentView, TimelineItem
from bot.reminders import DeliveryFailed
from bot.render import render
from bot.rules import FiredRule
from bot.runtime import Runtime
from commands.messages import ROOM_GONE_ERRORS, card_blocks, card_fallback_text, post_reminder, section_blocks
from commands.router import Reply

log = logging.getLogger(__name__)

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


def entry_metadata(*entry_ids: int) -> dict:
    """The metadata of a message posting these timeline entries, by which a takeover finds any of them."""
    return slack_io.keyed_metadata(after_ack.ENTRY_EVENT, *map(after_ack.entry_key, entry_ids))


def turn_came_in_time(runtime: Runtime, entry: TimelineItem) -> bool:
    """Whether this process still does the room work an entry written `awaiting_room_post` owes.

    One whose turn came late (the room's earlier posts held up by a slow or rate-limiting Slack) is
    left to the ticker, which takes over an entry still unposted `repost_after` after it was
    recorded: a post started now could still be on its way then, found by neither and posted twice.
    The takeover looks for it in the room and posts it once, late. A post started before half that
    time has the other half to get through.
    """
    waited = utcnow() - entry.occurred_at  # an entry's time is when it was recorded
    if waited <= runtime.settings.repost_after / 2:
        return True
    log.warning("left the room post of timeline entry %s to the takeover: its turn came %.0f s after "
                "it was recorded", entry.id, waited.total_seconds())
    return False


def owed_room_post(runtime: Runtime, channel_id: str, entry: TimelineItem, failure: str, template: str, *,
                   and_then: Callable[[WebClient], None] | None = None, **values) -> Reply:
    """The reply of a command whose entry owes the room a message: after the ack, `template` is
    rendered with `values`, posted tagged with the entry, followed by `and_then` (the rules it fired,
    the card) and the entry marked posted (`owed_room_work`); `failure` opens what the person is
    told if Slack refuses."""
    def tell(client: WebClient) -> None:
        post(client, channel_id, render(template, **values), metadata=entry_metadata(entry.id))
        if and_then is not None:
            and_then(client)

    return Reply(then=lambda client: owed_room_work(runtime, entry, lambda: tell(client)), then_failure=failure)


def owed_room_work(runtime: Runtime, entry: TimelineItem, work: Callable[[], None]) -> None:
    """Do the room work (posting the entry tagged `entry_metadata`, and whatever goes with it) that an
    entry written `awaiting_room_post` owes, and let the ticker mark it done. Work Slack refused is
    marked too: the person is told (commands.router) and it is not done behind their back later;
    only a process that died first leaves it to another (bot.after_ack)."""
    if not turn_came_in_time(runtime, entry):
        return
    try:
        work()
    finally:
        runtime.posted_entries.add(entry.id)


def open_war_room(client: WebClient, runtime: Runtime, incident: IncidentView, *,
                  maybe_created: bool = False) -> IncidentView:
    """Create the channel, bring the declarer in, pin the card, set the topic, announce it.

    Each step that succeeded is remembered, so a failure part-way leaves a usable record. When an
    earlier attempt may have created the channel before its process died (`maybe_created`), that
    channel is taken instead of opening another under a `-2` name beside an empty one.
    """
    wanted_name = incidents.channel_name_for(incident.number, incident.title, incident.is_drill)
    left = _room_left_by_an_earlier_attempt(client, runtime, wanted_name) if maybe_created else None
    channel_id, channel_name = left or slack_io.create_channel(client, wanted_name)
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


def _room_left_by_an_earlier_attempt(client: WebClient, runtime: Runtime, wanted_name: str) -> tuple[str, str] | None:
    """(id, name) of a channel this bot created under one of the names `slack_io.create_channel` would
    try for the room and no incident has: the one a process that died between Slack creating it and
    recording it left behind (the names carry the incident's number, so it can be no other's)."""
    names = slack_io.channel_names(wanted_name)
    try:
        created = slack_io.channels_created_by_us(client, names)
    except slack_io.SlackCallFailed as exc:
        # Opening the room matters more than sparing an empty channel: open one, maybe under -2.
        log.warning("could not look for a room an earlier attempt created (%s); opening one", exc)
        return None
    with runtime.transaction() as session:
        in_use = incidents.channels_in_use(session, list(created.values()))
    return next(((created[name], name) for name in names if name in created and created[name] not in in_use), None)


# Slack's answers to opening a room that retrying cannot change: the bot may not create channels.
ROOM_REFUSED_ERRORS = {"missing_scope", "not_allowed_token_type", "restricted_action", "invalid_auth",
                       "account_inactive", "token_revoked", "not_authed"}


def deliver_room(client: WebClient, runtime: Runtime):
    """The ticker's delivery of a war room the process that acknowledged the declaration never
    opened (it died first, or Slack refused then): open it now. Several messages, none the reminder's
    own, so no ts is kept for it (the card's is on the incident)."""

    def deliver(due: RoomOpenDue) -> str:
        try:
            open_war_room(client, runtime, due.incident, maybe_created=True)
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


# The entries whose change the pinned card shows (the topic too: TOPIC_CHANGES), and those that can
# fire playbook rules: their late message brings the card up to date, and tells the rules they fired.
CARD_CHANGES = {"severity", "status", "role", "classified", "flag"}
TOPIC_CHANGES = {"severity", "status"}
RULE_FIRING = {"severity", "classified", "flag"}


def deliver_room_post(client: WebClient, runtime: Runtime):
    """The ticker's delivery of an entry's room message a dead process may not have posted (a note, a
    decision, a change, evidence, a containment action): looked up in the room by its key first (it
    may have), else posted, saying it comes late. A change's card and topic are brought up to date and
    a new role holder invited, as the live post would have (each of those harmless to do twice); the
    message carries what the live one was followed by: a classification's guidance from the
    playbook, the playbook rules a change fired."""

    def deliver(due: RoomPostDue) -> str:
        clocks = []
        if due.entry.kind == "notification" and due.entry.source_ref != "decision":
            with runtime.transaction() as session:  # the answer may have started one: say which run now
                clocks = assessment.running_clocks(session, due.incident_id)
        text = render("timeline_entry_logged.slack.j2", entry=due.entry, incident=due.incident, clocks=clocks,
                      late=True)
        if due.entry.kind == "classified":
            failure_mode = (due.entry.new_value or "").partition("/")[2]
            text += "\n" + render("guidance.slack.j2", failure_mode=failure_mode,
                                  guidance=runtime.playbook.taxonomy.failure_modes.get(failure_mode))
        if due.entry.kind in RULE_FIRING:
            with runtime.transaction() as session:
                fired = rules.fired_so_far(session, due.incident_id, runtime.playbook, fired_at=due.entry.occurred_at)
            if fired:
                text += "\n" + render("rules_fired.slack.j2", fired=fired)
        ts = post_reminder(client, due.channel_id, text, event_type=after_ack.ENTRY_EVENT, due=due,
                           permanent_errors=ROOM_GONE_ERRORS)
        if due.entry.kind in CARD_CHANGES:
            try:
                if due.entry.kind == "role" and due.entry.new_value:
                    slack_io.invite(client, due.channel_id, due.entry.new_value)
                refresh_card(client, due.incident, topic_changed=due.entry.kind in TOPIC_CHANGES)
            except slack_io.SlackCallFailed as exc:
                # The message is in the room; the card catches up at the incident's next change.
                log.warning("posted %s late but could not bring its card up to date: %s", due.reference, exc)
        return ts

    return deliver
