"""The person's side of Slack: what Slack sends to the bot when people act.

``SlackSimulator`` plays Slack's servers delivering user actions to the bot's
request URL: slash commands, Events API callbacks, modal submissions and
button clicks, with the payload fields Slack documents and signed with the
v0 request-signing scheme, so the bot's real signature check and parsers are
exercised.  It works hand in hand with a ``SlackStandIn``: the trigger_ids and
response_urls it hands out are ones the stand-in will honour, and what people
do (post, react) lands in the stand-in's state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from .server import APP_ID, BOT_USER_ID, STANDIN_ONLY_MESSAGE_FIELDS, TEAM_DOMAIN, TEAM_ID, SlackStandIn

# Slack gives up on the bot after 3 seconds and shows the person an error.
SLACK_ACK_TIMEOUT_SECONDS = 3.0
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# What Slack calls the channel of a DM in slash commands and interaction payloads.
IM_CHANNEL_NAME = "directmessage"


def sign(signing_secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 request signature over ``v0:<timestamp>:<raw body>``."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class SimResult:
    """What the bot answered to one delivery."""

    status: int | None  # None when the bot did not answer within Slack's timeout
    body: Any  # parsed JSON when possible, else the text ("" for an empty ack)
    response_url_token: str | None = None
    trigger_id: str | None = None
    event_id: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.status is None


def slash_command_fields(standin: SlackStandIn, user_id: str, channel_id: str, text: str,
                         command: str = "/incident", trigger_id: str | None = None,
                         verification_token: str = "standin-verification-token") -> tuple[dict, str]:
    """A slash command's fields as Slack sends them (an HTTP form, or a Socket Mode payload), with a
    fresh trigger_id unless given and a response_url; returns (fields, the response_url's token)."""
    channel = standin.channel(channel_id)
    if channel is None:
        raise ValueError(f"unknown channel {channel_id}")
    user = standin.user(user_id)
    if user is None:
        raise ValueError(f"unknown user {user_id}")
    trigger_id = trigger_id or standin.issue_trigger(user_id)
    token = standin.issue_response_url(user_id, channel["id"])
    return {
        "token": verification_token, "team_id": TEAM_ID, "team_domain": TEAM_DOMAIN,
        "channel_id": channel["id"], "channel_name": IM_CHANNEL_NAME if channel["is_im"] else channel["name"],
        "user_id": user_id, "user_name": user["name"],
        "command": command, "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
        "response_url": standin.response_url(token), "trigger_id": trigger_id,
    }, token


class SlackSimulator:
    """Sends signed, Slack-shaped requests to the bot's events URL."""

    def __init__(self, standin: SlackStandIn, bot_url: str, signing_secret: str,
                 verification_token: str = "standin-verification-token",
                 timeout: float = SLACK_ACK_TIMEOUT_SECONDS):
        self.standin = standin
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        # The deprecated verification token still travels in every payload.
        self.verification_token = verification_token
        self.timeout = timeout

    # ------------------------------------------------------------ transport
    def send_raw(self, body: str, content_type: str, timestamp: str | None = None,
                 signature: str | None = None, headers: dict[str, str] | None = None) -> SimResult:
        """POST ``body`` as Slack would; pass timestamp/signature to forge or age it."""
        timestamp = str(int(time.time())) if timestamp is None else timestamp
        signature = sign(self.signing_secret, timestamp, body) if signature is None else signature
        request_headers = {
            "Content-Type": content_type,
            "User-Agent": SLACK_USER_AGENT,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
            **(headers or {}),
        }
        try:
            response = requests.post(self.bot_url, data=body.encode(), headers=request_headers,
                                     timeout=self.timeout)
        except requests.Timeout:
            return SimResult(status=None, body=None)
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text
        return SimResult(status=response.status_code, body=parsed)

    def _send_form(self, fields: dict[str, str]) -> SimResult:
        return self.send_raw(urlencode(fields), FORM)

    def _send_interaction(self, payload: dict) -> SimResult:
        """Interactivity payloads arrive form-encoded as ``payload=<json>``."""
        return self._send_form({"payload": json.dumps(payload)})

    # -------------------------------------------------------------- helpers
    def _user(self, user_id: str) -> dict:
        user = self.standin.user(user_id)
        if user is None:
            raise ValueError(f"unknown user {user_id}")
        return user

    def _channel(self, channel_id: str) -> dict:
        channel = self.standin.channel(channel_id)
        if channel is None:
            raise ValueError(f"unknown channel {channel_id}")
        if channel["is_im"]:
            channel["name"] = IM_CHANNEL_NAME
        return channel

    def _interaction_user(self, user_id: str) -> dict:
        user = self._user(user_id)
        return {"id": user_id, "username": user["name"], "name": user["name"], "team_id": TEAM_ID}

    def _interaction_base(self, kind: str, user_id: str, trigger_id: str) -> dict:
        return {
            "type": kind, "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "user": self._interaction_user(user_id), "api_app_id": APP_ID,
            "token": self.verification_token, "trigger_id": trigger_id,
            "enterprise": None, "is_enterprise_install": False,
        }

    # ------------------------------------------------------- slash commands
    def command(self, user_id: str, channel_id: str, text: str, command: str = "/incident",
                trigger_id: str | None = None) -> SimResult:
        """A person typing ``/incident <text>`` in a channel; pass an earlier result's ``trigger_id``
        to deliver the same invocation again (a proxy's retry, a double submission)."""
        fields, token = slash_command_fields(self.standin, user_id, channel_id, text, command, trigger_id,
                                             self.verification_token)
        result = self._send_form(fields)
        result.response_url_token, result.trigger_id = token, fields["trigger_id"]
        return result

    # ------------------------------------------------------------- messages
    def post_message(self, user_id: str, channel_id: str, text: str, thread_ts: str | None = None) -> str:
        """A person posting a message; stored only, as the bot gets no message events."""
        return self.standin.post_as_user(user_id, channel_id, text, thread_ts)["ts"]

    # --------------------------------------------------------------- events
    def send_event(self, event: dict, event_id: str | None = None, retry_num: int | None = None) -> SimResult:
        """Deliver ``event`` in an ``event_callback`` envelope, as the Events API does."""
        event_id = event_id or f"Ev{secrets.token_hex(5).upper()}"
        envelope = {
            "token": self.verification_token, "team_id": TEAM_ID, "context_team_id": TEAM_ID,
            "context_enterprise_id": None, "api_app_id": APP_ID, "event": event,
            "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                                "is_bot": True, "is_enterprise_install": False}],
            "authed_users": [BOT_USER_ID], "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_urlsafe(24)}",
        }
        # Slack marks redeliveries so apps can skip work they already did.
        headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} \
            if retry_num is not None else None
        result = self.send_raw(json.dumps(envelope), JSON, headers=headers)
        result.event_id = event_id
        return result

    def _reaction_event(self, kind: str, user_id: str, channel_id: str, ts: str, reaction: str,
                        present: bool, event_id: str | None, retry_num: int | None) -> SimResult:
        message = self.standin.set_reaction(user_id, channel_id, ts, reaction, present)
        event = {
            "type": kind, "user": user_id, "reaction": reaction, "item_user": message["user"],
            "item": {"type": "message", "channel": message["channel"], "ts": ts},
            "event_ts": f"{time.time():.6f}",
        }
        return self.send_event(event, event_id, retry_num)

    def react(self, user_id: str, channel_id: str, ts: str, reaction: str = "pushpin",
              event_id: str | None = None, retry_num: int | None = None) -> SimResult:
        """A person adding an emoji reaction to a message -> ``reaction_added``."""
        return self._reaction_event("reaction_added", user_id, channel_id, ts, reaction, True,
                                    event_id, retry_num)

    def unreact(self, user_id: str, channel_id: str, ts: str, reaction: str = "pushpin",
                event_id: str | None = None, retry_num: int | None = None) -> SimResult:
        """A person removing their reaction -> ``reaction_removed``."""
        return self._reaction_event("reaction_removed", user_id, channel_id, ts, reaction, False,
                                    event_id, retry_num)

    def url_verification(self, challenge: str | None = None) -> SimResult:
        """The handshake Slack performs when the request URL is configured."""
        body = {"token": self.verification_token, "type": "url_verification",
                "challenge": challenge or secrets.token_urlsafe(24)}
        return self.send_raw(json.dumps(body), JSON)

    # ---------------------------------------------------------------- views
    def submit_view(self, user_id: str, view_id: str, values: dict[str, Any]) -> SimResult:
        """A person filling in a modal's inputs and pressing its submit button.

        ``values`` maps action_id -> what the person entered or picked.  Like
        Slack's client this refuses to submit when a required input is empty
        or a choice isn't one of the element's options.
        """
        record = self.standin.view(view_id)
        if record is None or record["closed"]:
            raise ValueError(f"view {view_id} is not open")
        if record["user"] != user_id:
            raise ValueError(f"view {view_id} belongs to {record['user']}, not {user_id}")
        view = record["view"]
        view["state"] = {"values": _state_values(view["blocks"], dict(values))}
        trigger_id = self.standin.issue_trigger(user_id)
        payload = {**self._interaction_base("view_submission", user_id, trigger_id),
                   "view": view, "response_urls": []}
        result = self._send_interaction(payload)
        result.trigger_id = trigger_id
        if result.status == 200:
            self.standin.apply_view_response(view_id, result.body)
        return result

    # -------------------------------------------------------------- buttons
    def click(self, user_id: str, channel_id: str, message_ts: str, action_id: str, value: str) -> SimResult:
        """A person clicking a button in a message -> ``block_actions``."""
        channel = self._channel(channel_id)
        message = self.standin.message(channel["id"], message_ts)
        if message is None:
            raise ValueError(f"no message {message_ts} in {channel_id}")
        block_id, button = _find_button(message.get("blocks") or [], action_id)
        trigger_id = self.standin.issue_trigger(user_id)
        token = self.standin.issue_response_url(user_id, channel["id"], message_ts)
        for internal in STANDIN_ONLY_MESSAGE_FIELDS:
            message.pop(internal, None)
        payload = {
            **self._interaction_base("block_actions", user_id, trigger_id),
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel["id"],
                          "is_ephemeral": False},
            "channel": {"id": channel["id"], "name": channel["name"]},
            "message": message, "state": {"values": {}},
            "response_url": self.standin.response_url(token),
            "actions": [{"action_id": action_id, "block_id": block_id, "text": button.get("text"),
                         "value": value, "style": button.get("style"), "type": "button",
                         "action_ts": f"{time.time():.6f}"}],
        }
        result = self._send_interaction(payload)
        result.response_url_token, result.trigger_id = token, trigger_id
        return result


