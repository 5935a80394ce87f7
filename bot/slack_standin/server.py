"""A local stand-in for Slack's Web API, for tests and the offline sandbox.

Slack cannot be reached from where Warroom is developed and tested, so
``SlackStandIn`` serves the subset of the Web API the bot uses on 127.0.0.1.
The bot points slack_sdk at it with ``WebClient(base_url=standin.api_url)``
and cannot tell it from slack.com: same request encodings, same JSON
envelopes, same HTTP statuses and, above all, the same refusals.  Which
methods exist and which arguments they require comes from Slack's own OpenAPI
description (see ``build_method_table.py``), tightened where real Slack is
stricter than that 2021 file.

Besides the Web API it serves ``response_url`` targets (``/response/<token>``),
the upload URLs of Slack's external file upload flow (``/upload/v1/<token>``)
and a read-only JSON dump of its state (``/_standin/state``) for other
processes; tests inspect the state in-process through plain Python methods.
"""

from __future__ import annotations

import base64
import copy
import json
import mimetypes
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, quote, urlsplit

from .blockkit import MAX_MESSAGE_BLOCKS, MAX_VIEW_BLOCKS, block_problems, find_mentions, text_object_problems

# --------------------------------------------------------------------------
# Identity of the fake workspace and of the Warroom bot inside it.
# --------------------------------------------------------------------------
TEAM_ID = "T0WARROOM"
TEAM_NAME = "Warroom Stand-in"
TEAM_DOMAIN = "warroom-standin"
TEAM_URL = f"https://{TEAM_DOMAIN}.slack.com/"
APP_ID = "A0WARROOM"
BOT_USER_ID = "U0WARROOM"
BOT_ID = "B0WARROOM"
BOT_NAME = "warroom"
# The app-level token (Settings > Basic Information > App-Level Tokens) that opens Socket Mode connections.
APP_TOKEN = "xapp-1-A0WARROOM-1-standin"

SEED_HUMANS = (
    ("U0ALICE", "alice", "Alice Adams", "Europe/London"),
    ("U0BOB", "bob", "Bob Brown", "America/New_York"),
    ("U0CAROL", "carol", "Carol Chen", "Asia/Tokyo"),
    ("U0DAVE", "dave", "Dave Diaz", "America/Los_Angeles"),
)
SEED_CHANNELS = (("C0INCIDENTS", "incidents"), ("C0GENERAL", "general"))

# --------------------------------------------------------------------------
# Slack's limits (https://api.slack.com/reference/block-kit and method docs).
# --------------------------------------------------------------------------
MAX_TEXT_CHARS = 40_000
MAX_ATTACHMENTS = 100
MAX_CHANNEL_NAME = 80
MAX_TOPIC_CHARS = 250
MAX_VIEW_TITLE = 24
MAX_VIEW_STACK = 3
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
# files.getUploadURLExternal (https://api.slack.com/methods/files.getUploadURLExternal):
# snippets are limited to 1 MB, alt_txt to 1000 characters; Slack takes files up to 1 GB.
MAX_FILE_BYTES = 1024 ** 3
MAX_SNIPPET_BYTES = 1024 ** 2
MAX_ALT_TXT_CHARS = 1000

# --------------------------------------------------------------------------
# Where Slack's 2021 OpenAPI file is looser than slack.com really is.
# --------------------------------------------------------------------------
METHOD_TABLE_PATH = Path(__file__).with_name("web_api_methods.json")
# The app's manifest: its bot scopes are what the stand-in grants, so a method the bot may call in
# Slack only with a scope it has not asked for is refused here too (checked where it matters:
# posting where the bot is not a member, joining a channel).
MANIFEST_PATH = Path(__file__).resolve().parents[2] / "app.yaml"

# The spec marks almost every conversations.* argument optional, yet Slack
# refuses these calls without them.  Merged into the generated table.
REQUIRED_ARGS_STRICTER_THAN_SPEC: dict[str, list[str]] = {
    "conversations.create": ["name"],
    "conversations.history": ["channel"],
    "conversations.info": ["channel"],
    "conversations.invite": ["channel", "users"],
    "conversations.join": ["channel"],
    "conversations.members": ["channel"],
    "conversations.replies": ["channel", "ts"],
    "conversations.setPurpose": ["channel"],
    "conversations.setTopic": ["channel"],
    "users.info": ["user"],
}
# Methods Slack published after the spec was frozen; known, so a call gets
# ``not_implemented_in_standin`` rather than a misleading ``unknown_method``.
METHODS_NEWER_THAN_SPEC: dict[str, list[str]] = {
    "apps.connections.open": [],  # Socket Mode (2021): missing from the spec file
    "files.completeUploadExternal": ["files"],
    "files.getUploadURLExternal": ["filename", "length"],
}
# Slack answers these without any token (api.test is its liveness probe).
METHODS_WITHOUT_TOKEN = frozenset({"api.test"})
# Methods that take the app-level token (xapp-) and no other; every other method refuses it.
METHODS_WITH_APP_TOKEN = frozenset({"apps.connections.open"})
# Slack names a missing argument's error after what it could not find.
MISSING_ARG_ERROR_BY_METHOD = {
    ("conversations.create", "name"): "invalid_name_required",
    ("conversations.invite", "users"): "no_user",
    ("reactions.add", "timestamp"): "no_item_specified",
}
MISSING_ARG_ERROR = {"channel": "channel_not_found", "user": "user_not_found"}

CHANNEL_NAME_PATTERN = re.compile(r"^[a-z0-9_-]+$")
# User ids (W… on Enterprise Grid); chat.postMessage takes one as "the bot's DM with them".
USER_ID_PATTERN = re.compile(r"^[UW][A-Z0-9]+$")
REACTION_NAME_PATTERN = re.compile(r"^[a-z0-9_+'-]+(::skin-tone-[2-6])?$")
# files.completeUploadExternal's channel_id must be a conversation id: Slack checks it against
# ^[CGDZ][A-Z0-9]{8,}$ (a user id or a #name is refused).  The stand-in's own ids are shorter
# than Slack's (DU0BOB), so only the kind of id is checked here, not its length.
CONVERSATION_ID_PATTERN = re.compile(r"^[CGDZ][A-Z0-9]+$")
CONVERSATION_ID_PATTERN_TEXT = "^[CGDZ][A-Z0-9]{8,}$"
# Slack's filetype and pretty_type for the extensions an incident bot uploads; others are "binary".
FILETYPES = {
    "txt": ("text", "Plain Text"), "md": ("markdown", "Markdown (raw)"), "csv": ("csv", "CSV"),
    "json": ("json", "JSON"), "pdf": ("pdf", "PDF"), "png": ("png", "PNG"), "html": ("html", "HTML"),
    "log": ("text", "Plain Text"), "yaml": ("yaml", "YAML"), "yml": ("yaml", "YAML"),
}
# Fields the stand-in keeps on a message for tests; Slack never returns them.
STANDIN_ONLY_MESSAGE_FIELDS = ("channel", "mentions")



