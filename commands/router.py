"""The `/incident` slash command: route the subcommand, ack after the write, then talk to Slack.

Every subcommand handler parses, commits through one service call, and returns a `Reply`: what
the ack tells the person, and the slower Slack work to do after the ack. Errors are handled here,
once: a domain error becomes an ephemeral message that says what to type instead.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from bot.errors import UsageError, WarroomError
from bot.render import render
from bot.runtime import AlreadyHandled, Runtime
from bot.slack_io import SlackCallFailed
from commands.parsing import USAGE, split_subcommand

log = logging.getLogger(__name__)

DATABASE_DOWN = ("Could not record this: the incident database is not answering. Nothing was saved; "
                 "try again in a moment.")
ALREADY_HANDLED = "This command reached the bot twice; it was carried out once, the first time."
INTERNAL_ERROR = ("Could not record this: the bot hit an internal error (it is in the bot's log). Nothing was saved; "
                  "try again, and tell whoever runs Warroom if it happens again.")


def delivery_key(request: SlashRequest) -> str | None:
    """The key a repeated delivery of this command is recognised by (its trigger id, hashed to fit)."""
    if not request.trigger_id:
        return None
    return "trigger:" + hashlib.sha256(request.trigger_id.encode()).hexdigest()[:40]


def database_failure(exc: SQLAlchemyError) -> str:
    """What to tell a person whose command the database refused: it is down, or it is our bug."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return DATABASE_DOWN
    return INTERNAL_ERROR


@dataclass(frozen=True)
class SlashRequest:
    """One `/incident …` invocation as Slack sent it."""

    user_id: str
    channel_id: str
    subcommand: str
    args: str
    trigger_id: str


@dataclass
class Reply:
    """What to acknowledge with (ephemeral; nothing if empty) and the Slack work that follows."""

    text: str = ""
    blocks: list | None = None
    then: Callable[[WebClient], None] | None = None
    # Said to the person if `then` fails; the failing step and Slack's error are appended.
    then_failure: str = "Your command was recorded, but"


Handler = Callable[[SlashRequest], Reply]


@dataclass
class Router:
    runtime: Runtime
    handlers: dict[str, Handler] = field(default_factory=dict)

    def add(self, name: str, handler: Handler) -> None:
        assert name in USAGE, f"document {name} in commands.parsing.USAGE"
        self.handlers[name] = handler

    def dispatch(self, request: SlashRequest) -> Reply:
        handler = self.handlers.get(request.subcommand)
        if handler is None:
            raise UsageError(
                f"`{request.subcommand}` is not an /incident command.",
                "Try `/incident help` for the list, e.g. `/incident declare sev2 <title>`.",
            )
        return handler(request)

    def register(self, app: App) -> None:
        @app.command("/incident")
        def handle_incident_command(ack, command, client, respond):
            subcommand, args = split_subcommand(command.get("text") or "")
            request = SlashRequest(
                user_id=command["user_id"],
                channel_id=command["channel_id"],
                subcommand=subcommand or "help",
                args=args,
                trigger_id=command.get("trigger_id", ""),
            )
            try:
                with self.runtime.handling(delivery_key(request)):
                    reply = self.dispatch(request)
            except AlreadyHandled:
                ack(text=ALREADY_HANDLED)
                return
            except WarroomError as exc:
                ack(text=render("error.slack.j2", message=exc.message, hint=exc.hint))
                return
            except SQLAlchemyError as exc:
                log.exception("database error in /incident %s", request.subcommand)
                ack(text=database_failure(exc))
                return
            ack(text=reply.text, blocks=reply.blocks)
            run_after_ack(reply, client, tell=lambda text: respond(text=text))


def run_after_ack(reply: Reply, client: WebClient, tell: Callable[[str], object]) -> None:
    """Do the slow Slack work; a failure is told to the person (`tell`), never swallowed."""
    if reply.then is None:
        return
    try:
        reply.then(client)
    except SlackCallFailed as exc:
        log.warning("after-ack Slack work failed: %s", exc)
        tell(render("error.slack.j2", message=f"{reply.then_failure} {exc}.",
                    hint="Try again, or check that the bot is in the channel."))
    except SQLAlchemyError as exc:
        log.exception("database error after ack")
        tell(database_failure(exc))
