"""A :pushpin: reaction on a message in a war room adds that message to the timeline, once."""

from __future__ import annotations

import logging
import re

from slack_bolt import App
from sqlalchemy.exc import IntegrityError

from bot import incidents, slack_io
from bot.errors import NotAnIncidentChannel
from bot.render import render
from commands.parsing import human_text
from commands.router import Router

log = logging.getLogger(__name__)

PIN_REACTION = "pushpin"
# A Slack message ts: seconds, a dot, microseconds.
MESSAGE_TS = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    @app.event("reaction_added")
    def handle_reaction_added(body, event, client):
        item = event.get("item")
        if not isinstance(item, dict) or event.get("reaction") != PIN_REACTION or item.get("type") != "message":
            return
        channel_id, message_ts = item.get("channel"), item.get("ts")
        # A malformed event (a channel that is not a string, a ts that is not one, no user) raised in
        # this listener: a traceback per event, or a failing database query. It has nothing to record.
        if not (isinstance(channel_id, str) and isinstance(message_ts, str) and MESSAGE_TS.match(message_ts)
                and isinstance(event.get("user"), str) and event["user"]):
            log.info("ignored a malformed reaction_added event")
            return
        with runtime.transaction() as session:
            try:
                incident = incidents.incident_in_channel(session, channel_id)
            except NotAnIncidentChannel:
                return  # a pin anywhere else is none of our business
            if incidents.is_pinned(session, incident.id, channel_id, message_ts):
                return  # a second pin, a retried event or a re-added reaction adds nothing
        try:
            message = slack_io.fetch_message(client, channel_id, message_ts)
        except slack_io.SlackCallFailed as exc:  # e.g. the bot left the room; it raised out of the listener
            log.warning("could not read the pinned message %s/%s: %s", channel_id, message_ts, exc)
            return
        if message is None:
            log.info("pinned message %s/%s is gone", channel_id, message_ts)
            return
        link = slack_io.permalink(client, channel_id, message_ts)
        try:
            with runtime.transaction() as session:
                if body.get("event_id") and not incidents.claim_event(session, body["event_id"]):
                    return
                entry = incidents.record_pinned_message(
                    session, channel_id,
                    message_ts=message_ts,
                    author_id=message.get("user") or message.get("bot_id") or "unknown",
                    text=human_text(message.get("text") or ""),
                    pinned_by=event["user"],
                    permalink=link,
                )
        except IntegrityError:
            return  # a concurrent delivery of the same pin won the race
        if entry is None:
            return
        slack_io.call("confirming the pin", client.chat_postMessage, channel=channel_id,
                      thread_ts=message_ts, text=render("pinned.slack.j2", incident=incident, pinned_by=event["user"]))