def _find_button(blocks: list[dict], action_id: str) -> tuple[str, dict]:
    """The (block_id, button) a person can click; Slack only sends actions that exist."""
    for block in blocks:
        candidates = list(block.get("elements") or []) + [block.get("accessory") or {}]
        for element in candidates:
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return block.get("block_id", ""), element
    raise ValueError(f"no button with action_id {action_id!r} in the message")


def _option(element: dict, value: str) -> dict:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options += group.get("options") or []
    for option in options:
        if option.get("value") == value:
            return option
    raise ValueError(f"{value!r} is not an option of {element.get('action_id')!r}")


def _element_state(element: dict, value: Any) -> dict:
    """One input's entry in ``view.state.values``, shaped by its element type."""
    kind = element["type"]
    state: dict[str, Any] = {"type": kind}
    if kind in ("static_select", "radio_buttons"):
        state["selected_option"] = None if value is None else _option(element, value)
    elif kind in ("multi_static_select", "checkboxes"):
        state["selected_options"] = [_option(element, v) for v in value or []]
    elif kind == "users_select":
        state["selected_user"] = value
    elif kind == "multi_users_select":
        state["selected_users"] = list(value or [])
    elif kind == "conversations_select":
        state["selected_conversation"] = value
    elif kind == "channels_select":
        state["selected_channel"] = value
    elif kind == "datepicker":
        state["selected_date"] = value
    elif kind == "timepicker":
        state["selected_time"] = value
    else:  # plain_text_input, number_input, email/url_text_input
        state["value"] = value
    return state


def _state_values(blocks: list[dict], values: dict[str, Any]) -> dict:
    """Build ``state.values`` (block_id -> action_id -> state) from the person's entries.

    Slack lists every input block, empty ones with null values.
    """
    state: dict[str, dict] = {}
    for block in blocks:
        if block.get("type") != "input":
            continue
        element = block["element"]
        action_id = element["action_id"]
        value = values.pop(action_id, None)
        if value in (None, "", []) and not block.get("optional", False):
            raise ValueError(f"Slack would not submit: {action_id!r} is required")
        state[block["block_id"]] = {action_id: _element_state(element, value if value != "" else None)}
    if values:
        raise ValueError(f"no input with action_id {sorted(values)} in the view")
    return state
