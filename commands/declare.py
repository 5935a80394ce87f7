"""`/incident declare`: record the incident first, then open its war room in Slack."""

from __future__ import annotations

import json

from slack_bolt import App
from slack_sdk.models.blocks import (
    InputBlock,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    StaticSelectElement,
)
from slack_sdk.models.views import View
from sqlalchemy.exc import SQLAlchemyError

from bot import incidents, slack_io
from bot.errors import UsageError
from bot.incidents import TITLE_MAX_CHARS
from bot.playbook import Playbook
from bot.render import render
from bot.runtime import Runtime
from commands.parsing import DEFAULT_SEVERITY, DeclareRequest, human_text, parse_declare, parse_title
from commands.router import Reply, Router, SlashRequest, database_failure, payload_fields
from commands.war_room import open_war_room

DECLARE_VIEW = "declare_incident"
SUMMARY_MAX_CHARS = 2000
OPTION_TEXT_MAX = 75  # Slack's limit for an option's text


def _option(value: str, label: str) -> Option:
    return Option(value=value, label=label if len(label) <= OPTION_TEXT_MAX else label[:OPTION_TEXT_MAX - 1] + "…")


def declare_modal(origin_channel_id: str, playbook: Playbook) -> dict:
    """The form `/incident declare` opens when no title was typed."""
    options = [_option(str(sev), f"{level.upper()}: {meaning}")
               for sev, (level, meaning) in enumerate(playbook.severity.items(), 1)]
    drivers = [_option(name, f"{name}: {meaning}") for name, meaning in playbook.taxonomy.drivers.items()]
    modes = [_option(name, f"{name}: {mode.description}") for name, mode in playbook.taxonomy.failure_modes.items()]
    return View(
        type="modal",
        callback_id=DECLARE_VIEW,
        title=PlainTextObject(text="Declare an incident"),
        submit=PlainTextObject(text="Declare"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=json.dumps({"origin_channel_id": origin_channel_id}),
        blocks=[
            InputBlock(block_id="title", label="Title",
                       element=PlainTextInputElement(action_id="title", max_length=TITLE_MAX_CHARS,
                                                     placeholder="Support bot quoting a refund policy we don't have")),
            InputBlock(block_id="severity", label="Severity",
                       element=StaticSelectElement(action_id="severity", options=options,
                                                   initial_option=options[DEFAULT_SEVERITY - 1])),
            InputBlock(block_id="summary", label="What do we know so far?", optional=True,
                       element=PlainTextInputElement(action_id="summary", multiline=True,
                                                     max_length=SUMMARY_MAX_CHARS)),
            *([InputBlock(block_id="driver", label="Primary driver, if known", optional=True,
                          element=StaticSelectElement(action_id="driver", options=drivers)),
               InputBlock(block_id="failure_mode", label="Failure mode, if known", optional=True,
                          element=StaticSelectElement(action_id="failure_mode", options=modes))] if modes else []),
        ],
    ).to_dict()


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def declare(request: SlashRequest) -> Reply:
        if not request.args:
            def open_form(client):
                slack_io.call("opening the declare form", client.views_open,
                              trigger_id=request.trigger_id, view=declare_modal(request.channel_id, runtime.playbook))
            return Reply(then=open_form, then_failure="Could not open the form:")
        return _declare(runtime, parse_declare(request.args), request.user_id)

    router.add("declare", declare)

    @app.view(DECLARE_VIEW)
    def handle_declare_submission(ack, body, view, client):
        fields = payload_fields(lambda: _declare_form_fields(body, view))
        if fields is None:
            ack()
            return
        user_id, origin, title, severity, summary, driver, failure_mode = fields
        try:
            request = DeclareRequest(
                title=parse_title("declare", title), severity=severity,
                summary=human_text(summary)[:SUMMARY_MAX_CHARS], driver=driver, failure_mode=failure_mode,
            )
        except UsageError as exc:
            ack(response_action="errors", errors={"title": exc.message})
            return
        if bool(request.driver) != bool(request.failure_mode):
            ack(response_action="errors", errors={"failure_mode" if request.driver else "driver":
                                                  "Choose both the driver and the failure mode, or neither."})
            return
        try:
            reply = _declare(runtime, request, user_id)
        except SQLAlchemyError as exc:
            ack(response_action="errors", errors={"title": database_failure(exc)})
            return
        ack()
        # A form has no response_url: failures are told privately in the channel it was opened from.
        router.after_ack(reply, client, tell=lambda text: origin and client.chat_postEphemeral(
            channel=origin, user=user_id, text=text))  # in the new incident's own queue (reply.room)


def _declare_form_fields(body: dict, view: dict) -> tuple:
    """(user, origin channel, title, severity, summary, driver, failure mode) from a submitted form."""
    values = view["state"]["values"]
    return (body["user"]["id"], json.loads(view.get("private_metadata") or "{}").get("origin_channel_id"),
            values["title"]["title"].get("value") or "",
            int(values["severity"]["severity"]["selected_option"]["value"]),
            values["summary"]["summary"].get("value") or "",
            _selected(values, "driver"), _selected(values, "failure_mode"))


def _selected(values: dict, block_id: str) -> str | None:
    """The value of an optional select in a submitted form, or None if nothing was chosen."""
    option = (values.get(block_id, {}).get(block_id) or {}).get("selected_option")
    return option["value"] if option else None


def _declare(runtime: Runtime, request: DeclareRequest, user_id: str) -> Reply:
    with runtime.transaction() as session:
        incident = incidents.declare_incident(
            session, title=request.title, severity=request.severity,
            summary=request.summary, declared_by=user_id, playbook=runtime.playbook,
            driver=request.driver, failure_mode=request.failure_mode,
        )
    channel_name = incidents.channel_name_for(incident.number, incident.title)
    return Reply(
        text=render("declared.slack.j2", incident=incident, channel_name=channel_name),
        then=lambda client: open_war_room(client, runtime, incident),
        then_failure=f"{incident.reference} is recorded, but",
        # Declarations typed in one channel open rooms side by side: one waiting for another's (six
        # Slack calls each) could pass WARROOM_REPOST_AFTER and have the takeover open it twice.
        room=f"incident:{incident.id}",
    )
