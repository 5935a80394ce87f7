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
from bot.render import render
from bot.runtime import Runtime
from commands.parsing import DEFAULT_SEVERITY, DeclareRequest, human_text, parse_declare, parse_title
from commands.router import DATABASE_DOWN, Reply, Router, SlashRequest, run_after_ack
from commands.war_room import open_war_room

DECLARE_VIEW = "declare_incident"
SEVERITY_LABELS = {
    1: "SEV1: critical, users harmed now",
    2: "SEV2: major, many users or sensitive data",
    3: "SEV3: minor, limited impact",
    4: "SEV4: low, no user impact yet",
}
SUMMARY_MAX_CHARS = 2000


def declare_modal(origin_channel_id: str) -> dict:
    """The form `/incident declare` opens when no title was typed."""
    options = [Option(value=str(sev), label=label) for sev, label in SEVERITY_LABELS.items()]
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
        ],
    ).to_dict()


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def declare(request: SlashRequest) -> Reply:
        if not request.args:
            def open_form(client):
                slack_io.call("opening the declare form", client.views_open,
                              trigger_id=request.trigger_id, view=declare_modal(request.channel_id))
            return Reply(then=open_form, then_failure="Could not open the form:")
        return _declare(runtime, parse_declare(request.args), request.user_id)

    router.add("declare", declare)

    @app.view(DECLARE_VIEW)
    def handle_declare_submission(ack, body, view, client):
        values = view["state"]["values"]
        user_id = body["user"]["id"]
        origin = json.loads(view.get("private_metadata") or "{}").get("origin_channel_id")
        try:
            request = DeclareRequest(
                title=parse_title("declare", values["title"]["title"].get("value") or ""),
                severity=int(values["severity"]["severity"]["selected_option"]["value"]),
                summary=human_text(values["summary"]["summary"].get("value") or "")[:SUMMARY_MAX_CHARS],
            )
        except UsageError as exc:
            ack(response_action="errors", errors={"title": exc.message})
            return
        try:
            reply = _declare(runtime, request, user_id)
        except SQLAlchemyError:
            ack(response_action="errors", errors={"title": DATABASE_DOWN})
            return
        ack()
        # A form has no response_url: failures are told privately in the channel it was opened from.
        run_after_ack(reply, client, tell=lambda text: origin and client.chat_postEphemeral(
            channel=origin, user=user_id, text=text))


def _declare(runtime: Runtime, request: DeclareRequest, user_id: str) -> Reply:
    with runtime.transaction() as session:
        incident = incidents.declare_incident(
            session, title=request.title, severity=request.severity,
            summary=request.summary, declared_by=user_id, playbook=runtime.playbook,
        )
    channel_name = incidents.channel_name_for(incident.number, incident.title)
    return Reply(
        text=render("declared.slack.j2", incident=incident, channel_name=channel_name),
        then=lambda client: open_war_room(client, runtime, incident),
        then_failure=f"{incident.reference} is recorded, but",
    )