class _StandInHTTPServer(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connection attempts when a bot with several worker
    # threads calls at once; the dropped SYN costs a one-second retransmit. Slack has no such limit.
    request_queue_size = 256
    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Connections are kept alive (HTTP/1.1, as Slack's are): remembered so that stopping the
        # stand-in really stops Slack, kept connections included.
        self._open: set = set()
        self._open_lock = threading.Lock()

    connections_accepted = 0

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
            self.connections_accepted += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that gave up waiting (its timeout) or closed its kept connection
        super().handle_error(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client

class SlackRefusal(Exception):
    """A Web API call Slack would refuse, with the error code Slack would give."""

    def __init__(self, error: str, http_status: int = 200, **extra: Any):
        super().__init__(error)
        self.error = error
        self.http_status = http_status
        self.extra = extra

    def body(self) -> dict:
        return {"ok": False, "error": self.error, **self.extra}


def _argument_problems(error: str, problems: list[str]) -> SlackRefusal:
    """Slack explains schema problems in ``response_metadata.messages``."""
    messages = [f"[ERROR] {p}" for p in problems]
    extra = {"errors": problems} if error == "invalid_blocks" else {}
    return SlackRefusal(error, response_metadata={"messages": messages}, **extra)


@dataclass
class _Fault:
    status: int
    retry_after: int
    remaining: int
    error: str | None


@dataclass
class _Content:
    """The validated text/blocks/attachments of a message about to be stored."""

    text: str
    blocks: list | None
    attachments: list | None


# --------------------------------------------------------------------------
# Small argument helpers: form data gives strings, JSON bodies give types.
# --------------------------------------------------------------------------
def _text_arg(args: dict, name: str) -> str:
    value = args.get(name)
    return "" if value is None else str(value).strip()


def _flag_arg(args: dict, name: str) -> bool:
    value = args.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _int_arg(args: dict, name: str, default: int) -> int:
    try:
        return int(args.get(name) or default)
    except (TypeError, ValueError):
        raise SlackRefusal("invalid_arguments") from None


def _json_arg(args: dict, name: str, malformed_error: str) -> Any:
    """slack_sdk sends blocks/view as JSON strings in forms, as objects in JSON."""
    value = args.get(name)
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise SlackRefusal(malformed_error) from None


def _ts_value(ts: Any) -> Decimal | None:
    """Slack timestamps compare as decimals; floats would lose the microseconds."""
    try:
        value = Decimal(str(ts))
    except (InvalidOperation, ValueError):
        return None
    # "NaN" parses but cannot be ordered (comparing it raises), "inf" is no time.
    return value if value.is_finite() else None


def _metadata_arg(args: dict) -> dict | None:
    """``metadata`` of chat.postMessage/chat.update: None if absent, {} if emptied.

    Slack takes it as a JSON string (forms) or an object (JSON bodies) and
    refuses anything but an object with a string event_type and an object
    event_payload (https://api.slack.com/metadata).  chat.update treats an
    empty object as "remove the metadata".
    """
    metadata = _json_arg(args, "metadata", "invalid_metadata_format")
    if metadata is None or metadata == {}:
        return metadata
    if not isinstance(metadata, dict):
        raise SlackRefusal("invalid_metadata_format")
    event_type, event_payload = metadata.get("event_type"), metadata.get("event_payload")
    if not isinstance(event_type, str) or not event_type.strip() or not isinstance(event_payload, dict):
        raise SlackRefusal("invalid_metadata_format")
    return metadata


def _im_id(user_id: str) -> str:
    """The id of the bot's IM with a person: stable, so tests can name it."""
    return f"D{user_id}"


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"next:{offset}".encode()).decode()


def _paginate(items: list, args: dict) -> tuple[list, str]:
    """Slack's cursor pagination: returns the page and the next cursor ("" at the end)."""
    limit = min(max(_int_arg(args, "limit", DEFAULT_PAGE_SIZE), 1), MAX_PAGE_SIZE)
    offset = 0
    if cursor := _text_arg(args, "cursor"):
        try:
            offset = int(base64.b64decode(cursor).decode().removeprefix("next:"))
        except ValueError:
            raise SlackRefusal("invalid_cursor") from None
    end = offset + limit
    return items[offset:end], _encode_cursor(end) if end < len(items) else ""


def _channel_name_error(name: str) -> str | None:
    """Slack's channel naming rules, as conversations.create reports them."""
    if not name:
        return "invalid_name_required"
    if len(name) > MAX_CHANNEL_NAME:
        return "invalid_name_maxlength"
    if not CHANNEL_NAME_PATTERN.match(name):
        return "invalid_name_specials"
    if not name.strip("-_"):
        return "invalid_name_punctuation"
    return None


def manifest_bot_scopes() -> frozenset[str]:
    import yaml

    manifest = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    return frozenset(manifest["oauth_config"]["scopes"]["bot"])


def _load_method_table() -> dict[str, list[str]]:
    with open(METHOD_TABLE_PATH, encoding="utf-8") as table_file:
        table = json.load(table_file)
    for extra in (METHODS_NEWER_THAN_SPEC, REQUIRED_ARGS_STRICTER_THAN_SPEC):
        for method, required in extra.items():
            table[method] = sorted(set(table.get(method, [])) | set(required))
    return table


# Web API method name -> implementation, filled by @_implements below.
_IMPLEMENTATIONS: dict[str, Callable[[SlackStandIn, dict], dict]] = {}


def _implements(method: str):
    def register(function):
        _IMPLEMENTATIONS[method] = function
        return function

    return register


class SlackStandIn:
    """Slack's Web API on 127.0.0.1, with in-process inspection for tests."""

    # Slack lets an app exchange a trigger_id for a modal only within 3 s.
    # A class attribute so a test can shorten it instead of sleeping.
    TRIGGER_TTL_SECONDS = 3.0

    def __init__(self, bot_token: str = "xoxb-standin", host: str = "127.0.0.1", port: int = 0,
                 app_token: str = APP_TOKEN, scopes: frozenset[str] | None = None):
        """`scopes`: the bot token's, by default those app.yaml asks for."""
        from .socket_mode import SocketModeServer

        self.bot_token = bot_token
        self.app_token = app_token
        self.scopes = manifest_bot_scopes() if scopes is None else frozenset(scopes)
        # Socket Mode's websocket end: apps.connections.open hands out its URLs.
        self.socket_mode = SocketModeServer(self, host)
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # One re-entrant lock guards every piece of state below; handlers run
        # entirely under it, so each API call is atomic like Slack's.
        self._lock = threading.RLock()
        self._methods = _load_method_table()
        self._faults: dict[str, _Fault] = {}
        self._delays: dict[str, float] = {}
        self._next_delays: dict[str, list[float]] = {}  # delay_next: one each for the next calls
        self._seed()

    # ------------------------------------------------------------------ life
    def start(self) -> Self:
        handler = type("_BoundHandler", (_RequestHandler,), {"standin": self})
        self._server = _StandInHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps stop() (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="slack-standin", daemon=True)
        self._thread.start()
        self.socket_mode.start()
        return self

    def stop(self) -> None:
        self.socket_mode.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_open_connections()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def connections_accepted(self) -> int:
        """HTTP connections opened to the Web API so far (clients that keep theirs open open few)."""
        return self._server.connections_accepted if self._server is not None else 0

    def drop_connections(self) -> None:
        """Close every open connection, as Slack may close an idle one at any time."""
        if self._server is not None:
            self._server.close_open_connections()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("SlackStandIn is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, token: str) -> str:
        return f"{self.base_url}/response/{token}"

    # ----------------------------------------------------------------- state
    def _seed(self) -> None:
        with self._lock:
            self._counter = 0
            self._last_ts = 0
            self._users: dict[str, dict] = {}
            self._channels: dict[str, dict] = {}
            self._messages: dict[str, list[dict]] = {}
            self._pins: dict[str, list[dict]] = {}
            self._ephemerals: list[dict] = []
            self._views: dict[str, dict] = {}
            self._responses: list[dict] = []
            self._response_urls: dict[str, dict] = {}
            self._triggers: dict[str, dict] = {}
            # Uploads by file id, and the upload URL tokens that lead to them.
            self._files: dict[str, dict] = {}
            self._upload_tokens: dict[str, str] = {}
            self._calls: list[dict] = []
            self._faults.clear()
            self._delays.clear()
            self._next_delays.clear()
            for user_id, name, real_name, tz in SEED_HUMANS:
                self.add_user(user_id, name, real_name, tz)
            self.add_user(BOT_USER_ID, BOT_NAME, "Warroom", "UTC", is_bot=True)
            members = [u[0] for u in SEED_HUMANS] + [BOT_USER_ID]
            for channel_id, name in SEED_CHANNELS:
                self._add_channel(channel_id, name, members, creator=SEED_HUMANS[0][0])

    def reset(self) -> None:
        """Back to the seeded workspace; forgets calls, faults and delays."""
        self._seed()

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:08d}"

    def _next_ts(self) -> str:
        """Slack message ts: "seconds.micros", unique and strictly increasing."""
        micros = max(int(time.time() * 1_000_000), self._last_ts + 1)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _add_channel(self, channel_id: str, name: str, members: list[str], creator: str,
                     is_private: bool = False) -> dict:
        return self._add_conversation({
            "id": channel_id, "name": name, "is_im": False, "is_private": is_private, "creator": creator,
            "created": int(time.time()), "is_archived": False, "members": list(dict.fromkeys(members)),
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        })

    def _open_im(self, user_id: str) -> dict:
        """The bot's IM with a person, created on first use as Slack does."""
        im = self._channels.get(_im_id(user_id))
        if im is None:
            # Only its two members can see it, and it has no name, as in Slack.
            im = self._add_conversation({
                "id": _im_id(user_id), "is_im": True, "user": user_id, "is_private": True,
                "created": int(time.time()), "is_archived": False,
                "members": list(dict.fromkeys([BOT_USER_ID, user_id])),
            })
        return im

    def _add_conversation(self, conversation: dict) -> dict:
        # IMs live beside channels so history, pins, reactions and updates find them alike.
        self._channels[conversation["id"]] = conversation
        self._messages[conversation["id"]] = []
        self._pins[conversation["id"]] = []
        return conversation

    def _channel_by_ref(self, ref: str) -> dict | None:
        """Look a channel up by id, or by name with or without the leading #."""
        ref = (ref or "").strip()
        if ref in self._channels:
            return self._channels[ref]
        name = ref.removeprefix("#")
        return next((c for c in self._channels.values() if c.get("name") == name), None)

    def _visible_channel(self, ref: str, allow_name: bool = False) -> dict:
        """The channel as the bot may see it; private ones it isn't in don't exist for it."""
        channel = self._channel_by_ref(ref) if allow_name else self._channels.get(ref)
        if channel is None or (channel["is_private"] and BOT_USER_ID not in channel["members"]):
            raise SlackRefusal("channel_not_found")
        return channel

    @staticmethod
    def _require_bot_member(channel: dict) -> None:
        if BOT_USER_ID not in channel["members"]:
            raise SlackRefusal("not_in_channel")

    def _require_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise SlackRefusal("missing_scope", needed=scope, provided=",".join(sorted(self.scopes)))

    @staticmethod
    def _refuse_im(channel: dict) -> None:
        """Membership, topic and purpose belong to channels; Slack refuses them on a DM."""
        if channel["is_im"]:
            raise SlackRefusal("method_not_supported_for_channel_type")

    def _post_target(self, ref: str) -> dict:
        """chat.postMessage's channel: a conversation, or a person meaning the bot's DM with them."""
        if USER_ID_PATTERN.match(ref):
            if ref not in self._users:
                raise SlackRefusal("channel_not_found")
            return self._open_im(ref)
        return self._visible_channel(ref, allow_name=True)

    def _find_message(self, channel_id: str, ts: str) -> dict | None:
        return next((m for m in self._messages.get(channel_id, []) if m["ts"] == ts), None)

    def _message_or_refuse(self, channel_id: str, ts: str, bad_ts_error: str | None = None) -> dict:
        if bad_ts_error and _ts_value(ts) is None:
            raise SlackRefusal(bad_ts_error)
        message = self._find_message(channel_id, ts)
        if message is None:
            raise SlackRefusal("message_not_found")
        return message

    # ------------------------------------------------------- public shapes
    @staticmethod
    def _public_message(message: dict, include_metadata: bool = False) -> dict:
        # Slack returns metadata only to reads that ask for it (include_all_metadata).
        hidden = STANDIN_ONLY_MESSAGE_FIELDS if include_metadata else STANDIN_ONLY_MESSAGE_FIELDS + ("metadata",)
        return {k: copy.deepcopy(v) for k, v in message.items() if k not in hidden}

    def _public_channel(self, channel: dict, include_num_members: bool = False) -> dict:
        public = self._public_im(channel) if channel["is_im"] else self._public_room(channel)
        if include_num_members:
            public["num_members"] = len(channel["members"])
        return public

    def _public_im(self, im: dict) -> dict:
        """An IM as conversations.info and conversations.open (return_im) show it: no name, a user."""
        return {
            "id": im["id"], "created": im["created"], "is_archived": im["is_archived"], "is_im": True,
            "is_org_shared": False, "context_team_id": TEAM_ID, "user": im["user"],
            "is_user_deleted": self._users[im["user"]]["deleted"], "priority": 0,
        }

    @staticmethod
    def _public_room(channel: dict) -> dict:
        return {
            "id": channel["id"], "name": channel["name"], "name_normalized": channel["name"],
            "is_channel": True, "is_group": False, "is_im": False, "is_mpim": False,
            "is_private": channel["is_private"], "is_archived": channel["is_archived"],
            "is_general": channel["name"] == "general", "is_shared": False, "is_ext_shared": False,
            "is_org_shared": False, "created": channel["created"], "creator": channel["creator"],
            "is_member": BOT_USER_ID in channel["members"],
            "topic": dict(channel["topic"]), "purpose": dict(channel["purpose"]),
        }

    # ------------------------------------------------------------ messages
    def _content(self, args: dict) -> _Content:
        """Validate a message's text/blocks/attachments the way chat.* methods do."""
        text = args.get("text") or ""
        text = text if isinstance(text, str) else str(text)
        blocks = _json_arg(args, "blocks", "invalid_blocks_format")
        attachments = _json_arg(args, "attachments", "invalid_attachments")
        if blocks is not None and not isinstance(blocks, list):
            raise SlackRefusal("invalid_blocks_format")
        if attachments is not None and not isinstance(attachments, list):
            raise SlackRefusal("invalid_attachments")
        if not text.strip() and not blocks and not attachments:
            raise SlackRefusal("no_text")
        if len(text) > MAX_TEXT_CHARS:
            raise SlackRefusal("msg_too_long")
        if attachments and len(attachments) > MAX_ATTACHMENTS:
            raise SlackRefusal("too_many_attachments")
        if blocks and (problems := block_problems(blocks, MAX_MESSAGE_BLOCKS, "/blocks")):
            raise _argument_problems("invalid_blocks", problems)
        return _Content(text, blocks or None, attachments or None)

    def _mentions(self, content: _Content, link_names: bool) -> list[str]:
        names = {u["name"]: u["id"] for u in self._users.values()} if link_names else None
        return find_mentions(content.text, content.blocks, content.attachments, names)

    def _store_message(self, channel: dict, content: _Content, author: str, thread_ts: str | None = None,
                       link_names: bool = False, reply_broadcast: bool = False) -> dict:
        """Append a message to a channel, keeping Slack's thread bookkeeping on the parent."""
        message: dict[str, Any] = {"type": "message", "ts": self._next_ts(), "user": author,
                                   "text": content.text, "team": TEAM_ID}
        if author == BOT_USER_ID:
            message.update(bot_id=BOT_ID, app_id=APP_ID)
        if content.blocks:
            message["blocks"] = content.blocks
        if content.attachments:
            message["attachments"] = content.attachments
        if thread_ts:
            message["thread_ts"] = thread_ts
            if reply_broadcast:
                message["subtype"] = "thread_broadcast"
            parent = self._find_message(channel["id"], thread_ts)
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["reply_users"] = list(dict.fromkeys(parent.get("reply_users", []) + [author]))
                parent["reply_users_count"] = len(parent["reply_users"])
                parent["latest_reply"] = message["ts"]
        message["channel"] = channel["id"]
        message["mentions"] = self._mentions(content, link_names)
        self._messages[channel["id"]].append(message)
        return message

    def _store_ephemeral(self, channel_id: str, user_id: str, content: _Content, source: str,
                         thread_ts: str | None = None) -> dict:
        ephemeral = {"channel": channel_id, "user": user_id, "ts": self._next_ts(), "text": content.text,
                     "blocks": content.blocks, "attachments": content.attachments, "thread_ts": thread_ts,
                     "source": source, "mentions": self._mentions(content, link_names=False)}
        self._ephemerals.append(ephemeral)
        return ephemeral

    def _add_reaction(self, message: dict, user_id: str, name: str) -> bool:
        reactions = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if user_id in reaction["users"]:
            return False
        reaction["users"].append(user_id)
        reaction["count"] = len(reaction["users"])
        return True

    # --------------------------------------------------------------- views
    def _take_trigger(self, trigger_id: str) -> dict:
        """Exchange a trigger once, within its time to live, as Slack does."""
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise SlackRefusal("invalid_trigger_id")
        if trigger["used"]:
            raise SlackRefusal("exchanged_trigger_id")
        if time.monotonic() - trigger["issued_at"] > self.TRIGGER_TTL_SECONDS:
            raise SlackRefusal("expired_trigger_id")
        return trigger

    def _validated_view(self, args: dict) -> dict:
        view = _json_arg(args, "view", "invalid_arguments")
        if not isinstance(view, dict):
            raise _argument_problems("invalid_arguments", ["json must be an object [json-pointer:/view]"])
        problems: list[str] = []
        if view.get("type") != "modal":
            problems.append("must be modal [json-pointer:/view/type]")
        if "title" not in view:
            problems.append("missing required field: title [json-pointer:/view]")
        else:
            problems += text_object_problems(view["title"], "/view/title", MAX_VIEW_TITLE, plain_only=True)
        blocks = view.get("blocks")
        if blocks is None:
            problems.append("missing required field: blocks [json-pointer:/view]")
        else:
            problems += block_problems(blocks, MAX_VIEW_BLOCKS, "/view/blocks")
            has_input = isinstance(blocks, list) and any(
                isinstance(b, dict) and b.get("type") == "input" for b in blocks)
            if has_input and "submit" not in view:
                problems.append("must provide submit when input blocks are present [json-pointer:/view]")
        if len(str(view.get("private_metadata", ""))) > 3000:
            problems.append("must be less than 3001 characters [json-pointer:/view/private_metadata]")
        if len(str(view.get("callback_id", ""))) > 255:
            problems.append("must be less than 256 characters [json-pointer:/view/callback_id]")
        if problems:
            raise _argument_problems("invalid_arguments", problems)
        return view

    def _render_view(self, view: dict, view_id: str, root_view_id: str, previous_view_id: str | None) -> dict:
        """The view as Slack echoes it: ids filled in, block/action ids assigned."""
        blocks = copy.deepcopy(view["blocks"])
        for block in blocks:
            # Slack invents ids the app left out; submissions are keyed by them.
            block.setdefault("block_id", secrets.token_hex(3))
            if isinstance(block.get("element"), dict):
                block["element"].setdefault("action_id", secrets.token_hex(3))
        return {
            "id": view_id, "team_id": TEAM_ID, "type": "modal", "title": view["title"],
            "submit": view.get("submit"), "close": view.get("close"), "blocks": blocks,
            "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""), "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "previous_view_id": previous_view_id, "root_view_id": root_view_id,
            "app_id": APP_ID, "app_installed_team_id": TEAM_ID, "bot_id": BOT_ID,
        }

    def _open_view(self, view: dict, user_id: str, trigger_id: str, parent: dict | None = None) -> dict:
        external_id = view.get("external_id")
        if external_id and any(v["view"]["external_id"] == external_id for v in self._views.values()):
            raise SlackRefusal("duplicate_external_id")
        view_id = self._next_id("V")
        root_id = parent["view"]["root_view_id"] if parent else view_id
        rendered = self._render_view(view, view_id, root_id, parent["id"] if parent else None)
        self._views[view_id] = {"id": view_id, "view": rendered, "user": user_id,
                                "trigger_id": trigger_id, "closed": False}
        return rendered

    def _replace_view(self, record: dict, view: dict) -> None:
        """views.update and response_action=update: same id and place in the stack, new content."""
        current = record["view"]
        record["view"] = self._render_view(view, current["id"], current["root_view_id"],
                                           current["previous_view_id"])

    def _open_stack(self, user_id: str) -> list[dict]:
        """The user's open modals, root first (Slack shows one stack per user)."""
        return [v for v in self._views.values() if v["user"] == user_id and not v["closed"]]

    # --------------------------------------------------------------- files
    def _public_file(self, record: dict, with_shares: bool = True) -> dict:
        """A file object as Slack shows it in a file_share message; never the bytes.

        files.completeUploadExternal answers before Slack has shared the file
        (sharing is asynchronous there), so its answer lists no channels or
        shares: ``with_shares=False``.  The message in the channel is the proof.
        """
        name = record["name"]
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        filetype, pretty_type = FILETYPES.get(extension, ("binary", "Binary"))
        channels, groups, ims, shares = [], [], [], {}
        for channel_id, ts in record["shares"].items() if with_shares else ():
            channel = self._channels[channel_id]
            kind = "private" if channel["is_private"] else "public"
            (ims if channel["is_im"] else groups if channel["is_private"] else channels).append(channel_id)
            share = {"ts": ts, "channel_name": channel.get("name", ""), "team_id": TEAM_ID,
                     "share_user_id": BOT_USER_ID, "reply_users": [], "reply_users_count": 0, "reply_count": 0}
            if record["thread_ts"]:
                share["thread_ts"] = record["thread_ts"]
            shares.setdefault(kind, {})[channel_id] = [share]
        files_pri = f"https://files.slack.com/files-pri/{TEAM_ID}-{record['id']}"
        public = {
            "id": record["id"], "created": record["created"], "timestamp": record["created"], "name": name,
            "title": record["title"], "mimetype": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "filetype": filetype, "pretty_type": pretty_type, "user": BOT_USER_ID, "user_team": TEAM_ID,
            "editable": bool(record["snippet_type"]), "size": len(record["content"] or b""),
            "mode": "snippet" if record["snippet_type"] else "hosted", "is_external": False, "external_type": "",
            "is_public": bool(channels), "public_url_shared": False, "display_as_bot": False, "username": "",
            "url_private": f"{files_pri}/{quote(name)}", "url_private_download": f"{files_pri}/download/{quote(name)}",
            "permalink": f"{TEAM_URL}files/{BOT_USER_ID}/{record['id']}/{quote(name)}",
            "comments_count": 0, "is_starred": False, "has_rich_preview": False, "file_access": "visible",
            "channels": channels, "groups": groups, "ims": ims, "shares": shares,
        }
        if record["alt_txt"]:
            public["alt_txt"] = record["alt_txt"]
        return public

    def _files_to_complete(self, args: dict) -> list[tuple[dict, str]]:
        """files.completeUploadExternal's ``files``: (upload, title) for each, or Slack's refusal."""
        files = args.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except json.JSONDecodeError:
                raise _argument_problems("invalid_arguments", ["invalid json [json-pointer:/files]"]) from None
        if not isinstance(files, list) or not files:
            raise _argument_problems("invalid_arguments", ["must be a non-empty array [json-pointer:/files]"])
        chosen: dict[str, tuple[dict, str]] = {}
        for n, item in enumerate(files):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
                raise _argument_problems("invalid_arguments", [f"missing required field: id [json-pointer:/files/{n}]"])
            record = self._files.get(item["id"].strip())
            # Slack's "could not find the file from the upload ticket": never issued, its bytes never
            # arrived at the upload URL, or the ticket already spent by an earlier completion.
            if record is None or record["content"] is None or record["completed"]:
                raise SlackRefusal("file_not_found")
            title = item.get("title")
            chosen[record["id"]] = (record, str(title) if title is not None and str(title).strip() else record["name"])
        return list(chosen.values())

    def _share_targets(self, args: dict) -> list[dict | str]:
        """Where files.completeUploadExternal shares: conversations, or user ids meaning the bot's DM."""
        refs = []
        if channel_id := _text_arg(args, "channel_id"):
            if not CONVERSATION_ID_PATTERN.match(channel_id):
                raise _argument_problems("invalid_arguments", [
                    f"input must match regex pattern: {CONVERSATION_ID_PATTERN_TEXT} [json-pointer:/channel_id]"])
            refs.append(channel_id)
        refs += [ref.strip() for ref in _text_arg(args, "channels").split(",") if ref.strip()]
        targets: list[dict | str] = []
        for ref in dict.fromkeys(refs):
            if USER_ID_PATTERN.match(ref):
                if ref not in self._users:
                    raise SlackRefusal("channel_not_found")
                targets.append(ref)  # the DM is opened only once everything has been checked
            else:
                channel = self._visible_channel(ref)
                self._require_bot_member(channel)
                targets.append(channel)
        return targets

    def _file_view(self, record: dict, channel_id: str | None = None) -> dict:
        """What tests see of an upload (``files()``), the bytes included."""
        shares = record["shares"]
        message_ts = shares.get(channel_id) if channel_id else next(iter(shares.values()), None)
        return {
            "id": record["id"], "name": record["name"], "title": record["title"], "channels": list(shares),
            "shares": dict(shares), "content": record["content"], "size": len(record["content"] or b""),
            "length": record["length"], "uploaded": record["content"] is not None, "completed": record["completed"],
            "initial_comment": record["initial_comment"], "message_ts": message_ts, "thread_ts": record["thread_ts"],
            "alt_txt": record["alt_txt"], "snippet_type": record["snippet_type"], "created": record["created"],
            "file": self._public_file(record) if record["completed"] else None,
        }

    # ----------------------------------------------------- API dispatching
    def handle_api_call(self, method: str, args: dict, token: str | None) -> tuple[int, dict, dict]:
        """Answer one Web API call: (HTTP status, JSON body, extra headers)."""
        with self._lock:
            owed = self._next_delays.get(method)
            delay = owed.pop(0) if owed else self._delays.get(method)
        if delay:
            time.sleep(delay)  # outside the lock: a slow method must not stall others
        headers: dict[str, str] = {}
        with self._lock:
            fault = self._take_fault(method)
            if fault is not None:
                status, body, headers = self._fault_response(fault)
            else:
                status, body = self._dispatch(method, args, token)
            self._calls.append({"method": method, "args": copy.deepcopy(args), "ok": body.get("ok", False),
                                "error": body.get("error"), "http_status": status, "at": time.time()})
        return status, body, headers

    def _dispatch(self, method: str, args: dict, token: str | None) -> tuple[int, dict]:
        try:
            if method not in self._methods:
                raise SlackRefusal("unknown_method", http_status=404)
            if method not in METHODS_WITHOUT_TOKEN:
                if not token:
                    raise SlackRefusal("not_authed")
                if method in METHODS_WITH_APP_TOKEN:
                    if token != self.app_token:
                        raise SlackRefusal("not_allowed_token_type" if token == self.bot_token else "invalid_auth")
                elif token != self.bot_token:
                    raise SlackRefusal("not_allowed_token_type" if token == self.app_token else "invalid_auth")
            for name in self._methods[method]:
                if not _text_arg(args, name) and not isinstance(args.get(name), (list, dict)):
                    error = MISSING_ARG_ERROR_BY_METHOD.get((method, name)) or MISSING_ARG_ERROR.get(name)
                    if error:
                        raise SlackRefusal(error)
                    raise _argument_problems("invalid_arguments", [f"missing required field: {name}"])
            implementation = _IMPLEMENTATIONS.get(method)
            if implementation is None:
                raise SlackRefusal("not_implemented_in_standin", method=method)
            return 200, {"ok": True, **implementation(self, args)}
        except SlackRefusal as refusal:
            return refusal.http_status, refusal.body()

    def _take_fault(self, method: str) -> _Fault | None:
        fault = self._faults.get(method)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self._faults[method]
        return fault

    @staticmethod
    def _fault_response(fault: _Fault) -> tuple[int, dict, dict]:
        if fault.error is not None:
            return 200, {"ok": False, "error": fault.error}, {}
        if fault.status == 429:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(fault.retry_after)}
        return fault.status, {"ok": False, "error": "fatal_error"}, {}

    # ---------------------------------------------------- fault injection
    def fail_next(self, method: str, status: int = 429, retry_after: int = 1, times: int = 1,
                  error: str | None = None) -> None:
        """Make the next ``times`` calls of ``method`` fail.

        With ``error`` the call answers HTTP 200 ``{"ok": false, "error": error}``
        (how Slack reports API errors); otherwise HTTP ``status``: 429 comes
        with ``Retry-After`` and ``ratelimited``, anything else with
        ``fatal_error``.
        """
        with self._lock:
            self._faults[method] = _Fault(status, retry_after, times, error)

    def clear_faults(self) -> None:
        """Undo every `fail_next` not yet used up: Slack answers normally again."""
        with self._lock:
            self._faults.clear()

    def wait_until_quiet(self, quiet_for: float = 0.3, timeout: float = 10.0) -> bool:
        """Wait until no Web API call has arrived for `quiet_for` seconds (the bot's after-ack work
        is done); False if calls kept coming until `timeout`."""
        deadline = time.monotonic() + timeout
        seen, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                count = len(self._calls)
            if count != seen:
                seen, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since >= quiet_for:
                return True
            time.sleep(0.05)
        return False

    def delay(self, method: str, seconds: float) -> None:
        """Make every call of ``method`` take ``seconds`` longer (0 to undo)."""
        with self._lock:
            self._delays[method] = seconds

    def delay_next(self, method: str, seconds: float) -> None:
        """Make only the next call of ``method`` to arrive take ``seconds`` longer (called n times: the next n)."""
        with self._lock:
            self._next_delays.setdefault(method, []).append(seconds)

    def delays_owed(self, method: str) -> int:
        """How many `delay_next` delays of ``method`` no call has taken yet (a call that took one is
        in flight until its delay is over)."""
        with self._lock:
            return len(self._next_delays.get(method, []))

    # --------------------------------------------------------- inspection
    def calls(self, method: str | None = None) -> list[dict]:
        with self._lock:
            return copy.deepcopy([c for c in self._calls if method is None or c["method"] == method])

    def messages(self, channel: str) -> list[dict]:
        """Messages of a channel or IM (id or name), oldest first, thread replies and metadata included."""
        with self._lock:
            found = self._channel_by_ref(channel)
            return copy.deepcopy(self._messages[found["id"]]) if found else []

    def dm_messages(self, user_id: str) -> list[dict]:
        """Messages of the bot's IM with ``user_id``, oldest first ([] if it was never opened)."""
        return self.messages(_im_id(user_id))

    def message(self, channel: str, ts: str) -> dict | None:
        with self._lock:
            found = self._channel_by_ref(channel)
            return copy.deepcopy(self._find_message(found["id"], ts)) if found else None

    def ephemerals(self, user: str | None = None, channel: str | None = None) -> list[dict]:
        with self._lock:
            channel_id = (self._channel_by_ref(channel) or {}).get("id", channel) if channel else None
            return copy.deepcopy([e for e in self._ephemerals
                                  if (user is None or e["user"] == user)
                                  and (channel_id is None or e["channel"] == channel_id)])

    def responses(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._responses)

    def channel(self, name_or_id: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self._channel_by_ref(name_or_id))

    def channels(self) -> list[dict]:
        """Channels only; the bot's DMs are in ``ims()``."""
        with self._lock:
            return copy.deepcopy([c for c in self._channels.values() if not c["is_im"]])

    def ims(self) -> list[dict]:
        """The bot's IMs with people, each with ``user`` and ``members`` [bot, user]."""
        with self._lock:
            return copy.deepcopy([c for c in self._channels.values() if c["is_im"]])

    def pins(self, channel: str) -> list[dict]:
        with self._lock:
            found = self._channel_by_ref(channel)
            return copy.deepcopy(self._pins[found["id"]]) if found else []

    def files(self, channel: str | None = None) -> list[dict]:
        """Uploads, oldest first; with ``channel`` (id or name) only those shared there.

        Each has ``id``, ``name`` (the filename), ``title``, ``channels`` (ids
        shared to), ``shares`` ({channel id: message ts}), ``content`` (the
        bytes, None until they arrive), ``size``, ``length`` (as declared),
        ``uploaded``, ``completed``, ``initial_comment``, ``message_ts`` (in
        ``channel``, else the first share's; None if unshared), ``thread_ts``
        and ``file`` (Slack's file object once completed).
        """
        with self._lock:
            channel_id = None
            if channel is not None:
                found = self._channel_by_ref(channel)
                if found is None:
                    return []
                channel_id = found["id"]
            return [self._file_view(record, channel_id) for record in self._files.values()
                    if channel_id is None or channel_id in record["shares"]]

    def views(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self._views.values()))

    def view(self, view_id: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self._views.get(view_id))

    def user(self, user_id: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self._users.get(user_id))

    def add_user(self, user_id: str, name: str, real_name: str | None = None, tz: str = "UTC",
                 is_bot: bool = False) -> dict:
        real_name = real_name or name
        user = {
            "id": user_id, "team_id": TEAM_ID, "name": name, "real_name": real_name, "tz": tz,
            "is_bot": is_bot, "deleted": False, "is_admin": False, "is_app_user": False,
            "profile": {"real_name": real_name, "real_name_normalized": real_name,
                        "display_name": name, "display_name_normalized": name, "team": TEAM_ID},
        }
        if is_bot:
            user["profile"]["bot_id"] = BOT_ID if user_id == BOT_USER_ID else f"B{user_id[1:]}"
        with self._lock:
            self._users[user_id] = user
        return copy.deepcopy(user)

    def create_channel(self, name: str, members: list[str], is_private: bool = False) -> dict:
        """Test setup: a channel created by a person (so the bot is only in it if listed)."""
        with self._lock:
            if error := _channel_name_error(name):
                raise ValueError(error)
            if self._channel_by_ref(name):
                raise ValueError("name_taken")
            creator = members[0] if members else SEED_HUMANS[0][0]
            channel = self._add_channel(self._next_id("C"), name, members, creator, is_private)
            return copy.deepcopy(channel)

    def snapshot(self) -> dict:
        """Everything, JSON-ready; served at ``GET /_standin/state``."""
        with self._lock:
            return copy.deepcopy({
                "users": list(self._users.values()), "channels": self.channels(), "ims": self.ims(),
                "messages": self._messages, "pins": self._pins, "ephemerals": self._ephemerals,
                "views": list(self._views.values()), "responses": self._responses, "calls": self._calls,
                # JSON has no bytes: a file's content travels as base64.
                "files": [{**{k: v for k, v in view.items() if k != "content"},
                           "content_base64": base64.b64encode(view["content"]).decode() if view["uploaded"] else None}
                          for view in self.files()],
            })

    # ---------------------------------------- the person's side (simulator)
    def issue_trigger(self, user_id: str) -> str:
        """A trigger_id as Slack attaches to an interaction by ``user_id``."""
        with self._lock:
            trigger_id = f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
            self._triggers[trigger_id] = {"user": user_id, "issued_at": time.monotonic(), "used": False}
            return trigger_id

    def issue_response_url(self, user_id: str, channel_id: str, message_ts: str | None = None) -> str:
        """A response_url token bound to the user, channel and (for buttons) message."""
        with self._lock:
            token = secrets.token_urlsafe(16)
            self._response_urls[token] = {"user": user_id, "channel": channel_id, "message_ts": message_ts}
            return token

    def post_as_user(self, user_id: str, channel: str, text: str, thread_ts: str | None = None) -> dict:
        """A person typing a message into Slack's client."""
        with self._lock:
            found = self._channel_by_ref(channel)
            if found is None or user_id not in found["members"]:
                raise ValueError(f"{user_id} cannot post in {channel}")
            # A person typing "@here" in the client does ping, so link names.
            message = self._store_message(found, _Content(text, None, None), user_id, thread_ts, link_names=True)
            return copy.deepcopy(message)

    def set_reaction(self, user_id: str, channel: str, ts: str, name: str, present: bool) -> dict:
        """A person adding (or removing) an emoji reaction; returns the message."""
        with self._lock:
            found = self._channel_by_ref(channel)
            message = self._find_message(found["id"], ts) if found else None
            if message is None:
                raise ValueError(f"no message {ts} in {channel}")
            if present:
                self._add_reaction(message, user_id, name)
            else:
                for reaction in message.get("reactions", []):
                    if user_id in reaction["users"]:
                        reaction["users"].remove(user_id)
                        reaction["count"] = len(reaction["users"])
                message["reactions"] = [r for r in message.get("reactions", []) if r["users"]]
            return copy.deepcopy(message)

    def apply_view_response(self, view_id: str, response: Any) -> None:
        """Do what Slack's client does with the app's answer to a view_submission."""
        with self._lock:
            record = self._views.get(view_id)
            if record is None:
                return
            action = response.get("response_action") if isinstance(response, dict) else None
            if action == "errors":
                return  # the modal stays open, showing the errors
            if action in ("update", "push"):
                view = self._validated_view({"view": response.get("view")})
                if action == "update":
                    self._replace_view(record, view)
                else:
                    self._open_view(view, record["user"], record["trigger_id"], parent=record)
                return
            stack = [v for v in self._open_stack(record["user"])
                     if v["view"]["root_view_id"] == record["view"]["root_view_id"]]
            closing = stack if action == "clear" else [record]
            for closed in closing:
                closed["closed"] = True

    # ---------------------------------------------------------- response_url
    def handle_response_url(self, token: str, payload: Any) -> tuple[int, str]:
        """A POST to a response_url; Slack answers with a plain-text body."""
        with self._lock:
            issued = self._response_urls.get(token)
            if issued is None:
                return 404, "no_such_url"
            if not isinstance(payload, dict):
                return 400, "invalid_payload"
            self._responses.append({"token": token, **issued, "payload": copy.deepcopy(payload), "at": time.time()})
            channel = self._channels.get(issued["channel"])
            original = self._find_message(channel["id"], issued["message_ts"]) if channel else None
            if _flag_arg(payload, "delete_original"):
                if original is not None:
                    self._messages[channel["id"]].remove(original)
                return 200, "ok"
            try:
                content = self._content(payload)
            except SlackRefusal as refusal:
                return 400, refusal.error
            if original is not None and _flag_arg(payload, "replace_original"):
                self._replace_content(original, content)
            elif payload.get("response_type") == "in_channel":
                if channel is None:
                    return 404, "channel_not_found"
                # A command's in_channel reply needs no membership: Slack posts it for the app.
                self._store_message(channel, content, BOT_USER_ID, payload.get("thread_ts"))
            else:
                self._store_ephemeral(issued["channel"], issued["user"], content, "response_url")
            return 200, "ok"

    # ------------------------------------------------------------ uploads
    def handle_upload(self, token: str, content_type: str, body: bytes) -> tuple[int, str, dict]:
        """A POST of a file's bytes to an upload URL from files.getUploadURLExternal.

        Slack's file service answers in plain text, ``OK - <bytes received>``.
        Recorded in ``calls("upload")``; ``fail_next("upload")`` and
        ``delay("upload")`` work on it as on a Web API method.
        """
        if delay := self._delays.get("upload"):
            time.sleep(delay)
        headers: dict[str, str] = {}
        with self._lock:
            file_id = self._upload_tokens.get(token)
            record = self._files.get(file_id) if file_id else None
            received = 0
            fault = self._take_fault("upload")
            if fault is not None:
                status, body_json, headers = self._fault_response(fault)
                text = body_json["error"]
            elif record is None or record["completed"]:
                status, text = 404, "Not Found"  # never issued, or spent by files.completeUploadExternal
            else:
                try:
                    content = _upload_bytes(content_type, body)
                except ValueError:
                    status, text = 400, "no file data"
                else:
                    record["content"] = content
                    received = len(content)
                    status, text = 200, f"OK - {received}"
            self._calls.append({"method": "upload", "args": {"file_id": file_id, "bytes": received},
                                "ok": status == 200, "error": None if status == 200 else text,
                                "http_status": status, "at": time.time()})
        return status, text, headers

    def _replace_content(self, message: dict, content: _Content) -> None:
        message["text"] = content.text
        for key in ("blocks", "attachments"):
            value = getattr(content, key)
            if value:
                message[key] = value
            else:
                message.pop(key, None)
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        # Edits don't notify in Slack, but the text now contains what it contains.
        message["mentions"] = self._mentions(content, link_names=False)

    # ================================================== Web API methods ====
    @_implements("api.test")
    def _api_test(self, args: dict) -> dict:
        if error := _text_arg(args, "error"):
            raise SlackRefusal(error, args=args)
        return {"args": args}

    @_implements("apps.connections.open")
    def _apps_connections_open(self, args: dict) -> dict:
        """A single-use Socket Mode websocket URL (see socket_mode.py)."""
        return {"url": self.socket_mode.issue_url()}

    @_implements("auth.test")
    def _auth_test(self, args: dict) -> dict:
        return {"url": TEAM_URL, "team": TEAM_NAME, "user": BOT_NAME, "team_id": TEAM_ID,
                "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    @_implements("chat.postMessage")
    def _chat_post_message(self, args: dict) -> dict:
        channel = self._post_target(_text_arg(args, "channel"))
        if channel["is_private"] or "chat:write.public" not in self.scopes:
            self._require_bot_member(channel)  # chat:write.public posts to public channels the bot is not in
        content = self._content(args)
        metadata = _metadata_arg(args)
        message = self._store_message(channel, content, BOT_USER_ID, _text_arg(args, "thread_ts") or None,
                                      link_names=_flag_arg(args, "link_names"),
                                      reply_broadcast=_flag_arg(args, "reply_broadcast"))
        if metadata:
            message["metadata"] = metadata
        return {"channel": channel["id"], "ts": message["ts"], "message": self._public_message(message)}

    @_implements("chat.postEphemeral")
    def _chat_post_ephemeral(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"), allow_name=True)
        user_id = _text_arg(args, "user")
        if user_id not in channel["members"]:
            raise SlackRefusal("user_not_in_channel")
        content = self._content(args)
        ephemeral = self._store_ephemeral(channel["id"], user_id, content, "chat.postEphemeral",
                                          _text_arg(args, "thread_ts") or None)
        return {"message_ts": ephemeral["ts"]}

    @_implements("chat.update")
    def _chat_update(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        message = self._message_or_refuse(channel["id"], _text_arg(args, "ts"))
        if message.get("bot_id") != BOT_ID:
            raise SlackRefusal("cant_update_message")
        content, metadata = self._content(args), _metadata_arg(args)
        self._replace_content(message, content)
        # Left out, the metadata stays; an empty object removes it.
        if metadata:
            message["metadata"] = metadata
        elif metadata == {}:
            message.pop("metadata", None)
        return {"channel": channel["id"], "ts": message["ts"], "text": message["text"],
                "message": self._public_message(message)}

    @_implements("chat.getPermalink")
    def _chat_get_permalink(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        message = self._message_or_refuse(channel["id"], _text_arg(args, "message_ts"))
        permalink = f"{TEAM_URL}archives/{channel['id']}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            permalink += f"?thread_ts={message['thread_ts']}&cid={channel['id']}"
        return {"channel": channel["id"], "permalink": permalink}

    @_implements("conversations.create")
    def _conversations_create(self, args: dict) -> dict:
        name = _text_arg(args, "name")
        if error := _channel_name_error(name):
            raise SlackRefusal(error)
        if self._channel_by_ref(name):
            raise SlackRefusal("name_taken")
        channel = self._add_channel(self._next_id("C"), name, [BOT_USER_ID], BOT_USER_ID,
                                    is_private=_flag_arg(args, "is_private"))
        return {"channel": self._public_channel(channel)}

    @_implements("conversations.invite")
    def _conversations_invite(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        self._refuse_im(channel)
        self._require_bot_member(channel)
        user_ids = [u.strip() for u in _text_arg(args, "users").split(",") if u.strip()]
        if not user_ids:
            raise SlackRefusal("no_user")
        if len(user_ids) > 1000:
            raise SlackRefusal("too_many_users")
        # Checked before anything changes, so a refused call invites no one.
        for user_id in user_ids:
            if user_id == BOT_USER_ID:
                raise SlackRefusal("cant_invite_self")
            if user_id not in self._users:
                raise SlackRefusal("user_not_found")
            if user_id in channel["members"]:
                raise SlackRefusal("already_in_channel")
        channel["members"].extend(dict.fromkeys(user_ids))
        return {"channel": self._public_channel(channel)}

    @_implements("conversations.join")
    def _conversations_join(self, args: dict) -> dict:
        self._require_scope("channels:join")
        channel = self._visible_channel(_text_arg(args, "channel"))
        self._refuse_im(channel)
        if channel["is_private"]:
            raise SlackRefusal("method_not_supported_for_channel_type")
        result: dict[str, Any] = {}
        if BOT_USER_ID in channel["members"]:
            result["warning"] = "already_in_channel"
            result["response_metadata"] = {"warnings": ["already_in_channel"]}
        else:
            channel["members"].append(BOT_USER_ID)
        return {"channel": self._public_channel(channel), **result}

    def _set_channel_text(self, args: dict, field: str) -> dict:
        """conversations.setTopic and setPurpose differ only in the field they set."""
        channel = self._visible_channel(_text_arg(args, "channel"))
        self._refuse_im(channel)
        self._require_bot_member(channel)
        value = args.get(field) or ""
        if len(value) > MAX_TOPIC_CHARS:
            raise SlackRefusal("too_long")
        channel[field] = {"value": value, "creator": BOT_USER_ID, "last_set": int(time.time())}
        return {"channel": self._public_channel(channel)}

    @_implements("conversations.setTopic")
    def _conversations_set_topic(self, args: dict) -> dict:
        return self._set_channel_text(args, "topic")

    @_implements("conversations.setPurpose")
    def _conversations_set_purpose(self, args: dict) -> dict:
        return self._set_channel_text(args, "purpose")

    @_implements("conversations.info")
    def _conversations_info(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        return {"channel": self._public_channel(channel, _flag_arg(args, "include_num_members"))}

    @_implements("conversations.members")
    def _conversations_members(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        page, next_cursor = _paginate(channel["members"], args)
        return {"members": list(page), "response_metadata": {"next_cursor": next_cursor}}

    @_implements("conversations.list")
    def _conversations_list(self, args: dict) -> dict:
        """The conversations the bot can see, in creation order, by `types` (public_channel by default;
        private ones only where the bot is a member, as Slack shows a bot), paginated."""
        types = {t.strip() for t in (_text_arg(args, "types") or "public_channel").split(",") if t.strip()}
        if not types or types - {"public_channel", "private_channel", "mpim", "im"}:
            raise SlackRefusal("invalid_types")
        exclude_archived = _flag_arg(args, "exclude_archived")
        listed = []
        for channel in self._channels.values():
            if channel["is_im"]:
                kind = "im"
            elif channel["is_private"]:
                kind = "private_channel" if BOT_USER_ID in channel["members"] else None
            else:
                kind = "public_channel"
            if kind in types and not (exclude_archived and channel.get("is_archived")):
                listed.append(channel)
        page, next_cursor = _paginate(listed, args)
        return {"channels": [self._public_channel(channel) for channel in page],
                "response_metadata": {"next_cursor": next_cursor}}

    @_implements("conversations.open")
    def _conversations_open(self, args: dict) -> dict:
        """Open (once) or resume the bot's DM with one person."""
        if channel_id := _text_arg(args, "channel"):
            im = self._visible_channel(channel_id)
            if not im["is_im"]:
                raise SlackRefusal("method_not_supported_for_channel_type")
            already_open = True
        else:
            user_ids = list(dict.fromkeys(u.strip() for u in _text_arg(args, "users").split(",") if u.strip()))
            if not user_ids:
                raise SlackRefusal("users_list_not_supplied")
            if any(user_id not in self._users for user_id in user_ids):
                raise SlackRefusal("user_not_found")
            if len(user_ids) > 1:
                raise SlackRefusal("not_implemented_in_standin", method="conversations.open",
                                   detail="multi-person DMs (mpim)")
            already_open = _im_id(user_ids[0]) in self._channels
            im = self._open_im(user_ids[0])
        # Slack answers with just the id unless asked for the whole IM.
        result: dict[str, Any] = {"channel": self._public_channel(im) if _flag_arg(args, "return_im")
                                  else {"id": im["id"]}}
        if already_open:
            result.update(no_op=True, already_open=True)
        return result

    def _time_window(self, args: dict, messages: list[dict]) -> list[dict]:
        """Apply latest/oldest/inclusive as Slack documents them for history and replies."""
        latest = _ts_value(args.get("latest") or "9999999999.999999")
        oldest = _ts_value(args.get("oldest") or "0")
        if latest is None:
            raise SlackRefusal("invalid_ts_latest")
        if oldest is None:
            raise SlackRefusal("invalid_ts_oldest")
        inclusive = _flag_arg(args, "inclusive")

        def within(message: dict) -> bool:
            ts = Decimal(message["ts"])
            return (oldest <= ts <= latest) if inclusive else (oldest < ts < latest)

        return [m for m in messages if within(m)]

    def _public_messages(self, messages: list[dict], args: dict) -> list[dict]:
        """A page of history or replies; metadata only with include_all_metadata, as in Slack."""
        include_metadata = _flag_arg(args, "include_all_metadata")
        return [self._public_message(m, include_metadata) for m in messages]

    @_implements("conversations.history")
    def _conversations_history(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        self._require_bot_member(channel)
        # Thread replies live in conversations.replies unless broadcast to the channel.
        top_level = [m for m in self._messages[channel["id"]]
                     if m.get("thread_ts", m["ts"]) == m["ts"] or m.get("subtype") == "thread_broadcast"]
        newest_first = list(reversed(self._time_window(args, top_level)))
        page, next_cursor = _paginate(newest_first, args)
        return {"messages": self._public_messages(page, args), "has_more": bool(next_cursor),
                "pin_count": len(self._pins[channel["id"]]),
                "response_metadata": {"next_cursor": next_cursor}}

    @_implements("conversations.replies")
    def _conversations_replies(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        self._require_bot_member(channel)
        ts = _text_arg(args, "ts")
        parent = self._find_message(channel["id"], ts)
        if parent is None:
            raise SlackRefusal("thread_not_found")
        thread = [parent] + [m for m in self._messages[channel["id"]]
                             if m.get("thread_ts") == ts and m["ts"] != ts]
        page, next_cursor = _paginate([thread[0]] + self._time_window(args, thread[1:]), args)
        return {"messages": self._public_messages(page, args), "has_more": bool(next_cursor),
                "response_metadata": {"next_cursor": next_cursor}}

    @_implements("files.getUploadURLExternal")
    def _files_get_upload_url_external(self, args: dict) -> dict:
        """Step 1 of Slack's external upload: a file id and a URL to POST its bytes to."""
        length_arg = _text_arg(args, "length")
        if not length_arg.isdigit() or not length_arg.isascii():
            raise _argument_problems("invalid_arguments", ["must be an integer [json-pointer:/length]"])
        length = int(length_arg)
        snippet_type = _text_arg(args, "snippet_type") or None
        alt_txt = args.get("alt_txt")
        alt_txt = None if alt_txt is None else str(alt_txt)
        # The refusals in the method's documented error list: a length of 0 is "missing_argument",
        # snippets stop at 1 MB, alt_txt at 1000 characters.  Past Slack's 1 GB file limit the
        # documented error for a too-large file is the nearest match.
        if length == 0:
            raise SlackRefusal("missing_argument")
        if snippet_type and length > MAX_SNIPPET_BYTES:
            raise SlackRefusal("snippet_too_large")
        if length > MAX_FILE_BYTES:
            raise SlackRefusal("file_upload_size_restricted")
        if alt_txt and len(alt_txt) > MAX_ALT_TXT_CHARS:
            raise SlackRefusal("alt_txt_too_large")
        file_id, token = self._next_id("F"), secrets.token_urlsafe(24)
        name = str(args["filename"])
        self._files[file_id] = {
            "id": file_id, "name": name, "title": name, "length": length, "alt_txt": alt_txt,
            "snippet_type": snippet_type, "created": int(time.time()), "content": None, "completed": False,
            "shares": {}, "initial_comment": None, "thread_ts": None,
        }
        self._upload_tokens[token] = file_id
        return {"upload_url": f"{self.base_url}/upload/v1/{token}", "file_id": file_id}

    @_implements("files.completeUploadExternal")
    def _files_complete_upload_external(self, args: dict) -> dict:
        """Step 3: the uploaded files become files, shared (one message per channel) or private."""
        chosen = self._files_to_complete(args)
        targets = self._share_targets(args)
        thread_ts = _text_arg(args, "thread_ts") or None
        if thread_ts and len(targets) != 1:
            raise _argument_problems("invalid_arguments", ["thread_ts needs exactly one channel to share to"])
        comment = args.get("initial_comment") or ""
        comment = comment if isinstance(comment, str) else str(comment)
        # Slack ignores blocks when there is an initial_comment.
        blocks = None if comment else _json_arg(args, "blocks", "invalid_blocks_format")
        if blocks is not None and not isinstance(blocks, list):
            raise SlackRefusal("invalid_blocks_format")
        if blocks and (problems := block_problems(blocks, MAX_MESSAGE_BLOCKS, "/blocks")):
            raise _argument_problems("invalid_blocks", problems)
        # Everything is checked: from here on nothing refuses, so a refused call changes nothing.
        records = [record for record, _ in chosen]
        for record, title in chosen:
            record.update(title=title, completed=True, initial_comment=comment or None,
                          thread_ts=thread_ts if targets else None)
        messages = []
        for target in targets:
            channel = self._open_im(target) if isinstance(target, str) else target
            # As Slack shows an upload: one file_share message by the uploader, the comment as its text.
            message = self._store_message(channel, _Content(comment, blocks or None, None), BOT_USER_ID, thread_ts)
            message.update(subtype="file_share", upload=True, display_as_bot=False)
            for record in records:
                record["shares"][channel["id"]] = message["ts"]
            messages.append(message)
        for message in messages:
            message["files"] = [self._public_file(record) for record in records]
        return {"files": [self._public_file(record, with_shares=False) for record in records]}

    @_implements("pins.add")
    def _pins_add(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        ts = _text_arg(args, "timestamp")
        if not ts:
            raise SlackRefusal("no_item_specified")
        message = self._message_or_refuse(channel["id"], ts, bad_ts_error="bad_timestamp")
        if any(pin["ts"] == ts for pin in self._pins[channel["id"]]):
            raise SlackRefusal("already_pinned")
        self._pins[channel["id"]].append({"ts": ts, "created": int(time.time()), "created_by": BOT_USER_ID})
        message["pinned_to"] = [channel["id"]]
        return {}

    @_implements("pins.list")
    def _pins_list(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        items = [{"type": "message", "channel": channel["id"], "created": pin["created"],
                  "created_by": pin["created_by"],
                  "message": self._public_message(self._find_message(channel["id"], pin["ts"]))}
                 for pin in self._pins[channel["id"]]]
        return {"items": items}

    @_implements("reactions.add")
    def _reactions_add(self, args: dict) -> dict:
        channel = self._visible_channel(_text_arg(args, "channel"))
        name = _text_arg(args, "name")
        if not REACTION_NAME_PATTERN.match(name):
            raise SlackRefusal("invalid_name")
        message = self._message_or_refuse(channel["id"], _text_arg(args, "timestamp"), bad_ts_error="bad_timestamp")
        if not self._add_reaction(message, BOT_USER_ID, name):
            raise SlackRefusal("already_reacted")
        return {}

    @_implements("users.info")
    def _users_info(self, args: dict) -> dict:
        user = self._users.get(_text_arg(args, "user"))
        if user is None:
            raise SlackRefusal("user_not_found")
        return {"user": copy.deepcopy(user)}

    @_implements("views.open")
    def _views_open(self, args: dict) -> dict:
        trigger = self._take_trigger(_text_arg(args, "trigger_id"))
        view = self._validated_view(args)
        rendered = self._open_view(view, trigger["user"], _text_arg(args, "trigger_id"))
        trigger["used"] = True  # only a successful exchange spends the trigger
        return {"view": copy.deepcopy(rendered)}

    @_implements("views.push")
    def _views_push(self, args: dict) -> dict:
        trigger = self._take_trigger(_text_arg(args, "trigger_id"))
        view = self._validated_view(args)
        stack = self._open_stack(trigger["user"])
        if len(stack) >= MAX_VIEW_STACK:
            raise SlackRefusal("push_limit_reached")
        rendered = self._open_view(view, trigger["user"], _text_arg(args, "trigger_id"),
                                   parent=stack[-1] if stack else None)
        trigger["used"] = True
        return {"view": copy.deepcopy(rendered)}

    @_implements("views.update")
    def _views_update(self, args: dict) -> dict:
        view_id, external_id = _text_arg(args, "view_id"), _text_arg(args, "external_id")
        if not view_id and not external_id:
            raise _argument_problems("invalid_arguments", ["either view_id or external_id is required"])
        record = self._views.get(view_id) if view_id else next(
            (v for v in self._views.values() if v["view"]["external_id"] == external_id), None)
        if record is None:
            raise SlackRefusal("not_found")
        expected_hash = _text_arg(args, "hash")
        if expected_hash and expected_hash != record["view"]["hash"]:
            raise SlackRefusal("hash_conflict")
        self._replace_view(record, self._validated_view(args))
        return {"view": copy.deepcopy(record["view"])}


# ------------------------------------------------------------------------
# HTTP plumbing.
# ------------------------------------------------------------------------
def _parse_body(content_type: str, body: bytes) -> dict:
    """Arguments from a POST body in any encoding slack_sdk (or curl) uses."""
    mime = content_type.split(";")[0].strip().lower()
    if not body:
        return {}
    if mime == "application/json":
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SlackRefusal("invalid_json") from None
        if not isinstance(parsed, dict):
            raise SlackRefusal("json_not_object")
        return parsed
    if mime == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        return {part.get_param("name", header="content-disposition"): part.get_content()
                for part in message.iter_parts()}
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise SlackRefusal("invalid_form_data") from None


def _upload_bytes(content_type: str, body: bytes) -> bytes:
    """A file's bytes from a POST to an upload URL.

    slack_sdk sends them as the raw body (urllib labels it form-encoded, so the
    label is ignored); Slack's docs also show ``curl -F filename=@file``, a
    multipart form whose file part is taken.  ValueError if a form has no file.
    """
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        return body
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts() if message.is_multipart() else ():
        field = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None or field in ("file", "filename"):
            return part.get_payload(decode=True) or b""
    raise ValueError("no file in the form")


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the SlackStandIn bound as ``standin``."""

    standin: SlackStandIn
    server_version = "SlackStandIn/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive, like Slack; every response carries Content-Length
    # Headers and body are written separately: without this, Nagle's algorithm holds the body back
    # until the client's delayed ACK of the headers, 40 ms on a kept-alive connection.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and the sandbox terminal don't want access logs on stderr

    def _route(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.startswith("/api/"):
            self._api(url.path.removeprefix("/api/"), url.query, body)
        elif url.path.startswith("/response/"):
            self._response_url(url.path.removeprefix("/response/"), body)
        elif url.path.startswith("/upload/v1/"):
            self._upload(url.path.removeprefix("/upload/v1/"), body)
        elif url.path == "/_standin/state":
            self._send_json(200, self.standin.snapshot())
        else:
            self._send(404, b"not found", "text/plain")

    def _api(self, method: str, query: str, body: bytes) -> None:
        args = dict(parse_qsl(query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "application/x-www-form-urlencoded")
        try:
            args.update(_parse_body(content_type, body))
        except SlackRefusal as refusal:
            self._send_json(200, refusal.body())
            return
        token = self._bearer_token()
        # Slack reads the token from a JSON body never, from a query or form
        # field as a legacy fallback; either way it is not a method argument.
        form_token = args.pop("token", None)
        if token is None and not content_type.startswith("application/json"):
            token = form_token
        status, payload, headers = self.standin.handle_api_call(method, args, token)
        self._send_json(status, payload, headers)

    def _bearer_token(self) -> str | None:
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        return credentials.strip() or None if scheme.lower() == "bearer" else None

    def _response_url(self, token: str, body: bytes) -> None:
        try:
            payload = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        status, text = self.standin.handle_response_url(token, payload)
        self._send(status, text.encode(), "text/html")

    def _upload(self, token: str, body: bytes) -> None:
        if self.command != "POST":
            self._send(405, b"method not allowed", "text/plain")
            return
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        status, text, headers = self.standin.handle_upload(token, content_type, body)
        self._send(status, text.encode(), "text/plain; charset=utf-8", headers)

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
