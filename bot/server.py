"""The running bot: a Bolt app wired to our handlers, served by waitress (HTTP) or Socket Mode.

HTTP: `POST /slack/events` for Slack, `GET /healthz` for the load balancer, `GET /metrics` for
Prometheus (this process's numbers; see bot.observability).
"""

from __future__ import annotations

import io
import json
import logging
import re
from urllib.parse import parse_qsl

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.middleware import Middleware
from slack_bolt.request import request as bolt_request_module
from slack_sdk.signature import SignatureVerifier

from bot import observability, slack_io
from bot.db import database_is_reachable
from bot.runtime import Runtime
from bot.scheduler import Ticker

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
ASCII_DIGITS = re.compile(r"[0-9]+")
METRICS_PATH = "/metrics"
# Bolt's default number of listener threads, kept.
LISTENER_THREADS = 5


class ObservedApp(App):
    """A Bolt app whose deliveries each run in an observability scope (Socket Mode ones get theirs
    here; HTTP ones already have one from the WSGI app), with Events API deliveries counted."""

    def dispatch(self, req):
        scope = observability.current_scope()
        if scope is None:
            with observability.request_scope():
                return self.dispatch(req)
        body = req.body if isinstance(req.body, dict) else {}
        if body.get("type") == "event_callback":
            scope.event_type = str((body.get("event") or {}).get("type") or "unknown")[:64]
        response = super().dispatch(req)
        if scope.event_type and scope.listeners == 0 and not scope.event_counted:
            # No listener ran: not one we handle, our own message, or a refused signature.
            observability.event_done(scope, "error" if scope.failed else "ignored")
        return response


class ShareTheAppsClient(Middleware):
    """Bolt hands each request a new stock WebClient (thread safety if a listener swaps the token;
    ours never do); listeners get the app's own, which keeps its connections to Slack. A Middleware
    object rather than a function: Bolt calls it as it is, without working out keyword arguments
    for it on every request (benchmarks/command_cpu.py)."""

    def __init__(self, client) -> None:
        self.client = client

    def process(self, *, req, resp, next):  # noqa: A002 - Bolt's own parameter name
        req.context["client"] = self.client
        return next()


def _listener_failed(error, logger):
    """Bolt's default error handling (log it), and the delivery counted as failed."""
    scope = observability.current_scope()
    if scope is not None:
        scope.failed = True
    logger.error("Failed to run listener function (error: %s)", error, exc_info=error)


def make_bolt_app(runtime: Runtime) -> App:
    """A Bolt app that talks to `SLACK_API_URL` with our retrying client."""
    import commands  # Slack-facing layer, imported here so `bot` stays importable without it

    settings = runtime.settings
    observability.track_incidents()
    app = ObservedApp(
        client=slack_io.make_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url,
                                    settings.slack_api_timeout),
        signing_secret=settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None,
        # Listeners run after the HTTP response; each one acks itself once its write is committed.
        process_before_response=False,
        # auth.test is asked once at start-up: a wrong token stops start-up instead of every command.
        token_verification_enabled=True,
        # A request Bolt can't match is logged, not answered with a traceback.
        raise_error_for_unhandled_request=False,
        # Listeners run on these threads in the request's context: their log lines keep its ids.
        listener_executor=observability.ContextThreadPoolExecutor(LISTENER_THREADS, thread_name_prefix="listener"),
    )
    app.error(_listener_failed)

    app.use(ShareTheAppsClient(app.client))
    commands.register(app, runtime)
    return app


def _parse_body(body: str, content_type: str | None) -> dict:
    """Bolt's parse_body without its bug: it reads any form body containing the word "payload" as
    an interactivity payload, so `/incident note The payload was empty` parsed as {} and was dropped."""
    if body and content_type != "application/json" and not body.startswith("{") and "payload" in body:
        fields = dict(parse_qsl(body, keep_blank_values=True))
        if "payload" not in fields:
            return fields
    return _bolt_parse_body(body, content_type)


_bolt_parse_body = bolt_request_module.parse_body
bolt_request_module.parse_body = _parse_body


def _signed_by_slack(verifier: SignatureVerifier, body: bytes, environ) -> bool:
    """Slack's signature, checked before Bolt reads the body: an unsigned request is refused whatever
    it contains (Bolt parses first, and a timestamp that is not a number made it raise)."""
    timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
    signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
    if not ASCII_DIGITS.fullmatch(timestamp):  # str.isdigit() also takes '²', which int() refuses
        return False
    try:
        text = body.decode("utf-8")  # Slack sends UTF-8; the verifier would decode and raise
    except UnicodeDecodeError:
        return False
    return verifier.is_valid(body=text, timestamp=timestamp, signature=signature)


def _plain(start_response, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def make_wsgi_app(runtime: Runtime, bolt_app: App):
    """`POST /slack/events` for every Slack request, `GET /healthz` that checks the database,
    `GET /metrics` in Prometheus's text format. Each request gets a request id for its log lines."""
    slack_handler = SlackRequestHandler(bolt_app, path=EVENTS_PATH)
    secret = runtime.settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if secret else None

    def slack_request(environ, start_response):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if verifier is not None and not _signed_by_slack(verifier, body, environ):
            log.info("refused a request without a valid Slack signature")
            return _plain(start_response, "401 Unauthorized", "invalid request signature")
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            return slack_handler(environ, start_response)
        except Exception as exc:  # noqa: BLE001 - a signed body Bolt cannot read is a bad request, not a crash
            log.warning("could not read a signed Slack request (%s: %s)", type(exc).__name__, str(exc)[:200])
            return _plain(start_response, "400 Bad Request", "the request body could not be read")

    def wsgi_app(environ, start_response):
        with observability.request_scope(environ.get("HTTP_X_REQUEST_ID")):
            path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
            if path == "/healthz" and method == "GET":
                healthy = database_is_reachable(runtime.engine)
                body = json.dumps({"ok": healthy, "database": "up" if healthy else "down"}).encode()
                start_response("200 OK" if healthy else "503 Service Unavailable",
                               [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            if path == METRICS_PATH and method == "GET":
                body, content_type = observability.metrics_exposition()
                start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
                return [body]
            if path == EVENTS_PATH and method == "POST":
                return slack_request(environ, start_response)
            return slack_handler(environ, start_response)

    return wsgi_app


def start_ticker(runtime: Runtime, app: App) -> Ticker:
    """The reminder ticker of this process, delivering through the app's Slack client."""
    from commands import reminder_delivery

    return Ticker(runtime, reminder_delivery(app.client, runtime), runtime.settings.tick).start()


def serve_http(runtime: Runtime, host: str, port: int, threads: int = 16) -> None:
    """Serve with waitress, a production WSGI server (Bolt's own server is for development)."""
    from waitress import serve

    app = make_bolt_app(runtime)
    ticker = start_ticker(runtime, app)
    log.info("warroom listening on http://%s:%s%s", host, port, EVENTS_PATH)
    try:
        serve(make_wsgi_app(runtime, app), host=host, port=port, threads=threads, ident="warroom")
    finally:
        ticker.stop()


def serve_socket_mode(runtime: Runtime) -> None:
    """Receive Slack's deliveries over a Socket Mode websocket instead of a public URL."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    app = make_bolt_app(runtime)
    ticker = start_ticker(runtime, app)
    try:
        SocketModeHandler(app, runtime.settings.slack_app_token.get_secret_value()).start()
    finally:
        ticker.stop()
