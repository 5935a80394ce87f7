"""The playbook's checklists in the room: `/incident impact` and `/incident notify`, and the clock reminders."""

from __future__ import annotations

from slack_bolt import App

from bot import assessment
from bot.assessment import IMPACT, NOTIFICATION
from bot.render import render
from commands.messages import reminder_delivery
from commands.parsing import AnswerRequest, parse_impact, parse_notify
from commands.router import Reply, Router, SlashRequest
from commands.war_room import owed_room_post

CLOCK_EVENT = "warroom_notification_clock"


# The ticker's delivery step for a notification clock: a reminder in the room before the deadline.
deliver_clock_reminder = reminder_delivery("clock_reminder.slack.j2", CLOCK_EVENT)


def register(router: Router, app: App) -> None:
    runtime = router.runtime
    playbook = runtime.playbook

    def show(request: SlashRequest, topic: str, template: str) -> Reply:
        with runtime.transaction() as session:
            shown = assessment.view_in_channel(session, request.channel_id, topic, playbook)
        return Reply(text=render(template, assessment=shown))

    def tell(request: SlashRequest, change) -> Reply:
        return owed_room_post(runtime, request.channel_id, change.entry, "The answer is recorded, but",
                              "answer_recorded.slack.j2", change=change)

    def impact(request: SlashRequest) -> Reply:
        wanted = parse_impact(request.args, playbook.impact)
        if wanted is None:
            return show(request, IMPACT, "impact_checklist.slack.j2")
        with runtime.transaction() as session:
            change = assessment.record_answer(session, request.channel_id, IMPACT, wanted.question, wanted.answer,
                                              request.user_id, playbook)
        return tell(request, change)

    def notify(request: SlashRequest) -> Reply:
        wanted = parse_notify(request.args, playbook.notification.questions)
        if wanted is None:
            return show(request, NOTIFICATION, "notification_status.slack.j2")
        with runtime.transaction() as session:
            if isinstance(wanted, AnswerRequest):
                change = assessment.record_answer(session, request.channel_id, NOTIFICATION, wanted.question,
                                                  wanted.answer, request.user_id, playbook)
            else:
                change = assessment.decide(session, request.channel_id, wanted.notify, wanted.reason,
                                           request.user_id, playbook)
        return tell(request, change)

    router.add("impact", impact)
    router.add("notify", notify)
