"""Stakeholder updates and their cadence: `/incident update`, `cadence`, `snooze`, and the reminders.

An update is posted in the war room and the stakeholder channel and restarts the clock; when one
falls due the ticker calls `deliver_reminder`, which reminds the comms lead (with a button that
opens the drafted form), or escalates to the incident commander once the grace period is over.
"""

from __future__ import annotations

import json

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, InputBlock, PlainTextInputElement, PlainTextObject
from slack_sdk.models.views import View
from sqlalchemy.exc import SQLAlchemyError

from bot import cadence, incidents, slack_io
from bot.cadence import ReminderDue
from bot.errors import UsageError
from bot.after_ack import ENTRY_EVENT, RoomPostDue
from bot.incidents import ROLES, Change, IncidentView, TimelineItem
from bot.playbook import Audience
from bot.reminders import DeliveryFailed
from bot.render import TEMPLATES_DIR, fit_escaped, render, render_plain
from bot.runtime import Runtime
from commands.messages import ROOM_GONE_ERRORS, post_reminder, section_blocks
from commands.parsing import ENTRY_MAX_CHARS, checked_text, parse_duration_argument, parse_update
from commands.router import Reply, Router, SlashRequest, database_failure, payload_fields
from commands.war_room import entry_metadata, owed_room_post, owed_room_work, post

UPDATE_VIEW = "post_update"
OPEN_UPDATE_FORM = "open_update_form"
DRAFT_MAX_CHARS = 3000  # Slack's limit for a plain_text_input's initial value
DRAFT_SHOWN_CHARS = 2800  # escaped, with the heading, inside Slack's 3,000-character section
REMINDER_EVENT = "warroom_reminder"
# Slack errors after which retrying a reminder cannot help.


def render_draft(incident, recent: list, open_roles: list[str], audience: str | None = None) -> str:
    """The update, prefilled: the five parts (what happened, impact, status, next steps, asks) for
    stakeholders in general, or the audience's own template (templates/update_draft_<audience>.txt.j2)."""
    template = f"update_draft_{audience}.txt.j2" if audience else "update_draft.txt.j2"
    if audience and not (TEMPLATES_DIR / template).exists():
        template = "update_draft.txt.j2"  # an audience the team added without a template of its own
    return render_plain(template, incident=incident, recent=recent, open_roles=open_roles)[:DRAFT_MAX_CHARS]


def update_draft(runtime: Runtime, channel_id: str, audience: str | None = None) -> str:
    """The draft for the update form, from the incident, its latest entries and its open roles."""
    with runtime.transaction() as session:
        incident = incidents.incident_in_channel(session, channel_id)
        recent = cadence.draft_lines(session, [incident.id]).get(incident.id, [])
    return render_draft(incident, recent, [role for role in ROLES if role not in incident.roles], audience)


def update_modal(channel_id: str, draft: str, audience: Audience | None = None,
                 audience_key: str | None = None) -> dict:
    """The update form, drafted; for an audience, titled for it and with its guidance as the hint."""
    return View(
        type="modal", callback_id=UPDATE_VIEW,
        title=PlainTextObject(text=f"Update: {audience.label}"[:24] if audience else "Stakeholder update"),
        submit=PlainTextObject(text="Post update"), close=PlainTextObject(text="Cancel"),
        private_metadata=json.dumps({"channel_id": channel_id, "audience": audience_key}),
        blocks=[InputBlock(block_id="update", label="Update (edit the draft)",
                           hint=PlainTextObject(text=audience.guidance[:150])
                           if audience and audience.guidance else None,
                           element=PlainTextInputElement(action_id="update", multiline=True, initial_value=draft,
                                                         max_length=ENTRY_MAX_CHARS))],
    ).to_dict()


