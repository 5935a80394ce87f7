"""Slack-facing handlers: one module per subcommand family, wired by `register`."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot.actions import ActionReminderDue
from bot.after_ack import RoomOpenDue, RoomPostDue
from bot.assessment import ClockDue
from bot import slack_io
from bot.drills import InjectDue
from bot.rules import RequirementDue
from bot.runtime import Runtime
from commands import (actions, assessment, classify, declare, drill, evidence, help, log, pins, records, roles, state,
                      updates, war_room)
from commands.router import Router

FAMILIES = (declare, roles, log, state, classify, evidence, assessment, updates, records, actions, drill, help, pins)


def register(app: App, runtime: Runtime) -> Router:
    """Attach every listener to the Bolt app; returns the /incident router (tests read its table)."""
    router = Router(runtime)
    slack_io.mark_drill_rooms(drill.DrillRooms(runtime))
    # First: Bolt tries listeners in order, and building the arguments of each one that does not
    # match costs about a millisecond a request (benchmarks/ack_latency.py); slash commands are most.
    router.register(app)
    for family in FAMILIES:
        family.register(router, app)
    return router


def reminder_delivery(client: WebClient, runtime: Runtime):
    """What the ticker calls to deliver a claimed reminder, whichever kind it is."""
    room_posts = war_room.deliver_room_post(client, runtime)
    # Entries whose messages go beyond their room: an update's to the stakeholders, an action's to its owner.
    entry_posts = {"update": updates.deliver_late_update(client, runtime),
                   "action": actions.deliver_late_action(client, runtime, room_posts)}
    by_kind = {
        RoomPostDue: lambda due: entry_posts.get(due.entry.kind, room_posts)(due),
        RoomOpenDue: war_room.deliver_room(client, runtime),
        ActionReminderDue: actions.deliver_action_reminder(client),
        RequirementDue: classify.deliver_rule_missed(client),
        ClockDue: assessment.deliver_clock_reminder(client),
        InjectDue: drill.deliver_inject(client),
    }
    for_updates = updates.deliver_reminder(client)  # update reminders and escalations
    return lambda due: by_kind.get(type(due), for_updates)(due)
