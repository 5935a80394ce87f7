"""The running bot: a Bolt app wired to our handlers, served by waitress (HTTP) or Socket Mode."""

from __future__ import annotations

import json
import logging

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import slack_io
from bot.db import database_is_reachable
from bot.runtime import Runtime
from bot.scheduler import Ticker

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def make_bolt_app(runtime: Runtime) -> App:
    """A Bolt app that talks to `SLACK_API_URL` with our retrying client."""
    import commands  # Slack-facing layer, imported here so `bot` stays importable without it

    settings = runtime.settings
    app = App(
        client=slack_io.make_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url),
        signing_secret=settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None,
        # Listeners run after the HTTP response; each one acks itself once its write is committed.
        process_before_response=False,
        # auth.test is asked once at start-up: a wrong token stops start-up instead of every command.
        token_verification_enabled=True,
        # A request Bolt can't match is logged, not answered with a traceback.
        raise_error_for_unhandled_request=False,
    )
    commands.register(app, runtime)
    return app


def make_wsgi_app(runtime: Runtime, bolt_app: App):
    """`POST /slack/events` for every Slack request, `GET /healthz` that checks the database."""
    slack_handler = SlackRequestHandler(bolt_app, path=EVENTS_PATH)

    def wsgi_app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz" and environ.get("REQUEST_METHOD") == "GET":
            healthy = database_is_reachable(runtime.engine)
            body = json.dumps({"ok": healthy, "database": "up" if healthy else "down"}).encode()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return slack_handler(environ, start_response)

    return wsgi_app


def start_ticker(runtime: Runtime, app: App) -> Ticker:
    """The reminder ticker of this process, delivering through the app's Slack client."""
    from commands import reminder_delivery

    return Ticker(runtime, reminder_delivery(app.client), runtime.settings.tick).start()


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
