"""The one place that talks to Slack's Web API: retries, name collisions and Slack's quirks."""

from __future__ import annotations

import http.client
import io
import logging
import ssl
import threading
import urllib.request
from datetime import datetime, timedelta
from typing import Callable
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot import observability
from bot.idle_sockets import hung_up

log = logging.getLogger(__name__)

NAME_TAKEN_ATTEMPTS = 20


class SlackCallFailed(Exception):
    """A Slack call failed after retries; the message says which step and Slack's error."""

    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"{step} failed: {error}")
        self.step = step
        self.error = error


class KeepAliveWebClient(WebClient):
    """slack_sdk's WebClient, keeping its connections to Slack open between calls.

    The stock client opens a new connection for every call (urllib), which for slack.com is a TCP
    and a TLS handshake before each post: a round trip or two of latency and most of the call's
    CPU. This one keeps idle connections in a small pool. Errors surface as urllib's would
    (HTTPError for 4xx/5xx, URLError when the request could not be sent), so slack_sdk's retry
    handlers treat them the same. A proxy, if configured, goes the stock way.
    """

    IDLE_CONNECTIONS_KEPT = 8

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._idle_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _perform_urllib_http_request_internal(self, url: str, req: urllib.request.Request) -> dict:
        parts = urlsplit(url)
        if self.proxy is not None or parts.scheme not in ("http", "https"):
            return super()._perform_urllib_http_request_internal(url, req)
        where = (parts.scheme, parts.netloc)
        connection = self._idle_connection(where) or self._new_connection(parts)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            try:
                connection.request("POST", path, body=req.data, headers=dict(req.header_items()))
            except OSError as exc:
                raise URLError(exc) from exc  # as urllib reports a request it could not send
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._keep(where, connection)
        if response.status >= 400:
            raise HTTPError(url, response.status, response.reason, response.headers, io.BytesIO(body))
        if response.headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": response.headers, "body": body}  # a file, as bytes
        charset = response.headers.get_content_charset() or "utf-8"
        return {"status": response.status, "headers": response.headers, "body": body.decode(charset)}

    def _new_connection(self, parts) -> http.client.HTTPConnection:
        if parts.scheme == "https":
            if self._tls is None:
                self._tls = self.ssl or ssl.create_default_context()  # reading the CA bundle costs: once
            return http.client.HTTPSConnection(parts.netloc, timeout=self.timeout, context=self._tls)
        return http.client.HTTPConnection(parts.netloc, timeout=self.timeout)

    def _idle_connection(self, where: tuple[str, str]) -> http.client.HTTPConnection | None:
        """An idle connection the server has not closed meanwhile (a closed one reads as ready)."""
        while True:
            with self._idle_lock:
                idle = self._idle.get(where)
                if not idle:
                    return None
                connection = idle.pop()
            if connection.sock is not None and not hung_up(connection.sock):
                return connection
            connection.close()

    def _keep(self, where: tuple[str, str], connection: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            idle = self._idle.setdefault(where, [])
            if len(idle) < self.IDLE_CONNECTIONS_KEPT:
                idle.append(connection)
                return
        connection.close()


class SlackErrorCounter(RetryHandler):
    """First among a WebClient's retry handlers, it sees every attempt's response and counts each
    error (`ok: false`, HTTP 429 and 5xx, timeouts and refused connections), retried or not. It never
    asks for a retry itself, so the handlers after it decide."""

    def __init__(self, base_url: str) -> None:
        super().__init__(max_retry_count=0)
        self.base_url = base_url

    def can_retry(self, *, state, request, response=None, error=None) -> bool:
        try:
            self._count(request, response, error)
        except Exception:  # noqa: BLE001 - counting must never break a Slack call
            log.debug("could not count a Slack API error", exc_info=True)
        return False

    def _count(self, request, response, error) -> None:
        url = (request.url or "").split("?", 1)[0]
        method = url[len(self.base_url):] if url.startswith(self.base_url) else "other"
        if response is not None:
            if response.status_code == 429:
                code = "ratelimited"
            elif response.status_code >= 400:
                code = f"http_{response.status_code}"
            elif isinstance(response.body, dict) and response.body.get("ok") is False:
                code = str(response.body.get("error") or "unknown")[:64]
            else:
                return
        elif error is not None:
            code = _connection_error(error)
        else:
            return
        observability.slack_api_error(method, code)


def _connection_error(error: BaseException) -> str:
    reason = error.reason if isinstance(error, URLError) and isinstance(error.reason, BaseException) else error
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timeout"
    if isinstance(reason, (ConnectionError, URLError)):
        return "connection_error"
    return type(reason).__name__.lower()[:64]


def count_slack_errors(client) -> None:
    """Count this WebClient's error responses (its retry handlers are copied to Bolt's per-request clients)."""
    if not any(isinstance(handler, SlackErrorCounter) for handler in client.retry_handlers):
        client.retry_handlers.insert(0, SlackErrorCounter(client.base_url))


def make_client(token: str, base_url: str, timeout: float = 10.0) -> WebClient:
    """A WebClient that keeps its connections, waits out 429s (honouring Retry-After) and retries 5xx
    and dropped connections, counting every error response, retried or not, in
    warroom_slack_api_errors_total."""
    client = KeepAliveWebClient(token=token, base_url=base_url, timeout=timeout)
    client.retry_handlers.extend(
        [
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ]
    )
    count_slack_errors(client)  # first of the handlers: it sees each attempt, and never retries itself
    return client


def _error_of(exc: SlackApiError) -> str:
    response = exc.response
    try:
        return str(response.get("error") or f"HTTP {response.status_code}")
    except Exception:  # noqa: BLE001 - a non-JSON body still deserves a readable error
        return f"HTTP {getattr(response, 'status_code', '?')}"


# Every message posted in a drill's room is marked as a drill, whatever posts it. Set at start-up
# (commands.drill.DrillRooms): channel id -> whether it is a drill's room.
_is_drill_room: Callable[[str], bool] | None = None
DRILL_MARK = ":construction: *DRILL*: a tabletop exercise, not a real incident."
MARKED_METHODS = {"chat_postMessage", "chat_postEphemeral", "chat_update"}


def mark_drill_rooms(is_drill_room: Callable[[str], bool] | None) -> None:
    global _is_drill_room
    _is_drill_room = is_drill_room


def _marked_for_drills(method, kwargs: dict) -> dict:
    """The message with the drill mark added, if it goes to a drill's room and lacks one."""
    channel, text = kwargs.get("channel"), kwargs.get("text") or ""
    if (_is_drill_room is None or getattr(method, "__name__", "") not in MARKED_METHODS or not channel
            or text.startswith((":construction:", "DRILL")) or not _is_drill_room(channel)):
        return kwargs
    marked = {**kwargs, "text": f"[DRILL] {text}"}
    if kwargs.get("blocks"):
        mark = {"type": "context", "elements": [{"type": "mrkdwn", "text": DRILL_MARK}]}
        marked["blocks"] = [mark, *kwargs["blocks"]]
    return marked


def call(step: str, method, **kwargs):
    """Call a WebClient method, turning Slack's refusal into SlackCallFailed naming the step."""
    try:
        return method(**_marked_for_drills(method, kwargs))
    except SlackApiError as exc:
        raise SlackCallFailed(step, _error_of(exc)) from exc
    except OSError as exc:  # timeouts and refused connections after the retry handlers gave up
        raise SlackCallFailed(step, type(exc).__name__) from exc


def channel_names(wanted_name: str) -> list[str]:
    """The names `create_channel` tries, in order: the wanted one, then -2, -3, … (80 characters at most)."""
    return [wanted_name[: 80 - len(suffix)] + suffix
            for suffix in [""] + [f"-{attempt}" for attempt in range(2, NAME_TAKEN_ATTEMPTS + 1)]]


def create_channel(client: WebClient, wanted_name: str) -> tuple[str, str]:
    """Create a public channel, adding -2, -3, … while Slack says the name is taken."""
    for name in channel_names(wanted_name):
        try:
            response = client.conversations_create(name=name)
        except SlackApiError as exc:
            if _error_of(exc) == "name_taken":
                continue
            raise SlackCallFailed("creating the channel", _error_of(exc)) from exc
        return response["channel"]["id"], response["channel"]["name"]
    raise SlackCallFailed("creating the channel", f"name_taken {NAME_TAKEN_ATTEMPTS} times")


def channels_created_by_us(client: WebClient, names: list[str]) -> dict[str, str]:
    """Name -> id of the public, unarchived channels among `names` that this bot created.

    Slack has no lookup by name, so this pages through every public channel (a thousand a call):
    for the rare takeover of a room whose creation may have reached Slack, not for a command.
    """
    me = call("asking Slack who the bot is", client.auth_test)["user_id"]
    wanted, found, cursor = set(names), {}, None
    while True:
        page = call("listing channels", client.conversations_list, types="public_channel", exclude_archived=True,
                    limit=1000, **({"cursor": cursor} if cursor else {}))
        for channel in page.get("channels", []):
            if channel.get("name") in wanted and channel.get("creator") == me:
                found[channel["name"]] = channel["id"]
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return found


def invite(client: WebClient, channel_id: str, user_id: str) -> None:
    """Invite someone to a channel; being there already is fine."""
    try:
        client.conversations_invite(channel=channel_id, users=user_id)
    except SlackApiError as exc:
        if _error_of(exc) in ("already_in_channel", "cant_invite_self"):
            return
        raise SlackCallFailed("inviting the user", _error_of(exc)) from exc


def pin(client: WebClient, channel_id: str, ts: str) -> None:
    try:
        client.pins_add(channel=channel_id, timestamp=ts)
    except SlackApiError as exc:
        if _error_of(exc) == "already_pinned":
            return
        raise SlackCallFailed("pinning the card", _error_of(exc)) from exc


def fetch_message(client: WebClient, channel_id: str, ts: str) -> dict | None:
    """The message at `ts` in a channel, whether top-level or in a thread; None if it is gone."""
    history = call(
        "reading the pinned message", client.conversations_history,
        channel=channel_id, latest=ts, inclusive=True, limit=1,
    )
    for message in history.get("messages", []):
        if message.get("ts") == ts:
            return message
    # conversations.history only holds top-level messages; replies are found through their thread.
    try:
        replies = client.conversations_replies(channel=channel_id, ts=ts, latest=ts, inclusive=True, limit=1)
    except SlackApiError as exc:
        if _error_of(exc) == "thread_not_found":
            return None
        raise SlackCallFailed("reading the pinned message", _error_of(exc)) from exc
    for message in replies.get("messages", []):
        if message.get("ts") == ts:
            return message
    return None


def permalink(client: WebClient, channel_id: str, ts: str) -> str | None:
    try:
        return client.chat_getPermalink(channel=channel_id, message_ts=ts).get("permalink")
    except SlackApiError as exc:
        log.warning("no permalink for %s/%s: %s", channel_id, ts, _error_of(exc))
        return None


def open_dm(client: WebClient, user_id: str) -> str:
    """The id of the bot's direct-message conversation with a person."""
    return call("opening a direct message", client.conversations_open, users=user_id)["channel"]["id"]


# An earlier delivery is looked for from this long before it could have been posted: Slack stamps a
# message by its own clock, which may be behind ours.
CLOCK_MARGIN = timedelta(minutes=1)
# Pages of a room's history searched for an earlier delivery: a busy room can have thousands of
# messages since the one looked for (a crash under load leaves many notes to look up).
HISTORY_PAGES_SEARCHED = 25


def find_message_by_metadata(client: WebClient, channel_id: str, event_type: str, key: str,
                             oldest: datetime) -> str | None:
    """The ts of a message we posted with this metadata key since `oldest`, if there is one."""
    cursor = None
    for _ in range(HISTORY_PAGES_SEARCHED):
        history = call("looking for an earlier delivery", client.conversations_history, channel=channel_id,
                       oldest=f"{oldest.timestamp():.6f}", include_all_metadata=True, limit=200,
                       **({"cursor": cursor} if cursor else {}))
        for message in history.get("messages", []):
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == event_type and key in payload_keys(metadata.get("event_payload")):
                return message["ts"]
        cursor = (history.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return None
    log.warning("no message keyed %s in the last %d pages of %s; posting it", key, HISTORY_PAGES_SEARCHED,
                channel_id)
    return None


def _find_after_joining(client: WebClient, channel_id: str, event_type: str, key: str,
                        oldest: datetime) -> str | None:
    """`find_message_by_metadata` in a public channel the bot posts to without being in it
    (chat:write.public), which it cannot read until it joins. If Slack will not let it join, a copy
    posted just before a crash cannot be seen, and posting twice beats never posting."""
    try:
        call("joining the channel to look for an earlier delivery", client.conversations_join, channel=channel_id)
    except SlackCallFailed as exc:
        log.warning("cannot look in %s for %s (the bot is not in it and could not join: %s); posting it",
                    channel_id, key, exc.error)
        return None
    return find_message_by_metadata(client, channel_id, event_type, key, oldest=oldest)


def post_once(client: WebClient, channel: str, *, text: str, blocks: list, event_type: str, key: str,
              since: datetime, maybe_posted: bool) -> str:
    """Post a message tagged with `key` as metadata; its ts.

    `channel` may be a user id (the bot's DM with them). When an earlier attempt may have posted
    before its process died (`maybe_posted`), look for the key first, so nothing is posted twice.
    """
    if maybe_posted:
        conversation = open_dm(client, channel) if channel.startswith(("U", "W")) else channel
        try:
            already = find_message_by_metadata(client, conversation, event_type, key, oldest=since - CLOCK_MARGIN)
        except SlackCallFailed as exc:
            if exc.error != "not_in_channel":
                raise
            already = _find_after_joining(client, conversation, event_type, key, oldest=since - CLOCK_MARGIN)
        if already:
            return already
    return call("posting the reminder", client.chat_postMessage, channel=channel, text=text, blocks=blocks,
                metadata=keyed_metadata(event_type, key))["ts"]


def keyed_metadata(event_type: str, key: str, *more_keys: str) -> dict:
    """Slack message metadata carrying our key (or keys, for a message that delivers several things),
    by which `find_message_by_metadata` finds the message. Several keys go in one string: Slack's
    payload values are strings, numbers, booleans and objects."""
    payload = {"key": key, "keys": " ".join((key, *more_keys))} if more_keys else {"key": key}
    return {"event_type": event_type, "event_payload": payload}


def payload_keys(payload) -> list[str]:
    """The keys a message's metadata payload (`keyed_metadata`) carries."""
    if not isinstance(payload, dict):
        return []
    if isinstance(payload.get("keys"), str):
        return payload["keys"].split()
    return [payload["key"]] if isinstance(payload.get("key"), str) else []


def upload_file(client: WebClient, channel_id: str, *, filename: str, content: bytes, title: str,
                comment: str) -> str:
    """Share a file in a channel through Slack's external upload flow; the file's id."""
    response = call("uploading the file", client.files_upload_v2, channel=channel_id, filename=filename,
                    content=content, title=title, initial_comment=comment)
    return response["file"]["id"]


def display_names(client: WebClient, user_ids: set[str]) -> dict[str, str]:
    """Names to show for user ids (display name, else real name); ids Slack won't describe are left out."""
    names = {}
    for user_id in sorted(user_ids):
        try:
            user = client.users_info(user=user_id)["user"]
        except SlackApiError as exc:
            log.warning("no name for %s: %s", user_id, _error_of(exc))
            continue
        profile = user.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
        if name:
            names[user_id] = name
    return names
