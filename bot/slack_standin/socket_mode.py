"""Slack's Socket Mode side of the stand-in: the websocket an app connects to instead of a public URL.

An app in Socket Mode calls ``apps.connections.open`` with its app-level token (``xapp-…``) and
gets a single-use websocket URL; it may open several connections that way, and Slack spreads its
deliveries across them.  Over each connection Slack sends ``{"type": "hello", …}`` first, then
envelopes::

    {"envelope_id": "…", "type": "slash_commands" | "events_api" | "interactive",
     "payload": {…}, "accepts_response_payload": true | false, "retry_attempt": 0, "retry_reason": ""}

and the app acknowledges each one on the same connection with ``{"envelope_id": "…"}``, adding
``"payload": {…}`` where a response is accepted (a slash command's ack body, e.g. ``{"text": …}``).
Slack asks a connection to go away with ``{"type": "disconnect", "reason": "refresh_requested"}``;
the app then opens a new one.

``SocketModeServer`` plays Slack's end on 127.0.0.1 (plain ``ws://``: slack_sdk's built-in client
speaks TLS only to port 443).  The ``SlackStandIn`` owns one, starts and stops it, and answers
``apps.connections.open`` with :meth:`SocketModeServer.issue_url`.  Tests drive it with
:meth:`SocketModeServer.deliver` (any envelope) and :meth:`SocketModeServer.command` (a person
typing a slash command, with the same fields as the HTTP simulator's).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from .server import APP_ID
from .simulator import SLACK_ACK_TIMEOUT_SECONDS, slash_command_fields

if TYPE_CHECKING:
    from .server import SlackStandIn

log = logging.getLogger(__name__)

LINK_PATH = "/link/"
# Slack retries an unacknowledged Events API delivery up to three times.
MAX_RETRIES = 3
RETRY_REASON = "timeout"
# Envelope types whose ack may carry a response payload (a slash command's or a modal's answer).
RESPONSE_PAYLOAD_TYPES = frozenset({"slash_commands", "interactive"})
# The deprecated verification token the HTTP simulator also puts in every payload.
VERIFICATION_TOKEN = "standin-verification-token"


@dataclass
class _Link:
    """One open websocket connection of the app."""

    id: int
    websocket: ServerConnection
    opened_at: float
    draining: bool = False  # told to disconnect: Slack delivers nothing more on it
    closed: bool = False


@dataclass
class _Delivery:
    """One delivery and its attempts (a retry is a new envelope on another connection)."""

    condition: threading.Condition = field(default_factory=threading.Condition)
    acked: bool = False
    ack: dict | None = None
    acked_envelope: str | None = None
    lost: set[str] = field(default_factory=set)  # envelopes whose connection closed before an ack


@dataclass
class SocketCommand:
    """What Slack sent for one slash command over Socket Mode, and what the app acknowledged."""

    ack: dict | None  # the ack's payload ({} for an empty ack); None when not acknowledged in time
    payload: dict  # the command's fields; deliver it again to repeat the invocation
    trigger_id: str
    response_url_token: str

    @property
    def acked(self) -> bool:
        return self.ack is not None

    @property
    def text(self) -> str:
        return str((self.ack or {}).get("text") or "")


class SocketModeServer:
    """Slack's Socket Mode websocket endpoint, with the delivery side driven by tests."""

    def __init__(self, standin: SlackStandIn, host: str = "127.0.0.1"):
        self.standin = standin
        self._host = host
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        # Guards tickets, links, the round-robin counter, pending envelopes and the log;
        # never held while sending, waiting or calling into the stand-in.
        self._lock = threading.Lock()
        self._tickets: set[str] = set()
        self._links: list[_Link] = []
        self._link_ids = itertools.count(1)
        self._turn = 0
        self._pending: dict[str, _Delivery] = {}
        self._log: list[dict] = []
        self._stray_acks: list[dict] = []

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        if self._server is not None:
            return
        self._server = serve(self._serve_connection, self._host, 0, process_request=self._check_ticket,
                             logger=log)
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-standin-socket-mode",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection (1001, going away) and stop listening."""
        if self._server is None:
            return
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not started")
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}"

    # ------------------------------------------------------ connecting
    def issue_url(self) -> str:
        """A new single-use websocket URL, as ``apps.connections.open`` returns it."""
        ticket = secrets.token_hex(16)
        with self._lock:
            self._tickets.add(ticket)
        # Slack's: wss://wss-primary.slack.com/link/?ticket=<uuid>&app_id=<hash>
        return f"{self.base_url}{LINK_PATH}?ticket={ticket}&app_id={secrets.token_hex(32)}"

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        """Only a ticket from apps.connections.open opens a connection, and only once."""
        url = urlsplit(request.path)
        ticket = (parse_qs(url.query).get("ticket") or [""])[0]
        with self._lock:
            valid = url.path == LINK_PATH and ticket in self._tickets
            self._tickets.discard(ticket)
        if not valid:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or used ticket: call apps.connections.open\n")
        return None

    def _serve_connection(self, websocket: ServerConnection) -> None:
        with self._lock:
            link = _Link(next(self._link_ids), websocket, time.monotonic())
            self._links.append(link)
            count = sum(1 for other in self._links if not other.closed)
        try:
            websocket.send(json.dumps({
                "type": "hello", "num_connections": count,
                "debug_info": {"host": "applink-standin", "build_number": 1,
                               "approximate_connection_time": 3600},
                "connection_info": {"app_id": APP_ID},
            }))
            for message in websocket:
                self._receive(link, message)
        except ConnectionClosed:
            pass
        finally:
            self._forget(link)

    def _receive(self, link: _Link, message: str | bytes) -> None:
        try:
            parsed = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("Socket Mode connection %s sent something that is not JSON", link.id)
            return
        envelope_id = parsed.get("envelope_id") if isinstance(parsed, dict) else None
        if not envelope_id:
            return
        payload = parsed.get("payload")
        payload = copy.deepcopy(payload) if isinstance(payload, dict) else {}
        now = time.monotonic()
        with self._lock:
            delivery = self._pending.get(envelope_id)
            record = next((r for r in reversed(self._log) if r["envelope_id"] == envelope_id), None)
            if delivery is None or record is None:
                self._stray_acks.append({"envelope_id": envelope_id, "connection": link.id, "payload": payload})
                return
            record["acks"] += 1
            if record["acked_after"] is None:
                record.update(acked_after=now - record["sent_at"], ack=payload, acked_on=link.id)
        with delivery.condition:
            if not delivery.acked:
                delivery.acked, delivery.ack, delivery.acked_envelope = True, payload, envelope_id
            delivery.condition.notify_all()

    def _forget(self, link: _Link) -> None:
        """A closed connection: whatever it had not acknowledged is lost."""
        with self._lock:
            link.closed = True
            if link in self._links:
                self._links.remove(link)
            lost = [(r["envelope_id"], self._pending.get(r["envelope_id"])) for r in self._log
                    if r["connection"] == link.id and r["acked_after"] is None]
        for envelope_id, delivery in lost:
            if delivery is not None:
                with delivery.condition:
                    delivery.lost.add(envelope_id)
                    delivery.condition.notify_all()

    # --------------------------------------------------------- inspection
    def connections(self) -> int:
        """How many connections are open and taking deliveries."""
        with self._lock:
            return sum(1 for link in self._links if not link.closed and not link.draining)

    def connection_ids(self) -> list[int]:
        """Ids of the connections taking deliveries, oldest first (for ``deliver(connection=…)``)."""
        with self._lock:
            return [link.id for link in self._links if not link.closed and not link.draining]

    def draining_ids(self) -> list[int]:
        """Ids of the connections told to disconnect that are still open."""
        with self._lock:
            return [link.id for link in self._links if not link.closed and link.draining]

    def deliveries(self) -> list[dict]:
        """Every envelope sent, oldest first: envelope_id, type, connection, retry_attempt, acks
        (how many acks came back), acked_after (seconds, None if never), ack (its payload), acked_on."""
        with self._lock:
            return [{k: copy.deepcopy(v) for k, v in r.items() if k != "sent_at"} for r in self._log]

    def stray_acks(self) -> list[dict]:
        """Acks naming an envelope that was never sent (Slack ignores them)."""
        with self._lock:
            return copy.deepcopy(self._stray_acks)

    # -------------------------------------------------------- delivering
    def disconnect_all(self, reason: str = "refresh_requested", close_after: float | None = None) -> int:
        """Tell every connection to go away (``{"type": "disconnect", "reason": …}``); nothing more is
        delivered on them.  With ``close_after`` Slack's end closes them that many seconds later if the
        app has not.  Returns how many were told."""
        with self._lock:
            links = [link for link in self._links if not link.closed and not link.draining]
            for link in links:
                link.draining = True
        message = json.dumps({"type": "disconnect", "reason": reason,
                              "debug_info": {"host": "applink-standin"}})
        for link in links:
            try:
                link.websocket.send(message)
            except ConnectionClosed:
                pass
        if close_after is not None:
            def close_them() -> None:
                for link in links:
                    link.websocket.close()

            timer = threading.Timer(close_after, close_them)
            timer.daemon = True
            timer.start()
        return len(links)

    def _pick(self, avoid: set[int], wanted: int | None) -> _Link | None:
        with self._lock:
            live = [link for link in self._links if not link.closed and not link.draining]
            if wanted is not None:
                return next((link for link in live if link.id == wanted), None)
            candidates = [link for link in live if link.id not in avoid] or live
            if not candidates:
                return None
            link = candidates[self._turn % len(candidates)]
            self._turn += 1
            return link

    def deliver(self, type: str, payload: dict, timeout: float = SLACK_ACK_TIMEOUT_SECONDS, *,
                retry_on_timeout: bool = False, connection: int | None = None, retry_attempt: int = 0,
                retry_reason: str = "", accepts_response_payload: bool | None = None) -> dict | None:
        """Send ``payload`` in an envelope on one connection (round robin, or the ``connection`` id
        given, see ``connection_ids()``) and wait up to ``timeout`` seconds for its ack.  Returns the
        ack's payload ({} for an empty ack), or None when it was not acknowledged in time (or its
        connection closed first, or no connection is open).

        ``retry_on_timeout``: as Slack does, send the same payload again in a new envelope, with
        ``retry_attempt`` counting up and ``retry_reason`` "timeout", on another connection when one
        is open, up to three times; an ack of any attempt counts, a late one included.
        ``retry_attempt``/``retry_reason`` set the first envelope's fields, to hand-craft a redelivery.
        """
        if accepts_response_payload is None:
            accepts_response_payload = type in RESPONSE_PAYLOAD_TYPES
        delivery = _Delivery()
        used: set[int] = set()
        attempts = 1 + (MAX_RETRIES if retry_on_timeout else 0)
        for attempt in range(attempts):
            link = self._pick(used, connection if attempt == 0 else None)
            if link is None:
                break
            used.add(link.id)
            envelope_id = secrets.token_hex(18)
            envelope = {
                "envelope_id": envelope_id, "type": type, "payload": copy.deepcopy(payload),
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": retry_attempt + attempt,
                "retry_reason": RETRY_REASON if attempt else retry_reason,
            }
            with self._lock:
                self._pending[envelope_id] = delivery
                self._log.append({"envelope_id": envelope_id, "type": type, "connection": link.id,
                                  "retry_attempt": envelope["retry_attempt"], "sent_at": time.monotonic(),
                                  "acks": 0, "acked_after": None, "ack": None, "acked_on": None})
            try:
                link.websocket.send(json.dumps(envelope))
            except ConnectionClosed:
                with delivery.condition:
                    delivery.lost.add(envelope_id)
            deadline = time.monotonic() + timeout
            with delivery.condition:
                while not delivery.acked and envelope_id not in delivery.lost:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    delivery.condition.wait(remaining)
                if delivery.acked:
                    return copy.deepcopy(delivery.ack)
        return None

    # -------------------------------------------------- the person's side
    def command_payload(self, user_id: str, channel_id: str, text: str, command: str = "/incident",
                        trigger_id: str | None = None) -> tuple[dict, str]:
        """A slash command's fields as Slack sends them (the HTTP form's, as a JSON object of strings)
        with a fresh trigger_id (unless given) and response_url; returns (payload, response_url token)."""
        return slash_command_fields(self.standin, user_id, channel_id, text, command, trigger_id,
                                    VERIFICATION_TOKEN)

    def command(self, user_id: str, channel_id: str, text: str, command: str = "/incident",
                trigger_id: str | None = None, **deliver_options: Any) -> SocketCommand:
        """A person typing ``/incident <text>`` in a channel, delivered over Socket Mode.  Pass an
        earlier result's ``trigger_id`` to deliver the same invocation again; ``deliver_options``
        go to :meth:`deliver` (timeout, connection, retry_on_timeout, …)."""
        payload, token = self.command_payload(user_id, channel_id, text, command, trigger_id)
        ack = self.deliver("slash_commands", payload, **deliver_options)
        return SocketCommand(ack=ack, payload=payload, trigger_id=payload["trigger_id"], response_url_token=token)
