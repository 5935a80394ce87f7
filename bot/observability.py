"""What the running bot tells its operators: JSON log lines that carry the request and incident they
are about, with every configured secret taken out, and Prometheus metrics for `GET /metrics`.

Context. Each Slack request over HTTP gets a `Scope` when it reaches the WSGI app (a new request id,
or the load balancer's `X-Request-Id` when it sends a sane one; Socket Mode deliveries get theirs when
Bolt dispatches them). Bolt runs listeners on other threads: `ContextThreadPoolExecutor` carries the
scope over. The incident is noticed where it is read: an `Incident` row loaded (or inserted, for a
declaration) while a scope is active names the scope's incident, as does a service that finds an
incident without loading its row (`saw_incident`); a request that touches several incidents names
none. The reminder ticker opens a scope per delivery, fixed to the reminder's incident.

Metrics live in this module's own registry (`REGISTRY`), one set per process.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator
from urllib.parse import quote, quote_plus

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest


LOG_FORMATS = ("json", "text")
SECRET_PLACEHOLDER = "[secret]"
# Shorter configured values are not searched for: they would garble every line and guard nothing.
MIN_SECRET_CHARS = 4
# Slack tokens look like this whether or not they are ours (a user token pasted into an error...).
SLACK_TOKEN = re.compile(r"\b(?:xox[a-z]|xapp)-[A-Za-z0-9-]{6,}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# ---------------------------------------------------------------------------------------- metrics

REGISTRY = CollectorRegistry(auto_describe=True)
# Slack shows the person an error when the ack takes over 3 s: the buckets resolve 10 ms to 3 s.
ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)

COMMANDS = Counter("warroom_commands_total", "/incident commands answered, by subcommand and outcome",
                   ["command", "outcome"], registry=REGISTRY)
ACK_SECONDS = Histogram("warroom_ack_seconds", "From the request reaching the bot to the /incident ack",
                        ["command", "outcome"], buckets=ACK_BUCKETS, registry=REGISTRY)
REMINDERS_SENT = Counter("warroom_reminders_sent_total", "Reminders posted to Slack, by kind", ["kind"],
                         registry=REGISTRY)
REMINDERS_LATE = Counter("warroom_reminders_late_total", "Reminders posted later than two ticks past due, by kind",
                         ["kind"], registry=REGISTRY)
REMINDER_FAILURES = Counter("warroom_reminder_failures_total", "Reminder delivery attempts that failed, by kind",
                            ["kind"], registry=REGISTRY)
SLACK_API_ERRORS = Counter("warroom_slack_api_errors_total",
                           "Slack Web API error responses, retried ones included, by method and error",
                           ["method", "error"], registry=REGISTRY)
EVENTS = Counter("warroom_events_total", "Events API deliveries, by event type and outcome (ok, error, ignored)",
                 ["type", "outcome"], registry=REGISTRY)
EVENTS_PRUNED = Counter("warroom_processed_events_pruned_total",
                        "Processed Slack delivery ids deleted after the retention", registry=REGISTRY)


# generate_latest writes the classic text format; our names are plain ASCII, so every Prometheus
# (2.x included) reads it as 0.0.4, whatever prometheus_client's CONTENT_TYPE_LATEST says.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_exposition() -> tuple[bytes, str]:
    """This process's metrics in Prometheus's text format, and its content type."""
    return generate_latest(REGISTRY), METRICS_CONTENT_TYPE


# ---------------------------------------------------------------------------------------- context

@dataclass
class Scope:
    """What log lines and metrics of one unit of work (a Slack request, a reminder delivery) share."""

    request_id: str | None = None
    started: float | None = None  # time.perf_counter() when the request reached the bot
    incident: str | None = None  # the reference, like INC-42
    incident_fixed: bool = False  # set by the ticker: rows read along the way don't change it
    several_incidents: bool = False
    event_type: str | None = None  # an Events API delivery's event type
    listeners: int = 0  # listener runs Bolt started for this request
    failed: bool = False  # a listener raised
    event_counted: bool = False


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("warroom_scope", default=None)


def current_scope() -> Scope | None:
    return _scope.get()


@contextmanager
def scoped(scope: Scope) -> Iterator[Scope]:
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def new_request_id(offered: str | None = None) -> str:
    """The load balancer's request id when it looks like one, else a fresh one."""
    if offered and REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


@contextmanager
def request_scope(offered_id: str | None = None) -> Iterator[Scope]:
    """A scope for one HTTP request, started now."""
    with scoped(Scope(request_id=new_request_id(offered_id), started=time.perf_counter())) as scope:
        yield scope


@contextmanager
def incident_scope(reference: str) -> Iterator[Scope]:
    """A scope for work on one known incident (a reminder delivery)."""
    with scoped(Scope(incident=reference, incident_fixed=True)) as scope:
        yield scope


def saw_incident(reference: str) -> None:
    """An incident was read or written in the current scope (if any)."""
    scope = _scope.get()
    if scope is None or scope.incident_fixed or scope.several_incidents or scope.incident == reference:
        return
    if scope.incident is None:
        scope.incident = reference
    else:  # a list or a report: no one incident
        scope.incident, scope.several_incidents = None, True