def update_messages(runtime: Runtime, incident: IncidentView, entry: TimelineItem, *,
                    late: bool = False) -> list[tuple[str, str, str]]:
    """(channel, text, step) of a recorded update's messages: the war room's and, if one is set, the
    stakeholder channel's (never for a drill: stakeholders must not read a simulated incident as a
    real one)."""
    audience = runtime.playbook.audiences.get(entry.new_value) if entry.new_value else None
    stakeholders = runtime.settings.warroom_updates_channel
    messages = [(incident.channel_id, render("update_posted.slack.j2", incident=incident, entry=entry, late=late,
                                             stakeholders=False, audience=audience,
                                             held_back=bool(stakeholders and incident.is_drill)),
                 "posting to the war room")]
    if stakeholders and not incident.is_drill:
        messages.append((stakeholders, render("update_posted.slack.j2", incident=incident, entry=entry, late=late,
                                              stakeholders=True, audience=audience, held_back=False),
                         "posting to the stakeholder channel"))
    return messages


def post_update(client: WebClient, runtime: Runtime, change: Change) -> None:
    """Post a recorded update where it goes, each message tagged with the entry: an update is owed
    like a note, so a process that dies before posting it leaves it to `deliver_late_update`."""
    def post_each() -> None:
        for channel, text, step in update_messages(runtime, change.incident, change.entry):
            post(client, channel, text, step, metadata=entry_metadata(change.entry.id))

    owed_room_work(runtime, change.entry, post_each)


def deliver_late_update(client: WebClient, runtime: Runtime):
    """The ticker's delivery of an update a dead process may not have posted: each of its messages
    looked up by the entry's key where it goes (the dead process may have posted the war room's
    and died before the stakeholders'), else posted, saying it comes late."""

    def deliver(due: RoomPostDue) -> str:
        (room, text, _), *elsewhere = update_messages(runtime, due.incident, due.entry, late=True)
        ts = post_reminder(client, room, text, event_type=ENTRY_EVENT, due=due, permanent_errors=ROOM_GONE_ERRORS)
        for channel, text, _ in elsewhere:
            try:
                slack_io.post_once(client, channel, text=text, blocks=section_blocks([text]), event_type=ENTRY_EVENT,
                                   key=due.dedupe_key, since=due.due_at, maybe_posted=True)
            except slack_io.SlackCallFailed as exc:
                if exc.error not in ROOM_GONE_ERRORS:
                    raise DeliveryFailed(str(exc)) from exc  # tried again; the room's is found, not reposted
                # The stakeholder channel will not take it: the war room is told, as the person would have been.
                post(client, room, render("update_not_for_stakeholders.slack.j2", reference=due.reference,
                                          channel_id=channel, error=exc.error))
        return ts

    return deliver


def _record_update(runtime: Runtime, channel_id: str, text: str, user_id: str, audience: str | None = None) -> Change:
    with runtime.transaction() as session:
        return incidents.record_update(session, channel_id, text, user_id, runtime.playbook, audience=audience)