def track_incidents() -> None:
    """Have loaded and inserted `Incident` rows name the current scope's incident (idempotent)."""
    from sqlalchemy import event

    from bot.models import Incident

    if not event.contains(Incident, "load", _incident_loaded):
        event.listen(Incident, "load", _incident_loaded)
        event.listen(Incident, "after_insert", _incident_inserted)


def _incident_loaded(target, _context) -> None:
    if _scope.get() is not None and target.number is not None:
        saw_incident(target.reference)


def _incident_inserted(_mapper, _connection, target) -> None:
    if _scope.get() is not None and target.number is not None:
        saw_incident(target.reference)


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """Runs each task in a copy of the submitter's context (Bolt's listeners keep the request's scope)."""

    def submit(self, fn, /, *args, **kwargs):
        scope = _scope.get()
        if scope is not None:
            scope.listeners += 1
        context = contextvars.copy_context()
        return super().submit(context.run, _run_listener, fn, *args, **kwargs)


def _run_listener(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        scope = _scope.get()
        if scope is not None and scope.event_type and not scope.event_counted:
            event_done(scope, "error" if scope.failed else "ok")


def event_done(scope: Scope, outcome: str) -> None:
    scope.event_counted = True
    EVENTS.labels(scope.event_type, outcome).inc()


# ------------------------------------------------------------------------------- what is measured

def command_acked(command: str, outcome: str, started: float) -> float:
    """Count an acknowledged /incident command; its ack latency in seconds, from the request's arrival
    (or `started`, the listener's start, outside a request scope)."""
    scope = _scope.get()
    began = scope.started if scope is not None and scope.started is not None else started
    elapsed = max(time.perf_counter() - began, 0.0)
    COMMANDS.labels(command, outcome).inc()
    ACK_SECONDS.labels(command, outcome).observe(elapsed)
    return elapsed


def reminder_sent(kind: str, late: bool) -> None:
    REMINDERS_SENT.labels(kind).inc()
    if late:
        REMINDERS_LATE.labels(kind).inc()


def reminder_failed(kind: str) -> None:
    REMINDER_FAILURES.labels(kind).inc()


def slack_api_error(method: str, code: str) -> None:
    """Count a Slack Web API call's error (bot.slack_io sees every attempt)."""
    SLACK_API_ERRORS.labels(method or "other", code).inc()


# ---------------------------------------------------------------------------------------- logging

class ContextFilter(logging.Filter):
    """Stamps each record with the request id and incident of the scope it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        record.request_id = scope.request_id if scope is not None else None
        record.incident = scope.incident if scope is not None else None
        return True


class RedactSecrets(logging.Filter):
    """Replaces every configured secret (and anything shaped like a Slack token) with `[secret]` in
    the message, the traceback and the stack of each record, before any formatter sees them."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        values = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_CHARS:
                values.update({secret, quote(secret, safe=""), quote_plus(secret)})
        self.values = sorted(values, key=len, reverse=True)  # a secret inside another goes after it

    def redact(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, SECRET_PLACEHOLDER)
        return SLACK_TOKEN.sub(SECRET_PLACEHOLDER, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logged as written, still redacted
            message = str(record.msg)
        record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def settings_secrets(settings) -> list[str]:
    """The secret values in the settings: Slack's tokens and signing secret, the redaction key,
    and the database password."""
    from sqlalchemy.engine import make_url

    values = [secret.get_secret_value() for secret in (settings.slack_bot_token, settings.slack_signing_secret,
                                                      settings.slack_app_token, settings.warroom_redaction_key)
              if secret is not None]
    try:
        password = make_url(settings.database_url).password
    except Exception:  # noqa: BLE001 - a URL that does not parse has no password to find
        password = None
    if password:
        values.append(str(password))
    return values


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, and request_id, incident and exc
    (the traceback) when there are."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "incident"):
            value = getattr(record, key, None)
            if value:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with `[request_id INC-42]` after the logger name when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [value for value in (getattr(record, "request_id", None), getattr(record, "incident", None)) if value]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def configure_logging(log_format: str = "json", secrets: Iterable[str | None] = (),
                      level: int = logging.INFO, stream=None) -> logging.Handler:
    """Send every log record to one stream handler (stderr by default), as JSON lines or text,
    stamped with its context and with secrets redacted. Python warnings and uncaught exceptions
    are logged too, so in JSON mode every line of the output parses."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecrets(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)
    return handler


def redact_secrets_in_logs(secrets: Iterable[str | None]) -> None:
    """Add secret redaction to every handler the root logger has (command-line tools' plain logging)."""
    secrets = list(secrets)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactSecrets) for existing in handler.filters):
            handler.addFilter(RedactSecrets(secrets))


def _log_uncaught(exc_type, exc_value, exc_traceback) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        return
    logging.getLogger("warroom").critical("uncaught %s", exc_type.__name__,
                                          exc_info=(exc_type, exc_value, exc_traceback))