def deliver_reminder(client: WebClient):
    """The ticker's delivery step: post a reminder (room, and DM to the comms lead, with the drafted
    update and a button that opens it in the form) or an escalation.

    Each post carries the reminder's key as message metadata. A retry (attempt > 1: an earlier
    attempt may have posted before its process died) looks for that key first, so nothing is
    posted twice and nothing is skipped.
    """

    def post_once(channel: str, text: str, blocks: list, due: ReminderDue) -> str:
        return slack_io.post_once(client, channel, text=text, blocks=blocks, event_type=REMINDER_EVENT,
                                  key=due.dedupe_key, since=due.due_at, maybe_posted=due.attempts > 1)

    def deliver(due: ReminderDue) -> str | None:
        text = render("reminder.slack.j2", due=due)
        blocks = section_blocks([text])
        if due.kind == cadence.UPDATE_DUE:
            draft = fit_escaped(render_draft(due, due.recent, due.open_roles), DRAFT_SHOWN_CHARS)
            blocks += section_blocks([render("reminder_draft.slack.j2", draft=draft)])
            blocks.append(ActionsBlock(elements=[ButtonElement(
                text="Post an update", action_id=OPEN_UPDATE_FORM, value=due.channel_id, style="primary",
            )]).to_dict())
        try:
            ts = post_once(due.channel_id, text, blocks, due)
            if due.kind == cadence.UPDATE_DUE:
                post_once(due.remind_user_id, text, blocks, due)  # a user id as channel: the bot's DM
            return ts
        except slack_io.SlackCallFailed as exc:
            raise DeliveryFailed(str(exc), permanent=exc.error in ROOM_GONE_ERRORS) from exc

    return deliver


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def open_update_form(client: WebClient, trigger_id: str, channel_id: str, audience: str | None = None) -> None:
        slack_io.call("opening the update form", client.views_open, trigger_id=trigger_id,
                      view=update_modal(channel_id, update_draft(runtime, channel_id, audience),
                                        runtime.playbook.audiences.get(audience) if audience else None, audience))

    def update(request: SlashRequest) -> Reply:
        wanted = parse_update(request.args, runtime.playbook.audiences)
        if wanted.text is None:
            with runtime.transaction() as session:
                incidents.incident_in_channel(session, request.channel_id)  # refuse outside a war room now
            return Reply(then=lambda client: open_update_form(client, request.trigger_id, request.channel_id,
                                                              wanted.audience),
                         then_failure="Could not open the update form:")
        change = _record_update(runtime, request.channel_id, wanted.text, request.user_id, wanted.audience)
        return Reply(then=lambda client: post_update(client, runtime, change),
                     then_failure="The update is in the timeline and the clock restarted, but")

    def clock_handler(subcommand: str, change_clock, allow_off: bool):
        """`cadence` and `snooze` both take a duration and move the update clock."""
        def handler(request: SlashRequest) -> Reply:
            wanted = parse_duration_argument(subcommand, request.args, allow_off=allow_off)
            with runtime.transaction() as session:
                change = change_clock(session, request.channel_id, wanted.duration, request.user_id,
                                      runtime.playbook)
            return owed_room_post(runtime, request.channel_id, change.entry,
                                  f"The {change.entry.kind} change is recorded, but", "cadence_changed.slack.j2",
                                  change=change)
        return handler

    router.add("update", update)
    router.add("cadence", clock_handler("cadence", incidents.set_cadence, allow_off=True))
    router.add("snooze", clock_handler("snooze", incidents.snooze_updates, allow_off=False))

    @app.action(OPEN_UPDATE_FORM)
    def handle_open_update_form(ack, body, action, client, respond):
        ack()
        fields = payload_fields(lambda: (body["trigger_id"], action["value"]))
        if fields is None:
            return
        try:
            open_update_form(client, *fields)
        except (slack_io.SlackCallFailed, UsageError) as exc:
            respond(text=render("error.slack.j2", message=f"Could not open the update form: {exc}", hint=""),
                    replace_original=False)

    @app.view(UPDATE_VIEW)
    def handle_update_submission(ack, body, view, client):
        fields = payload_fields(lambda: _update_form_fields(body, view))
        if fields is None:
            ack()
            return
        channel_id, audience, user_id, typed = fields
        try:
            text = checked_text("update", typed, "update", required=True)
            change = _record_update(runtime, channel_id, text, user_id, audience)
        except UsageError as exc:
            ack(response_action="errors", errors={"update": exc.message})
            return
        except SQLAlchemyError as exc:
            ack(response_action="errors", errors={"update": database_failure(exc)})
            return
        ack()
        router.after_ack(Reply(then=lambda c: post_update(c, runtime, change),
                               then_failure="The update is recorded, but"),
                         client, tell=lambda text: client.chat_postEphemeral(channel=channel_id, user=user_id, text=text),
                         room=channel_id)


def _update_form_fields(body: dict, view: dict) -> tuple:
    """(channel, audience, user, typed text) from a submitted update form."""
    metadata = json.loads(view.get("private_metadata") or "{}")
    return (metadata["channel_id"], metadata.get("audience"), body["user"]["id"],
            view["state"]["values"]["update"]["update"].get("value") or "")

